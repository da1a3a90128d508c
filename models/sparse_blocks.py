"""Building blocks of the sparse U-Net: residual blocks, per-dataset BatchNorm, DITR pooling.

Design note: the blocks follow Pointcept's SpUNet-v1m1 (two 3x3x3 submanifold convs with
BatchNorm, a 1x1 projection where widths change), written against spconv's public API.
:class:`DatasetBatchNorm1d` keeps one BatchNorm per dataset (D-DITR's multi-dataset
pretraining); the network selects the active one per batch. :func:`max_pool_to` is DITR's
"max-pool X^2D with the same downsampling as the encoder": a stride-2, kernel-2 sparse
conv maps voxel c to parent ⌊c/2⌋, so we pool children into the parents the encoder
actually produced (matched by packed keys with ``searchsorted``), masked so that only
voxels with a 2D feature contribute (parents without any get zeros).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from fit3d_ros.compat import import_spconv

spconv = import_spconv()

NormFactory = Callable[[int], nn.Module]


class DatasetBatchNorm1d(nn.Module):
    """One BatchNorm1d per dataset; ``active`` picks the one used (set by the network)."""

    def __init__(self, channels: int, num_datasets: int, eps: float = 1e-3,
                 momentum: float = 0.01) -> None:
        super().__init__()
        if num_datasets < 1:
            raise ValueError(f"num_datasets must be >= 1, got {num_datasets}")
        self.norms = nn.ModuleList(nn.BatchNorm1d(channels, eps=eps, momentum=momentum)
                                   for _ in range(num_datasets))
        self.active = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norms[self.active](x)


def norm_factory(num_datasets: int = 1, eps: float = 1e-3, momentum: float = 0.01) -> NormFactory:
    """BatchNorm1d constructor, per-dataset when `num_datasets` > 1."""
    if num_datasets == 1:
        return lambda c: nn.BatchNorm1d(c, eps=eps, momentum=momentum)
    return lambda c: DatasetBatchNorm1d(c, num_datasets, eps=eps, momentum=momentum)


class BasicBlock(spconv.SparseModule):
    """Residual block: SubM3 → BN → ReLU → SubM3 → BN, + (projected) input, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: NormFactory,
                 indice_key: str) -> None:
        super().__init__()
        self.proj = None
        if in_channels != out_channels:
            self.proj = spconv.SparseSequential(
                spconv.SubMConv3d(in_channels, out_channels, 1, bias=False), norm(out_channels))
        self.conv1 = spconv.SubMConv3d(in_channels, out_channels, 3, padding=1, bias=False,
                                       indice_key=indice_key)
        self.bn1 = norm(out_channels)
        self.conv2 = spconv.SubMConv3d(out_channels, out_channels, 3, padding=1, bias=False,
                                       indice_key=indice_key)
        self.bn2 = norm(out_channels)
        self.relu = nn.ReLU()

    def forward(self, x):  # spconv.SparseConvTensor -> SparseConvTensor
        residual = x.features if self.proj is None else self.proj(x).features
        out = self.conv1(x)
        out = out.replace_feature(self.relu(self.bn1(out.features)))
        out = self.conv2(out)
        return out.replace_feature(self.relu(self.bn2(out.features) + residual))


def stage(in_channels: int, out_channels: int, depth: int, norm: NormFactory,
          indice_key: str):
    """`depth` BasicBlocks (the first changes the width)."""
    blocks = [BasicBlock(in_channels if i == 0 else out_channels, out_channels, norm, indice_key)
              for i in range(depth)]
    return spconv.SparseSequential(*blocks)


def _pack(indices: torch.Tensor, ext: torch.Tensor) -> torch.Tensor:
    """int64 key of spconv indices (M, 4) [b, x, y, z] for extents `ext` (4,)."""
    i = indices.long()
    return ((i[:, 0] * ext[1] + i[:, 1]) * ext[2] + i[:, 2]) * ext[3] + i[:, 3]


def max_pool_to(fine_indices: torch.Tensor, fine_values: torch.Tensor, fine_mask: torch.Tensor,
                coarse_indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked max-pool values on fine voxels to their stride-2 parents in `coarse_indices`.

    Returns (coarse values (M', C), coarse mask (M',)). Raises if a child's parent is
    missing (the coarse set must come from a kernel-2, stride-2 conv of the fine set).
    """
    parent = fine_indices.long().clone()
    parent[:, 1:] = torch.div(parent[:, 1:], 2, rounding_mode="floor")
    coarse = coarse_indices.long()
    ext = torch.maximum(parent.max(dim=0).values, coarse.max(dim=0).values) + 1
    coarse_key = _pack(coarse, ext)
    order = torch.argsort(coarse_key)
    sorted_key = coarse_key[order]
    parent_key = _pack(parent, ext)
    pos = torch.searchsorted(sorted_key, parent_key).clamp_(max=len(sorted_key) - 1)
    if not torch.equal(sorted_key[pos], parent_key):
        raise ValueError("coarse voxels do not cover the fine voxels' parents")
    target = order[pos]
    m = fine_mask.to(torch.bool)
    out = fine_values.new_zeros((coarse.shape[0], fine_values.shape[1]))
    out = out.scatter_reduce(0, target[m][:, None].expand(-1, fine_values.shape[1]),
                             fine_values[m], "amax", include_self=False)
    coarse_mask = torch.zeros(coarse.shape[0], dtype=torch.bool, device=out.device)
    coarse_mask[target[m]] = True
    return out, coarse_mask


class Projection2D(nn.Sequential):
    """f_l^2D: Linear → BatchNorm → GELU from the 2D feature width to a decoder width."""

    def __init__(self, in_dim: int, out_dim: int, norm: NormFactory) -> None:
        super().__init__(nn.Linear(in_dim, out_dim), norm(out_dim), nn.GELU())

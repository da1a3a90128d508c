"""Sparse-conv U-Net (spconv) with DITR 2D-feature injection and D-DITR heads.

Design note: the layout follows Pointcept's SpUNet-v1m1 (stem SubM k5; per stage a
kernel-2 stride-2 sparse conv and residual blocks; decoder: inverse conv, concatenation
with the skip, residual blocks; defaults channels 32,64,128,256,256,128,96,96 and layers
2,3,4,6,2,2,2,2). DITR only exists on PTv3; we carry its idea over: the per-point 2D
features X^2D are max-pooled onto the voxels and then, level by level, onto the parents
the encoder produced (X_l^2D); at decoder level l, f_l^2D(X_l^2D) (Linear → BN → GELU to
the decoder width) is added to the upsampled decoder features before they are
concatenated with the skip — in DITR's terms the block input becomes
f^D(X_{l+1}^D) + f^E(X_l^E) + f^2D(X_l^2D), with f^E folded into the first block's conv
over the concatenation. Heads: segmentation logits and/or the 2D-feature regression of
D-DITR; optional per-dataset BatchNorm. Outputs are per input point (all N points).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .heads import DistillationHead, SegmentationHead
from .sparse_blocks import (DatasetBatchNorm1d, Projection2D, max_pool_to, norm_factory, spconv,
                            stage)
from .voxels import Pick, Voxelization, voxelize


@dataclass
class SpUNetConfig:
    """Sparse U-Net hyper-parameters (defaults: Pointcept SpUNet-v1m1)."""

    in_channels: int = 4
    base_channels: int = 32
    channels: tuple[int, ...] = (32, 64, 128, 256, 256, 128, 96, 96)
    layers: tuple[int, ...] = (2, 3, 4, 6, 2, 2, 2, 2)
    voxel_size: float = 0.05
    pick: Pick = "center"            # representative point per voxel (coords)
    num_classes: int | None = 19     # segmentation head (None: none)
    distill_dim: int | None = None   # D-DITR regression head (None: none)
    inject_2d: bool = False          # DITR injection in every decoder level
    feat_2d_dim: int = 384           # width of X^2D (ViT-S: 384)
    num_datasets: int = 1            # >1: separate BatchNorm per dataset
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01

    @classmethod
    def default(cls, **kw) -> "SpUNetConfig":
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw) -> "SpUNetConfig":
        """A small network that runs on CPU in tests (same topology, 4 levels)."""
        base = dict(base_channels=8, channels=(8, 16, 16, 32, 32, 16, 16, 16),
                    layers=(1, 1, 1, 1, 1, 1, 1, 1), voxel_size=0.2)
        base.update(kw)
        return cls(**base)

    def __post_init__(self) -> None:
        self.channels, self.layers = tuple(self.channels), tuple(self.layers)
        if len(self.channels) != len(self.layers) or len(self.layers) % 2 or not self.layers:
            raise ValueError(f"channels {self.channels} and layers {self.layers} must have the "
                             "same even length (encoder + decoder stages)")
        if min(self.layers) < 1 or min(self.channels) < 1 or self.base_channels < 1:
            raise ValueError("channels, layers and base_channels must be positive")
        if self.in_channels < 1 or self.voxel_size <= 0:
            raise ValueError(f"in_channels {self.in_channels} / voxel_size {self.voxel_size} invalid")
        if self.inject_2d and self.feat_2d_dim < 1:
            raise ValueError("inject_2d needs feat_2d_dim >= 1")
        if self.num_datasets < 1:
            raise ValueError(f"num_datasets must be >= 1, got {self.num_datasets}")

    @property
    def num_stages(self) -> int:
        return len(self.layers) // 2


@dataclass
class SpUNetOutput:
    """Per-point outputs for all N input points."""

    features: torch.Tensor              # (N, C_last) last decoder features
    logits: torch.Tensor | None         # (N, num_classes)
    distill: torch.Tensor | None        # (N, distill_dim)
    voxels: Voxelization


class SpUNet(nn.Module):
    """Pointcept-style SpUNet with optional DITR injection and seg / distillation heads."""

    def __init__(self, config: SpUNetConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or SpUNetConfig()
        norm = norm_factory(cfg.num_datasets, cfg.bn_eps, cfg.bn_momentum)
        S, ch, ly = cfg.num_stages, cfg.channels, cfg.layers
        self.stem = spconv.SparseSequential(
            # 125 offsets: spconv picks implicit GEMM only up to 32 unless asked (CUDA
            # builds; CPU builds stay Native, weights are KRSC either way)
            spconv.SubMConv3d(cfg.in_channels, cfg.base_channels, 5, padding=1, bias=False,
                              indice_key="stem", large_kernel_fast_algo=True),
            norm(cfg.base_channels), nn.ReLU())
        self.down, self.enc = nn.ModuleList(), nn.ModuleList()
        self.up, self.dec, self.inject = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        enc_ch, dec_ch = cfg.base_channels, ch[-1]
        for s in range(S):
            self.down.append(spconv.SparseSequential(
                spconv.SparseConv3d(enc_ch, ch[s], 2, stride=2, bias=False,
                                    indice_key=f"spconv{s + 1}"), norm(ch[s]), nn.ReLU()))
            self.enc.append(stage(ch[s], ch[s], ly[s], norm, f"subm{s + 1}"))
            self.up.append(spconv.SparseSequential(
                spconv.SparseInverseConv3d(ch[len(ch) - s - 2], dec_ch, 2, bias=False,
                                           indice_key=f"spconv{s + 1}"), norm(dec_ch), nn.ReLU()))
            self.dec.append(stage(dec_ch + enc_ch, dec_ch, ly[len(ly) - s - 1], norm,
                                  f"subm{s}" if s else "stem_dec"))
            if cfg.inject_2d:  # f_l^2D for decoder level s (stride 2^s)
                self.inject.append(Projection2D(cfg.feat_2d_dim, dec_ch, norm))
            enc_ch, dec_ch = ch[s], ch[len(ch) - s - 2]
        self.out_channels = ch[-1]
        self.seg_head = SegmentationHead(ch[-1], cfg.num_classes) if cfg.num_classes else None
        self.distill_head = DistillationHead(ch[-1], cfg.distill_dim) if cfg.distill_dim else None

    def replace_heads(self, num_classes: int | None = None, distill_dim: int | None = None) -> None:
        """Swap heads (D-DITR: drop the regression head, add a segmentation head)."""
        self.config.num_classes, self.config.distill_dim = num_classes, distill_dim
        dev = next(self.parameters()).device
        self.seg_head = SegmentationHead(self.out_channels, num_classes).to(dev) if num_classes else None
        self.distill_head = (DistillationHead(self.out_channels, distill_dim).to(dev)
                             if distill_dim else None)

    def _set_dataset(self, dataset: int) -> None:
        if not 0 <= dataset < self.config.num_datasets:
            raise ValueError(f"dataset index {dataset} out of range "
                             f"[0, {self.config.num_datasets})")
        for m in self.modules():
            if isinstance(m, DatasetBatchNorm1d):
                m.active = dataset

    def _levels_2d(self, vox: Voxelization, feat_2d: torch.Tensor, visible: torch.Tensor,
                   skips: list) -> list[torch.Tensor]:
        """X_l^2D aligned with each skip level's voxels (masked max-pooling)."""
        values = vox.reduce(feat_2d, "max", mask=visible)
        mask = vox.reduce(visible.to(feat_2d.dtype), "max") > 0
        levels = [values]
        for s in range(1, self.config.num_stages):
            values, mask = max_pool_to(skips[s - 1].indices, values, mask, skips[s].indices)
            levels.append(values)
        return levels

    def forward(self, points: torch.Tensor | np.ndarray, features: torch.Tensor, *,
                feat_2d: torch.Tensor | None = None, visible_2d: torch.Tensor | None = None,
                batch: torch.Tensor | None = None, dataset: int = 0) -> SpUNetOutput:
        """Run on points (N,3) with input features (N, in_channels).

        With ``inject_2d``: `feat_2d` (N, feat_2d_dim) per-point 2D features and
        `visible_2d` (N,) (default: rows that are not all zero). `batch` (N,) sample ids.
        """
        cfg = self.config
        n = len(points)
        if features.ndim != 2 or features.shape != (n, cfg.in_channels):
            raise ValueError(f"features must be (N={n}, {cfg.in_channels}), got "
                             f"{tuple(features.shape)}")
        if cfg.inject_2d:
            if feat_2d is None or feat_2d.shape != (n, cfg.feat_2d_dim):
                raise ValueError(f"inject_2d needs feat_2d (N={n}, {cfg.feat_2d_dim}), got "
                                 f"{None if feat_2d is None else tuple(feat_2d.shape)}")
            if visible_2d is None:
                visible_2d = feat_2d.abs().sum(dim=1) > 0
        elif feat_2d is not None:
            raise ValueError("feat_2d given but the network was built with inject_2d=False")
        self._set_dataset(dataset)
        dev = features.device
        vox = voxelize(torch.as_tensor(points).to(dev), cfg.voxel_size,  # on the device
                       batch=None if batch is None else torch.as_tensor(batch).to(dev),
                       pick=cfg.pick)
        x = spconv.SparseConvTensor(vox.reduce(features, "mean"), vox.spconv_indices().to(dev),
                                    vox.spatial_shape(multiple=2 ** cfg.num_stages),
                                    vox.batch_size)
        x = self.stem(x)
        skips = [x]
        for down, enc in zip(self.down, self.enc):
            x = enc(down(x))
            skips.append(x)
        levels = (self._levels_2d(vox, feat_2d, visible_2d.to(dev), skips)
                  if cfg.inject_2d else None)
        x = skips.pop()
        for s in reversed(range(cfg.num_stages)):
            x = self.up[s](x)
            skip = skips.pop()
            f = x.features
            if levels is not None:
                f = f + self.inject[s](levels[s])
            x = x.replace_feature(torch.cat([f, skip.features], dim=1))
            x = self.dec[s](x)
        voxel_feat = x.features  # heads on voxels, then mapped to all N points
        logits = self.seg_head(voxel_feat) if self.seg_head is not None else None
        distill = self.distill_head(voxel_feat) if self.distill_head is not None else None
        return SpUNetOutput(vox.to_points(voxel_feat),
                            None if logits is None else vox.to_points(logits),
                            None if distill is None else vox.to_points(distill), vox)

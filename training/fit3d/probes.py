"""Linear probes of frozen ViT features: depth (256 bins) and semantic segmentation.

Design note: the heads of the FiT3D / Splat-and-Distill probing protocol. Depth: the
[CLS] token is concatenated to every patch token, the map is upsampled ×4 (SnD), a
linear layer (1×1 conv) predicts 256 bin scores over [min, max] depth (uniform bins,
linear normalisation); probabilities are ReLU(scores)+ε normalised (SnD), the
prediction is the probability-weighted sum of bin centres, and the classification loss
is the negative log-probability of the ground-truth bin, at every pixel with valid
depth after bilinear upsampling to the target size; RMSE and AbsRel are reported.
Segmentation: a linear layer on patch tokens, logits bilinearly upsampled to the label
map, cross-entropy (ignore −1); mIoU, mAcc and aAcc from one confusion matrix
(`fit3d_ros.pipeline.metrics`). Heads train with Adam on random mini-batches of cached
features.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fit3d_ros.pipeline.metrics import accuracy, confusion_matrix, mean_iou

EPS = 1e-3


@dataclass
class DepthBins:
    """`n` uniform bins over [lo, hi] metres."""

    lo: float
    hi: float
    n: int = 256

    def __post_init__(self) -> None:
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and 0 <= self.lo < self.hi):
            raise ValueError(f"depth bins need 0 <= lo < hi, got [{self.lo}, {self.hi}]")
        if self.n < 2:
            raise ValueError(f"need at least 2 depth bins, got {self.n}")

    @property
    def width(self) -> float:
        return (self.hi - self.lo) / self.n

    def centres(self) -> torch.Tensor:
        return self.lo + (torch.arange(self.n, dtype=torch.float64) + 0.5) * self.width

    def index(self, depth: torch.Tensor) -> torch.Tensor:
        """Bin of each depth (clipped to the range)."""
        k = torch.floor((depth.double() - self.lo) / self.width).long()
        return k.clamp(0, self.n - 1)

    def expected(self, probs: torch.Tensor) -> torch.Tensor:
        """Σ_k p_k c_k over dim 1 of (B,n,…) probabilities."""
        c = self.centres().to(probs).view(1, -1, *([1] * (probs.ndim - 2)))
        return (probs * c).sum(1)


def bin_probs(scores: torch.Tensor) -> torch.Tensor:
    """SnD's normalisation: (ReLU(s) + ε) / Σ over the bin dimension (dim 1)."""
    p = F.relu(scores) + EPS
    return p / p.sum(1, keepdim=True)


class DepthProbe(nn.Module):
    """[CLS] ‖ patch tokens → ×`upsample` → linear → `n` bin scores."""

    def __init__(self, dim: int, bins: DepthBins, upsample: int = 4) -> None:
        super().__init__()
        self.bins, self.upsample = bins, upsample
        self.head = nn.Conv2d(2 * dim, bins.n, 1)

    def forward(self, patch: torch.Tensor, cls: torch.Tensor, size: tuple[int, int]
                ) -> torch.Tensor:
        """Bin probabilities (B,n,H,W) at the target `size`."""
        x = torch.cat([patch, cls[:, :, None, None].expand_as(patch)], 1)
        # The linear head commutes with bilinear upsampling (both linear, interpolation
        # weights sum to 1), so applying it before SnD's ×4 upsample gives the same scores
        # at a 16th of the cost.
        s = self.head(x)
        if self.upsample > 1:
            s = F.interpolate(s, scale_factor=self.upsample, mode="bilinear",
                              align_corners=False)
        s = F.interpolate(s, size=size, mode="bilinear", align_corners=False)
        return bin_probs(s)


class SegProbe(nn.Module):
    """Linear layer on patch tokens; logits bilinearly upsampled to the label size."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(dim, num_classes, 1)

    def forward(self, patch: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.head(patch), size=size, mode="bilinear", align_corners=False)


def _batches(n: int, batch: int, steps: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        yield rng.choice(n, min(batch, n), replace=False)


def train_depth_probe(patches: list[torch.Tensor], cls: list[torch.Tensor],
                      depths: list[torch.Tensor], bins: DepthBins, steps: int, lr: float,
                      upsample: int = 4, batch: int = 8, seed: int = 0) -> DepthProbe:
    """Fit a :class:`DepthProbe` on frozen features (C,h,w)/(C,) and depth maps (H,W)."""
    torch.manual_seed(seed)
    probe = DepthProbe(int(patches[0].shape[0]), bins, upsample)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    size = tuple(depths[0].shape)
    for idx in _batches(len(patches), batch, steps, seed):
        p = torch.stack([patches[i] for i in idx]).float()
        c = torch.stack([cls[i] for i in idx]).float()
        d = torch.stack([depths[i] for i in idx])
        valid = torch.isfinite(d) & (d > 0)
        probs = probe(p, c, size)                       # (B,n,H,W)
        target = bins.index(torch.nan_to_num(d))        # (B,H,W)
        nll = -torch.log(probs.gather(1, target[:, None]))[:, 0]
        loss = nll[valid].mean() if valid.any() else probs.sum() * 0
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return probe


@torch.no_grad()
def depth_metrics(probe: DepthProbe, patches: list[torch.Tensor], cls: list[torch.Tensor],
                  depths: list[torch.Tensor]) -> dict[str, float | None]:
    """RMSE (m) and AbsRel over every valid pixel of the given views."""
    err2, rel, n = 0.0, 0.0, 0
    for p, c, d in zip(patches, cls, depths):
        pred = probe.bins.expected(probe(p[None].float(), c[None].float(), tuple(d.shape)))[0]
        ok = torch.isfinite(d) & (d > 0)
        diff = (pred[ok] - d[ok].double())
        err2 += float((diff ** 2).sum())
        rel += float((diff.abs() / d[ok].double()).sum())
        n += int(ok.sum())
    if n == 0:
        return {"rmse": None, "absrel": None, "pixels": 0}
    return {"rmse": (err2 / n) ** 0.5, "absrel": rel / n, "pixels": n}


def train_seg_probe(patches: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int,
                    steps: int, lr: float, batch: int = 8, seed: int = 0) -> SegProbe:
    """Fit a :class:`SegProbe` on frozen patch maps (C,h,w) and label maps (H,W), −1 ignored."""
    torch.manual_seed(seed)
    probe = SegProbe(int(patches[0].shape[0]), num_classes)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    for idx in _batches(len(patches), batch, steps, seed):
        loss = sum(F.cross_entropy(probe(patches[i][None].float(), tuple(labels[i].shape)),
                                   labels[i][None].long(), ignore_index=-1)
                   for i in idx) / len(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return probe


def seg_scores(conf: np.ndarray) -> dict[str, float | None]:
    """mIoU, mAcc (mean per-class recall over classes present) and aAcc from a confusion."""
    conf = np.asarray(conf, dtype=np.float64)
    gt = conf.sum(1)
    macc = None if not (gt > 0).any() else float(np.mean(np.diag(conf)[gt > 0] / gt[gt > 0]))
    return {"miou": mean_iou(conf), "macc": macc, "aacc": accuracy(conf)}


@torch.no_grad()
def seg_metrics(probe: SegProbe, patches: list[torch.Tensor], labels: list[torch.Tensor],
                num_classes: int) -> dict[str, float | None]:
    conf = np.zeros((num_classes, num_classes), np.int64)
    for p, lab in zip(patches, labels):
        pred = probe(p[None].float(), tuple(lab.shape))[0].argmax(0)
        conf += confusion_matrix(pred.numpy(), lab.numpy(), num_classes)
    return seg_scores(conf)

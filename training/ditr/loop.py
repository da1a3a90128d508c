"""The training-loop pieces shared by D-DITR distillation and segmentation training.

Design note: a step is a pure function of (seed, step): its samples, point subsets,
augmentation and view choices come from ``numpy.random.default_rng([seed, step])``, and
the learning rate from torch's ``OneCycleLR`` (whose state dict is plain data), so a run
resumed from a checkpoint (weights + optimizer + scheduler + step) continues exactly as
the uninterrupted run would have. :func:`make_batch` builds one batch: per sample an
optional random subset of points, the per-point 2D features X^2D (gathered on the
un-augmented points), the augmented centred coordinates and the named input features,
concatenated with sample ids for the U-Net's batched voxelisation. Optimizers follow the
reference recipes: SGD + OneCycle (Pointcept's SpUNet) or AdamW + OneCycle (PTv3/DITR).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fit3d_ros.models.preprocess import centered, input_features
from fit3d_ros.training.ditr.augment import AugmentConfig, augment_points
from fit3d_ros.training.ditr.data import Sample, labels_or_ignore
from fit3d_ros.training.ditr.point_features import PointFeatureSource


@dataclass
class OptimConfig:
    """Optimizer and OneCycle schedule (defaults: Pointcept SpUNet on SemanticKITTI)."""

    optimizer: str = "sgd"          # "sgd" (Nesterov) or "adamw"
    lr: float = 0.04
    weight_decay: float = 1e-4
    momentum: float = 0.9
    pct_start: float = 0.04
    div_factor: float = 10.0
    final_div_factor: float = 100.0
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if not self.lr > 0 or not 0 < self.pct_start < 1:
            raise ValueError(f"lr ({self.lr}) must be > 0 and pct_start ({self.pct_start}) in "
                             "(0, 1)")


def build_optimizer(params: Sequence[torch.nn.Parameter], cfg: OptimConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """(optimizer, OneCycleLR over `total_steps`)."""
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                              weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = max(4, total_steps)
    pct = min(max(cfg.pct_start, 2.0 / total), 0.5)  # >= 2 warm-up steps (short runs)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=total, pct_start=pct,
        anneal_strategy="cos", div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor, cycle_momentum=False)
    return opt, sched


@dataclass
class Batch:
    """Concatenated samples: coordinates, inputs, sample ids, labels and X^2D."""

    points: torch.Tensor               # (N, 3) augmented centred coordinates
    features: torch.Tensor             # (N, C_in)
    batch: torch.Tensor                # (N,) sample index
    labels: torch.Tensor               # (N,) training ids, -1 ignored
    feat_2d: torch.Tensor | None       # (N, D) X^2D
    visible: torch.Tensor | None       # (N,) seen by a camera

    def to(self, device: torch.device) -> "Batch":
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(self.points.to(device), self.features.to(device), self.batch.to(device),
                     self.labels.to(device), mv(self.feat_2d), mv(self.visible))


def make_batch(samples: Sequence[Sample], feature_names: Sequence[str],
               rng: np.random.Generator | None, augment: AugmentConfig,
               max_points: int | None = None, source: PointFeatureSource | None = None,
               view_seed: int = 0) -> Batch:
    """One batch (see the module note); ``rng=None`` means no subsampling/augmentation."""
    pts, feats, ids, labels, f2d, vis = [], [], [], [], [], []
    for i, sample in enumerate(samples):
        if rng is not None:
            sample = sample.subsample(max_points, rng)
        if source is not None:
            f, v = source.features(sample, seed=view_seed + i)
            f2d.append(f)
            vis.append(v)
        xyz = centered(sample.xyz)
        if rng is not None:
            xyz = augment_points(xyz, rng, augment)
        pts.append(torch.from_numpy(xyz))
        feats.append(torch.from_numpy(input_features(sample, feature_names, xyz=xyz)))
        ids.append(torch.full((len(xyz),), i, dtype=torch.long))
        labels.append(torch.from_numpy(labels_or_ignore(sample)))
    return Batch(torch.cat(pts), torch.cat(feats), torch.cat(ids), torch.cat(labels),
                 torch.cat(f2d) if f2d else None, torch.cat(vis) if vis else None)


def pick_samples(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """`batch_size` sample indices (without replacement where possible)."""
    return rng.choice(n, batch_size, replace=n < batch_size)


def optimizer_step(model: torch.nn.Module, loss: torch.Tensor, opt: torch.optim.Optimizer,
                   sched: Any, grad_clip: float | None) -> float:
    """Backward, optional gradient clipping, optimizer and scheduler step; the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    sched.step()
    return float(loss.detach())

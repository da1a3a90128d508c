"""The training-loop pieces shared by D-DITR distillation and segmentation training.

Design note: a step is a pure function of (seed, step): its samples, point subsets,
augmentation and view choices come from ``numpy.random.default_rng([seed, step])``, and
the learning rate from torch's ``OneCycleLR`` (whose state dict is plain data), so a run
resumed from a checkpoint (weights + optimizer + scheduler + step) continues exactly as
the uninterrupted run would have. :func:`make_batch` builds one batch: per sample an
optional random subset of points, the per-point 2D features X^2D (mapped on the
un-augmented points), the augmented centred coordinates and the named input features,
concatenated with sample ids for the U-Net's batched voxelisation. X^2D travels as
(N,) table rows computed on the host plus the images' patch-feature tables already on
the device; the dense (N, D) gather happens on the device (`Batch.feat_2d`).
:class:`Prefetcher` builds the next step's batch in a background thread (pinned host
memory on CUDA) while the current step trains. Optimizers follow the
reference recipes: SGD + OneCycle (Pointcept's SpUNet) or AdamW + OneCycle (PTv3/DITR).
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    """Concatenated samples: coordinates, inputs, sample ids, labels and X^2D rows."""

    points: torch.Tensor               # (N, 3) augmented centred coordinates
    features: torch.Tensor             # (N, C_in)
    batch: torch.Tensor                # (N,) sample index
    labels: torch.Tensor               # (N,) training ids, -1 ignored
    visible: torch.Tensor | None       # (N,) seen by a camera
    rows_2d: torch.Tensor | None = None   # (N,) row of table_2d of every point
    table_2d: torch.Tensor | None = None  # (R, D) patch features of the batch's images

    @property
    def feat_2d(self) -> torch.Tensor | None:
        """(N, D) X^2D, gathered on the table's device (each access gathers anew)."""
        if self.table_2d is None:
            return None
        return self.table_2d.index_select(0, self.rows_2d.to(self.table_2d.device))

    def _map(self, fn) -> "Batch":
        mv = lambda t: None if t is None else fn(t)  # noqa: E731
        return Batch(fn(self.points), fn(self.features), fn(self.batch), fn(self.labels),
                     mv(self.visible), mv(self.rows_2d), self.table_2d)

    def pin_memory(self) -> "Batch":
        """The host tensors in page-locked memory (asynchronous copies to CUDA)."""
        return self._map(lambda t: t.pin_memory() if t.device.type == "cpu" else t)

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))


def make_batch(samples: Sequence[Sample], feature_names: Sequence[str],
               rng: np.random.Generator | None, augment: AugmentConfig,
               max_points: int | None = None, source: PointFeatureSource | None = None,
               view_seed: int = 0) -> Batch:
    """One batch (see the module note); ``rng=None`` means no subsampling/augmentation."""
    pts, feats, ids, labels, rows, tables, vis = [], [], [], [], [], [], []
    offset = 0
    for i, sample in enumerate(samples):
        if rng is not None:
            sample = sample.subsample(max_points, rng)
        if source is not None:
            table, r, v = source.rows(sample, seed=view_seed + i)
            rows.append(r + offset)
            tables.append(table)
            vis.append(v)
            offset += table.shape[0]
        xyz = centered(sample.xyz)
        if rng is not None:
            xyz = augment_points(xyz, rng, augment)
        pts.append(torch.from_numpy(xyz))
        feats.append(torch.from_numpy(input_features(sample, feature_names, xyz=xyz)))
        ids.append(torch.full((len(xyz),), i, dtype=torch.long))
        labels.append(torch.from_numpy(labels_or_ignore(sample)))
    return Batch(torch.cat(pts), torch.cat(feats), torch.cat(ids), torch.cat(labels),
                 torch.cat(vis) if vis else None, torch.cat(rows) if rows else None,
                 torch.cat(tables) if tables else None)


def pick_samples(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """`batch_size` sample indices (without replacement where possible)."""
    return rng.choice(n, batch_size, replace=n < batch_size)


def random_batch(samples: Sequence[Sample], config: Any, rng: np.random.Generator,
                 source: PointFeatureSource | None) -> Batch:
    """One training step's batch: `config.batch_size` samples picked with `rng`, then
    subsampled, augmented and mapped (`config`: a `SegTrainConfig`)."""
    picked = [samples[i] for i in pick_samples(len(samples), config.batch_size, rng)]
    return make_batch(picked, config.input_features, rng, config.augment, config.max_points,
                      source, view_seed=int(rng.integers(2**31)))


@contextlib.contextmanager
def device_batches(make: Callable[[int], Batch], config: Any, device: torch.device
                   ) -> Iterator[Callable[[int], Batch]]:
    """``get(step)``: the step's batch on `device`, built by `make` one step ahead when
    ``config.prefetch`` (pinned host memory on CUDA, asynchronous copy)."""
    pf = Prefetcher(make, config.steps, config.prefetch, pin=device.type == "cuda")
    try:
        yield lambda step: pf.get(step).to(device, non_blocking=True)
    finally:
        pf.close()


AMP_MODES = ("off", "bf16", "fp16")
LOG_EVERY = 20  # steps between loss reads (each a device sync)


def autocast(amp: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Pointcept's AMP forward: ``torch.autocast`` in bf16/fp16 on CUDA; nothing on CPU
    (spconv's CPU kernels have no half types) or with ``amp="off"``."""
    if amp == "off" or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def grad_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A loss scaler for fp16 on CUDA (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler("cuda") if amp == "fp16" and device.type == "cuda" else None


def optimizer_step(model: torch.nn.Module, loss: torch.Tensor, opt: torch.optim.Optimizer,
                   sched: Any, grad_clip: float | None,
                   scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """Backward, optional gradient clipping, optimizer and scheduler step; the detached
    loss (a device scalar: `training.loop.run_steps` reads it every ``LOG_EVERY`` steps).
    With `scaler` (fp16 AMP) the loss is scaled and steps with inf/NaN gradients skipped."""
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
    else:
        scaler.scale(loss).backward()
        if grad_clip is not None:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(opt)
        scaler.update()
    sched.step()
    return loss.detach()


class Prefetcher:
    """``make(step)`` for consecutive steps, the next one built in a background thread
    while the caller trains on the current one (steps are pure functions of the step, so
    results do not change). With `pin`, batches come in page-locked host memory."""

    def __init__(self, make: Callable[[int], Batch], stop: int, enabled: bool = True,
                 pin: bool = False) -> None:
        self._make, self._stop, self._pin = make, stop, pin
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if enabled else None
        self._next: tuple[int, Future] | None = None

    def _build(self, step: int) -> Batch:
        batch = self._make(step)
        return batch.pin_memory() if self._pin else batch

    def get(self, step: int) -> Batch:
        if self._pool is None:
            return self._build(step)
        pending, self._next = self._next, None
        batch = (pending[1].result() if pending is not None and pending[0] == step
                 else self._build(step))
        if step + 1 < self._stop:
            self._next = (step + 1, self._pool.submit(self._build, step + 1))
        return batch

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._next = None

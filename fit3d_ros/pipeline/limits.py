"""Input limits: which points of a cloud may reach the network (hostile-input guard).

Design note: the first step of `Segmenter.__call__`, kept apart from the mapping and
voxelisation so their rewrites do not touch it. Points with a non-finite coordinate or
input column, and points farther than ``max_range_m`` from the sensor origin, are
dropped (a 1e30 or ±500 km point otherwise overflows the voxel grid or stretches it over
the whole cloud); above ``max_points`` the rest is subsampled, at random (seeded, scan
order kept) or nearest first (``range``). Every drop is counted in `PointDrops`, which
the node turns into diagnostics counters. Cost before the limit: one pass over the
decoded columns and ~14 B per input point (one bool mask, one float32 squared range,
one int64 index of the kept points); everything after it (features, mapping, voxels,
U-Net) sees at most ``max_points`` points, so a frame's memory is bounded by
``max_points`` whatever the sensor sends (BENCHMARKS.md, ``bench_pipeline.py --hostile``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fit3d_ros.sensors import PointCloud

SUBSAMPLE_CHOICES = ("random", "range")
MAX_POINTS_DEFAULT = 128 * 2048   # one scan of a 128-beam LiDAR at 2048 columns


@dataclass
class InputLimits:
    """Bounds on what one cloud may cost (node parameters max_points, max_range_m, …)."""

    max_points: int = MAX_POINTS_DEFAULT
    max_range_m: float = 250.0     # beyond any automotive LiDAR's reach
    subsample: str = "random"      # random | range (keep the nearest points)
    seed: int = 0

    def __post_init__(self) -> None:
        if int(self.max_points) < 1:
            raise ValueError(f"max_points must be >= 1, got {self.max_points}")
        if not (np.isfinite(self.max_range_m) and self.max_range_m > 0):
            raise ValueError(f"max_range_m must be a positive finite distance, got "
                             f"{self.max_range_m}")
        if self.subsample not in SUBSAMPLE_CHOICES:
            raise ValueError(f"subsample must be one of {SUBSAMPLE_CHOICES}, got "
                             f"{self.subsample!r}")
        self.max_points = int(self.max_points)


@dataclass
class PointDrops:
    """How many input points each limit removed from one cloud."""

    non_finite: int = 0
    out_of_range: int = 0
    subsampled: int = 0

    @property
    def total(self) -> int:
        return self.non_finite + self.out_of_range + self.subsampled


def _finite_rows(a: np.ndarray | None, n: int) -> np.ndarray | bool:
    if a is None or a.dtype.kind not in "fc":
        return True
    return np.isfinite(a.reshape(n, -1)).all(axis=1)


def limit_mask(cloud: PointCloud, limits: InputLimits) -> tuple[np.ndarray, PointDrops]:
    """(N,) bool mask of the points that pass `limits`, and what was dropped."""
    xyz = cloud.xyz
    n = len(xyz)
    finite = np.isfinite(xyz).all(axis=1)
    for col in (cloud.intensity, cloud.feature):
        finite &= _finite_rows(col, n)
    with np.errstate(over="ignore", invalid="ignore"):
        d2 = np.einsum("ij,ij->i", xyz, xyz, dtype=np.float32)  # inf beyond ~1.8e19 m
        keep = finite & (d2 <= np.float32(limits.max_range_m) ** 2)
    n_finite, n_in = int(finite.sum()), int(keep.sum())
    drops = PointDrops(non_finite=n - n_finite, out_of_range=n_finite - n_in)
    if n_in > limits.max_points:
        idx = np.flatnonzero(keep)
        if limits.subsample == "random":
            pick = np.random.default_rng(limits.seed).choice(n_in, limits.max_points,
                                                             replace=False)
        else:  # nearest max_points
            pick = np.argpartition(d2[idx], limits.max_points - 1)[:limits.max_points]
        keep = np.zeros(n, dtype=bool)
        keep[idx[pick]] = True
        drops.subsampled = n_in - limits.max_points
    return keep, drops

"""Segmentation / distillation samples: a point cloud, its cameras and optional labels.

Design note: one :class:`Sample` is what DITR consumes per scene — points (N,3) in the
LiDAR (or depth-camera) frame with optional intensity/colour columns, training labels
(0..K-1, ``IGNORE_INDEX`` = -1) and the K calibrated camera images that see the scene,
each with its camera-from-points transform. Loaders (`seg_sources`) turn dataset folders
and rosbag2 logs into :class:`SegDataset` (samples + class map); everything downstream
(2D features, augmentation, training, evaluation) reads only these types. Network
inputs are built by :func:`input_features` from named columns: ``xyz`` (coordinates
centred on the scan's mean, so absolute offsets such as the shared SemanticKITTI scan's
−100 m shift do not matter), ``intensity`` (values > 1 are taken as 8-bit and scaled by
1/255), ``rgb`` (/255); asking for a column a dataset lacks is an error.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from fit3d_ros.sensors import CameraModel

from .seg_classes import IGNORE_INDEX, ClassMap

FEATURE_WIDTHS = {"xyz": 3, "intensity": 1, "rgb": 3}


@dataclass
class CameraView:
    """One calibrated image of a sample: camera model, RGB and camera-from-points (4x4)."""

    camera: CameraModel
    rgb: np.ndarray
    T_cam_points: np.ndarray
    name: str = ""

    def __post_init__(self) -> None:
        self.T_cam_points = np.asarray(self.T_cam_points, dtype=np.float64)
        if self.T_cam_points.shape != (4, 4) or not np.all(np.isfinite(self.T_cam_points)):
            raise ValueError(f"view {self.name!r}: T_cam_points must be a finite 4x4")
        if self.rgb.dtype != np.uint8 or self.rgb.shape != (self.camera.height,
                                                            self.camera.width, 3):
            raise ValueError(f"view {self.name!r}: rgb must be uint8 "
                             f"{(self.camera.height, self.camera.width, 3)}, got "
                             f"{self.rgb.dtype} {self.rgb.shape}")


@dataclass
class Sample:
    """One scene: points, optional per-point columns and labels, and its camera views."""

    key: str
    xyz: np.ndarray
    intensity: np.ndarray | None = None
    rgb: np.ndarray | None = None
    labels: np.ndarray | None = None        # (N,) int64 training ids, IGNORE_INDEX ignored
    views: list[CameraView] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float32).reshape(-1, 3)
        n = len(self.xyz)
        if n == 0:
            raise ValueError(f"sample {self.key}: empty point cloud")
        if not np.all(np.isfinite(self.xyz)):
            raise ValueError(f"sample {self.key}: non-finite coordinates")
        for name in ("intensity", "rgb", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"sample {self.key}: {name} has {len(value)} rows for {n} "
                                 "points")
        if self.labels is not None:
            self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.xyz)

    def select(self, index: np.ndarray) -> "Sample":
        """The sample restricted to `index` (bool mask or indices); views are shared."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return replace(self, xyz=self.xyz[index], intensity=pick(self.intensity),
                       rgb=pick(self.rgb), labels=pick(self.labels))

    def subsample(self, max_points: int | None, rng: np.random.Generator) -> "Sample":
        """At most `max_points` points drawn without replacement (all when None/enough)."""
        if max_points is None or len(self) <= max_points:
            return self
        return self.select(np.sort(rng.choice(len(self), max_points, replace=False)))


@dataclass
class SegDataset:
    """Samples from one source (folder or bag) and its class map (None: unlabelled)."""

    name: str
    samples: list[Sample]
    classes: ClassMap | None = None

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError(f"{self.name}: no samples")

    @property
    def labelled(self) -> bool:
        return self.classes is not None and all(s.labels is not None for s in self.samples)

    @property
    def has_cameras(self) -> bool:
        return any(s.views for s in self.samples)


def centered(xyz: np.ndarray) -> np.ndarray:
    """Coordinates minus their mean (float32)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return (xyz - xyz.mean(axis=0)).astype(np.float32)


def input_features(sample: Sample, names: Sequence[str], xyz: np.ndarray | None = None
                   ) -> np.ndarray:
    """(N, C) float32 network input from named columns (see the module note).

    `xyz` replaces the sample's (centred) coordinates, e.g. after augmentation.
    """
    cols = []
    for name in names:
        if name == "xyz":
            cols.append(centered(sample.xyz) if xyz is None else np.asarray(xyz, np.float32))
        elif name == "intensity":
            if sample.intensity is None:
                raise ValueError(f"sample {sample.key} has no intensity; drop 'intensity' "
                                 "from the input features (e.g. --features xyz)")
            v = np.asarray(sample.intensity, dtype=np.float32)
            cols.append((v / 255.0 if v.size and v.max() > 1.0 else v)[:, None])
        elif name == "rgb":
            if sample.rgb is None:
                raise ValueError(f"sample {sample.key} has no per-point colour")
            cols.append(np.asarray(sample.rgb, dtype=np.float32) / 255.0)
        else:
            raise ValueError(f"unknown input feature {name!r} (one of {sorted(FEATURE_WIDTHS)})")
    return np.concatenate(cols, axis=1).astype(np.float32)


def feature_width(names: Sequence[str]) -> int:
    """Number of input channels of the named features."""
    bad = [n for n in names if n not in FEATURE_WIDTHS]
    if bad or not names:
        raise ValueError(f"input features {list(names)} invalid (choose from "
                         f"{sorted(FEATURE_WIDTHS)})")
    return sum(FEATURE_WIDTHS[n] for n in names)


def split_holdout(samples: Sequence[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """(train, held-out): the last ⌈fraction·n⌉ samples held out when n >= 2, else none."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    n = len(samples)
    k = 0 if n < 2 or fraction == 0 else min(n - 1, max(1, int(np.ceil(fraction * n))))
    return list(samples[:n - k]), list(samples[n - k:])


def labels_or_ignore(sample: Sample) -> np.ndarray:
    """The sample's labels, or all IGNORE_INDEX when it has none."""
    if sample.labels is None:
        return np.full(len(sample), IGNORE_INDEX, dtype=np.int64)
    return sample.labels

"""Segmentation / distillation samples: a point cloud, its cameras and optional labels.

Design note: one :class:`Sample` is what DITR consumes per scene — points (N,3) in the
LiDAR (or depth-camera) frame with optional intensity/colour columns, training labels
(0..K-1, ``IGNORE_INDEX`` = -1) and the K calibrated camera images that see the scene,
each with its camera-from-points transform. Loaders (`sources`) turn dataset folders
and rosbag2 logs into :class:`SegDataset` (samples + class map); everything downstream
(2D features, augmentation, training, evaluation) reads only these types; network
inputs come from `fit3d_ros.models.preprocess.input_features` (shared with the runtime).
:class:`LoadOptions` says how a loader reads its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from fit3d_ros.models.classes import IGNORE_INDEX, ClassMap
from fit3d_ros.sensors import CameraModel


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


@dataclass
class LoadOptions:
    """How to read a source: class-map override, frame stride and count, RGB-D density."""

    classes: str | None = None      # builtin name or JSON file (default: the source's own)
    every: int = 1                  # keep every n-th frame
    max_frames: int | None = None   # at most this many frames (after `every`)
    rgbd_stride: int = 4            # back-project every n-th depth pixel
    box_labels: bool = True         # KITTI object: derive labels from label_2 boxes
    max_dt_s: float = 0.05          # bags: largest cloud-image stamp difference paired

    def __post_init__(self) -> None:
        if self.every < 1 or self.rgbd_stride < 1:
            raise ValueError(f"every ({self.every}) and rgbd_stride ({self.rgbd_stride}) "
                             "must be >= 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")

    def take(self, items: list) -> list:
        items = items[::self.every]
        return items if self.max_frames is None else items[:self.max_frames]

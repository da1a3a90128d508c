"""Typed sensor data: RGB-D frames and point clouds (plain numpy, no ROS).

Design note: stamps are integer nanoseconds (exact round trip with ROS `Time`);
images are (H,W,3) uint8 RGB, depth (H,W) float32 metres with NaN or 0 = no return;
clouds are (N,3) float32 xyz with optional per-point columns.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import CameraModel
from .transforms import Transform


def _width(value: np.ndarray) -> int:
    """Columns of a per-point column that may have zero rows."""
    return int(np.prod(value.shape[1:])) if value.ndim > 1 else 1


@dataclass
class RGBDFrame:
    """One camera frame: rgb and/or depth with its camera model and optional pose."""

    stamp: int
    frame_id: str
    rgb: np.ndarray | None
    depth: np.ndarray | None
    camera: CameraModel
    pose: Transform | None = None  # camera -> world (parent = world frame)

    def __post_init__(self) -> None:
        h, w = self.camera.height, self.camera.width
        if self.rgb is not None:
            self.rgb = np.asarray(self.rgb)
            if self.rgb.dtype != np.uint8 or self.rgb.shape != (h, w, 3):
                raise ValueError(f"rgb must be uint8 {(h, w, 3)}, got {self.rgb.dtype} "
                                 f"{self.rgb.shape}")
        if self.depth is not None:
            self.depth = np.asarray(self.depth, dtype=np.float32)
            if self.depth.shape != (h, w):
                raise ValueError(f"depth must be {(h, w)}, got {self.depth.shape}")


@dataclass
class PointCloud:
    """A point cloud: xyz (N,3) float32 plus optional per-point columns."""

    stamp: int
    frame_id: str
    xyz: np.ndarray
    intensity: np.ndarray | None = None  # (N,) float32
    rgb: np.ndarray | None = None        # (N,3) uint8
    label: np.ndarray | None = None      # (N,) int32
    feature: np.ndarray | None = None    # (N,C) float32
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # other named fields, (N,) or (N,k)

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float32).reshape(-1, 3)
        n = len(self.xyz)
        casts = {"intensity": np.float32, "rgb": np.uint8, "label": np.int32,
                 "feature": np.float32}
        for name, dtype in casts.items():
            value = getattr(self, name)
            if value is None:
                continue
            value = np.asarray(value)
            if name in ("intensity", "label"):
                value = value.reshape(-1)
            elif name == "rgb":
                value = value.reshape(-1, 3)
            else:  # (N,C); explicit C so that empty clouds keep their width
                value = value.reshape(n, -1) if n else value.reshape(0, _width(value))
            if len(value) != n:
                raise ValueError(f"{name} has {len(value)} rows, cloud has {n} points")
            setattr(self, name, value.astype(dtype, copy=False))
        for name, value in self.extra.items():
            if len(value) != n:
                raise ValueError(f"field {name!r} has {len(value)} rows, cloud has {n} points")

    def __len__(self) -> int:
        return len(self.xyz)

    def select(self, mask: np.ndarray) -> "PointCloud":
        """The subset of points where `mask` (bool or index array) selects."""
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return PointCloud(self.stamp, self.frame_id, self.xyz[mask], pick(self.intensity),
                          pick(self.rgb), pick(self.label), pick(self.feature),
                          {k: v[mask] for k, v in self.extra.items()})

    def finite(self) -> "PointCloud":
        """Drop points with a non-finite coordinate (NaN returns of `is_dense=false` clouds)."""
        ok = np.all(np.isfinite(self.xyz), axis=1)
        return self if ok.all() else self.select(ok)

    def transformed(self, tf: Transform) -> "PointCloud":
        """The cloud expressed in `tf.parent_frame`."""
        out = self.select(slice(None))
        out.xyz = tf.apply(self.xyz).astype(np.float32)
        out.frame_id = tf.parent_frame or self.frame_id
        return out

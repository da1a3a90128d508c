"""Pinhole camera model with optional plumb-bob distortion (ROS CameraInfo semantics).

Design note: intrinsics are float64 (sub-pixel calibration survives round trips);
projection of large clouds is vectorised numpy; distortion follows OpenCV's plumb_bob
(k1, k2, t1, t2, k3), the model ROS drivers publish.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


DISTORTION_MODELS = ("plumb_bob", "rational_polynomial", "equidistant")


@dataclass
class CameraModel:
    """Intrinsics ``K`` (3x3), image ``width``/``height`` and optional distortion ``D``."""

    K: np.ndarray
    width: int
    height: int
    D: np.ndarray | None = None
    distortion_model: str = "plumb_bob"
    frame_id: str = ""
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.K = np.asarray(self.K, dtype=np.float64).reshape(3, 3)
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        if self.D is not None:
            self.D = np.asarray(self.D, dtype=np.float64).ravel()
            if not np.any(self.D):
                self.D = None
        if self.P is None:
            self.P = np.hstack([self.K, np.zeros((3, 1))])
        self.P = np.asarray(self.P, dtype=np.float64).reshape(3, 4)
        self.width, self.height = int(self.width), int(self.height)
        if self.distortion_model not in DISTORTION_MODELS:
            raise ValueError(f"unsupported distortion model {self.distortion_model!r}; "
                             f"supported: {DISTORTION_MODELS}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera size must be positive, got {self.width}x{self.height}")
        if not np.all(np.isfinite(self.K)) or self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            raise ValueError(f"invalid intrinsics K={self.K.tolist()}")

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    def distort(self, xn: np.ndarray, yn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distort normalised coordinates (OpenCV's plumb_bob / rational / fisheye models)."""
        if self.D is None:
            return xn, yn
        d = np.zeros(8)
        d[: min(8, self.D.size)] = self.D[:8]
        r2 = xn * xn + yn * yn
        if self.distortion_model == "equidistant":  # OpenCV fisheye: k1..k4 on theta
            r = np.sqrt(r2)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + d[0] * t2 + d[1] * t2 ** 2 + d[2] * t2 ** 3 + d[3] * t2 ** 4)
            with np.errstate(invalid="ignore", divide="ignore"):
                s = np.where(r > 1e-12, theta_d / r, 1.0)
            return xn * s, yn * s
        k1, k2, t1, t2, k3, k4, k5, k6 = d
        radial = (1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2) / (
            1 + k4 * r2 + k5 * r2 * r2 + k6 * r2 * r2 * r2)
        xd = xn * radial + 2 * t1 * xn * yn + t2 * (r2 + 2 * xn * xn)
        yd = yn * radial + t1 * (r2 + 2 * yn * yn) + 2 * t2 * xn * yn
        return xd, yd

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project (N,3) camera-frame points to pixel coords (N,2) and depth z (N,).

        Points with z <= 0 get NaN pixel coordinates.
        """
        p = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xn = np.where(z > 0, p[:, 0] / z, np.nan)
            yn = np.where(z > 0, p[:, 1] / z, np.nan)
        xd, yd = self.distort(xn, yn)
        u = self.fx * xd + self.K[0, 1] * yd + self.cx
        v = self.fy * yd + self.cy
        return np.stack([u, v], axis=1), z

    def in_image(self, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Visibility mask: z > 0 and 0 <= u < width, 0 <= v < height."""
        u, v = uv[:, 0], uv[:, 1]
        with np.errstate(invalid="ignore"):
            return (z > 0) & (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)

    def backproject(self, depth: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Back-project a depth image (H,W) in metres (undistorted pinhole).

        Returns camera-frame points (M,3) float32 for pixels with finite depth > 0, and
        their flat pixel indices (M,).
        """
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (self.height, self.width):
            raise ValueError(f"depth shape {depth.shape} != camera {(self.height, self.width)}")
        vv, uu = np.mgrid[0:self.height:stride, 0:self.width:stride]
        z = depth[vv, uu]
        ok = np.isfinite(z) & (z > 0)
        u, v, z = uu[ok].astype(np.float64), vv[ok].astype(np.float64), z[ok].astype(np.float64)
        x = (u - self.cx - self.K[0, 1] * (v - self.cy) / self.fy) / self.fx * z
        y = (v - self.cy) / self.fy * z
        index = (vv[ok] * self.width + uu[ok]).astype(np.int64)
        return np.stack([x, y, z], axis=1).astype(np.float32), index

    def scaled(self, width: int, height: int) -> "CameraModel":
        """The same camera for an image resized to (width, height)."""
        sx, sy = width / self.width, height / self.height
        S = np.diag([sx, sy, 1.0])
        K = S @ self.K
        # pixel centres stay at (x + 0.5): c' = (c + 0.5) * s - 0.5
        K[0, 2] = (self.K[0, 2] + 0.5) * sx - 0.5
        K[1, 2] = (self.K[1, 2] + 0.5) * sy - 0.5
        return CameraModel(K=K, width=width, height=height, D=self.D,
                           distortion_model=self.distortion_model, frame_id=self.frame_id)

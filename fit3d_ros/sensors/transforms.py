"""Rigid transforms (4x4 float64) and quaternions in ROS order (x, y, z, w).

Design note: a `Transform` maps points from `child_frame` into `parent_frame`
(tf2's `lookup_transform(target=parent, source=child)`); frame names follow REP-103/105
(`map`, `odom`, `base_link`, sensor optical frames with z forward).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrix (3,3) from a quaternion (x, y, z, w); normalised first."""
    q = np.asarray(q, dtype=np.float64).ravel()
    n = np.linalg.norm(q)
    if q.shape != (4,) or not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"invalid quaternion {q.tolist()}")
    x, y, z, w = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Quaternion (x, y, z, w) with w >= 0 from a rotation matrix (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)[:3, :3]
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4]
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], 1e-300))
        q = [0.0, 0.0, 0.0, (R[k, j] - R[j, k]) / s]
        q[i] = s / 4
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (x, y, z, w)."""
    q0 = np.asarray(q0, dtype=np.float64) / np.linalg.norm(q0)
    q1 = np.asarray(q1, dtype=np.float64) / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0:
        q1, dot = -q1, -dot
    if dot > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    s = np.sin(theta)
    return (np.sin((1 - t) * theta) * q0 + np.sin(t * theta) * q1) / s


@dataclass
class Transform:
    """Rigid transform taking points in `child_frame` to `parent_frame`."""

    matrix: np.ndarray = field(default_factory=lambda: np.eye(4))
    parent_frame: str = ""
    child_frame: str = ""
    stamp: int = 0  # nanoseconds

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (4, 4) or not np.all(np.isfinite(m)):
            raise ValueError(f"transform must be a finite 4x4 matrix, got shape {m.shape}")
        self.matrix = m

    @classmethod
    def from_quat_trans(cls, quat: np.ndarray, trans: np.ndarray, **kw) -> "Transform":
        m = np.eye(4)
        m[:3, :3] = quat_to_matrix(quat)
        m[:3, 3] = np.asarray(trans, dtype=np.float64).ravel()
        return cls(m, **kw)

    @classmethod
    def identity(cls, **kw) -> "Transform":
        return cls(np.eye(4), **kw)

    @property
    def rotation(self) -> np.ndarray:
        return self.matrix[:3, :3]

    @property
    def translation(self) -> np.ndarray:
        return self.matrix[:3, 3]

    @property
    def quat(self) -> np.ndarray:
        """(x, y, z, w)."""
        return matrix_to_quat(self.matrix)

    def inverse(self) -> "Transform":
        R, t = self.rotation, self.translation
        m = np.eye(4)
        m[:3, :3] = R.T
        m[:3, 3] = -R.T @ t
        return Transform(m, parent_frame=self.child_frame, child_frame=self.parent_frame,
                         stamp=self.stamp)

    def __matmul__(self, other: "Transform") -> "Transform":
        """Composition: (a @ b) maps b.child → a.parent (requires a.child == b.parent)."""
        if self.child_frame and other.parent_frame and self.child_frame != other.parent_frame:
            raise ValueError(f"cannot compose {self.parent_frame}<-{self.child_frame} with "
                             f"{other.parent_frame}<-{other.child_frame}")
        return Transform(self.matrix @ other.matrix, parent_frame=self.parent_frame,
                         child_frame=other.child_frame, stamp=max(self.stamp, other.stamp))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform (N,3) points; keeps the input float dtype."""
        p = np.asarray(points)
        out = p.astype(np.float64) @ self.rotation.T + self.translation
        return out.astype(p.dtype if p.dtype.kind == "f" else np.float64, copy=False)

    def interpolate(self, other: "Transform", t: float) -> "Transform":
        """Linear translation, SLERP rotation; t in [0, 1] from self to other."""
        q = slerp(self.quat, other.quat, t)
        trans = (1 - t) * self.translation + t * other.translation
        stamp = int(round(self.stamp + t * (other.stamp - self.stamp)))
        return Transform.from_quat_trans(q, trans, parent_frame=self.parent_frame,
                                         child_frame=self.child_frame, stamp=stamp)

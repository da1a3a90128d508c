"""Per-point class labels from KITTI's 3D object boxes (``label_2``).

Design note: a KITTI box is given in the rectified camera-0 frame (x right, y down,
z forward): dimensions (h, w, l), the *bottom* centre (x, y, z) and the yaw ``ry`` about
the camera y axis. The devkit builds its corners as ``R_y(ry) · (±l/2, 0..-h, ±w/2) +
location``, so a point p is inside iff ``q = R_y(ry)ᵀ (p − location)`` satisfies
|q_x| ≤ l/2, −h ≤ q_y ≤ 0, |q_z| ≤ w/2. Velodyne points reach that frame through
``R0_rect · Tr_velo_to_cam`` (the raw calibration, exactly as the devkit). Points in a
box of one of the seven object classes get its class (``models.classes.kitti_box_classes``:
0 background, 1..7), all others background; a point inside several boxes takes the
first in the file. DontCare/Misc boxes label nothing. The (N, B) inside test is
vectorised over points and boxes.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fit3d_ros.logs.lidar_datasets import KittiFrame, KittiObject
from fit3d_ros.models.classes import KITTI_BOX_TYPES, kitti_box_classes

BACKGROUND = 0


def velo_to_rect(points_velo: np.ndarray, calib: dict[str, np.ndarray]) -> np.ndarray:
    """(N,3) Velodyne points in the rectified camera-0 frame (``R0_rect · Tr_velo_to_cam``)."""
    for key, size in (("R0_rect", 9), ("Tr_velo_to_cam", 12)):
        if key not in calib or np.asarray(calib[key]).size != size:
            raise ValueError(f"KITTI calibration needs {key} with {size} values")
    R0 = np.asarray(calib["R0_rect"], dtype=np.float64).reshape(3, 3)
    Tr = np.asarray(calib["Tr_velo_to_cam"], dtype=np.float64).reshape(3, 4)
    p = np.asarray(points_velo, dtype=np.float64).reshape(-1, 3)
    return (p @ Tr[:, :3].T + Tr[:, 3]) @ R0.T


def points_in_boxes(points_rect: np.ndarray, dimensions: np.ndarray, locations: np.ndarray,
                    rotations_y: np.ndarray) -> np.ndarray:
    """(N, B) bool: point n inside KITTI box b (rect camera frame; h, w, l; bottom centre)."""
    p = np.asarray(points_rect, dtype=np.float64).reshape(-1, 3)
    dims = np.asarray(dimensions, dtype=np.float64).reshape(-1, 3)
    loc = np.asarray(locations, dtype=np.float64).reshape(-1, 3)
    ry = np.asarray(rotations_y, dtype=np.float64).reshape(-1)
    if not len(dims) == len(loc) == len(ry):
        raise ValueError(f"{len(dims)} dimensions, {len(loc)} locations, {len(ry)} rotations")
    d = p[:, None, :] - loc[None]                       # (N, B, 3)
    c, s = np.cos(ry), np.sin(ry)
    # q = R_y(ry)^T d with R_y = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    qx = c * d[..., 0] - s * d[..., 2]
    qz = s * d[..., 0] + c * d[..., 2]
    qy = d[..., 1]
    h, w, length = dims[:, 0], dims[:, 1], dims[:, 2]
    return ((np.abs(qx) <= length / 2) & (qy <= 0) & (qy >= -h) & (np.abs(qz) <= w / 2))


def box_labels(points_velo: np.ndarray, objects: Sequence[KittiObject],
               calib: dict[str, np.ndarray]) -> np.ndarray:
    """(N,) int32 labels: the class of the first object box containing the point, else 0."""
    n = len(points_velo)
    keep = [o for o in objects if o.type in KITTI_BOX_TYPES]
    if not keep or n == 0:
        return np.full(n, BACKGROUND, dtype=np.int32)
    for o in keep:
        if np.any(np.asarray(o.dimensions) <= 0):
            raise ValueError(f"KITTI {o.type} box has non-positive dimensions {o.dimensions}")
    inside = points_in_boxes(velo_to_rect(points_velo, calib),
                             np.stack([o.dimensions for o in keep]),
                             np.stack([o.location for o in keep]),
                             np.array([o.rotation_y for o in keep]))
    cls = np.array([KITTI_BOX_TYPES.index(o.type) + 1 for o in keep], dtype=np.int32)
    any_box = inside.any(axis=1)
    first = np.argmax(inside, axis=1)
    return np.where(any_box, cls[first], BACKGROUND).astype(np.int32)


def kitti_frame_box_labels(frame: KittiFrame) -> np.ndarray:
    """Box labels of a KITTI frame's Velodyne cloud (classes: `kitti_box_classes`)."""
    return box_labels(frame.cloud.xyz, frame.labels, frame.calib)


__all__ = ["BACKGROUND", "box_labels", "kitti_box_classes", "kitti_frame_box_labels",
           "points_in_boxes", "velo_to_rect"]

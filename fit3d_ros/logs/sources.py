"""File-level helpers shared by the dataset readers: images, depth, matrices, stamps, frames.

Design note: every loader validates what it reads (dtype, shape, finiteness) and raises
a ``ValueError`` naming the file, so a broken dataset folder fails loudly before anything
is written. Extrinsics stored as text (KITTI, 7-Scenes, Redwood) or float32 (nuScenes)
are only orthonormal to ~1e-7 (KITTI, nuScenes) or ~1e-4 (7-Scenes poses); a ROS TF
carries a rigid transform (quaternion), so `nearest_rigid` projects the rotation onto
SO(3) (SVD, the closest rotation in Frobenius norm) and refuses matrices that are not
near-rotations. Datasets without clocks get
synthetic stamps ``T0_NS + index * period`` (``T0_NS`` > 0 because stamp 0 means "latest"
to tf2). Frame names follow REP-103/105 (``map``, ``base_link``, ``*_optical_frame``).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

#: first synthetic stamp (2023-11-14T22:13:20Z); never 0, which tf2 reads as "latest"
T0_NS = 1_700_000_000 * 1_000_000_000
KINECT_PERIOD_NS = 1_000_000_000 / 30  # 7-Scenes / Redwood (30 Hz)
LIDAR_PERIOD_NS = 100_000_000          # KITTI Velodyne HDL-64 (10 Hz)

# REP-103/105 frame ids used by the converters
MAP = "map"
BASE_LINK = "base_link"
DEPTH_OPTICAL = "camera_depth_optical_frame"
COLOR_OPTICAL = "camera_color_optical_frame"
VELODYNE = "velodyne"
KITTI_CAM2_OPTICAL = "camera_color_left_optical_frame"


def synthetic_stamp(index: int, period_ns: float, t0_ns: int = T0_NS) -> int:
    """``t0_ns + round(index * period_ns)`` as an exact int."""
    return int(t0_ns) + int(round(int(index) * period_ns))


def frame_number(path: Path) -> int:
    """The last run of digits in a file name (``frame-000035.color.jpg`` -> 35)."""
    found = re.findall(r"\d+", Path(path).name)
    if not found:
        raise ValueError(f"{path}: file name carries no frame number")
    return int(found[-1])


def load_rgb(path: Path) -> np.ndarray:
    """(H,W,3) uint8 RGB of an 8-bit colour (or grey) image file."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA", "L", "P", "CMYK", "YCbCr"):
                raise ValueError(f"{path}: not an 8-bit colour image (mode {im.mode})")
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot read image: {exc}") from exc
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def load_depth_mm(path: Path) -> np.ndarray:
    """(H,W) uint16 millimetres of a 16-bit depth PNG (0 = no return)."""
    try:
        with Image.open(path) as im:
            mode = im.mode
            raw = np.asarray(im)
    except (OSError, SyntaxError) as exc:
        raise ValueError(f"{path}: cannot read depth image: {exc}") from exc
    if mode not in ("I;16", "I;16B", "I;16L", "I") or raw.ndim != 2:
        raise ValueError(f"{path}: depth must be a single-channel 16-bit PNG, got mode {mode}")
    if raw.dtype != np.uint16:
        if raw.min(initial=0) < 0 or raw.max(initial=0) > np.iinfo(np.uint16).max:
            raise ValueError(f"{path}: depth values outside the uint16 millimetre range")
        raw = raw.astype(np.uint16)
    return np.ascontiguousarray(raw)


def mm_to_m(depth_mm: np.ndarray) -> np.ndarray:
    """float32 metres from uint16 mm, 0 -> NaN (the convention of ``msgs.image_to_depth``)."""
    depth = np.asarray(depth_mm).astype(np.float32) / np.float32(1000.0)
    depth[np.asarray(depth_mm) == 0] = np.nan
    return depth


def load_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A whitespace-separated float matrix of exactly ``shape`` (may contain inf/nan)."""
    try:
        m = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot parse a {shape} matrix: {exc}") from exc
    if m.shape != shape:
        raise ValueError(f"{path}: expected a {shape[0]}x{shape[1]} matrix, got {m.shape}")
    return m


def nearest_rigid(matrix: np.ndarray, what: str, tol: float = 1e-3) -> np.ndarray:
    """The 4x4 rigid transform closest to ``matrix`` (3x4 or 4x4; rotation via SVD).

    Raises ValueError naming ``what`` if the matrix is non-finite, has a non-rigid last
    row, or its 3x3 block is further than ``tol`` (Frobenius) from a rotation.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape == (3, 4):
        m = np.vstack([m, [0.0, 0.0, 0.0, 1.0]])
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"{what}: expected a finite 3x4/4x4 transform, got {m.tolist()}")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=1e-9):
        raise ValueError(f"{what}: last row {m[3].tolist()} is not [0, 0, 0, 1]")
    u, _, vt = np.linalg.svd(m[:3, :3])
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ fix @ vt
    err = float(np.linalg.norm(rot - m[:3, :3]))
    if err > tol or np.linalg.det(m[:3, :3]) <= 0:
        raise ValueError(f"{what}: 3x3 block is not a rotation (distance {err:.2e})")
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = m[:3, 3]
    return out


def parse_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    """``KEY: v1 v2 ...`` lines of a KITTI calib file as flat float64 arrays."""
    out: dict[str, np.ndarray] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read calibration: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        key, sep, values = line.partition(":")
        try:
            if not sep:
                raise ValueError("missing ':'")
            out[key.strip()] = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: bad calibration line {line!r}: {exc}") from exc
    return out

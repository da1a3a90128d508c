"""Readers of the shared dataset layouts into `fit3d_ros.sensors` types (no ROS).

Design note: RGB-D folders (7-Scenes, Redwood) become `RGBDFrame`s with the raw colour
image, depth in metres (uint16 mm / 1000 as float32, 0 -> NaN, bit-identical to what
``msgs.image_to_depth`` decodes from a 16UC1 image) and the camera->world pose. The
given intrinsics and poses are the *depth* camera's. 7-Scenes colour is not registered
to depth (raw Kinect v1 streams); following the data notes we model the colour camera
as fx = fy = 515 with the depth camera's principal point, offset by -2.5 cm along the
depth camera's x axis (colour coords = depth coords + (-0.025, 0, 0) m). Redwood is
registered (colour camera = depth camera). ``reference="depth"`` (default) gives frames
whose camera/pose/frame_id are the depth camera's (depth is exact there);
``reference="color"`` gives the colour camera's model and pose, with the depth image
left as recorded. The LiDAR datasets live in `lidar_datasets` and are re-exported here.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..sensors.camera import CameraModel
from ..sensors.frames import RGBDFrame
from ..sensors.transforms import Transform
from .lidar_datasets import (KittiFrame, KittiObject, NuScenesSample, read_kitti_object,
                             read_nuscenes, read_semantickitti)
from .sources import (COLOR_OPTICAL, DEPTH_OPTICAL, KINECT_PERIOD_NS, MAP, frame_number,
                      load_depth_mm, load_matrix, load_rgb, mm_to_m, nearest_rigid,
                      synthetic_stamp)

__all__ = ["RGBD_FORMATS", "RGBDSource", "KittiFrame", "KittiObject", "NuScenesSample",
           "open_rgbd_dir", "read_rgbd_dir", "read_kitti_object", "read_nuscenes",
           "read_semantickitti"]

RGBD_FORMATS = ("7scenes", "redwood")
SEVEN_SCENES_COLOR_F = 515.0       # data notes: colour focal length (pixels)
SEVEN_SCENES_COLOR_DX = -0.025     # colour coords = depth coords + (dx, 0, 0) m


@dataclass
class RGBDFile:
    """One frame's files: frame number, colour, depth and (optional) pose matrix."""

    number: int
    color: Path
    depth: Path
    pose: np.ndarray | None  # raw 4x4 camera->world as stored


@dataclass
class RGBDSource:
    """An RGB-D folder: depth camera, colour camera, depth<-colour extrinsics and files."""

    root: Path
    fmt: str
    depth_camera: CameraModel
    color_camera: CameraModel
    T_depth_color: Transform  # parent = depth optical frame, child = colour optical frame
    files: list[RGBDFile]


def _require(path: Path) -> Path:
    if not path.exists():
        raise ValueError(f"missing dataset file {path}")
    return path


def _seven_scenes(root: Path) -> RGBDSource:
    K = load_matrix(_require(root / "camera-intrinsics.txt"), (3, 3))
    colors = sorted(root.glob("frame-*.color.*"))
    if not colors:
        raise ValueError(f"{root}: no 7-Scenes frames (frame-XXXXXX.color.jpg)")
    files = []
    for color in colors:
        stem = color.name.split(".color.")[0]
        depth = _require(root / f"{stem}.depth.png")
        pose = load_matrix(_require(root / f"{stem}.pose.txt"), (4, 4))
        files.append(RGBDFile(frame_number(Path(stem)), color, depth, pose))
    w, h = _first_size(files[0])
    depth_cam = CameraModel(K=K, width=w, height=h, frame_id=DEPTH_OPTICAL)
    Kc = K.copy()
    Kc[0, 0] = Kc[1, 1] = SEVEN_SCENES_COLOR_F
    color_cam = CameraModel(K=Kc, width=w, height=h, frame_id=COLOR_OPTICAL)
    m = np.eye(4)
    m[0, 3] = -SEVEN_SCENES_COLOR_DX  # p_depth = p_color - (dx, 0, 0)
    T = Transform(m, parent_frame=DEPTH_OPTICAL, child_frame=COLOR_OPTICAL)
    return RGBDSource(root, "7scenes", depth_cam, color_cam, T, files)


def _read_open3d_log(path: Path) -> list[np.ndarray]:
    """4x4 matrices of an Open3D ``.log`` trajectory (``i j n`` line + 4 rows each)."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) % 5:
        raise ValueError(f"{path}: {len(rows)} non-empty lines, expected 5 per pose")
    try:
        return [np.array(rows[i + 1:i + 5], dtype=np.float64) for i in range(0, len(rows), 5)]
    except ValueError as exc:
        raise ValueError(f"{path}: malformed pose block: {exc}") from exc


def _redwood(root: Path) -> RGBDSource:
    meta = json.loads(_require(root / "camera_primesense.json").read_text())
    try:
        K = np.asarray(meta["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T  # column-major
        w, h = int(meta["width"]), int(meta["height"])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{root / 'camera_primesense.json'}: bad intrinsics: {exc}") from exc
    match = root / "rgbd.match"
    if match.exists():
        pairs = [line.split() for line in match.read_text().splitlines() if line.strip()]
        pairs = [(root / c, root / d) for d, c in pairs]
    else:
        colors = sorted((root / "color").glob("*.jpg")) + sorted((root / "color").glob("*.png"))
        pairs = [(c, root / "depth" / f"{c.stem}.png") for c in colors]
    if not pairs:
        raise ValueError(f"{root}: no Redwood frames (color/*.jpg + depth/*.png)")
    traj = root / "trajectory.log"
    poses = _read_open3d_log(traj) if traj.exists() else [None] * len(pairs)
    if len(poses) != len(pairs):
        raise ValueError(f"{traj}: {len(poses)} poses for {len(pairs)} frames")
    files = [RGBDFile(frame_number(c), _require(c), _require(d), p)
             for (c, d), p in zip(pairs, poses)]
    cam = CameraModel(K=K, width=w, height=h, frame_id=DEPTH_OPTICAL)
    color_cam = CameraModel(K=K, width=w, height=h, frame_id=COLOR_OPTICAL)
    T = Transform(np.eye(4), parent_frame=DEPTH_OPTICAL, child_frame=COLOR_OPTICAL)
    return RGBDSource(root, "redwood", cam, color_cam, T, files)


def _first_size(f: RGBDFile) -> tuple[int, int]:
    depth = load_depth_mm(f.depth)
    return depth.shape[1], depth.shape[0]


def open_rgbd_dir(root: str | Path, fmt: str) -> RGBDSource:
    """Index an RGB-D folder (cameras, extrinsics, file list); reads no pixels but one."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"RGB-D folder {root} does not exist")
    if fmt not in RGBD_FORMATS:
        raise ValueError(f"unknown RGB-D format {fmt!r} (one of {', '.join(RGBD_FORMATS)})")
    return _seven_scenes(root) if fmt == "7scenes" else _redwood(root)


def _pose(raw: np.ndarray | None, what: str) -> Transform | None:
    """Camera->map `Transform`; None for a missing or non-finite (failed tracking) pose."""
    if raw is None or not np.all(np.isfinite(raw)):
        return None
    return Transform(nearest_rigid(raw, what), parent_frame=MAP, child_frame=DEPTH_OPTICAL)


def load_rgbd_file(src: RGBDSource, f: RGBDFile, reference: str = "depth") -> RGBDFrame:
    """One `RGBDFrame` of ``src`` (see the module note for ``reference``)."""
    if reference not in ("depth", "color"):
        raise ValueError(f"reference must be 'depth' or 'color', got {reference!r}")
    rgb = load_rgb(f.color)
    depth_mm = load_depth_mm(f.depth)
    cam = src.depth_camera if reference == "depth" else src.color_camera
    for name, shape in (("colour", rgb.shape[:2]), ("depth", depth_mm.shape)):
        if shape != (cam.height, cam.width):
            path = f.color if name == "colour" else f.depth
            raise ValueError(f"{path}: {name} image is {shape[1]}x{shape[0]}, camera is "
                             f"{cam.width}x{cam.height}")
    pose = _pose(f.pose, f"pose of frame {f.number} in {src.root}")
    if pose is not None and reference == "color":
        pose = pose @ src.T_depth_color
    stamp = synthetic_stamp(f.number, KINECT_PERIOD_NS)
    if pose is not None:
        pose.stamp = stamp
    return RGBDFrame(stamp=stamp, frame_id=cam.frame_id, rgb=rgb, depth=mm_to_m(depth_mm),
                     camera=cam, pose=pose)


def read_rgbd_dir(root: str | Path, fmt: str = "7scenes", every: int = 1,
                  reference: str = "depth") -> Iterator[RGBDFrame]:
    """Frames of a 7-Scenes or Redwood folder (every ``every``-th file, in order).

    Stamps are synthetic: ``T0_NS + frame_number / 30 Hz`` (the sensors' frame rate).
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    src = open_rgbd_dir(root, fmt)
    for f in src.files[::every]:
        yield load_rgbd_file(src, f, reference)

"""Multi-view RGB-D scenes from recorded logs (rosbag2) or dataset folders (7-Scenes, Redwood).

Design note: a :class:`Scene` is what FiT3D's per-scene optimisation and the
correspondence / depth evaluations need: per view the colour image with *its* camera
model and camera→world pose, and the depth image with the depth camera's model and
pose. Keeping both cameras matters because 7-Scenes colour and depth are not registered
(the colour camera is modelled as fx = fy = 515, −2.5 cm along the depth camera's x
axis; see `fit3d_ros.logs.datasets`); Redwood and most ROS drivers' registered streams
simply have two identical cameras. Bags are read in one pass through
`fit3d_ros.logs.scene_io.read_rgbd_pairs` (both cameras' models and poses per pair).
Frames without a pose are dropped. The train / held-out split is by position in
the selected frame list: every K-th frame (positions K-1, 2K-1, …) is held out, the rule
`lift` and the evaluations share so that evaluations see frames lifting never did.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fit3d_ros.logs.datasets import load_rgbd_file, open_rgbd_dir
from fit3d_ros.logs.scene_io import read_rgbd_pairs
from fit3d_ros.sensors import CameraModel

SCENE_FORMATS = ("bag", "7scenes", "redwood")


@dataclass
class SceneView:
    """One RGB-D view: colour image + colour camera/pose, depth + depth camera/pose."""

    index: int                  # position in the source's frame list
    stamp: int
    rgb: np.ndarray             # (H,W,3) uint8
    color_camera: CameraModel
    T_world_color: np.ndarray   # (4,4) colour camera -> world
    depth: np.ndarray           # (Hd,Wd) float32 metres, NaN = no return
    depth_camera: CameraModel
    T_world_depth: np.ndarray   # (4,4) depth camera -> world

    @property
    def viewmat(self) -> np.ndarray:
        """World -> colour camera (OpenCV), the rasterizer's `viewmat`."""
        return np.linalg.inv(self.T_world_color)


@dataclass
class Scene:
    """Views of one log plus the train / held-out split (indices into `views`)."""

    source: str
    fmt: str
    views: list[SceneView]
    train: list[int]
    heldout: list[int]

    def subset(self, which: str) -> list[SceneView]:
        if which not in ("train", "heldout", "all"):
            raise ValueError(f"which must be train, heldout or all, got {which!r}")
        ids = range(len(self.views)) if which == "all" else getattr(self, which)
        return [self.views[i] for i in ids]


def parse_frames(spec: str | None) -> slice:
    """``START:STOP:STEP`` (any part may be empty) -> slice; None -> everything."""
    if spec is None or spec == "":
        return slice(None)
    parts = spec.split(":")
    if len(parts) > 3:
        raise ValueError(f"--frames must be START:STOP:STEP, got {spec!r}")
    try:
        vals = [int(p) if p.strip() else None for p in parts] + [None] * (3 - len(parts))
    except ValueError as exc:
        raise ValueError(f"--frames must be integers START:STOP:STEP, got {spec!r}") from exc
    if vals[2] is not None and vals[2] < 1:
        raise ValueError(f"--frames step must be >= 1, got {vals[2]}")
    if len(parts) == 1:  # a single number N means the first N frames
        return slice(None, vals[0])
    return slice(*vals)


def detect_format(path: str | Path) -> str:
    """``bag``, ``7scenes`` or ``redwood`` from what the path holds."""
    p = Path(path)
    if p.is_file() or (p / "metadata.yaml").exists():
        return "bag"
    if (p / "camera-intrinsics.txt").exists():
        return "7scenes"
    if (p / "camera_primesense.json").exists():
        return "redwood"
    raise ValueError(f"cannot tell the format of {p} (a bag, or a 7-Scenes / Redwood folder); "
                     "pass --format")


def split_indices(n: int, holdout_every: int | None) -> tuple[list[int], list[int]]:
    """(train, held-out) positions: position p is held out when p % K == K - 1."""
    if not holdout_every:
        return list(range(n)), []
    if holdout_every < 2:
        raise ValueError(f"holdout_every must be >= 2 (or 0 for none), got {holdout_every}")
    held = [p for p in range(n) if p % holdout_every == holdout_every - 1]
    return [p for p in range(n) if p % holdout_every != holdout_every - 1], held


def _dataset_views(root: Path, fmt: str, frames: slice) -> list[SceneView]:
    src = open_rgbd_dir(root, fmt)
    idx = list(range(len(src.files)))[frames]
    views = []
    for i in idx:
        fr = load_rgbd_file(src, src.files[i], reference="depth")
        if fr.pose is None:
            continue
        T_wd = fr.pose.matrix
        views.append(SceneView(i, fr.stamp, fr.rgb, src.color_camera,
                               T_wd @ src.T_depth_color.matrix, fr.depth, src.depth_camera,
                               T_wd))
    return views


def _bag_views(path: Path, frames: slice) -> list[SceneView]:
    pairs = read_rgbd_pairs(path)
    views = []
    for i in list(range(len(pairs)))[frames]:
        d, c = pairs[i]
        if d.pose is None or c.pose is None:
            continue
        views.append(SceneView(i, d.stamp, c.rgb, c.camera, c.pose.matrix, d.depth, d.camera,
                               d.pose.matrix))
    return views


def load_scene(path: str | Path, fmt: str | None = None, frames: str | slice | None = None,
               holdout_every: int | None = 8) -> Scene:
    """Read a bag or RGB-D folder into a :class:`Scene` (see the module note)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"scene {path} does not exist")
    fmt = fmt or detect_format(path)
    if fmt not in SCENE_FORMATS:
        raise ValueError(f"format must be one of {SCENE_FORMATS}, got {fmt!r}")
    sl = frames if isinstance(frames, slice) else parse_frames(frames)
    views = _bag_views(path, sl) if fmt == "bag" else _dataset_views(path, fmt, sl)
    if len(views) < 2:
        raise ValueError(f"{path}: {len(views)} posed RGB-D frames selected; a scene needs "
                         "at least 2")
    train, held = split_indices(len(views), holdout_every)
    if not train:
        raise ValueError(f"{path}: no training frames left with holdout_every={holdout_every}")
    return Scene(str(path), fmt, views, train, held)


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> torch.Tensor:
    """uint8 (H,W,3) -> float (height,width,3) in [0,1] (bilinear, antialiased)."""
    x = torch.from_numpy(np.array(rgb, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False,
                          antialias=True)
    return x[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous()


def render_size(camera: CameraModel, width: int | None) -> tuple[int, int]:
    """(width, height) for rendering at `width` pixels (None: the camera's own size)."""
    if width is None or width == camera.width:
        return camera.width, camera.height
    return int(width), max(1, round(camera.height * width / camera.width))


def world_points(view: SceneView, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Back-projected depth pixels in world coordinates (M,3) and their flat pixel index."""
    pts, index = view.depth_camera.backproject(view.depth, stride)
    T = view.T_world_depth
    return (pts.astype(np.float64) @ T[:3, :3].T + T[:3, 3]).astype(np.float32), index


def project_to_color(view: SceneView, xyz_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (M,2) in the colour image and camera depth (M,) of world points."""
    V = view.viewmat
    cam = xyz_world.astype(np.float64) @ V[:3, :3].T + V[:3, 3]
    return view.color_camera.project(cam)


def colored_points(view: SceneView, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """World points (M,3) from depth with their colour (M,3) float in [0,1] from the
    colour image (nearest pixel); points outside the colour image are dropped."""
    xyz, _ = world_points(view, stride)
    uv, z = project_to_color(view, xyz)
    ok = view.color_camera.in_image(uv, z)
    px = np.floor(uv[ok]).astype(np.int64)
    rgb = view.rgb[px[:, 1], px[:, 0]].astype(np.float32) / 255.0
    return xyz[ok], rgb


def depth_in_color(view: SceneView, width: int | None = None) -> np.ndarray:
    """The depth map seen from the colour camera (nearest surface, NaN where unknown),
    at `width` pixels wide; equals `view.depth` for registered cameras at full size."""
    w, h = render_size(view.color_camera, width)
    cam = view.color_camera.scaled(w, h) if (w, h) != view.color_camera.size else \
        view.color_camera
    stride = max(1, view.depth_camera.width // (2 * w))  # ≥ 2 samples per target pixel
    xyz, _ = world_points(view, stride)
    V = view.viewmat
    pc = xyz.astype(np.float64) @ V[:3, :3].T + V[:3, 3]
    uv, z = cam.project(pc)
    ok = cam.in_image(uv, z)
    px = np.floor(uv[ok]).astype(np.int64)
    flat = torch.from_numpy(px[:, 1] * w + px[:, 0])
    out = torch.full((h * w,), float("inf"), dtype=torch.float64)
    out.scatter_reduce_(0, flat, torch.from_numpy(z[ok]), reduce="amin")
    out[torch.isinf(out)] = float("nan")
    return out.reshape(h, w).float().numpy()

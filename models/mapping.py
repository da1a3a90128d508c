"""DITR 2D→3D mapping: project points into K cameras and gather per-point patch features.

Design note: following DITR (Knaebel et al.), a point p is visible in camera k iff its
camera-frame depth z > 0 and its pixel (u, v) lies inside the image; it takes the
feature of the patch (⌊u/P⌋, ⌊v/P⌋) (nearest patch, which beat bilinear in the paper).
Points seen by several cameras use one view: ``random`` (seeded; the paper's default),
``center`` (the view where the point is nearest the image centre) or ``first``; points
no camera sees get an all-zero feature. Our addition: an optional depth-consistency
test that drops points lying behind the surface a depth image measured (occlusion,
e.g. LiDAR points behind a wall seen from an offset camera). Everything is vectorised
numpy over (N, K); the gather is one torch index into the stacked feature maps. These
numpy functions are the reference; `point_features_from_maps` (runtime and training)
runs the same mapping on the points' device (`models.mapping_device`).
Cameras must describe the image the ViT saw (use ``CameraModel.scaled`` after resizing).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch

from fit3d_ros.sensors import CameraModel, Transform

from .mapping_device import VIEW_CHOICES, map_point_features

ViewChoice = Literal["random", "center", "first"]


@dataclass
class Projection:
    """Per point and camera: visibility, pixel coordinates, depth and patch index."""

    visible: np.ndarray     # (N, K) bool
    uv: np.ndarray          # (N, K, 2) float32 pixels (NaN behind the camera)
    depth: np.ndarray       # (N, K) float32 camera-frame z
    patch: np.ndarray       # (N, K, 2) int64 (column ⌊u/P⌋, row ⌊v/P⌋); -1 where not visible
    image_size: np.ndarray  # (K, 2) int (width, height)
    patch_size: int

    @property
    def num_points(self) -> int:
        return int(self.visible.shape[0])

    @property
    def num_cameras(self) -> int:
        return int(self.visible.shape[1])

    @property
    def grid(self) -> np.ndarray:
        """(K, 2) patch grid (rows, cols) = (⌈H/P⌉, ⌈W/P⌉) each camera's patches span."""
        p = self.patch_size
        return np.stack([-(-self.image_size[:, 1] // p), -(-self.image_size[:, 0] // p)], axis=1)

    def visible_any(self) -> np.ndarray:
        """(N,) True where at least one camera sees the point."""
        return self.visible.any(axis=1)

    def choose_view(self, view: ViewChoice = "random", seed: int = 0) -> np.ndarray:
        """(N,) camera index per point (-1 where none sees it)."""
        vis = self.visible
        if view == "first":
            score = vis.astype(np.float32)
        elif view == "random":
            score = np.random.default_rng(seed).random(vis.shape, dtype=np.float32) + 1.0
            score[~vis] = 0.0
        elif view == "center":
            half = self.image_size.astype(np.float32) / 2.0            # (K, 2)
            with np.errstate(invalid="ignore"):
                dist = (((self.uv - half) / half) ** 2).sum(axis=2)    # (N, K)
            score = np.where(vis, 3.0 - dist, 0.0)  # dist < 2 inside the image
        else:
            raise ValueError(f"view must be one of {VIEW_CHOICES}, got {view!r}")
        best = np.argmax(score, axis=1)
        return np.where(vis.any(axis=1), best, -1).astype(np.int64)


def _as_matrix(T: np.ndarray | Transform) -> np.ndarray:
    m = T.matrix if isinstance(T, Transform) else np.asarray(T, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"camera-from-points transform must be a finite 4x4, got {m.shape}")
    return m


def _as_points(points: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {p.shape}")
    return p.astype(np.float64, copy=False)


def _depth_consistent(uv: np.ndarray, z: np.ndarray, cam: CameraModel, depth: np.ndarray,
                      tol_abs: float, tol_rel: float, unknown_visible: bool) -> np.ndarray:
    """True where the point is not behind the surface the depth image measured."""
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth image must be (H, W), got {depth.shape}")
    hd, wd = depth.shape
    # depth may have another resolution than the camera: look up proportionally
    u, v = np.nan_to_num(uv[:, 0], nan=0.0), np.nan_to_num(uv[:, 1], nan=0.0)
    col = np.clip((u * (wd / cam.width)).astype(np.int64), 0, wd - 1)
    row = np.clip((v * (hd / cam.height)).astype(np.int64), 0, hd - 1)
    measured = depth[row, col]
    known = np.isfinite(measured) & (measured > 0)
    in_front = z <= measured + tol_abs + tol_rel * measured
    return np.where(known, in_front, unknown_visible)


def project_points(points: np.ndarray | torch.Tensor, cameras: Sequence[CameraModel],
                   T_cam_from_points: Sequence[np.ndarray | Transform], patch_size: int = 14,
                   *, depths: Sequence[np.ndarray | None] | None = None,
                   depth_tolerance: float = 0.1, depth_tolerance_rel: float = 0.02,
                   unknown_depth_visible: bool = True) -> Projection:
    """Project points (N,3) into K cameras (DITR's frustum test, optional occlusion test).

    `T_cam_from_points[k]` maps the points' frame into camera k's optical frame (4x4 or
    :class:`Transform` with child = points frame). With `depths` (per camera an (H,W) depth
    image in metres or None), a point farther than the measured depth by more than
    ``depth_tolerance + depth_tolerance_rel * measured`` counts as occluded; pixels without
    a measurement keep the point visible unless ``unknown_depth_visible=False``.
    """
    p = _as_points(points)
    if len(cameras) == 0 or len(cameras) != len(T_cam_from_points):
        raise ValueError(f"need one transform per camera, got {len(cameras)} cameras and "
                         f"{len(T_cam_from_points)} transforms")
    if depths is not None and len(depths) != len(cameras):
        raise ValueError(f"need one depth image (or None) per camera, got {len(depths)}")
    if int(patch_size) < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    n, k = len(p), len(cameras)
    visible = np.zeros((n, k), dtype=bool)
    uv = np.full((n, k, 2), np.nan, dtype=np.float32)
    depth = np.zeros((n, k), dtype=np.float32)
    for i, (cam, T) in enumerate(zip(cameras, T_cam_from_points)):  # loop over K cameras only
        if not isinstance(cam, CameraModel):
            raise ValueError(f"camera {i} must be a CameraModel, got {type(cam).__name__}")
        m = _as_matrix(T)
        pc = p @ m[:3, :3].T + m[:3, 3]
        uv_k, z_k = cam.project(pc)
        vis = cam.in_image(uv_k, z_k)
        if depths is not None and depths[i] is not None:
            vis &= _depth_consistent(uv_k, z_k, cam, depths[i], depth_tolerance,
                                     depth_tolerance_rel, unknown_depth_visible)
        visible[:, i], uv[:, i], depth[:, i] = vis, uv_k, z_k
    patch = np.full((n, k, 2), -1, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        cells = np.floor(uv / float(patch_size))
    patch[visible] = cells[visible].astype(np.int64)
    sizes = np.array([[c.width, c.height] for c in cameras], dtype=np.int64)
    return Projection(visible, uv, depth, patch, sizes, int(patch_size))


def gather_point_features(projection: Projection, feature_maps: torch.Tensor | np.ndarray,
                          view: ViewChoice = "random", seed: int = 0
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point features (N, C) from maps (K, C, h, w) and the visible mask (N,).

    Each visible point takes its chosen view's patch feature; others get zeros.
    """
    maps = torch.as_tensor(feature_maps)
    if maps.ndim != 4 or maps.shape[0] != projection.num_cameras:
        raise ValueError(f"feature_maps must be (K={projection.num_cameras}, C, h, w), got "
                         f"{tuple(maps.shape)}")
    k, c, h, w = maps.shape
    need = projection.grid
    if np.any(need[:, 0] > h) or np.any(need[:, 1] > w):
        raise ValueError(f"feature maps are {h}x{w} patches but the cameras span up to "
                         f"{need.max(axis=0).tolist()} (rows, cols) at patch size "
                         f"{projection.patch_size}: pass cameras scaled to the ViT input "
                         "(CameraModel.scaled)")
    chosen = projection.choose_view(view, seed)
    seen = chosen >= 0
    cell = projection.patch[np.arange(projection.num_points), np.maximum(chosen, 0)]  # col,row
    # one row per point; unseen points index an appended all-zero row (single pass)
    flat = np.where(seen, chosen * (h * w) + cell[:, 1] * w + cell[:, 0], k * h * w)
    table = torch.cat([maps.permute(0, 2, 3, 1).reshape(k * h * w, c), maps.new_zeros((1, c))])
    out = torch.index_select(table, 0, torch.as_tensor(flat, device=maps.device))
    return out, torch.as_tensor(seen, device=maps.device)


def point_features_from_maps(points: np.ndarray | torch.Tensor,
                             maps: Sequence[torch.Tensor], cameras: Sequence[CameraModel],
                             transforms: Sequence[np.ndarray | Transform], patch_size: int,
                             view: ViewChoice = "random", seed: int = 0, dim: int = 0
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point features (N, C) and visible mask (N,) from per-camera patch maps.

    `maps[k]` is camera k's (C, h_k, w_k) patch map (sizes may differ: they are
    zero-padded into one stack), `cameras[k]` the camera scaled to the ViT input and
    `transforms[k]` its camera-from-points transform. Runs on the device of `points`
    (a tensor; numpy arrays run on the CPU) through `models.mapping_device`, with the
    same result as `project_points` + `gather_point_features`. Without cameras every
    point gets a zero feature of width `dim` and ``visible=False``.
    """
    pts = torch.as_tensor(points)
    if not maps:
        return (torch.zeros(len(pts), dim, device=pts.device),
                torch.zeros(len(pts), dtype=torch.bool, device=pts.device))
    return map_point_features(pts, maps, list(cameras), list(transforms), patch_size,
                              view=view, seed=seed)

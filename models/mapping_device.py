"""DITR 2D→3D mapping on the device: torch projection and gather, no host round trip.

Design note: the runtime twin of `models.mapping`'s numpy `project_points` +
`gather_point_features` (kept as the reference the tests compare with). Points, patch
maps and outputs stay on the points' device; only the K camera matrices (a few floats)
go to it. The projection follows the reference's float chain (float64 camera frame and
frustum test, float32 pixels for the patch index) so labels match it; the gather is one
``index_select`` into the stacked maps plus an appended zero row (unseen points), with no
boolean indexing, hence no device→host synchronisation. The ``random`` view draws its
scores from the same seeded numpy generator as the reference (a (N, K) host→device copy);
``center`` and ``first`` run entirely on the device.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fit3d_ros.sensors import CameraModel, Transform

VIEW_CHOICES = ("random", "center", "first")


def _distort(cam: CameraModel, xn: torch.Tensor, yn: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """`CameraModel.distort` on tensors (same models and formulas)."""
    if cam.D is None:
        return xn, yn
    d = np.zeros(8)
    d[: min(8, cam.D.size)] = cam.D[:8]
    r2 = xn * xn + yn * yn
    if cam.distortion_model == "equidistant":
        r = torch.sqrt(r2)
        theta = torch.atan(r)
        t2 = theta * theta
        theta_d = theta * (1 + d[0] * t2 + d[1] * t2 ** 2 + d[2] * t2 ** 3 + d[3] * t2 ** 4)
        s = torch.where(r > 1e-12, theta_d / r, torch.ones_like(r))
        return xn * s, yn * s
    k1, k2, t1, t2, k3, k4, k5, k6 = d.tolist()
    radial = (1 + k1 * r2 + k2 * r2 * r2 + k3 * r2 * r2 * r2) / (
        1 + k4 * r2 + k5 * r2 * r2 + k6 * r2 * r2 * r2)
    xd = xn * radial + 2 * t1 * xn * yn + t2 * (r2 + 2 * xn * xn)
    yd = yn * radial + t1 * (r2 + 2 * yn * yn) + 2 * t2 * xn * yn
    return xd, yd


def _matrix(T: np.ndarray | Transform) -> np.ndarray:
    m = T.matrix if isinstance(T, Transform) else np.asarray(T, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ValueError(f"camera-from-points transform must be a finite 4x4, got {m.shape}")
    return m


def project_device(points: torch.Tensor, cameras: Sequence[CameraModel],
                   transforms: Sequence[np.ndarray | Transform], patch_size: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Visible (N, K) bool, pixels (N, K, 2) float32 and patch cells (N, K, 2) int64
    (column, row; -1 where not visible) of points (N, 3) on their device."""
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    if len(cameras) == 0 or len(cameras) != len(transforms):
        raise ValueError(f"need one transform per camera, got {len(cameras)} cameras and "
                         f"{len(transforms)} transforms")
    p = points.to(torch.float64)
    vis, uvs = [], []
    for i, (cam, T) in enumerate(zip(cameras, transforms)):  # loop over K cameras only
        if not isinstance(cam, CameraModel):
            raise ValueError(f"camera {i} must be a CameraModel, got {type(cam).__name__}")
        m = torch.as_tensor(_matrix(T), dtype=torch.float64, device=p.device)
        pc = p @ m[:3, :3].T + m[:3, 3]
        z = pc[:, 2]
        front = z > 0
        nan = torch.full_like(z, float("nan"))
        xn, yn = torch.where(front, pc[:, 0] / z, nan), torch.where(front, pc[:, 1] / z, nan)
        xd, yd = _distort(cam, xn, yn)
        u = cam.fx * xd + float(cam.K[0, 1]) * yd + cam.cx
        v = cam.fy * yd + cam.cy
        vis.append(front & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height))
        uvs.append(torch.stack([u, v], dim=1).to(torch.float32))
    visible, uv = torch.stack(vis, dim=1), torch.stack(uvs, dim=1)
    cells = torch.floor(uv / float(patch_size)).nan_to_num(-1.0).to(torch.int64)
    patch = torch.where(visible[..., None], cells, torch.full_like(cells, -1))
    return visible, uv, patch


def choose_view_device(visible: torch.Tensor, uv: torch.Tensor, sizes: torch.Tensor,
                       view: str = "random", seed: int = 0) -> torch.Tensor:
    """(N,) camera per point (-1 where none sees it), as `Projection.choose_view`."""
    if view == "first":
        score = visible.to(torch.float32)
    elif view == "random":  # the reference's seeded numpy draw, so both pick the same view
        rnd = np.random.default_rng(seed).random(tuple(visible.shape), dtype=np.float32) + 1.0
        score = torch.from_numpy(rnd).to(visible.device)
        score = torch.where(visible, score, torch.zeros_like(score))
    elif view == "center":
        half = sizes.to(torch.float32) / 2.0                      # (K, 2)
        dist = (((uv - half) / half) ** 2).sum(dim=2)             # (N, K)
        score = torch.where(visible, 3.0 - dist, torch.zeros_like(dist))
    else:
        raise ValueError(f"view must be one of {VIEW_CHOICES}, got {view!r}")
    best = torch.argmax(score, dim=1)
    return torch.where(visible.any(dim=1), best, torch.full_like(best, -1))


def gather_device(maps: torch.Tensor, patch: torch.Tensor, chosen: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point (N, C) features from stacked maps (K, C, h, w) and the (N,) seen mask."""
    k, c, h, w = maps.shape
    seen = chosen >= 0
    cam = chosen.clamp_min(0)
    cell = patch.gather(1, cam[:, None, None].expand(-1, 1, 2))[:, 0]  # (N, 2) col, row
    flat = torch.where(seen, cam * (h * w) + cell[:, 1] * w + cell[:, 0],
                       torch.full_like(cam, k * h * w))
    table = torch.cat([maps.permute(0, 2, 3, 1).reshape(k * h * w, c), maps.new_zeros((1, c))])
    return torch.index_select(table, 0, flat), seen


def map_point_features(points: torch.Tensor, maps: Sequence[torch.Tensor],
                       cameras: Sequence[CameraModel],
                       transforms: Sequence[np.ndarray | Transform], patch_size: int,
                       view: str = "random", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point features (N, C) and visible mask (N,) on the points' device.

    `maps[k]` is camera k's (C, h_k, w_k) patch map (zero-padded into one stack; moved
    to the points' device if elsewhere), `cameras[k]` the camera scaled to the ViT input.
    """
    if int(patch_size) < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    dev = points.device
    h, w = max(m.shape[1] for m in maps), max(m.shape[2] for m in maps)
    need = np.array([[-(-c.height // patch_size), -(-c.width // patch_size)] for c in cameras])
    if len(need) and (np.any(need[:, 0] > h) or np.any(need[:, 1] > w)):
        raise ValueError(f"feature maps are {h}x{w} patches but the cameras span up to "
                         f"{need.max(axis=0).tolist()} (rows, cols) at patch size "
                         f"{patch_size}: pass cameras scaled to the ViT input "
                         "(CameraModel.scaled)")
    stacked = maps[0].new_zeros((len(maps), maps[0].shape[0], h, w), device=dev)
    for k, m in enumerate(maps):  # loop over cameras only (sizes may differ)
        stacked[k, :, :m.shape[1], :m.shape[2]] = m
    visible, uv, patch = project_device(points, cameras, transforms, int(patch_size))
    sizes = torch.tensor([[c.width, c.height] for c in cameras], device=dev)
    chosen = choose_view_device(visible, uv, sizes, view, seed)
    return gather_device(stacked, patch, chosen)

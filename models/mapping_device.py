"""DITR 2D→3D mapping on the device: torch projection and gather, no host round trip.

Design note: the runtime twin of `models.mapping`'s numpy `project_points` +
`gather_point_features` (kept as the reference the tests compare with). Points, patch
maps and outputs stay on the points' device; only the K camera matrices (a few floats)
go to it. The projection follows the reference's float chain (float64 camera frame and
frustum test, float32 pixels for the patch index) so labels match it; the gather is one
``index_select`` into a `feature_table` (the maps as rows plus a zero row for unseen
points), with no boolean indexing, hence no device→host synchronisation. `map_rows` is
the small half ((N,) table rows, 8 bytes a point): training computes it on the host and
gathers on the device. The ``random`` view draws its scores from the same seeded numpy
generator as the reference (a (N, K) host→device copy); ``center`` and ``first`` run
entirely on the device. On CPU the mapping runs on one intra-op thread: faster than the
numpy reference there, while two threads were 2-8x slower on shared cores (BENCHMARKS).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from fit3d_ros.sensors import CameraModel, Transform
from fit3d_ros.threads import cpu_threads

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
    """Visible (N, K) bool, pixels (N, K, 2) float32 (meaningful where visible) and patch
    cells (N, K, 2) int64 (column, row; -1 where not visible) of points (N, 3) on their
    device."""
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
    if len(cameras) == 0 or len(cameras) != len(transforms):
        raise ValueError(f"need one transform per camera, got {len(cameras)} cameras and "
                         f"{len(transforms)} transforms")
    p = points.to(torch.float64)
    n, dev = p.shape[0], p.device
    visible = torch.empty((n, len(cameras)), dtype=torch.bool, device=dev)
    uv = torch.empty((n, len(cameras), 2), dtype=torch.float32, device=dev)
    for i, (cam, T) in enumerate(zip(cameras, transforms)):  # loop over K cameras only
        if not isinstance(cam, CameraModel):
            raise ValueError(f"camera {i} must be a CameraModel, got {type(cam).__name__}")
        m = torch.as_tensor(_matrix(T), dtype=torch.float64, device=dev)
        pc = torch.addmm(m[:3, 3], p, m[:3, :3].T)
        z = pc[:, 2]
        # no NaN masking: pixels behind the camera are garbage but never visible
        xd, yd = _distort(cam, pc[:, 0] / z, pc[:, 1] / z)
        u = cam.fx * xd
        if float(cam.K[0, 1]):  # skew, added in the reference's order
            u += float(cam.K[0, 1]) * yd
        u += cam.cx
        v = (cam.fy * yd).add_(cam.cy)
        visible[:, i] = (z > 0) & (u >= 0) & (u < cam.width) & (v >= 0) & (v < cam.height)
        uv[:, i, 0], uv[:, i, 1] = u, v
    patch = torch.where(visible[..., None], torch.floor(uv / float(patch_size)),
                        -1.0).to(torch.int64)
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


def feature_table(maps: Sequence[torch.Tensor], device: torch.device | str | None = None
                  ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Camera patch maps (C, h_k, w_k) as one gather table (K*h*w + 1, C) on `device`
    (zero-padded to the largest h, w; the last row is the zero feature of unseen points)
    and that (h, w) grid."""
    dev = maps[0].device if device is None else torch.device(device)
    k, c = len(maps), maps[0].shape[0]
    h, w = max(m.shape[1] for m in maps), max(m.shape[2] for m in maps)
    table = maps[0].new_zeros((k * h * w + 1, c), device=dev)
    grid = table[:-1].view(k, h, w, c)
    for i, m in enumerate(maps):  # loop over cameras only (sizes may differ)
        grid[i, :m.shape[1], :m.shape[2]] = m.permute(1, 2, 0)
    return table, (h, w)


def point_rows(patch: torch.Tensor, chosen: torch.Tensor, grid: tuple[int, int]
               ) -> torch.Tensor:
    """(N,) row of every point in a `feature_table` of K = patch.shape[1] cameras on an
    (h, w) grid: its chosen view's patch, or the zero row where no camera sees it."""
    k, (h, w) = patch.shape[1], grid
    cam = chosen.clamp_min(0)
    cell = patch.gather(1, cam[:, None, None].expand(-1, 1, 2))[:, 0]  # (N, 2) col, row
    return torch.where(chosen >= 0, cam * (h * w) + cell[:, 1] * w + cell[:, 0],
                       torch.full_like(cam, k * h * w))


def gather_device(maps: torch.Tensor, patch: torch.Tensor, chosen: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point (N, C) features from stacked maps (K, C, h, w) and the (N,) seen mask."""
    table, grid = feature_table(list(maps))
    return torch.index_select(table, 0, point_rows(patch, chosen, grid)), chosen >= 0


def _check_grid(cameras: Sequence[CameraModel], grid: tuple[int, int], patch_size: int
                ) -> None:
    if int(patch_size) < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    h, w = grid
    need = np.array([[-(-c.height // patch_size), -(-c.width // patch_size)] for c in cameras])
    if len(need) and (np.any(need[:, 0] > h) or np.any(need[:, 1] > w)):
        raise ValueError(f"feature maps are {h}x{w} patches but the cameras span up to "
                         f"{need.max(axis=0).tolist()} (rows, cols) at patch size "
                         f"{patch_size}: pass cameras scaled to the ViT input "
                         "(CameraModel.scaled)")


def map_rows(points: torch.Tensor, cameras: Sequence[CameraModel],
             transforms: Sequence[np.ndarray | Transform], patch_size: int,
             grid: tuple[int, int], view: str = "random", seed: int = 0) -> torch.Tensor:
    """(N,) `feature_table` rows of points (N, 3) on their device: the small part of the
    mapping (8 bytes a point), which training computes on the host and sends to the
    device, where ``table.index_select(0, rows)`` gathers the (N, C) features."""
    _check_grid(cameras, grid, patch_size)
    visible, uv, patch = project_device(points, cameras, transforms, int(patch_size))
    sizes = torch.tensor([[c.width, c.height] for c in cameras], device=points.device)
    return point_rows(patch, choose_view_device(visible, uv, sizes, view, seed), grid)


def map_point_features(points: torch.Tensor, maps: Sequence[torch.Tensor],
                       cameras: Sequence[CameraModel],
                       transforms: Sequence[np.ndarray | Transform], patch_size: int,
                       view: str = "random", seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point features (N, C) and visible mask (N,) on the points' device.

    `maps[k]` is camera k's (C, h_k, w_k) patch map (zero-padded into one table; moved
    to the points' device if elsewhere), `cameras[k]` the camera scaled to the ViT input.
    """
    # CPU: one intra-op thread, as the numpy reference (fit3d_ros.threads; measured 2x
    # slower with 2 threads on shared cores)
    with cpu_threads(1 if points.device.type == "cpu" else None):
        table, grid = feature_table(maps, points.device)
        rows = map_rows(points, cameras, transforms, patch_size, grid, view, seed)
        return torch.index_select(table, 0, rows), rows < table.shape[0] - 1

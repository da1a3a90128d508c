"""Multi-view correspondence recall (the Probe3D protocol as used by Splat-and-Distill).

Design note: for a pair of held-out RGB-D views (a, b) the depth images are sampled on a
pixel grid (`point_stride`) and back-projected to world points with the depth camera's
intrinsics and pose; each point gets the dense feature at the pixel where it projects
into its own colour image (bilinear in the patch map — so unregistered colour/depth, as
in 7-Scenes, is handled). Only points co-visible in the other view count (inside its
colour image and passing a depth-consistency test against its depth image). Points of a
and b are matched by mutual nearest neighbours in cosine similarity with Lowe's ratio
test (d₁ < ratio·d₂ on distances between unit features); a match is correct when a's
world point, projected into b's colour camera with the ground-truth pose, lands within
`threshold_px` of b's matched point. Recall = correct / proposed matches, pooled over
pairs, overall and binned by the relative rotation between the views.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fit3d_ros.training.fit3d.scenes import SceneView, project_to_color, world_points

ANGLE_BINS = ((0.0, 15.0), (15.0, 30.0), (30.0, 60.0), (60.0, 180.0))


@dataclass
class ViewPoints:
    """Depth-grid points of one view: world xyz (M,3) and colour-image pixels (M,2)."""

    xyz: np.ndarray
    uv: np.ndarray


def view_points(view: SceneView, stride: int) -> ViewPoints:
    """Back-projected depth grid points that land inside the view's own colour image."""
    xyz, _ = world_points(view, stride)
    uv, z = project_to_color(view, xyz)
    ok = view.color_camera.in_image(uv, z)
    return ViewPoints(xyz[ok], uv[ok])


def visible_in(view: SceneView, xyz: np.ndarray, tolerance: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """(mask, colour pixels) of world points seen by `view`: inside its colour image and
    within `tolerance` (relative) of its depth image, i.e. not occluded."""
    uv, z = project_to_color(view, xyz)
    ok = view.color_camera.in_image(uv, z)
    T = np.linalg.inv(view.T_world_depth)
    pd = xyz.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    uvd, zd = view.depth_camera.project(pd)
    ok &= view.depth_camera.in_image(uvd, zd)
    px = np.floor(np.nan_to_num(uvd)).astype(np.int64)
    px[:, 0] = px[:, 0].clip(0, view.depth_camera.width - 1)
    px[:, 1] = px[:, 1].clip(0, view.depth_camera.height - 1)
    d = view.depth[px[:, 1], px[:, 0]]
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(d) & (np.abs(zd - d) <= tolerance * d)
    return ok, uv


def sample_features(fmap: torch.Tensor, uv: np.ndarray, width: int, height: int
                    ) -> torch.Tensor:
    """Bilinear samples (M,C) of a patch map (C,h,w) covering a width×height image at
    continuous pixel coordinates `uv` (pixel i spans [i, i+1))."""
    g = torch.from_numpy(uv).float()
    g = torch.stack([2 * g[:, 0] / width - 1, 2 * g[:, 1] / height - 1], -1)
    out = F.grid_sample(fmap[None].float(), g[None, None], mode="bilinear",
                        padding_mode="border", align_corners=False)
    return out[0, :, 0].T.contiguous()


def mutual_matches(fa: torch.Tensor, fb: torch.Tensor, ratio: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (ia, ib) of mutual nearest neighbours in cosine similarity that pass the
    ratio test d₁ < ratio·d₂ (Euclidean distance between unit vectors)."""
    if fa.shape[0] == 0 or fb.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    a, b = F.normalize(fa.double(), dim=1), F.normalize(fb.double(), dim=1)
    sim = a @ b.T
    nn_ab = sim.argmax(1)
    nn_ba = sim.argmax(0)
    ia = torch.arange(a.shape[0])
    keep = nn_ba[nn_ab] == ia
    if b.shape[0] >= 2:
        top = sim.topk(2, dim=1).values
        d = torch.sqrt((2 - 2 * top).clamp_min(0))
        keep &= d[:, 0] < ratio * d[:, 1]
    return ia[keep], nn_ab[keep]


def covisible_points(va: SceneView, vb: SceneView, stride: int, tolerance: float
                     ) -> tuple[ViewPoints, ViewPoints]:
    """Depth-grid points of a and of b (in that order) that the other view also sees."""
    pa, pb = view_points(va, stride), view_points(vb, stride)
    vis_a, _ = visible_in(vb, pa.xyz, tolerance)
    vis_b, _ = visible_in(va, pb.xyz, tolerance)
    return (ViewPoints(pa.xyz[vis_a], pa.uv[vis_a]),
            ViewPoints(pb.xyz[vis_b], pb.uv[vis_b]))


def score_points(pa: ViewPoints, pb: ViewPoints, vb: SceneView, fmap_a: torch.Tensor,
                 fmap_b: torch.Tensor, size_a: tuple[int, int], size_b: tuple[int, int],
                 ratio: float, threshold_px: float) -> tuple[int, int]:
    """Match co-visible points by their features and check them with b's true pose."""
    fa = sample_features(fmap_a, pa.uv, *size_a)
    fb = sample_features(fmap_b, pb.uv, *size_b)
    return score_matches(pa, pb, vb, fa, fb, ratio, threshold_px)


def score_matches(pa: ViewPoints, pb: ViewPoints, vb: SceneView, fa: torch.Tensor,
                  fb: torch.Tensor, ratio: float, threshold_px: float) -> tuple[int, int]:
    """(correct, proposed) for per-point features `fa` (Ma,C) and `fb` (Mb,C)."""
    ia, ib = mutual_matches(fa, fb, ratio)
    if ia.numel() == 0:
        return 0, 0
    uv_true, _ = project_to_color(vb, pa.xyz[ia.numpy()])
    err = np.linalg.norm(uv_true - pb.uv[ib.numpy()], axis=1)
    return int((err < threshold_px).sum()), int(ia.numel())


def rotation_angle_deg(Ta: np.ndarray, Tb: np.ndarray) -> float:
    """Angle of the relative rotation between two camera->world poses (degrees)."""
    R = Ta[:3, :3].T @ Tb[:3, :3]
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def select_pairs(views: list[SceneView], max_pairs: int, stride: int, min_overlap: float,
                 tolerance: float) -> list[tuple[int, int, float, float]]:
    """Up to `max_pairs` pairs (i, j, angle°, overlap) whose co-visible share ≥
    `min_overlap`, spread evenly over the range of viewpoint changes."""
    pts = [view_points(v, stride * 2) for v in views]
    cands = []
    for i in range(len(views)):
        for j in range(i + 1, len(views)):
            if len(pts[i].xyz) == 0:
                continue
            ok, _ = visible_in(views[j], pts[i].xyz, tolerance)
            overlap = float(ok.mean())
            if overlap >= min_overlap:
                cands.append((i, j, rotation_angle_deg(views[i].T_world_color,
                                                       views[j].T_world_color), overlap))
    cands.sort(key=lambda c: (c[2], c[0], c[1]))
    if len(cands) <= max_pairs:
        return cands
    pick = np.unique(np.linspace(0, len(cands) - 1, max_pairs).round().astype(int))
    return [cands[k] for k in pick]


def bin_name(angle: float) -> str:
    for lo, hi in ANGLE_BINS:
        if lo <= angle < hi or (hi == ANGLE_BINS[-1][1] and angle == hi):
            return f"{lo:g}-{hi:g}deg"
    raise ValueError(f"angle {angle} outside 0..180")


def correspondence_recall(views: list[SceneView], fmaps: dict[str, list[torch.Tensor]],
                          pairs: list[tuple[int, int, float, float]], stride: int,
                          ratio: float, threshold_px: float, tolerance: float
                          ) -> dict[str, object]:
    """Recall per feature model (``fmaps[name][view]`` = (C,h,w)), overall and per bin."""
    totals = {name: np.zeros(2, np.int64) for name in fmaps}
    bins: dict[str, dict[str, np.ndarray]] = {}
    for i, j, angle, _ in pairs:
        b = bins.setdefault(bin_name(angle), {n: np.zeros(2, np.int64) for n in fmaps})
        va, vb = views[i], views[j]
        pa, pb = covisible_points(va, vb, stride, tolerance)  # the same for every model
        for name, maps in fmaps.items():
            c = np.array(score_points(pa, pb, vb, maps[i], maps[j], va.color_camera.size,
                                      vb.color_camera.size, ratio, threshold_px))
            totals[name] += c
            b[name] += c

    def rec(c: np.ndarray) -> float | None:
        return None if c[1] == 0 else float(c[0] / c[1])

    key = f"recall@{threshold_px:g}px"
    return {key: {n: rec(c) for n, c in totals.items()}, "pairs": len(pairs),
            "matches": {n: int(c[1]) for n, c in totals.items()},
            "bins": {k: {"pairs": sum(1 for p in pairs if bin_name(p[2]) == k),
                         **{n: rec(c) for n, c in v.items()}} for k, v in sorted(bins.items())}}

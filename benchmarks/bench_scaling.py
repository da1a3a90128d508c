"""How the per-frame / per-scene point work grows with points (CPU): 25k → 200k.

Design note: each stage is timed at 25k, 50k, 100k and 200k points (median of a few
runs after a warm-up; the fast stages and their "before" paths in turns, so both see the
same load on a shared machine) and the ratio for 2× points is printed; the target is ≤ 2.5
(about linear). Stages: the Gaussian scale initialisation (3-NN, `training.fit3d.knn`)
and its voxel downsampling, the U-Net voxelisation (`models.voxels.voxelize`) and the
DITR mapping on the six-camera nuScenes rig (`models.mapping.point_features_from_maps`,
which runs `models.mapping_device`). The "before" paths run in the same process, side
by side: the chunked ``torch.cdist`` 3-NN (quadratic, only up to 50k), voxel
downsampling by ``torch.unique(dim=0)`` and the numpy mapping reference
(`project_points` + `gather_point_features`). Points are synthetic (a noisy ground
plane with walls, like a LiDAR sweep), seeded.
Usage: ``python benchmarks/bench_scaling.py [--json] [--repeats N] [--threads N]``.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Callable

import numpy as np
import torch

from bench_models import timed as best_ms  # sibling script (on sys.path when run)

from fit3d_ros.models.mapping import (
    gather_point_features,
    point_features_from_maps,
    project_points,
)
from fit3d_ros.models.voxels import voxelize
from fit3d_ros.sensors import CameraModel
from fit3d_ros.training.fit3d.gaussians import voxel_downsample
from fit3d_ros.training.fit3d.knn import knn_mean_sq_dist

SIZES = (25_000, 50_000, 100_000, 200_000)


def cloud(n: int, seed: int = 0) -> np.ndarray:
    """Ground plane (60 %) and two walls, 40 m around the origin, 2 cm noise."""
    rng = np.random.default_rng(seed)
    g, w = int(n * 0.6), n - int(n * 0.6)
    ground = np.c_[rng.uniform(-40, 40, (g, 2)), np.full(g, -1.7)]
    wall = np.c_[rng.uniform(-40, 40, w), np.where(rng.random(w) < 0.5, -8.0, 12.0),
                 rng.uniform(-1.7, 3.0, w)]
    return (np.r_[ground, wall] + rng.normal(0, 0.02, (n, 3))).astype(np.float64)


def rig() -> tuple[list[CameraModel], list[np.ndarray]]:
    """Six 518x294 cameras around the vertical axis (the nuScenes ring at ViT size)."""
    cams = [CameraModel(K=[[260, 0, 259], [0, 260, 147], [0, 0, 1]], width=518, height=294)] * 6
    Ts = []
    for k in range(6):
        a = 2 * np.pi * k / 6
        R = np.array([[np.cos(a), -np.sin(a), 0], [0, 0, -1], [np.sin(a), np.cos(a), 0]])
        Ts.append(np.vstack([np.c_[R, np.zeros(3)], [0, 0, 0, 1]]))
    return cams, Ts


def interleaved_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each function, timed in turns (new and before see the same load)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def knn_cdist_before(xyz: torch.Tensor, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """The previous scale init: chunked cdist against all points (O(N^2))."""
    out = torch.empty(xyz.shape[0], dtype=xyz.dtype)
    for s in range(0, xyz.shape[0], chunk):
        d = torch.cdist(xyz[s:s + chunk], xyz)
        out[s:s + chunk] = (d.topk(k + 1, dim=1, largest=False).values[:, 1:] ** 2).mean(1)
    return out


def downsample_unique_rows_before(xyz: torch.Tensor, voxel: float) -> torch.Tensor:
    keys = torch.floor(xyz / voxel).to(torch.int64)
    _, inverse, counts = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    return torch.zeros(counts.numel(), 3, dtype=torch.float64).index_add_(
        0, inverse, xyz.double()) / counts[:, None]


def run(repeats: int, quadratic_max: int = 50_000) -> dict[str, dict[str, float]]:
    cams, Ts = rig()
    maps = [torch.randn(384, 21, 37) for _ in cams]
    stack = torch.stack(maps)
    res: dict[str, dict[str, float]] = {}
    for n in SIZES:
        pts = cloud(n)
        p32 = torch.from_numpy(pts).float()
        rgb = torch.rand(n, 3)
        pt = torch.from_numpy(pts)
        r = {"scale_init_knn_ms": best_ms(lambda: knn_mean_sq_dist(p32), repeats)}
        r.update(interleaved_ms({  # fast stages: 3x the repeats, new/before in turns
            "voxel_downsample_ms": lambda: voxel_downsample(p32, rgb, 0.05),
            "voxel_downsample_unique_rows_before_ms": lambda: downsample_unique_rows_before(
                p32, 0.05),
            "voxelize_ms": lambda: voxelize(pt, 0.05),
            "mapping_ms": lambda: point_features_from_maps(pt, maps, cams, Ts, 14,
                                                           view="center"),
            "mapping_numpy_before_ms": lambda: gather_point_features(
                project_points(pts, cams, Ts, 14), stack, view="center"),
        }, 3 * repeats))
        if n <= quadratic_max:
            r["scale_init_cdist_before_ms"] = best_ms(lambda: knn_cdist_before(p32), 1)
        res[str(n)] = r
        print(json.dumps({"points": n, **{k: round(v, 1) for k, v in r.items()}}), flush=True)
    return res


def ratios(res: dict[str, dict[str, float]]) -> dict[str, list[float]]:
    """Per stage, time(2n) / time(n) for consecutive sizes."""
    out: dict[str, list[float]] = {}
    sizes = [str(n) for n in SIZES]
    for key in res[sizes[0]]:
        vals = [res[s][key] for s in sizes if key in res[s]]
        out[key] = [round(b / a, 2) for a, b in zip(vals, vals[1:])]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    res = run(a.repeats)
    rat = ratios(res)
    linear = {k: max(v) <= 2.5 for k, v in rat.items() if v and "before" not in k}
    out = {"ms": res, "ratio_2x": rat, "linear_ok": linear, "threads": torch.get_num_threads(),
           "load_avg_1min": round(os.getloadavg()[0], 2)}
    print(json.dumps(out) if a.json else json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

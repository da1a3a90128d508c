"""Semantic map costs: integration per 100k points at two cloud sizes (linear growth),
locate / locate_feature query time, memory per million voxels.

    python benchmarks/bench_map.py [--json] [--device cpu] [--threads 1]

Clouds are synthetic LiDAR-like scans (points on a floor, walls and a few boxes, 19
classes, 5 cm range noise) moved by a random pose each frame, integrated into one
0.1 m map that already holds earlier frames (the steady state of a running node).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fit3d_ros.mapping import MapConfig, VoxelMap, locate, locate_feature


def scan(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(xyz, labels): a 40 m x 40 m room surface sample with boxes, in its own frame."""
    kind = rng.integers(0, 3, n)
    xyz = rng.uniform(-20, 20, (n, 3))
    xyz[kind == 0, 2] = 0.0                                   # floor
    walls = kind == 1
    xyz[walls, 0] = np.where(rng.random(walls.sum()) < 0.5, -20.0, 20.0)
    xyz[walls, 2] = rng.uniform(0, 3, walls.sum())
    boxes = kind == 2                                        # 16 boxes of 1 m
    centre = rng.integers(0, 16, boxes.sum())
    xyz[boxes] = np.stack([centre % 4 * 8 - 12, centre // 4 * 8 - 12, np.full_like(centre, 0.5)],
                          1) + rng.uniform(-0.5, 0.5, (boxes.sum(), 3))
    labels = kind.copy()
    labels[boxes] = 2 + centre % 17
    return xyz + rng.normal(0, 0.05, xyz.shape), labels


def pose(rng: np.random.Generator) -> np.ndarray:
    m, yaw = np.eye(4), rng.uniform(-0.1, 0.1)
    m[:2, :2] = [[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]]
    m[:2, 3] = rng.uniform(-0.5, 0.5, 2)
    return m


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def integrate_ms(n: int, device: str, frames: int = 8) -> float:
    """Median ms of integrating an n-point scan into a map holding earlier scans."""
    rng = np.random.default_rng(0)
    vmap = VoxelMap([f"c{i}" for i in range(19)], MapConfig(voxel_size=0.1, device=device))
    for _ in range(3):  # warm-up: the map already holds the scene
        vmap.integrate(*scan(n, rng), 0, T_map_points=pose(rng))
    times = []
    for i in range(frames):
        xyz, lab = scan(n, rng)
        conf = rng.uniform(0.5, 1, n).astype(np.float32)
        m = pose(rng)
        sync(device)
        t = time.perf_counter()
        vmap.integrate(xyz, lab, i + 1, confidence=conf, T_map_points=m)
        sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def memory_per_million(device: str, feature_dim: int) -> tuple[float, int]:
    """(MB per million voxels, voxels) of a map of ~1M distinct voxels, 19 classes."""
    rng = np.random.default_rng(1)
    vmap = VoxelMap([f"c{i}" for i in range(19)], MapConfig(voxel_size=0.1, device=device))
    for _ in range(5):
        xyz = rng.uniform(-50, 50, (250_000, 3))
        feats = rng.normal(size=(len(xyz), feature_dim)) if feature_dim else None
        vmap.integrate(xyz, rng.integers(0, 19, len(xyz)), 0, features=feats)
    return vmap.nbytes() / len(vmap) * 1e6 / 2**20, len(vmap)


def query_ms(device: str) -> dict[str, float]:
    rng = np.random.default_rng(2)
    vmap = VoxelMap([f"c{i}" for i in range(19)], MapConfig(voxel_size=0.1, device=device))
    for i in range(10):
        xyz, lab = scan(100_000, rng)
        feats = np.eye(32)[lab % 32] + rng.normal(0, 0.1, (len(lab), 32))
        vmap.integrate(xyz, lab, i, features=feats, T_map_points=pose(rng))
    out = {"voxels": len(vmap)}
    for name, fn in (("locate_box_class", lambda: locate(vmap, "c5", min_points=5)),
                     ("locate_floor", lambda: locate(vmap, "c0", min_points=5)),
                     ("locate_feature", lambda: locate_feature(vmap, np.eye(32)[5]))):
        fn()
        times = []
        for _ in range(5):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append((time.perf_counter() - t) * 1e3)
        out[f"{name}_ms"] = float(np.median(times))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    res: dict = {"device": args.device, "threads": args.threads}
    for n in (100_000, 400_000):
        ms = integrate_ms(n, args.device)
        res[f"integrate_{n // 1000}k_ms"] = ms
        res[f"integrate_{n // 1000}k_ms_per_100k"] = ms * 1e5 / n
    res["growth_400k_over_100k"] = res["integrate_400k_ms"] / res["integrate_100k_ms"]
    res.update(query_ms(args.device))
    for c in (0, 48):
        mb, nvox = memory_per_million(args.device, c)
        res[f"mb_per_million_voxels_feat{c}"] = mb
    res["memory_map_voxels"] = nvox
    if args.json:
        print(json.dumps(res))
        return
    for k, v in res.items():
        print(f"{k:>36}: {v:.2f}" if isinstance(v, float) else f"{k:>36}: {v}")


if __name__ == "__main__":
    main()

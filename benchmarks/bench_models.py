"""Benchmark the models: ViT-S forward, DITR mapping, sparse U-Net with/without injection.

Design note: every number is the median of a few timed runs after one warm-up (the two
U-Nets alternate run by run, so machine load hits both alike), on
whatever device torch sees (CPU here), in inference mode. Weights are a seeded random
init (the cost is the same as pretrained weights). The mapping uses the shared nuScenes
sample's six real cameras with its LiDAR sweep tiled to 100k points; the U-Net runs on
the shared KITTI scan at 0.05 m voxels with Pointcept's SpUNet-v1m1 defaults, once
3D-only and once with DITR injection of ViT-S-width (384) features gathered from the
front camera, in the same run, so the ratio compares like with like.
Usage: ``python benchmarks/bench_models.py [--json] [--repeats N] [--threads N]``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fit3d_ros.logs.lidar_datasets import read_kitti_object, read_nuscenes
from fit3d_ros.models import (
    SpUNet,
    SpUNetConfig,
    build_backbone,
    gather_point_features,
    input_size,
    project_points,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FIT3D_ROS_DATA", ROOT.parent / "shared" / "data"))


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in milliseconds over `repeats` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def timed_pair(a: Callable[[], object], b: Callable[[], object],
               repeats: int) -> tuple[float, float]:
    """Median ms of `a` and of `b`, run alternately (a shared CPU's load hits both alike)."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        for fn, out in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ta), statistics.median(tb)


def bench_vit(repeats: int) -> dict[str, float]:
    net = build_backbone("dinov2_small", pretrained=False)
    out = {}
    with torch.inference_mode():
        for side in (224, 518):
            x = torch.rand(1, 3, side, side)
            out[f"vit_s_{side}_ms"] = timed(lambda: net(x), repeats)
    return out


def _nuscenes():
    sample = read_nuscenes(DATA / "nuscenes")
    names = sorted(sample.T_cam_lidar)
    return (sample.lidar.xyz, [sample.cameras[n].camera for n in names],
            [sample.T_cam_lidar[n] for n in names])


def bench_mapping(repeats: int, n_points: int = 100_000) -> dict[str, float]:
    pts, cams, Ts = _nuscenes()
    if len(cams) != 6:
        raise RuntimeError(f"expected 6 nuScenes cameras, got {len(cams)}")
    reps = -(-n_points // len(pts))
    rng = np.random.default_rng(0)
    tiled = np.tile(pts, (reps, 1))[:n_points] + rng.normal(0, 0.02, (n_points, 3))
    h, w = input_size(cams[0].height, cams[0].width, 14, 37 * 37)  # DITR's ViT input
    vit_cams = [c.scaled(w, h) for c in cams]
    maps = torch.randn(6, 384, h // 14, w // 14)
    proj = project_points(tiled, vit_cams, Ts, 14)
    visible = float(proj.visible_any().mean())

    def run():
        p = project_points(tiled, vit_cams, Ts, 14)
        gather_point_features(p, maps, view="random")

    return {"mapping_100k_6cam_ms": timed(run, repeats),
            "mapping_project_ms": timed(lambda: project_points(tiled, vit_cams, Ts, 14), repeats),
            "mapping_visible_fraction": visible, "mapping_points": n_points}


def _kitti():
    frame = next(read_kitti_object(DATA / "kitti/object", ["000000"]))
    scan = np.c_[frame.cloud.xyz, frame.cloud.intensity].astype(np.float32)
    return scan, frame.camera, frame.T_cam_velo


def bench_unet(repeats: int) -> dict[str, float]:
    scan, cam, T = _kitti()
    xyz = torch.from_numpy(scan[:, :3])
    feats = torch.cat([xyz - xyz.mean(dim=0), torch.from_numpy(scan[:, 3:])], dim=1)
    h, w = input_size(cam.height, cam.width, 14, 37 * 37)
    proj = project_points(scan[:, :3], [cam.scaled(w, h)], [T], 14)
    f2d, vis = gather_point_features(proj, torch.randn(1, 384, h // 14, w // 14))
    torch.manual_seed(0)
    plain = SpUNet(SpUNetConfig(in_channels=4, voxel_size=0.05)).eval()
    torch.manual_seed(0)
    inject = SpUNet(SpUNetConfig(in_channels=4, voxel_size=0.05, inject_2d=True,
                                 feat_2d_dim=384)).eval()
    with torch.inference_mode():
        t3d, tinj = timed_pair(lambda: plain(xyz, feats),
                               lambda: inject(xyz, feats, feat_2d=f2d, visible_2d=vis), repeats)
        voxels = plain(xyz, feats).voxels.num_voxels
    return {"unet_points": len(xyz), "unet_voxels": voxels,
            "unet_visible_fraction": float(vis.float().mean()),
            "unet_3d_ms": t3d, "unet_injection_ms": tinj, "injection_ratio": tinj / t3d}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not DATA.is_dir():
        print(f"shared data not found at {DATA} (set FIT3D_ROS_DATA)", file=sys.stderr)
        return 2
    result: dict[str, object] = {"device": "cpu", "torch_threads": torch.get_num_threads()}
    result.update(bench_vit(args.repeats))
    result.update(bench_mapping(args.repeats))
    result.update(bench_unet(args.repeats))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value:.3f}" if isinstance(value, float) else f"{key:28s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

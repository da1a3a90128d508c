"""Conversion benchmark: 100k-point PointCloud2 and 640x480 images, both directions.

Usage: ``python benchmarks/bench_convert.py [--json] [--repeat N] [--flavour rosbags|rclpy]``.
Prints the median milliseconds per operation (``--json``: one JSON object). The cloud
is a real KITTI scan (first 100k points of ../shared/data/kitti/object/velodyne/000000.bin)
when present, random points otherwise; images are random pixels.
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

from fit3d_ros.msgs import (cloud_to_pointcloud2, depth_to_image, image_to_depth,
                            image_to_rgb, numpy_to_image, pointcloud2_to_cloud,
                            pointcloud2_to_numpy, rclpy_types, rosbags_types)
from fit3d_ros.sensors import PointCloud

N_POINTS = 100_000
DATA = Path(os.environ.get("FIT3D_ROS_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
KITTI = DATA / "kitti/object/velodyne/000000.bin"


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _cloud() -> tuple[PointCloud, str]:
    if KITTI.is_file():
        pts = np.fromfile(KITTI, dtype="<f4").reshape(-1, 4)[:N_POINTS]
        source = "kitti/000000.bin"
    else:
        pts = np.random.default_rng(0).normal(size=(N_POINTS, 4)).astype(np.float32)
        source = "random"
    return PointCloud(0, "velodyne", pts[:, :3], intensity=pts[:, 3]), source


def run(repeat: int, flavour: str) -> dict:
    types = rosbags_types() if flavour == "rosbags" else rclpy_types()
    cloud, source = _cloud()
    pc2 = cloud_to_pointcloud2(cloud, types)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 8.0, size=(480, 640)).astype(np.float32)
    rgb_msg = numpy_to_image(rgb, "rgb8", 0, "camera", types)
    depth_msg = depth_to_image(depth, 0, "camera", types)
    ops = {
        "pointcloud2_to_numpy": lambda: pointcloud2_to_numpy(pc2),
        "pointcloud2_to_cloud": lambda: pointcloud2_to_cloud(pc2),
        "cloud_to_pointcloud2": lambda: cloud_to_pointcloud2(cloud, types),
        "rgb8_to_numpy": lambda: image_to_rgb(rgb_msg),
        "numpy_to_rgb8": lambda: numpy_to_image(rgb, "rgb8", 0, "camera", types),
        "16UC1_to_depth": lambda: image_to_depth(depth_msg),
        "depth_to_16UC1": lambda: depth_to_image(depth, 0, "camera", types),
    }
    return {"flavour": flavour, "points": len(cloud), "cloud_source": source,
            "image": "640x480", "repeat": repeat,
            "ms": {name: round(_median_ms(fn, repeat), 3) for name, fn in ops.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=20, help="timed runs per op (median)")
    parser.add_argument("--flavour", choices=("rosbags", "rclpy"), default="rosbags")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    result = run(args.repeat, args.flavour)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['points']} points ({result['cloud_source']}), 640x480 images, "
              f"{result['flavour']} messages, median of {args.repeat}:")
        for name, ms in result["ms"].items():
            print(f"  {name:24s} {ms:8.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())

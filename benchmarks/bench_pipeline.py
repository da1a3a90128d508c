"""Node pipeline vs bare model calls, replay I/O share, and a soak run.

    python benchmarks/bench_pipeline.py [--json] [--frames 10] [--soak-seconds 60]
    python benchmarks/bench_pipeline.py --hostile [--rounds 10] [--json]

1. ROS overhead: the segmentation_node (a real process, rclpy over DDS on loopback) is
   fed the shared KITTI frames one at a time; the time from publishing a frame to
   receiving its labelled cloud is compared with the bare pipeline calls (decode +
   Segmenter) on the same frames in this process. Goal: overhead <= 10 %.
2. Replay: the I/O share (bag read + write) of `fit3d-ros replay` on the same bag.
   Goal: < 5 %.
3. Soak: `fit3d-ros play --loop` at 10 Hz into the node for --soak-seconds; the node's
   resident memory at start and end.
4. --hostile (only): a burst of hostile clouds into the node (`bench_hostile`): good
   frames answered during it and the node's RSS floor before / after.
The model is the tiny DITR test checkpoint with a random ViT-S at a 256-token budget
(random weights: timings only).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fit3d_ros.logs.bag import BagReader
from fit3d_ros.logs.convert import kitti_to_bag
from fit3d_ros.logs.scene_io import read_transform_buffer
from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import Checkpoint, Preprocessing, save_checkpoint
from fit3d_ros.models.classes import semantickitti_classes
from fit3d_ros.msgs import camera_info_to_model, image_to_rgb, pointcloud2_to_cloud
from fit3d_ros.nodes.common import prefer_large_data_transport
from fit3d_ros.pipeline.replay import ReplayConfig, replay_bag
from fit3d_ros.pipeline.segmenter import Segmenter, ViewInput

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FIT3D_ROS_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "test"))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _checkpoint(tmp: Path) -> Path:
    torch.manual_seed(0)
    cfg = SpUNetConfig.tiny(in_channels=4, num_classes=19, inject_2d=True, feat_2d_dim=384,
                            voxel_size=0.1)
    spec = BackboneSpec(name="dinov2_small", random_init=True, token_budget=256, view="center")
    return save_checkpoint(tmp / "bench.ckpt", Checkpoint(
        "segmentation", cfg, SpUNet(cfg).state_dict(),
        Preprocessing(cfg.voxel_size, ("xyz", "intensity"), spec), semantickitti_classes()))


def bare_ms(bag: Path, ckpt: Path, frames: int) -> float:
    """Median ms of decode + Segmenter per frame, in-process."""
    seg = Segmenter(ckpt, view="center")
    buf = read_transform_buffer(bag)
    with BagReader(bag) as b:
        msgs = {m.topic: m.msg for m in b.messages()}
    times = []
    for i in range(frames + 1):
        t0 = time.perf_counter()
        cloud = pointcloud2_to_cloud(msgs["/velodyne_points"])
        cam = camera_info_to_model(msgs["/camera/color/camera_info"])
        rgb = image_to_rgb(msgs["/camera/color/image_raw"])
        T = buf.lookup(cam.frame_id, cloud.frame_id, cloud.stamp).matrix
        seg(cloud, [ViewInput(rgb, cam, T, key=("cam", i))])
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times[1:]))


def node_ms(bag: Path, ckpt: Path, extr: Path, frames: int, env: dict
            ) -> tuple[float, subprocess.Popen, Any, Any]:
    """Median ms from publishing a frame to receiving its labelled cloud; the node process,
    and the probe's rclpy context and executor (left running for :func:`soak`)."""
    import rclpy  # optional: ROS only for the node benchmarks
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    proc = subprocess.Popen(
        [sys.executable, "-m", "fit3d_ros.nodes.segmentation_node", "--ros-args",
         "-p", f"checkpoint:={ckpt}", "-p", "cameras:=['/camera/color']",
         "-p", "cloud_topic:=/velodyne_points", "-p", f"extrinsics_file:={extr}",
         "-p", "qos:=reliable"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    node = rclpy.create_node("bench", context=ctx)
    with BagReader(bag) as b:
        raw = {t: bytes(d) for t, _, _, _, d in b.raw_messages(
            ["/velodyne_points", "/camera/color/image_raw", "/camera/color/camera_info"])}
    pubs = {t: node.create_publisher(c, t, 10) for t, c in
            (("/velodyne_points", PointCloud2), ("/camera/color/image_raw", Image),
             ("/camera/color/camera_info", CameraInfo))}
    got: list[float] = []
    node.create_subscription(PointCloud2, "/segmentation_node/segmentation",
                             lambda m: got.append(time.perf_counter()), 10)
    from std_msgs.msg import String  # optional: ROS only
    inside: list[dict] = []
    node.create_subscription(String, "/segmentation_node/latency_ms",
                             lambda m: inside.append(json.loads(m.data)), 10)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    times = []
    try:
        deadline = time.monotonic() + 120
        while not got and time.monotonic() < deadline:  # warm-up: discovery + first frame
            for t in ("/camera/color/camera_info", "/camera/color/image_raw", "/velodyne_points"):
                pubs[t].publish(raw[t])
            for _ in range(20):
                ex.spin_once(timeout_sec=0.05)
        for _ in range(frames):
            got.clear()
            time.sleep(0.2)
            t0 = time.perf_counter()
            pubs["/camera/color/image_raw"].publish(raw["/camera/color/image_raw"])
            pubs["/velodyne_points"].publish(raw["/velodyne_points"])
            while not got and time.perf_counter() - t0 < 60:
                ex.spin_once(timeout_sec=0.01)
            if got:
                times.append((got[0] - t0) * 1e3)
        for _ in range(20):
            ex.spin_once(timeout_sec=0.01)
        if os.environ.get("BENCH_DEBUG"):
            print("node stages (ms):", inside[-3:], file=sys.stderr)
    except BaseException:
        rclpy.shutdown(context=ctx)
        raise
    # the probe stays subscribed (ctx kept alive) so the soak run really segments
    return float(np.median(times)) if times else float("nan"), proc, ctx, ex


def soak(bag: Path, proc: subprocess.Popen, seconds: float, env: dict, ex,
         every_s: float = 10.0) -> dict:
    """Play the bag in a loop into the node while the probe keeps receiving; sample the
    node's RSS every `every_s` so a leak (a rising floor) is told from the sawtooth of
    per-frame buffers being allocated and freed."""
    from sensor_msgs.msg import PointCloud2  # optional: ROS only

    start = _rss_mb(proc.pid)
    received = {"n": 0}
    node = next(iter(ex.get_nodes()))
    node.create_subscription(PointCloud2, "/segmentation_node/segmentation",
                             lambda m: received.__setitem__("n", received["n"] + 1), 10)
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [ex.spin_once(timeout_sec=0.1)
                                               for _ in iter(stop.is_set, True)], daemon=True)
    spinner.start()
    player = subprocess.Popen([sys.executable, "-m", "fit3d_ros.cli", "play", str(bag),
                               "--loop", "--duration", str(seconds), "--delay", "1"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True)
    samples: list[tuple[float, float]] = []
    t0 = time.monotonic()
    while player.poll() is None:
        time.sleep(min(every_s, 1.0))
        if not samples or time.monotonic() - t0 - samples[-1][0] >= every_s:
            samples.append((time.monotonic() - t0, _rss_mb(proc.pid)))
    out, _ = player.communicate()
    stop.set()
    spinner.join(5)
    end = _rss_mb(proc.pid)
    played = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    rss = np.array([r for _, r in samples]) if samples else np.array([end])
    third = max(1, len(rss) // 3)
    # a leak raises the floor: compare the minima of the first and last thirds
    return {"seconds": seconds, "rss_start_mb": round(start, 1), "rss_end_mb": round(end, 1),
            "rss_min_mb": round(float(rss.min()), 1), "rss_max_mb": round(float(rss.max()), 1),
            "rss_floor_first_third_mb": round(float(rss[:third].min()), 1),
            "rss_floor_last_third_mb": round(float(rss[-third:].min()), 1),
            "rss_samples": [[round(t), round(r)] for t, r in samples],
            "node_alive": proc.poll() is None, "messages_played": played.get("published"),
            "clouds_segmented": received["n"]}


def _hostile(env: dict, args) -> int:
    from bench_hostile import run  # benchmarks/ sibling (run as a script)
    from nodes.fixtures import tiny_checkpoint  # test helpers (test/ is on sys.path)
    from nodes.rosutil import ros_context, start, stop

    with tempfile.TemporaryDirectory() as tmpd:
        r = run(Path(tmpd), env, start, stop, ros_context, tiny_checkpoint, _rss_mb,
                args.rounds)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"hostile burst ({r['rounds']} rounds of 1M-point, 1e30, all-NaN, overlapping-"
              f"field and 10 future-stamped clouds, {r['burst_s']} s): good frames answered "
              f"{r['good_answered']}/{r['good_sent']}; node RSS floor "
              f"{r['rss_floor_before_mb']} -> {r['rss_floor_after_mb']} MB; alive "
              f"{r['node_alive']}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--soak-seconds", type=float, default=60.0)
    ap.add_argument("--hostile", action="store_true", help="only the hostile-input burst")
    ap.add_argument("--rounds", type=int, default=10, help="hostile rounds")
    args = ap.parse_args()
    from nodes.fixtures import extrinsics_yaml  # test helpers: importable once test/ is on sys.path

    prefer_large_data_transport()  # as the nodes do
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(1, 200)),
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    os.environ.update(env)
    if args.hostile:
        return _hostile(env, args)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        bag = tmp / "kitti.mcap"
        kitti_to_bag(DATA / "kitti" / "object", bag, frames=["000000"])
        soak_bag = tmp / "kitti10hz.mcap"  # both frames; play --loop gives ~10 Hz
        kitti_to_bag(DATA / "kitti" / "object", soak_bag)
        ckpt, extr = _checkpoint(tmp), extrinsics_yaml(bag, tmp / "extr.yaml")
        bare = bare_ms(bag, ckpt, args.frames)
        node, proc, ctx, ex = node_ms(bag, ckpt, extr, args.frames, env)
        try:
            soaked = soak(soak_bag, proc, args.soak_seconds, env, ex)
        finally:
            import rclpy  # optional: ROS only
            for n in list(ex.get_nodes()):  # a node left in an executor crashes shutdown
                ex.remove_node(n)
            rclpy.shutdown(context=ctx)
            proc.terminate()
            proc.wait(10)
        metrics = replay_bag(soak_bag, tmp / "replay", ReplayConfig(checkpoint=str(ckpt)))
    result = {"bare_ms": round(bare, 1), "node_ms": round(node, 1),
              "ros_overhead": round(node / bare - 1, 4), "replay_io_share":
              round(metrics["io_share"], 4), "replay_wall_s": round(metrics["wall_s"], 2),
              "soak": soaked, "frames": args.frames}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"bare pipeline {bare:.1f} ms/frame, node end-to-end {node:.1f} ms/frame: "
              f"ROS overhead {100 * result['ros_overhead']:.1f} % (goal <= 10 %)")
        print(f"replay I/O share {100 * result['replay_io_share']:.1f} % (goal < 5 %)")
        print(f"soak {soaked['seconds']:.0f} s: node RSS {soaked['rss_start_mb']} -> "
              f"{soaked['rss_end_mb']} MB (range {soaked['rss_min_mb']}-"
              f"{soaked['rss_max_mb']}; floor first third {soaked['rss_floor_first_third_mb']}"
              f", last third {soaked['rss_floor_last_third_mb']}), alive "
              f"{soaked['node_alive']}, {soaked['clouds_segmented']} clouds segmented")
        print("RSS samples [s, MB]:", soaked["rss_samples"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

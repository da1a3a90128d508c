"""Hostile burst against a real segmentation_node (``bench_pipeline.py --hostile``).

An image-free tiny checkpoint, default limits (max_points 262144, max_range_m 250). The
node's RSS floor is sampled after warm-up good frames, then `rounds` times: a hostile
cloud (1M points, a 1e30 point cloud, overlapping fields, 10 future stamps, all-NaN)
followed by one good frame; it reports good frames answered / sent and the RSS floor
after the burst.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fit3d_ros.msgs import cloud_to_pointcloud2, rclpy_types
from fit3d_ros.sensors import PointCloud


def _clouds(types, n_good: int = 100_000):
    rng = np.random.default_rng(0)
    good = PointCloud(0, "lidar", rng.uniform(-40, 40, (n_good, 3)).astype(np.float32),
                      intensity=np.zeros(n_good, np.float32))
    huge = PointCloud(0, "lidar", rng.uniform(-40, 40, (1_000_000, 3)).astype(np.float32),
                      intensity=np.zeros(1_000_000, np.float32))
    far = PointCloud(0, "lidar", good.xyz * np.float32(1e30), intensity=good.intensity)
    nan = PointCloud(0, "lidar", np.full((1000, 3), np.nan, np.float32),
                     intensity=np.zeros(1000, np.float32))
    overlap = cloud_to_pointcloud2(good, types)
    for f in overlap.fields[:3]:
        f.offset = 0
    return good, [cloud_to_pointcloud2(c, types) for c in (huge, far, nan)] + [overlap]


def hostile(node_proc, ctx, probe, rss_mb, rounds: int = 10) -> dict:
    """Run the burst against `node_proc` (segmentation_node on `points`, image_free)."""
    import rclpy  # optional: only the ROS benchmarks need it
    from sensor_msgs.msg import PointCloud2

    types = rclpy_types()
    got: list = []
    pub = probe.create_publisher(PointCloud2, "points", 10)
    probe.create_subscription(PointCloud2, "/segmentation_node/segmentation", got.append, 10)
    ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
    ex.add_node(probe)
    good, bad = _clouds(types)

    def spin(seconds: float, until=lambda: False) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not until():
            ex.spin_once(timeout_sec=0.05)

    def send_good(stamp: int) -> bool:
        before = len(got)
        good.stamp = stamp
        pub.publish(cloud_to_pointcloud2(good, types))
        spin(30, lambda: len(got) > before)
        return len(got) > before

    spin(60, lambda: pub.get_subscription_count() > 0)
    stamp = time.time_ns()
    for _ in range(3):
        stamp += 10**8
        send_good(stamp)
    floor_before = min(rss_mb(node_proc.pid) for _ in range(5) if spin(0.2) is None)
    answered = 0
    t0 = time.perf_counter()
    for r in range(rounds):
        for msg in bad:
            stamp += 10**8
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
            pub.publish(msg)
        for k in range(10):
            msg = cloud_to_pointcloud2(good, types)
            msg.header.stamp.sec = stamp // 10**9 + 3600 + k
            pub.publish(msg)
        stamp += 10**8
        answered += send_good(stamp)
    wall = time.perf_counter() - t0
    spin(3)
    floor_after = min(rss_mb(node_proc.pid) for _ in range(5) if spin(0.2) is None)
    ex.remove_node(probe)
    return {"rounds": rounds, "good_answered": answered, "good_sent": rounds,
            "rss_floor_before_mb": round(floor_before), "rss_floor_after_mb": round(floor_after),
            "node_alive": node_proc.poll() is None, "burst_s": round(wall, 1)}


def run(tmp: Path, env: dict, start, stop, ros_context, tiny_checkpoint, rss_mb,
        rounds: int = 10) -> dict:
    ckpt = tiny_checkpoint(tmp / "free.ckpt", inject=False)
    proc = start(["-m", "fit3d_ros.nodes.segmentation_node", "--ros-args", "-p",
                  f"checkpoint:={ckpt}", "-p", "mode:=image_free", "-p", "throttle_s:=1.0"],
                 env)
    try:
        import rclpy  # optional: only the ROS benchmarks need it

        with ros_context(int(env["ROS_DOMAIN_ID"])) as ctx:
            probe = rclpy.create_node("hostile_bench", context=ctx)
            return hostile(proc, ctx, probe, rss_mb, rounds)
    finally:
        stop(proc)

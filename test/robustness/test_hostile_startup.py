"""The README's start command as written, and the default input QoS measured over DDS
(issue 17 items 6 and 7)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from fit3d_ros.msgs import cloud_to_pointcloud2, rclpy_types  # noqa: E402
from fit3d_ros.sensors import PointCloud  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nodes.fixtures import tiny_checkpoint  # noqa: E402
from nodes.rosutil import diagnostic_counts, ros_context, spin_until, start, stop  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import PointCloud2

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _wait_output(proc, text: str, timeout: float) -> bool:
    threads, (out, err) = proc.fit3d_drain  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if text in "".join(out) + "".join(err):
            return True
        time.sleep(0.2)
    return text in "".join(out) + "".join(err)


def test_readme_start_command_works_as_written(tmp_path, ros_env):
    readme = (ROOT / "README.md").read_text()
    assert "`perception --ros-args --params-file config/perception.yaml -p\ncheckpoint:=SEG.ckpt`" \
        in readme
    ckpt = tiny_checkpoint(tmp_path / "SEG.ckpt")
    exe = Path(sys.executable).parent / "perception"
    proc = start(["--ros-args", "--params-file", "config/perception.yaml",
                  "-p", f"checkpoint:={ckpt}"], ros_env, executable=str(exe), cwd=str(ROOT))
    try:
        ready = _wait_output(proc, "segmentation_node ready", 120)
    finally:
        log = stop(proc)
    assert ready, log[-3000:]
    assert "is required" not in log


def test_default_qos_receives_a_reliable_drivers_large_clouds(tmp_path, ros_env):
    """8 KITTI-sized clouds (120k points, 1.9 MB) from a reliable publisher (rclcpp's
    default, e.g. velodyne_pointcloud): the node's default QoS must receive all 8."""
    types = rclpy_types()
    ckpt = tiny_checkpoint(tmp_path / "free.ckpt", inject=False)
    proc = start(["-m", "fit3d_ros.nodes.segmentation_node", "--ros-args",
                  "-p", f"checkpoint:={ckpt}", "-p", "mode:=image_free"], ros_env)
    rng = np.random.default_rng(0)
    n = 120_000
    cloud = PointCloud(0, "lidar", rng.uniform(-40, 40, (n, 3)).astype(np.float32),
                       intensity=np.zeros(n, np.float32))
    diag: list = []
    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe = rclpy.create_node("qos_probe", context=ctx)
            pub = probe.create_publisher(PointCloud2, "points", 10)  # reliable, depth 10
            probe.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
            probe.create_subscription(PointCloud2, "/segmentation_node/segmentation",
                                      lambda m: None, 1)
            assert spin_until(ctx, probe, lambda: pub.get_subscription_count() > 0, 60, proc)
            spin_until(ctx, probe, lambda: False, 3, proc)  # the node's QoS check runs (1 s)
            for k in range(8):
                cloud.stamp = (k + 1) * 10**8
                pub.publish(cloud_to_pointcloud2(cloud, types))
                spin_until(ctx, probe, lambda: False, 0.1, proc)
            got = lambda: diagnostic_counts(diag, "segmentation_node").get("clouds_in", 0)  # noqa: E731
            spin_until(ctx, probe, lambda: got() >= 8, 30, proc)
            received = got()
    finally:
        log = stop(proc)
    assert received == 8, (received, log[-2000:])

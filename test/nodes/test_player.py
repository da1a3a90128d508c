"""`fit3d-ros play` publishes a converted KITTI bag over real DDS; a subscriber gets it intact."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from fit3d_ros.logs.convert import KITTI_TOPICS, kitti_to_bag  # noqa: E402
from fit3d_ros.logs.lidar_datasets import load_kitti_scan  # noqa: E402
from fit3d_ros.msgs import camera_info_to_model, image_to_rgb, pointcloud2_to_cloud  # noqa: E402

from fit3d_ros.nodes.player import PlayConfig  # noqa: E402
from fit3d_ros.nodes.player import play as play_bag  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from .rosutil import play, ros_context, spin_until, stop  # noqa: E402


@pytest.mark.ros
def test_play_kitti_bag_over_dds(shared_data, tmp_path, ros_env):
    kitti = shared_data / "kitti" / "object"
    bag = tmp_path / "kitti.mcap"
    kitti_to_bag(kitti, bag, frames=["000000"])
    proc = play(bag, ros_env, 400, delay=1)
    got: dict[str, object] = {}
    try:
        # spin_until detaches the node from its executor before the context shuts down
        # (a node still in an executor wakes it from destroy_node: rclpy segfaults)
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            node = rclpy.create_node("player_probe", context=ctx)
            node.create_subscription(PointCloud2, KITTI_TOPICS["cloud"],
                                     lambda m: got.setdefault("cloud", m), 10)
            node.create_subscription(Image, KITTI_TOPICS["image"],
                                     lambda m: got.setdefault("image", m), 10)
            node.create_subscription(CameraInfo, KITTI_TOPICS["info"],
                                     lambda m: got.setdefault("info", m), 10)
            node.create_subscription(Clock, "/clock", lambda m: got.setdefault("clock", m), 10)
            # includes the player's start-up (imports, bag, discovery): slow on a loaded CI
            spin_until(ctx, node, lambda: len(got) == 4, 300, proc)
    finally:
        log = stop(proc)
    assert set(got) == {"cloud", "image", "info", "clock"}, log[-2000:]

    scan = load_kitti_scan(kitti / "velodyne" / "000000.bin")
    cloud = pointcloud2_to_cloud(got["cloud"])
    np.testing.assert_array_equal(cloud.xyz, scan[:, :3])
    np.testing.assert_array_equal(cloud.intensity, scan[:, 3])
    rgb = np.asarray(PILImage.open(kitti / "image_2" / "000000.png").convert("RGB"))
    np.testing.assert_array_equal(image_to_rgb(got["image"]), rgb)
    cam = camera_info_to_model(got["info"])
    assert (cam.width, cam.height) == (rgb.shape[1], rgb.shape[0])
    clock_ns = got["clock"].clock.sec * 10**9 + got["clock"].clock.nanosec
    stamp = got["cloud"].header.stamp
    assert abs(clock_ns - (stamp.sec * 10**9 + stamp.nanosec)) < 10**9


def test_play_rejects_bad_rate(tmp_path):
    with pytest.raises(ValueError, match="rate"):
        play_bag(tmp_path / "missing.mcap", PlayConfig(rate=0))


@pytest.mark.ros
def test_loop_pauses_between_passes_of_a_one_stamp_bag(shared_data, tmp_path, ros_env):
    bag = tmp_path / "kitti.mcap"
    kitti_to_bag(shared_data / "kitti" / "object", bag, frames=["000000"])  # one stamp
    cfg = dict(loop=True, topics=[KITTI_TOPICS["info"]], clock=False, delay_s=0.0,
               duration_s=1.0)
    with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
        node = rclpy.create_node("player_under_test", context=ctx)
        try:
            no_gap = play_bag(bag, PlayConfig(**cfg, loop_gap_s=0.0), node)
            gap = play_bag(bag, PlayConfig(**cfg, loop_gap_s=0.25), node)
            fast = play_bag(bag, PlayConfig(**cfg, loop_gap_s=0.25, rate=2.0), node)
        finally:
            node.destroy_node()
    # one message per pass; the gap (log time, scaled by the rate) bounds the passes
    assert gap.published in (gap.loops, gap.loops + 1), gap
    assert 1 <= gap.loops <= 1.0 / 0.25 + 1
    assert 1 <= fast.loops <= 1.0 / 0.125 + 1
    assert no_gap.loops > 2 * (1.0 / 0.25 + 1)  # what the gap prevents: a tight loop

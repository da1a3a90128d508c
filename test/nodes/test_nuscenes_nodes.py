"""Six-camera nuScenes bag played into the composed perception executable (DITR mode)."""
from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from fit3d_ros.logs.convert import NUSCENES_LIDAR_TOPIC, nuscenes_to_bag  # noqa: E402
from fit3d_ros.logs.lidar_datasets import read_nuscenes  # noqa: E402
from fit3d_ros.msgs import features_from_msg, pointcloud2_to_cloud  # noqa: E402
from fit3d_ros.nodes.common import qos_from_name  # noqa: E402

from .fixtures import extrinsics_yaml, tiny_checkpoint  # noqa: E402
from .rosutil import play, ros_context, spin_until, start, stop  # noqa: E402
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String

pytestmark = pytest.mark.ros
CAMERAS = ["cam_front", "cam_front_right", "cam_back_right", "cam_back", "cam_back_left",
           "cam_front_left"]


def test_perception_on_played_nuscenes_bag(shared_data, tmp_path, ros_env):
    bag = tmp_path / "nuscenes.mcap"
    nuscenes_to_bag(shared_data / "nuscenes", bag)
    ckpt = tiny_checkpoint(tmp_path / "ditr.ckpt")
    extr = extrinsics_yaml(bag, tmp_path / "extr.yaml")
    cams = "[" + ",".join(f"'/{c}'" for c in CAMERAS) + "]"
    proc = start(["-m", "fit3d_ros.nodes.perception", "--ros-args",
                  "-p", f"checkpoint:={ckpt}", "-p", f"cameras:={cams}",
                  "-p", f"cloud_topic:={NUSCENES_LIDAR_TOPIC}", "-p", f"extrinsics_file:={extr}",
                  "-p", "image_topic:=/cam_front/image_raw", "-p", "qos:=reliable"], ros_env)
    player = play(bag, ros_env, 500)
    got: dict[str, list] = {"seg": [], "feat": [], "info": []}
    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe = rclpy.create_node("probe", context=ctx)
            probe.create_subscription(PointCloud2, "/segmentation_node/segmentation",
                                      got["seg"].append, 10)
            probe.create_subscription(Image, "/feature_node/features", got["feat"].append, 10)
            probe.create_subscription(String, "/feature_node/features/info", got["info"].append,
                                      qos_from_name("transient_local", 1))
            ok = spin_until(ctx, probe, lambda: len(got["seg"]) >= 2 and got["feat"]
                            and got["info"], 400, proc)
    finally:
        log = stop(proc) + stop(player)
    assert ok, log[-3000:]
    sample = read_nuscenes(shared_data / "nuscenes")
    lidar = sample.lidar
    seg = got["seg"][-1]
    assert seg.header.frame_id == lidar.frame_id
    assert seg.header.stamp.sec * 10**9 + seg.header.stamp.nanosec == lidar.stamp
    out = pointcloud2_to_cloud(seg)
    np.testing.assert_array_equal(out.xyz, lidar.finite().xyz)
    feat = got["feat"][-1]
    # channel-major 32FC1 (cv_bridge-safe for any C), reassembled with ~/features/info
    assert feat.header.frame_id == "cam_front_optical_frame" and feat.encoding == "32FC1"
    f = features_from_msg(feat, got["info"][-1].data)
    assert f.shape[2] == 48 and f.shape[0] * 48 == feat.height and f.shape[1] == feat.width
    assert np.isfinite(f).all() and np.abs(f).sum() > 0

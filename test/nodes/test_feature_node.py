"""feature_node as a real process over DDS: features, previews, bad input, start-up errors."""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from fit3d_ros.msgs import features_from_msg, numpy_to_image, rclpy_types  # noqa: E402

from .rosutil import ros_context, spin_until, start, stop  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from PIL import Image as PILImage  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

NODE = ["-m", "fit3d_ros.nodes.feature_node", "--ros-args", "-p", "backbone:=vit_tiny_test",
        "-p", "random_init:=true", "-p", "token_budget:=200", "-p", "qos:=reliable",
        "-p", "throttle_s:=0.5"]
pytestmark = pytest.mark.ros


def _rgb(shared_data) -> np.ndarray:
    return np.asarray(PILImage.open(shared_data / "kitti/object/image_2/000000.png").convert("RGB"))


def test_feature_node_publishes_features_and_survives_bad_input(shared_data, ros_env):
    rgb = _rgb(shared_data)
    types = rclpy_types()
    proc = start(NODE, ros_env)
    got: dict[str, list] = {"features": [], "pca": [], "diag": []}
    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            node = rclpy.create_node("probe", context=ctx)
            pub = node.create_publisher(Image, "/image", 10)
            node.create_subscription(Image, "/feature_node/features",
                                     got["features"].append, 10)
            node.create_subscription(Image, "/feature_node/features_pca", got["pca"].append, 10)
            node.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 10)
            good = numpy_to_image(rgb, "rgb8", 1_600_000_000_123_456_789, "cam_optical", types)
            bad = numpy_to_image(rgb, "rgb8", 1, "cam_optical", types)
            bad.encoding = "yuv422_yuy2"       # not a colour encoding we decode
            short = numpy_to_image(rgb, "rgb8", 2, "cam_optical", types)
            short.step = short.step + 3        # size/step mismatch

            def send() -> bool:
                pub.publish(bad)
                pub.publish(short)
                time.sleep(0.05)
                pub.publish(good)
                return bool(got["features"]) and bool(got["pca"])

            # includes the node's start-up (torch, timm): slow on a loaded machine
            assert spin_until(ctx, node, send, 300, proc), "no features received"

            def diag_counts() -> bool:
                for arr in got["diag"]:
                    for st in arr.status:
                        kv = {v.key: v.value for v in st.values}
                        if int(kv.get("bad_image", 0)) >= 2:
                            return True
                return False

            assert spin_until(ctx, node, diag_counts, 60, proc), "bad input not in diagnostics"
            assert proc.poll() is None, "node died on bad input"
    finally:
        log = stop(proc)
    msg = got["features"][-1]
    assert msg.header.frame_id == "cam_optical"
    assert msg.header.stamp.sec == 1_600_000_000 and msg.header.stamp.nanosec == 123_456_789
    assert msg.encoding == "32FC1", log  # channel-major: cv_bridge-safe for any C
    feats = features_from_msg(msg, 48)
    assert feats.shape[2] == 48 and feats.dtype == np.float32 and np.isfinite(feats).all()
    # aspect kept at about 200 patches of 14 px (KITTI is ~3.3:1)
    assert abs(feats.shape[1] / feats.shape[0] - rgb.shape[1] / rgb.shape[0]) < 0.6
    assert abs(feats.shape[0] * feats.shape[1] - 200) < 40
    pca = got["pca"][-1]
    assert pca.encoding == "rgb8" and (pca.height, pca.width) == feats.shape[:2]


@pytest.mark.parametrize("extra", [["-p", "backbone:=dinov2_small", "-p", "random_init:=false"],
                                   ["-p", "weights:=/nonexistent/vit.safetensors"]])
def test_feature_node_fails_at_startup_with_clear_error(ros_env, extra, tmp_path):
    proc = start(NODE + extra, ros_env)
    try:
        proc.wait(300)  # imports torch and timm first: slow on a loaded machine
    finally:
        log = stop(proc)
    assert proc.returncode == 1
    assert "start-up failed" in log


def test_feature_node_rejects_corrupt_weights(ros_env, tmp_path):
    bad = tmp_path / "vit.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    proc = start(NODE + ["-p", f"weights:={bad}"], ros_env)
    try:
        proc.wait(300)
    finally:
        log = stop(proc)
    assert proc.returncode == 1 and "start-up failed" in log and str(bad) in log

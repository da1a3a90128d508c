"""Real rclpy over DDS: one process publishes the converted KITTI cloud and image, another
receives them; the received conversions equal the source files exactly.

Both peers are subprocesses (the ROS wheels' .pth hook re-execs python with the library
path set), on a random ROS_DOMAIN_ID restricted to localhost (the `ros_env` fixture),
with reliable, transient-local QoS so a late subscriber still gets the samples.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

from fit3d_ros.logs.convert import kitti_to_bag

pytestmark = pytest.mark.ros

QOS = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2
    QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                     reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
""")

PUBLISHER = QOS + textwrap.dedent("""
    from fit3d_ros.logs.scene_io import read_camera_frames, read_clouds
    from fit3d_ros.msgs import cloud_to_pointcloud2, numpy_to_image, rclpy_types
    bag, seconds = sys.argv[1], float(sys.argv[2])
    types = rclpy_types()
    (cloud,) = read_clouds(bag, "/velodyne_points")
    (frame,) = read_camera_frames(bag, "/camera/color/image_raw", "/camera/color/camera_info",
                                  world_frame=None)
    cloud_msg = cloud_to_pointcloud2(cloud, types)
    image_msg = numpy_to_image(frame.rgb, "rgb8", frame.stamp, frame.frame_id, types)
    assert isinstance(cloud_msg, PointCloud2) and isinstance(image_msg, Image)
    rclpy.init()
    node = rclpy.create_node("fit3d_dds_test_pub")
    pubs = [(node.create_publisher(PointCloud2, "/velodyne_points", QOS), cloud_msg),
            (node.create_publisher(Image, "/camera/color/image_raw", QOS), image_msg)]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for pub, msg in pubs:
            pub.publish(msg)
        rclpy.spin_once(node, timeout_sec=1.0)
    node.destroy_node()
    rclpy.shutdown()
""")

SUBSCRIBER = QOS + textwrap.dedent("""
    from fit3d_ros.msgs import image_to_rgb, pointcloud2_to_cloud, stamp_to_ns
    out, seconds = sys.argv[1], float(sys.argv[2])
    got = {}
    def on_cloud(msg):
        got.setdefault("cloud", pointcloud2_to_cloud(msg))
    def on_image(msg):
        got.setdefault("image", (stamp_to_ns(msg.header.stamp), msg.header.frame_id,
                                 image_to_rgb(msg)))
    rclpy.init()
    node = rclpy.create_node("fit3d_dds_test_sub")
    node.create_subscription(PointCloud2, "/velodyne_points", on_cloud, QOS)
    node.create_subscription(Image, "/camera/color/image_raw", on_image, QOS)
    end = time.monotonic() + seconds
    while len(got) < 2 and time.monotonic() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_node()
    rclpy.shutdown()
    if len(got) < 2:
        print("received only", sorted(got), file=sys.stderr)
        sys.exit(3)
    c, (stamp, frame, rgb) = got["cloud"], got["image"]
    np.savez(out, xyz=c.xyz, intensity=c.intensity, cloud_stamp=c.stamp,
             cloud_frame=c.frame_id, rgb=rgb, image_stamp=stamp, image_frame=frame)
""")


def test_kitti_cloud_and_image_over_dds(shared_data, tmp_path, ros_env):
    if importlib.util.find_spec("rclpy") is None:
        pytest.skip("rclpy is not importable (install the 'ros' extra)")
    bag = tmp_path / "kitti.mcap"
    kitti_to_bag(shared_data / "kitti/object", bag, frames=["000000"])
    (tmp_path / "pub.py").write_text(PUBLISHER)
    (tmp_path / "sub.py").write_text(SUBSCRIBER)
    out = tmp_path / "received.npz"
    # generous windows: each peer imports rclpy/numpy first (slow on a loaded CI machine)
    sub = subprocess.Popen([sys.executable, str(tmp_path / "sub.py"), str(out), "240"],
                           env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    pub = subprocess.Popen([sys.executable, str(tmp_path / "pub.py"), str(bag), "300"],
                           env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        sub_out, sub_err = sub.communicate(timeout=300)
    finally:
        pub.terminate()
        try:
            pub_out, pub_err = pub.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            pub.kill()
            pub_out, pub_err = pub.communicate()
        if sub.poll() is None:
            sub.kill()
            sub.communicate()
    assert sub.returncode == 0, f"subscriber failed:\n{sub_err}\npublisher:\n{pub_err}"
    got = np.load(out)
    root = shared_data / "kitti/object"
    scan = np.fromfile(root / "velodyne/000000.bin", dtype=np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(got["xyz"], scan[:, :3])
    np.testing.assert_array_equal(got["intensity"], scan[:, 3])
    np.testing.assert_array_equal(got["rgb"], np.asarray(Image.open(root / "image_2/000000.png")
                                                         .convert("RGB")))
    stamp = 1_700_000_000 * 10 ** 9  # frame 0 of the synthetic 10 Hz clock
    assert int(got["cloud_stamp"]) == int(got["image_stamp"]) == stamp
    assert str(got["cloud_frame"]) == "velodyne"
    assert str(got["image_frame"]) == "camera_color_left_optical_frame"

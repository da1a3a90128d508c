"""segmentation_node as a real process: a played KITTI bag in, a labelled cloud out."""
from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from fit3d_ros.logs.convert import KITTI_TOPICS, kitti_to_bag  # noqa: E402
from fit3d_ros.logs.datasets import read_kitti_object  # noqa: E402
from fit3d_ros.msgs import (cloud_to_pointcloud2, model_to_camera_info,  # noqa: E402
                            numpy_to_image, pointcloud2_to_cloud, pointcloud2_to_numpy,
                            rclpy_types)
from fit3d_ros.pipeline.segmenter import Segmenter, ViewInput  # noqa: E402
from fit3d_ros.sensors import PointCloud  # noqa: E402

from .fixtures import extrinsics_yaml, tiny_checkpoint  # noqa: E402
from .rosutil import diagnostic_counts, play, ros_context, spin_until, start, stop  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from fit3d_ros.demo import scene as S
from fit3d_ros.demo.run import TOPICS, write_scene_bag

pytestmark = pytest.mark.ros


def _node_args(ckpt, extr=None) -> list[str]:
    """segmentation_node in ditr mode on the KITTI topics (no extrinsics file: `extr` None)."""
    return ["-m", "fit3d_ros.nodes.segmentation_node", "--ros-args",
            "-p", f"checkpoint:={ckpt}", "-p", "mode:=ditr", "-p", "cameras:=['/camera/color']",
            "-p", f"cloud_topic:={KITTI_TOPICS['cloud']}",
            *(["-p", f"extrinsics_file:={extr}"] if extr is not None else []),
            "-p", "qos:=reliable", "-p", "throttle_s:=0.2", "-p", "sync_slop_s:=0.05"]


def _kitti_probe(ctx, on_seg, on_diag):
    """A probe node publishing the KITTI cloud / image / CameraInfo topics and subscribed to
    the node's segmentation and /diagnostics; returns (node, cloud, image, info publishers)."""
    probe = rclpy.create_node("probe", context=ctx)
    pubs = [probe.create_publisher(cls, KITTI_TOPICS[key], 10)
            for cls, key in ((PointCloud2, "cloud"), (Image, "image"), (CameraInfo, "info"))]
    probe.create_subscription(PointCloud2, "/segmentation_node/segmentation", on_seg, 10)
    probe.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    return (probe, *pubs)


@pytest.fixture(scope="module")
def kitti_setup(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg_node")
    bag = tmp / "kitti.mcap"
    kitti_to_bag(shared_data / "kitti" / "object", bag, frames=["000000"])
    return bag, tiny_checkpoint(tmp / "ditr.ckpt"), extrinsics_yaml(bag, tmp / "extr.yaml")


def test_segmentation_node_labels_played_kitti_bag(shared_data, kitti_setup, ros_env):
    bag, ckpt, extr = kitti_setup
    node_proc = start(_node_args(ckpt, extr), ros_env)
    player = play(bag, ros_env, 500)
    got: list = []
    diag: list = []

    def done() -> bool:
        # The first frames may be segmented before the first CameraInfo arrives (camera
        # skipped, by design; DDS may match the camera_info reader seconds after the
        # cloud's): those frames are a prefix of the node's outputs, one
        # missing_camera_info each. Once a diagnostics snapshot shows more clouds_out than
        # missing_camera_info, that count M is final, and received output number k > M
        # (k <= the node's output number: DDS may lose early ones, never reorder) was
        # segmented with the camera.
        c = diagnostic_counts(diag, "segmentation_node")
        missing = c.get("missing_camera_info", 0)
        return c.get("clouds_out", 0) > missing and len(got) >= max(3, missing + 1)

    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe = rclpy.create_node("probe", context=ctx)
            probe.create_subscription(PointCloud2, "/segmentation_node/segmentation",
                                      got.append, 10)
            probe.create_subscription(DiagnosticArray, "/diagnostics", diag.append, 10)
            ok = spin_until(ctx, probe, done, 400, node_proc)
    finally:
        log = stop(node_proc) + stop(player)
    assert ok, (diagnostic_counts(diag), len(got), log[-3000:])
    msg = got[-1]
    fields = {f.name for f in msg.fields}
    assert {"x", "y", "z", "label", "confidence", "rgb"} <= fields
    frame = next(iter(read_kitti_object(shared_data / "kitti" / "object", frames=["000000"])))
    assert msg.header.frame_id == frame.cloud.frame_id
    assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == frame.cloud.stamp
    out = pointcloud2_to_cloud(msg)
    np.testing.assert_array_equal(out.xyz, frame.cloud.xyz)      # every (finite) point
    assert out.label.min() >= 0 and out.label.max() < 19
    # the node's labels equal the pipeline's on the same inputs (same checkpoint)
    seg = Segmenter(ckpt)
    T = frame.T_cam_velo.matrix
    direct = seg(frame.cloud, [ViewInput(frame.image.rgb, frame.camera, T)])
    assert np.mean(direct.labels == out.label) > 0.99
    conf = pointcloud2_to_numpy(msg)["confidence"]
    np.testing.assert_allclose(conf, direct.confidence, atol=1e-4)


def test_segmentation_node_survives_bad_input(shared_data, kitti_setup, ros_env):
    bag, ckpt, extr = kitti_setup
    frame = next(iter(read_kitti_object(shared_data / "kitti" / "object", frames=["000000"])))
    types = rclpy_types()
    proc = start(_node_args(ckpt, extr), ros_env)
    got: dict[str, list] = {"seg": [], "diag": []}
    stamp = frame.cloud.stamp
    small = frame.cloud.select(slice(0, None, 20))
    nan_cloud = PointCloud(stamp, small.frame_id, np.full((50, 3), np.nan, np.float32),
                           intensity=np.zeros(50))
    img = numpy_to_image(frame.image.rgb, "rgb8", stamp, frame.image.frame_id, types)
    wrong_size = numpy_to_image(frame.image.rgb[:100], "rgb8", stamp, frame.image.frame_id,
                                types)

    def counts() -> dict[str, int]:
        return diagnostic_counts(got["diag"], "segmentation_node")

    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe, pc_pub, im_pub, info_pub = _kitti_probe(ctx, got["seg"].append,
                                                           got["diag"].append)
            step = {"i": 0, "stage": "no_info", "seg_before_good": 0}

            def stage() -> str:
                # Each stage lasts until the node reports it on /diagnostics, never a fixed
                # number of frames: DDS may match the node's readers (camera_info included)
                # late, and the latest-wins worker skips frames when it is slower than the
                # sender (a fixed nan/wrong/good cycle can alias with its period).
                # no_info: good frames, no CameraInfo -> camera skipped, cloud still segmented
                # nan: CameraInfo from now on; an all-NaN cloud -> empty_cloud
                # wrong: a wrong-size image -> bad_image (the cloud is still segmented)
                # good: good frames until a segmentation arrives after the bad input
                c = counts()
                if step["stage"] == "no_info" and c.get("missing_camera_info", 0) >= 1:
                    step["stage"] = "nan"
                if step["stage"] == "nan" and c.get("empty_cloud", 0) >= 1:
                    step["stage"] = "wrong"
                if step["stage"] == "wrong" and c.get("bad_image", 0) >= 1:
                    step["stage"], step["seg_before_good"] = "good", len(got["seg"])
                return step["stage"]

            def send() -> bool:
                step["i"] += 1
                s = stamp + step["i"] * 10**8
                kind = stage()
                if kind != "no_info":
                    info_pub.publish(model_to_camera_info(frame.camera, s, frame.image.frame_id,
                                                          types))
                cloud = nan_cloud if kind == "nan" else small
                cloud.stamp = s
                im = wrong_size if kind == "wrong" else img
                im.header.stamp.sec, im.header.stamp.nanosec = divmod(s, 10**9)
                im_pub.publish(im)
                pc_pub.publish(cloud_to_pointcloud2(cloud, types))
                time.sleep(0.3)  # about one frame at a time
                stage()
                c = counts()
                return (step["stage"] == "good" and len(got["seg"]) > step["seg_before_good"]
                        and c.get("empty_cloud", 0) >= 1 and c.get("missing_camera_info", 0) >= 1
                        and c.get("bad_image", 0) >= 1)

            ok = spin_until(ctx, probe, send, 400, proc)
            alive = proc.poll() is None
    finally:
        log = stop(proc)
    assert ok, (counts(), step["stage"], log[-3000:])
    assert alive, log[-3000:]
    assert len(pointcloud2_to_cloud(got["seg"][-1])) == len(small)


def test_segmentation_node_needs_a_valid_checkpoint(ros_env, tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"junk")
    proc = start(["-m", "fit3d_ros.nodes.segmentation_node", "--ros-args",
                  "-p", f"checkpoint:={bad}"], ros_env)
    try:
        proc.wait(300)  # imports torch first: slow on a loaded machine
    finally:
        log = stop(proc)
    assert proc.returncode == 1 and "start-up failed" in log and "checkpoint" in log


def test_segmentation_node_rgbd_mode_on_demo_scene(tmp_path, ros_env):
    """rgbd mode: the depth image back-projected in its (registered) colour camera."""
    bag = write_scene_bag(tmp_path / "room.mcap", range(2), S.SceneConfig(frames=8))
    ckpt = tiny_checkpoint(tmp_path / "rgbd.ckpt", inject=True, features=("xyz",))
    proc = start(["-m", "fit3d_ros.nodes.segmentation_node", "--ros-args",
                  "-p", f"checkpoint:={ckpt}", "-p", "mode:=rgbd",
                  "-p", f"depth_topic:={TOPICS['depth']}",
                  "-p", f"depth_info_topic:={TOPICS['depth_info']}",
                  "-p", f"rgbd_image_topic:={TOPICS['image']}", "-p", "qos:=reliable"], ros_env)
    player = play(bag, ros_env, 500)
    got: list = []
    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe = rclpy.create_node("probe", context=ctx)
            probe.create_subscription(PointCloud2, "/segmentation_node/segmentation",
                                      got.append, 10)
            ok = spin_until(ctx, probe, lambda: bool(got), 400, proc)
    finally:
        log = stop(proc) + stop(player)
    assert ok, log[-3000:]
    cloud = pointcloud2_to_cloud(got[0])
    cam = S.camera_model(S.SceneConfig())
    assert got[0].header.frame_id == cam.frame_id
    # every pixel of the room has depth: one point per pixel, all in front of the camera
    assert len(cloud) == cam.width * cam.height and cloud.xyz[:, 2].min() > 0
    assert (cloud.label >= 0).all() and (cloud.label < 19).all()


def test_segmentation_node_reports_missing_transforms_and_unsynced_streams(
        shared_data, kitti_setup, ros_env):
    """No extrinsics: cameras are skipped with a transform error; clouds without images:
    an 'unsynchronised' warning. Both counted on /diagnostics, the node keeps running."""
    bag, ckpt, _ = kitti_setup
    frame = next(iter(read_kitti_object(shared_data / "kitti" / "object", frames=["000000"])))
    proc = start(_node_args(ckpt), ros_env)  # no extrinsics at all
    types = rclpy_types()
    small = frame.cloud.select(slice(0, None, 20))
    diag: list = []

    def counts() -> dict[str, int]:
        return diagnostic_counts(diag)

    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe, pc, im, info = _kitti_probe(ctx, lambda m: None, diag.append)
            step = {"i": 0}

            def send() -> bool:
                step["i"] += 1
                s = frame.cloud.stamp + step["i"] * 10**8
                small.stamp = s
                # synced pairs (no transform velodyne -> camera) until the node has said so;
                # a fixed count can end before DDS has matched the camera_info reader
                if counts().get("missing_transform", 0) < 1:
                    msg = numpy_to_image(frame.image.rgb, "rgb8", s, frame.image.frame_id, types)
                    info.publish(model_to_camera_info(frame.camera, s, frame.image.frame_id, types))
                    im.publish(msg)
                pc.publish(cloud_to_pointcloud2(small, types))  # later: clouds only
                time.sleep(0.2)
                c = counts()
                return c.get("missing_transform", 0) >= 1 and c.get("unsynchronised", 0) >= 1

            ok = spin_until(ctx, probe, send, 400, proc)
            alive = proc.poll() is None
    finally:
        log = stop(proc)
    assert ok, (counts(), log[-2000:])
    assert alive and "no transform" in log, log[-3000:]

"""CameraInfo, TF and stamps on rclpy and rosbags messages, with real KITTI / 7-Scenes
calibration and poses, and a rosbags CDR round trip."""
from __future__ import annotations

import numpy as np
import pytest

from fit3d_ros.msgs import (ConversionError, camera_info_to_model, header,
                            model_to_camera_info, ns_to_time, rclpy_types, rosbags_types,
                            rosbags_typestore, stamp_to_ns, tf_message_to_transforms,
                            transform_stamped_to_transform, transform_to_transform_stamped,
                            transforms_to_tf_message)
from fit3d_ros.sensors import CameraModel, Transform

RB = rosbags_types()


def kitti_calib(path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            key, values = line.split(":", 1)
            out[key] = np.array([float(v) for v in values.split()])
    return out


def test_camera_info_round_trip_kitti(shared_data, types):
    calib = kitti_calib(shared_data / "kitti/object/calib/000000.txt")
    P2 = calib["P2"].reshape(3, 4)
    R0 = calib["R0_rect"].reshape(3, 3)
    D = np.array([-0.3691481, 0.1968681, 0.001353473, 0.0005677587, -0.06770705])
    cam = CameraModel(K=P2[:, :3], width=1224, height=370, D=D, frame_id="cam2", R=R0, P=P2)
    msg = model_to_camera_info(cam, 1_234_567_890_123, "cam2", types)
    # ROS layout: row-major k, r, p
    np.testing.assert_array_equal(np.asarray(msg.k), P2[:, :3].ravel())
    np.testing.assert_array_equal(np.asarray(msg.p), P2.ravel())
    assert (msg.width, msg.height, msg.distortion_model) == (1224, 370, "plumb_bob")
    back = camera_info_to_model(msg)
    for name in ("K", "D", "R", "P"):
        np.testing.assert_allclose(getattr(back, name), getattr(cam, name), rtol=0, atol=1e-9)
    assert (back.width, back.height, back.frame_id) == (1224, 370, "cam2")
    assert stamp_to_ns(msg.header.stamp) == 1_234_567_890_123


def test_camera_info_without_distortion(types):
    cam = CameraModel(K=[[585, 0, 320], [0, 585, 240], [0, 0, 1]], width=640, height=480)
    msg = model_to_camera_info(cam, 0, "depth", types)
    np.testing.assert_array_equal(np.asarray(msg.d), np.zeros(5))
    np.testing.assert_array_equal(np.asarray(msg.r), np.eye(3).ravel())
    back = camera_info_to_model(msg)
    assert back.D is None
    uv, _ = back.project(np.array([[0.1, 0.2, 1.0]]))
    np.testing.assert_allclose(uv[0], [585 * 0.1 + 320, 585 * 0.2 + 240])


def test_camera_info_errors():
    cam = CameraModel(K=[[500, 0, 1], [0, 500, 1], [0, 0, 1]], width=4, height=3)
    msg = model_to_camera_info(cam, 0, "c", RB)
    msg.k = np.zeros(9)
    with pytest.raises(ConversionError, match="uncalibrated"):
        camera_info_to_model(msg)
    msg.k = np.ones(6)
    with pytest.raises(ConversionError, match="k has 6 values"):
        camera_info_to_model(msg)
    msg = model_to_camera_info(cam, 0, "c", RB)
    msg.binning_x = 2
    with pytest.raises(ConversionError, match="binning_x"):
        camera_info_to_model(msg)
    msg = model_to_camera_info(cam, 0, "c", RB)
    msg.width = 0
    with pytest.raises(ConversionError, match="size"):
        camera_info_to_model(msg)


def test_camera_info_cdr_round_trip():
    store = rosbags_typestore()
    cam = CameraModel(K=[[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]], width=640, height=480,
                      D=[0.1, -0.2, 0.0, 0.001, 0.0])
    raw = store.serialize_cdr(model_to_camera_info(cam, 99, "rgb", RB),
                              "sensor_msgs/msg/CameraInfo")
    back = camera_info_to_model(store.deserialize_cdr(raw, "sensor_msgs/msg/CameraInfo"))
    np.testing.assert_allclose(back.K, cam.K, atol=1e-9)
    np.testing.assert_allclose(back.D, cam.D, atol=1e-9)


def random_transforms(n: int, seed: int = 0) -> list[Transform]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        q = rng.normal(size=4)
        out.append(Transform.from_quat_trans(q, rng.normal(size=3) * 10, parent_frame="map",
                                             child_frame=f"f{i}", stamp=int(rng.integers(
                                                 0, 2 ** 31 * 10 ** 9))))
    return out


def test_transform_stamped_round_trip(types):
    rng = np.random.default_rng(0)  # replays random_transforms' draws: its quaternions
    for tf in random_transforms(50):
        q_in = rng.normal(size=4)
        rng.normal(size=3), rng.integers(0, 2 ** 31 * 10 ** 9)
        q_in /= np.linalg.norm(q_in)
        msg = transform_to_transform_stamped(tf, types)
        t, q = msg.transform.translation, msg.transform.rotation
        np.testing.assert_array_equal([t.x, t.y, t.z], tf.translation)
        q_msg = np.array([q.x, q.y, q.z, q.w])  # ROS order (x, y, z, w); q and -q are one rotation
        assert min(np.abs(q_msg - q_in).max(), np.abs(q_msg + q_in).max()) < 1e-9
        assert msg.header.frame_id == "map" and msg.child_frame_id == tf.child_frame
        back = transform_stamped_to_transform(msg)
        np.testing.assert_allclose(back.matrix, tf.matrix, rtol=0, atol=1e-9)
        assert (back.parent_frame, back.child_frame, back.stamp) == \
            (tf.parent_frame, tf.child_frame, tf.stamp)


def test_real_7scenes_pose_round_trip(shared_data, types):
    pose = np.loadtxt(shared_data / "rgbd/7scenes/frame-000000.pose.txt")
    # the 7-Scenes poses are not exactly orthonormal; project onto SO(3) first
    u, _, vt = np.linalg.svd(pose[:3, :3])
    pose[:3, :3] = u @ vt
    tf = Transform(pose, parent_frame="world", child_frame="kinect", stamp=5)
    back = transform_stamped_to_transform(transform_to_transform_stamped(tf, types))
    np.testing.assert_allclose(back.matrix, pose, rtol=0, atol=1e-9)


def test_tf_message_rosbags_and_cdr():
    tfs = random_transforms(5, seed=1)
    msg = transforms_to_tf_message(tfs, RB)
    store = rosbags_typestore()
    back = store.deserialize_cdr(store.serialize_cdr(msg, "tf2_msgs/msg/TFMessage"),
                                 "tf2_msgs/msg/TFMessage")
    got = tf_message_to_transforms(back)
    assert [t.child_frame for t in got] == [t.child_frame for t in tfs]
    for a, b in zip(got, tfs):
        np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-9)
        assert a.stamp == b.stamp


def test_tf_message_rclpy_flavour():
    types = rclpy_types()
    tfs = random_transforms(2)
    if types.TFMessage is None:  # no tf2_msgs wheel on PyPI
        with pytest.raises(ConversionError, match="tf2_msgs"):
            transforms_to_tf_message(tfs, types)
    else:
        got = tf_message_to_transforms(transforms_to_tf_message(tfs, types))
        np.testing.assert_allclose(got[1].matrix, tfs[1].matrix, atol=1e-9)


def test_tf_errors():
    msg = transform_to_transform_stamped(random_transforms(1)[0], RB)
    msg.transform.rotation.x = msg.transform.rotation.y = 0.0
    msg.transform.rotation.z = msg.transform.rotation.w = 0.0
    with pytest.raises(ConversionError, match="map<-f0"):
        transform_stamped_to_transform(msg)
    with pytest.raises(ConversionError, match="TFMessage"):
        tf_message_to_transforms(object())


def test_stamps_exact(types):
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789, -1):
        t = ns_to_time(ns, types)
        assert 0 <= t.nanosec < 10 ** 9 and t.sec * 10 ** 9 + t.nanosec == ns
        assert stamp_to_ns(t) == ns
    with pytest.raises(ConversionError, match="int32"):
        ns_to_time(2 ** 31 * 10 ** 9, types)
    h = header(123, "cam", types)
    assert h.frame_id == "cam" and stamp_to_ns(h.stamp) == 123
    with pytest.raises(ConversionError, match="nanosec"):
        stamp_to_ns(RB.Time(sec=0, nanosec=10 ** 9))

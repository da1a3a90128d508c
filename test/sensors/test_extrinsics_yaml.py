"""Extrinsics YAML: static_transform_publisher arguments (quaternion, yaw-pitch-roll, flags)
against explicit rotation matrices and tf2's setRPY quaternion formula; YAML round trip."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fit3d_ros.sensors import Transform, TransformBuffer
from fit3d_ros.sensors.extrinsics_yaml import (extrinsics_doc, from_static_transform_args,
                                               write_extrinsics)


def rx(a):
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def ry(a):
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def rz(a):
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


def set_rpy_quat(roll, pitch, yaw):
    """tf2::Quaternion::setRPY (half-angle product form), (x, y, z, w)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


def test_quaternion_arguments():
    # 120° about (1,1,1): x → y, y → z, z → x
    tf = from_static_transform_args("1 2 3 0.5 0.5 0.5 0.5 base_link camera")
    np.testing.assert_allclose(tf.rotation, [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-12)
    np.testing.assert_allclose(tf.translation, [1, 2, 3])
    assert (tf.parent_frame, tf.child_frame) == ("base_link", "camera")
    np.testing.assert_allclose(tf.apply(np.array([[1.0, 0, 0]])), [[1, 3, 3]])


@pytest.mark.parametrize("yaw,pitch,roll", [(0.3, -0.2, 1.1), (2.5, 0.7, -2.9), (0, 0, 0)])
def test_yaw_pitch_roll_arguments_follow_set_rpy(yaw, pitch, roll):
    tf = from_static_transform_args(["0.1", "0", "-4", yaw, pitch, roll, "a", "b"])
    np.testing.assert_allclose(tf.rotation, rz(yaw) @ ry(pitch) @ rx(roll), atol=1e-12)
    q = set_rpy_quat(roll, pitch, yaw)
    same = from_static_transform_args(f"0.1 0 -4 {' '.join(map(repr, q))} a b")
    np.testing.assert_allclose(same.matrix, tf.matrix, atol=1e-12)


def test_yaw_pitch_roll_order_and_axes():
    def moved(args, v):
        return from_static_transform_args(f"0 0 0 {args} a b").rotation @ np.array(v, float)
    h = math.pi / 2
    np.testing.assert_allclose(moved(f"{h} 0 0", [1, 0, 0]), [0, 1, 0], atol=1e-12)   # yaw
    np.testing.assert_allclose(moved(f"0 {h} 0", [1, 0, 0]), [0, 0, -1], atol=1e-12)  # pitch
    np.testing.assert_allclose(moved(f"0 0 {h}", [0, 1, 0]), [0, 0, 1], atol=1e-12)   # roll
    # fixed axes: roll first, then yaw (x stays x under roll, yaw takes it to y)
    np.testing.assert_allclose(moved(f"{h} 0 {h}", [1, 0, 0]), [0, 1, 0], atol=1e-12)


def test_flag_form_equals_positional_forms_and_defaults():
    ypr = from_static_transform_args("1 2 3 0.3 0.2 0.1 map odom")
    flags = from_static_transform_args("--x 1 --y=2 --z 3 --yaw 0.3 --pitch 0.2 --roll 0.1 "
                                       "--frame-id map --child-frame-id odom")
    np.testing.assert_allclose(flags.matrix, ypr.matrix, atol=1e-12)
    q = from_static_transform_args("0 0 0.5 0 0 0.7071067811865476 0.7071067811865476 a b")
    qf = from_static_transform_args("--z 0.5 --qz 0.7071067811865476 --qw 0.7071067811865476 "
                                    "--frame-id a --child-frame-id b")
    np.testing.assert_allclose(qf.matrix, q.matrix, atol=1e-12)
    ident = from_static_transform_args("--frame-id a --child-frame-id b")
    np.testing.assert_allclose(ident.matrix, np.eye(4))


@pytest.mark.parametrize("args, match", [
    ("--qx 1 --roll 1 --frame-id a --child-frame-id b", "not both"),
    ("--x 1 --frame a --child-frame-id b", "unknown"),
    ("--x 1 --frame-id a", "child"),
    ("--x", "needs a value"),
    ("1 2 3 a b", "takes"),
    ("1 2 3 0 0 0 0 a b", "zero quaternion"),
    ("1 2 nan 0 0 0 a b", "finite"),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        from_static_transform_args(args)


def test_yaml_mixes_entry_forms(tmp_path):
    path = tmp_path / "extrinsics.yaml"
    path.write_text(
        "transforms:\n"
        "  - 0 0 1.2 0 0 0 1 base_link velodyne\n"
        "  - [0.3, 0, 1.0, -1.5707963267948966, 0, -1.5707963267948966, base_link, camera]\n"
        "  - --x 2 --frame-id map --child-frame-id base_link\n"
        "  - {parent: base_link, child: imu, translation: [0, 0, 0.1], rpy: [0, 0, 0]}\n")
    buf = TransformBuffer.from_yaml(path)
    # REP-103 optical frame from yaw -90°, roll -90°: z forward → base x, x right → base -y
    cam = buf.lookup("base_link", "camera")
    np.testing.assert_allclose(cam.rotation, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(buf.lookup("map", "velodyne").translation, [2, 0, 1.2])
    assert buf.frames() == {"map", "base_link", "velodyne", "camera", "imu"}
    with pytest.raises(ValueError, match=r"transforms\[0\].*takes"):
        TransformBuffer.from_yaml({"transforms": ["1 2 base x"]})


def test_write_then_read_back_is_exact(tmp_path):
    rng = np.random.default_rng(3)
    tfs = []
    for i in range(5):
        q = rng.normal(size=4)
        tfs.append(Transform.from_quat_trans(q / np.linalg.norm(q), rng.normal(size=3) * 10,
                                             parent_frame="base_link", child_frame=f"s{i}"))
    path = write_extrinsics(tmp_path / "e.yaml", tfs, "from a test")
    assert path.read_text().startswith("# from a test\ntransforms:")
    buf = TransformBuffer.from_yaml(path)
    for tf in tfs:
        got = buf.lookup("base_link", tf.child_frame)
        np.testing.assert_allclose(got.matrix, tf.matrix, atol=1e-14)
    assert extrinsics_doc(tfs)["transforms"][0]["parent"] == "base_link"

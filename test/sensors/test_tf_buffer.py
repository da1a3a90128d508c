"""TransformBuffer: interpolation and chaining against closed-form poses, errors, YAML."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fit3d_ros.sensors import (ConnectivityException, ExtrapolationException,
                               LookupException, Transform, TransformBuffer, TransformError)

S = 1_000_000_000


def rotz(theta: float, trans=(0.0, 0.0, 0.0), **kw) -> Transform:
    q = [0.0, 0.0, math.sin(theta / 2), math.cos(theta / 2)]
    return Transform.from_quat_trans(q, trans, **kw)


def closed_rotz(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


@pytest.fixture
def robot() -> TransformBuffer:
    """map->odom static, odom->base_link moving (yaw 0..90 deg, x 0..2 m over 0..2 s),
    base_link->velodyne static, base_link->camera static."""
    buf = TransformBuffer(cache_time_s=10.0)
    buf.set_transform(Transform.from_quat_trans([0, 0, 0, 1], [10, 20, 0],
                                                parent_frame="map", child_frame="odom"),
                      static=True)
    for k in range(3):
        buf.set_transform(rotz(math.pi / 4 * k, (float(k), 0, 0), parent_frame="odom",
                               child_frame="base_link", stamp=k * S))
    buf.set_transform(Transform.from_quat_trans([0, 0, 0, 1], [0.5, 0, 1.5],
                                                parent_frame="base_link",
                                                child_frame="velodyne"), static=True)
    buf.set_transform(rotz(math.pi / 2, (0.2, 0.1, 0.3), parent_frame="base_link",
                           child_frame="camera"), static=True)
    return buf


def test_interpolation_linear_translation_and_slerp(robot):
    tf = robot.lookup("odom", "base_link", int(0.5 * S))
    np.testing.assert_allclose(tf.translation, [0.5, 0, 0], atol=1e-12)
    np.testing.assert_allclose(tf.rotation, closed_rotz(math.pi / 8), atol=1e-12)
    tf = robot.lookup("odom", "base_link", int(1.25 * S))  # between samples 1 and 2
    np.testing.assert_allclose(tf.translation, [1.25, 0, 0], atol=1e-12)
    np.testing.assert_allclose(tf.rotation, closed_rotz(math.pi / 4 * 1.25), atol=1e-12)
    assert (tf.parent_frame, tf.child_frame, tf.stamp) == ("odom", "base_link", int(1.25 * S))


def test_exact_sample_and_inverse_direction(robot):
    tf = robot.lookup("base_link", "odom", 2 * S)
    expected = np.eye(4)
    expected[:3, :3] = closed_rotz(math.pi / 2).T
    expected[:3, 3] = -closed_rotz(math.pi / 2).T @ [2, 0, 0]
    np.testing.assert_allclose(tf.matrix, expected, atol=1e-12)


def test_chain_through_common_ancestor(robot):
    t = int(1.0 * S)
    tf = robot.lookup("camera", "velodyne", t)
    # closed form: camera <- base_link <- velodyne, both static
    cam = np.eye(4)
    cam[:3, :3], cam[:3, 3] = closed_rotz(math.pi / 2), [0.2, 0.1, 0.3]
    velo = np.eye(4)
    velo[:3, 3] = [0.5, 0, 1.5]
    np.testing.assert_allclose(tf.matrix, np.linalg.inv(cam) @ velo, atol=1e-12)
    # map <- velodyne mixes static and timed edges
    p = robot.lookup("map", "velodyne", t).apply(np.array([[1.0, 0, 0]]))
    # velodyne (1,0,0) -> base (1.5,0,1.5) -> odom: rotz(45deg) + (1,0,0) -> map +(10,20,0)
    r = closed_rotz(math.pi / 4) @ [1.5, 0, 1.5] + [1, 0, 0] + [10, 20, 0]
    np.testing.assert_allclose(p[0], r, atol=1e-12)
    # and the point maps back
    back = robot.lookup("velodyne", "map", t).apply(p)
    np.testing.assert_allclose(back[0], [1, 0, 0], atol=1e-12)


def test_static_edges_ignore_time_and_latest_common(robot):
    a = robot.lookup("camera", "velodyne", 123)
    b = robot.lookup("camera", "velodyne", 10 ** 15)
    np.testing.assert_allclose(a.matrix, b.matrix)
    assert robot.lookup("camera", "velodyne").stamp == 0
    latest = robot.lookup("map", "camera")  # None -> newest common time = 2 s
    assert latest.stamp == 2 * S
    np.testing.assert_allclose(latest.matrix, robot.lookup("map", "camera", 2 * S).matrix)


def test_latest_common_time_is_min_of_newest():
    buf = TransformBuffer()
    for k in range(4):
        buf.set_transform(Transform.from_quat_trans([0, 0, 0, 1], [k, 0, 0], parent_frame="a",
                                                    child_frame="b", stamp=k * S))
    for k in range(3):
        buf.set_transform(Transform.from_quat_trans([0, 0, 0, 1], [0, k, 0], parent_frame="b",
                                                    child_frame="c", stamp=k * S))
    tf = buf.lookup("a", "c")
    assert tf.stamp == 2 * S
    np.testing.assert_allclose(tf.translation, [2, 2, 0])


def test_extrapolation_and_tolerance(robot):
    with pytest.raises(ExtrapolationException, match="after the newest"):
        robot.lookup("odom", "base_link", 2 * S + 1)
    with pytest.raises(ExtrapolationException, match="before the oldest"):
        robot.lookup("map", "velodyne", -1)
    assert not robot.can_transform("map", "base_link", 3 * S)
    tolerant = TransformBuffer(extrapolation_tolerance_s=0.1)
    tolerant.set_transforms([rotz(0.0, (0, 0, 0), parent_frame="odom", child_frame="b",
                                  stamp=S),
                             rotz(0.2, (1, 0, 0), parent_frame="odom", child_frame="b",
                                  stamp=2 * S)])
    held = tolerant.lookup("odom", "b", 2 * S + S // 20)  # 50 ms late: newest sample held
    np.testing.assert_allclose(held.translation, [1, 0, 0])
    with pytest.raises(ExtrapolationException):
        tolerant.lookup("odom", "b", 2 * S + S // 5)


def test_lookup_and_connectivity_errors(robot):
    with pytest.raises(LookupException, match="'nowhere' does not exist"):
        robot.lookup("map", "nowhere", 0)
    robot.set_transform(Transform.identity(parent_frame="world2", child_frame="other"),
                        static=True)
    with pytest.raises(ConnectivityException, match="disconnected"):
        robot.lookup("map", "other")
    assert issubclass(ConnectivityException, TransformError)
    assert issubclass(TransformError, LookupError)
    assert robot.frames() == {"map", "odom", "base_link", "velodyne", "camera", "world2",
                              "other"}
    assert robot.can_transform("map", "map")


def test_bad_transforms_rejected(robot):
    with pytest.raises(ValueError, match="loop"):
        robot.set_transform(Transform.identity(parent_frame="velodyne", child_frame="map"))
    with pytest.raises(ValueError, match="itself"):
        robot.set_transform(Transform.identity(parent_frame="a", child_frame="a"))
    with pytest.raises(ValueError, match="both frames"):
        robot.set_transform(Transform.identity(parent_frame="", child_frame="a"))


def test_cache_time_prunes_old_samples():
    buf = TransformBuffer(cache_time_s=1.0)
    for k in range(5):
        buf.set_transform(Transform.identity(parent_frame="odom", child_frame="base",
                                             stamp=k * S // 2))
    assert buf.can_transform("odom", "base", S)  # newest 2 s, keeps >= 1 s
    assert not buf.can_transform("odom", "base", S // 2)


def test_from_yaml_file_quaternion_and_rpy(tmp_path):
    path = tmp_path / "extrinsics.yaml"
    path.write_text(
        "transforms:\n"
        "  - {parent: base_link, child: velodyne, translation: [0.5, 0, 1.5],\n"
        "     rotation: [0, 0, 0.7071067811865476, 0.7071067811865476]}\n"
        "  - {parent: base_link, child: camera, translation: [0, 0, 1],\n"
        "     rpy: [-1.5707963267948966, 0, -1.5707963267948966]}\n")
    buf = TransformBuffer.from_yaml(path)
    tf = buf.lookup("base_link", "velodyne")
    np.testing.assert_allclose(tf.rotation, closed_rotz(math.pi / 2), atol=1e-12)
    # REP-103 optical frame: z forward -> base x, x right -> base -y, y down -> base -z
    cam = buf.lookup("base_link", "camera")
    np.testing.assert_allclose(cam.rotation, [[0, 0, 1], [-1, 0, 0], [0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(cam.translation, [0, 0, 1])
    assert buf.frames() == {"base_link", "velodyne", "camera"}


@pytest.mark.parametrize("doc, match", [
    ({}, "'transforms' list"),
    ({"transforms": [{"parent": "a", "translation": [0, 0, 0], "rpy": [0, 0, 0]}]}, "child"),
    ({"transforms": [{"parent": "a", "child": "b", "translation": [0, 0]}]}, "exactly one"),
    ({"transforms": [{"parent": "a", "child": "b", "translation": [0, 0],
                      "rpy": [0, 0, 0]}]}, "translation"),
    ({"transforms": [{"parent": "a", "child": "b", "rotation": [0, 0, 0, 0]}]}, "zero"),
])
def test_from_yaml_errors(doc, match):
    with pytest.raises(ValueError, match=match):
        TransformBuffer.from_yaml(doc)


def test_static_transforms_lists_only_static_edges():
    buf = TransformBuffer()
    buf.set_transform(Transform.from_quat_trans([0, 0, 0, 1], [1, 0, 0], parent_frame="base_link",
                                                child_frame="velodyne"), static=True)
    buf.set_transform(Transform.from_quat_trans([0, 0, 0, 1], [0, 2, 0], parent_frame="odom",
                                                child_frame="base_link", stamp=5))
    (only,) = buf.static_transforms()
    assert (only.parent_frame, only.child_frame) == ("base_link", "velodyne")
    np.testing.assert_array_equal(only.translation, [1, 0, 0])

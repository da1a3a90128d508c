"""CameraModel and Transform against hand-computed results."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from fit3d_ros.sensors import (
    CameraModel,
    PointCloud,
    Transform,
    matrix_to_quat,
    quat_to_matrix,
    slerp,
)

K7 = [[585.0, 0, 320.0], [0, 585.0, 240.0], [0, 0, 1]]  # 7-Scenes depth camera


def test_project_matches_hand_maths():
    cam = CameraModel(K=K7, width=640, height=480)
    uv, z = cam.project(np.array([[0.5, -0.25, 2.0], [0.0, 0.0, 1.0], [1.0, 1.0, -1.0]]))
    # u = fx * x / z + cx
    assert uv[0] == pytest.approx([585 * 0.25 + 320, 585 * -0.125 + 240])
    assert uv[1] == pytest.approx([320, 240])
    assert np.isnan(uv[2]).all() and z[2] == -1
    vis = cam.in_image(uv, z)
    assert vis.tolist() == [True, True, False]


def test_project_with_plumb_bob_distortion_by_hand():
    k1, k2, t1, t2, k3 = 0.1, -0.05, 0.001, 0.002, 0.01
    cam = CameraModel(K=[[500, 0, 300], [0, 400, 200], [0, 0, 1]], width=640, height=480,
                      D=[k1, k2, t1, t2, k3])
    x, y = 0.3, -0.2
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    xd = x * radial + 2 * t1 * x * y + t2 * (r2 + 2 * x * x)
    yd = y * radial + t1 * (r2 + 2 * y * y) + 2 * t2 * x * y
    uv, _ = cam.project(np.array([[x * 3, y * 3, 3.0]]))
    assert uv[0] == pytest.approx([500 * xd + 300, 400 * yd + 200], abs=1e-9)


def test_backproject_round_trip_on_real_depth(shared_data):
    depth = np.asarray(Image.open(shared_data / "rgbd/7scenes/frame-000000.depth.png"))
    depth_m = np.where(depth == 65535, 0, depth).astype(np.float32) / 1000.0
    cam = CameraModel(K=K7, width=640, height=480)
    pts, index = cam.backproject(depth_m)
    assert len(pts) == np.count_nonzero(depth_m > 0)
    uv, z = cam.project(pts)
    u, v = index % 640, index // 640
    np.testing.assert_allclose(uv[:, 0], u, atol=1e-3)
    np.testing.assert_allclose(uv[:, 1], v, atol=1e-3)
    np.testing.assert_allclose(z, depth_m.reshape(-1)[index], rtol=1e-6)


def test_backproject_rejects_wrong_shape():
    cam = CameraModel(K=K7, width=640, height=480)
    with pytest.raises(ValueError, match="depth shape"):
        cam.backproject(np.zeros((10, 10)))


def test_bad_intrinsics_raise():
    with pytest.raises(ValueError):
        CameraModel(K=np.zeros((3, 3)), width=640, height=480)
    with pytest.raises(ValueError):
        CameraModel(K=K7, width=0, height=480)


def test_quaternion_matrix_closed_forms():
    h = math.sqrt(0.5)
    # 90 degrees about z: x -> y
    R = quat_to_matrix([0, 0, h, h])
    np.testing.assert_allclose(R, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    # 180 degrees about x (w = 0 branch of Shepperd's method)
    q = matrix_to_quat(np.diag([1.0, -1.0, -1.0]))
    np.testing.assert_allclose(np.abs(q), [1, 0, 0, 0], atol=1e-15)


def test_quaternion_round_trips_random():
    rng = np.random.default_rng(0)
    for q in rng.normal(size=(200, 4)):
        q /= np.linalg.norm(q)
        R = quat_to_matrix(q)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        q2 = matrix_to_quat(R)
        assert q2[3] >= 0
        np.testing.assert_allclose(q2, q * np.sign(q[3]), atol=1e-12)
        np.testing.assert_allclose(quat_to_matrix(q2), R, atol=1e-12)


def test_quaternion_rejects_zero():
    with pytest.raises(ValueError):
        quat_to_matrix([0, 0, 0, 0])


def test_slerp_halfway_about_axis():
    h = math.sqrt(0.5)
    q = slerp([0, 0, 0, 1], [0, 0, h, h], 0.5)  # 0 -> 90 deg about z
    ang = math.radians(22.5)
    np.testing.assert_allclose(q, [0, 0, math.sin(ang), math.cos(ang)], atol=1e-12)


def test_composition_and_inverse():
    a = Transform.from_quat_trans([0, 0, math.sqrt(0.5), math.sqrt(0.5)], [1, 0, 0],
                                  parent_frame="map", child_frame="odom")
    b = Transform.from_quat_trans([0, 0, 0, 1], [0, 2, 0], parent_frame="odom",
                                  child_frame="base_link")
    ab = a @ b
    assert (ab.parent_frame, ab.child_frame) == ("map", "base_link")
    # point at base_link origin: odom (0,2,0) -> rotate 90 deg about z -> (-2,0,0) + (1,0,0)
    np.testing.assert_allclose(ab.apply(np.zeros((1, 3))), [[-1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose((ab @ ab.inverse()).matrix, np.eye(4), atol=1e-12)
    with pytest.raises(ValueError, match="cannot compose"):
        b @ a
    with pytest.raises(ValueError):
        Transform(np.full((4, 4), np.nan))


def test_rational_and_equidistant_distortion_by_hand():
    K = np.array([[400.0, 0, 300], [0, 410.0, 200], [0, 0, 1]])
    p = np.array([[0.3, -0.2, 1.5]])
    x, y = 0.3 / 1.5, -0.2 / 1.5
    r2 = x * x + y * y
    d = [0.1, -0.05, 0.001, 0.002, 0.01, 0.02, -0.01, 0.003]
    radial = (1 + d[0] * r2 + d[1] * r2**2 + d[4] * r2**3) / (1 + d[5] * r2 + d[6] * r2**2
                                                               + d[7] * r2**3)
    xd = x * radial + 2 * d[2] * x * y + d[3] * (r2 + 2 * x * x)
    yd = y * radial + d[2] * (r2 + 2 * y * y) + 2 * d[3] * x * y
    uv, _ = CameraModel(K, 640, 480, D=d, distortion_model="rational_polynomial").project(p)
    np.testing.assert_allclose(uv[0], [400 * xd + 300, 410 * yd + 200], atol=1e-9)
    k = [0.05, -0.01, 0.002, -0.001]
    theta = np.arctan(np.sqrt(r2))
    td = theta * (1 + k[0] * theta**2 + k[1] * theta**4 + k[2] * theta**6 + k[3] * theta**8)
    scale = td / np.sqrt(r2)
    uv, _ = CameraModel(K, 640, 480, D=k, distortion_model="equidistant").project(p)
    np.testing.assert_allclose(uv[0], [400 * x * scale + 300, 410 * y * scale + 200], atol=1e-9)
    with pytest.raises(ValueError, match="unsupported distortion model"):
        CameraModel(K, 640, 480, D=k, distortion_model="kannala_brandt")


def test_empty_cloud_keeps_column_widths():
    cloud = PointCloud(0, "v", np.full((2, 3), np.nan), feature=np.ones((2, 4)),
                       label=[1, 2]).finite()
    assert len(cloud) == 0 and cloud.feature.shape == (0, 4) and cloud.label.shape == (0,)

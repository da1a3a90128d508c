"""Projection maths against closed forms: rotations, EWA covariance, culling, SH."""
from __future__ import annotations

import math

import numpy as np
import torch

from fit3d_ros.kernels import projection
from fit3d_ros.kernels.projection import (
    ALPHA_MIN,
    EPS2D,
    covariance_3d,
    eval_sh,
    project_gaussians,
    quat_to_rotmat,
)
from fit3d_ros.sensors.transforms import quat_to_matrix

K = torch.tensor([[50.0, 0.0, 32.0], [0.0, 55.0, 24.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
W, H = 64, 48


def _project(means, scales=None, opacities=None, quats=None, viewmat=None, near=0.01):
    n = means.shape[0]
    quats = torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64) if quats is None else quats
    scales = torch.full((n, 3), 0.05, dtype=torch.float64) if scales is None else scales
    opacities = torch.full((n,), 0.8, dtype=torch.float64) if opacities is None else opacities
    viewmat = torch.eye(4, dtype=torch.float64) if viewmat is None else viewmat
    return project_gaussians(means, quats, scales, opacities, viewmat, K, W, H, near)


def test_quat_to_rotmat_matches_ros_quaternion_convention():
    q = torch.randn(20, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ours = quat_to_rotmat(q).numpy()
    for i in range(20):
        w, x, y, z = q[i].tolist()
        np.testing.assert_allclose(ours[i], quat_to_matrix([x, y, z, w]), atol=1e-12)


def test_covariance_is_rotated_squared_scales():
    q = torch.tensor([[math.cos(0.3), 0.0, 0.0, math.sin(0.3)]], dtype=torch.float64)
    s = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64)
    c, sn = math.cos(0.6), math.sin(0.6)  # rotation by 0.6 rad about z
    R = torch.tensor([[c, -sn, 0], [sn, c, 0], [0, 0, 1]], dtype=torch.float64)
    expected = R @ torch.diag(s[0] ** 2) @ R.T
    torch.testing.assert_close(covariance_3d(q, s)[0], expected, atol=1e-12, rtol=0)


def test_ewa_covariance_matches_autograd_jacobian_of_pinhole():
    g = torch.Generator().manual_seed(2)
    n = 6
    means = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) - 0.5,
                         torch.rand(n, generator=g, dtype=torch.float64) - 0.5,
                         2 + torch.rand(n, generator=g, dtype=torch.float64)], dim=-1)
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    scales = 0.02 + 0.1 * torch.rand(n, 3, generator=g, dtype=torch.float64)
    angle = 0.2  # camera rotated about y, translated
    view = torch.eye(4, dtype=torch.float64)
    view[:3, :3] = torch.tensor([[math.cos(angle), 0, math.sin(angle)], [0, 1, 0],
                                 [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64)
    view[:3, 3] = torch.tensor([0.1, -0.05, 0.3], dtype=torch.float64)
    proj = _project(means, scales, quats=quats, viewmat=view)
    assert proj.ids.numel() == n

    def pinhole(p_world):
        p = view[:3, :3] @ p_world + view[:3, 3]
        return torch.stack([K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]])

    for row, i in enumerate(proj.ids.tolist()):
        J = torch.autograd.functional.jacobian(pinhole, means[i])  # d pixel / d world
        cov3d = covariance_3d(quats[i:i + 1], scales[i:i + 1])[0]
        cov = J @ cov3d @ J.T + EPS2D * torch.eye(2, dtype=torch.float64)
        inv = torch.linalg.inv(cov)
        a, b, c = proj.conics[row].tolist()
        torch.testing.assert_close(torch.tensor([[a, b], [b, c]], dtype=torch.float64), inv,
                                   rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(proj.means2d[row], pinhole(means[i]), rtol=1e-12, atol=1e-9)
        # differently ordered float64 sums (BLAS matmul vs the kernel's): compare with a tolerance
        torch.testing.assert_close(proj.depths[row], (view[:3, :3] @ means[i] + view[:3, 3])[2],
                                   rtol=1e-12, atol=1e-12)


def test_jacobian_is_clamped_outside_1_3x_field_of_view():
    # x/z = 1.5 is beyond lim = (W - cx)/fx + 0.3 * W/(2 fx) = 0.832; the mean still projects
    # where it is, the Jacobian uses the clamped direction (gsplat / 3DGS convention).
    z, s = 4.0, 0.05
    means = torch.tensor([[1.5 * z, 0.0, z]], dtype=torch.float64)
    scales = torch.full((1, 3), s, dtype=torch.float64)
    opac = torch.ones(1, dtype=torch.float64)
    proj = project_gaussians(means, torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), scales,
                             opac, torch.eye(4, dtype=torch.float64), K, W, H, 0.01)
    # Off screen by far more than its radius -> culled; render it again on a wide image.
    assert proj.ids.numel() == 0
    fx, cx = float(K[0, 0]), float(K[0, 2])
    lim = (W - cx) / fx + 0.3 * 0.5 * W / fx
    J = np.array([[fx / z, 0, -fx * lim / z], [0, float(K[1, 1]) / z, 0.0]])
    cov = J @ (s * s * np.eye(3)) @ J.T + EPS2D * np.eye(2)
    _, xx, xy, yy = projection._project_2d(
        means, (scales[:, :, None] * torch.eye(3, dtype=torch.float64)), K, W, H)
    np.testing.assert_allclose([xx.item() + EPS2D, xy.item(), yy.item() + EPS2D],
                               [cov[0, 0], cov[0, 1], cov[1, 1]], rtol=1e-12)


def test_culling_near_plane_opacity_and_off_image():
    means = torch.tensor([[0.0, 0.0, -1.0],     # behind the camera
                          [0.0, 0.0, 0.009],    # in front, but closer than near_plane
                          [0.0, 0.0, 0.011],    # just past near_plane: kept
                          [0.0, 0.0, 2.0],      # kept
                          [5.0, 0.0, 2.0],      # far right of the image
                          [0.0, 0.0, 3.0]], dtype=torch.float64)  # opacity below 1/255
    opac = torch.tensor([0.8, 0.8, 0.8, 0.8, 0.8, 0.5 * ALPHA_MIN], dtype=torch.float64)
    proj = _project(means, opacities=opac, near=0.01)
    assert proj.ids.tolist() == [2, 3]  # sorted front to back
    assert (proj.radii_all[[0, 1, 4, 5]] == 0).all() and (proj.radii_all[[2, 3]] > 0).all()


def test_rect_bounds_every_pixel_with_alpha_above_threshold():
    g = torch.Generator().manual_seed(3)
    n = 40
    means = torch.stack([4 * torch.rand(n, generator=g, dtype=torch.float64) - 2,
                         3 * torch.rand(n, generator=g, dtype=torch.float64) - 1.5,
                         3 + torch.rand(n, generator=g, dtype=torch.float64)], dim=-1)
    scales = torch.exp(torch.empty(n, 3, dtype=torch.float64).uniform_(-5, -1, generator=g))
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    opac = torch.rand(n, generator=g, dtype=torch.float64)
    proj = _project(means, scales, opac, quats)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5,
                            torch.arange(W, dtype=torch.float64) + 0.5, indexing="ij")
    for row, i in enumerate(proj.ids.tolist()):
        dx, dy = proj.means2d[row, 0] - xs, proj.means2d[row, 1] - ys
        a, b, c = proj.conics[row]
        alpha = opac[i] * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
        x0, x1, y0, y1 = proj.rect[row].tolist()
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[y0:y1 + 1, x0:x1 + 1] = True
        assert (alpha[~inside] < ALPHA_MIN).all()
        assert (alpha[inside] >= ALPHA_MIN).any()
    culled = set(range(n)) - set(proj.ids.tolist())
    for i in culled:  # culled only if really invisible: check densely with the same maths
        assert float(opac[i]) < ALPHA_MIN or not _visible_anywhere(means[i], scales[i], quats[i],
                                                                    float(opac[i]))


def _visible_anywhere(mean, scale, quat, opac):
    proj = project_gaussians(mean[None], quat[None], scale[None], torch.ones(1, dtype=mean.dtype),
                             torch.eye(4, dtype=mean.dtype), K, W, H, 0.01)
    if proj.ids.numel() == 0:
        return False
    ys, xs = torch.meshgrid(torch.arange(H, dtype=mean.dtype) + 0.5,
                            torch.arange(W, dtype=mean.dtype) + 0.5, indexing="ij")
    dx, dy = proj.means2d[0, 0] - xs, proj.means2d[0, 1] - ys
    a, b, c = proj.conics[0]
    return bool((opac * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
                 >= ALPHA_MIN).any())


def test_sh_basis_is_orthonormal_on_the_sphere():
    n = 40000  # Fibonacci sphere: near-uniform quadrature
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + 5 ** 0.5) * i
    r = torch.sqrt(1 - z * z)
    dirs = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    basis = []
    for k in range(16):
        coeffs = torch.zeros(n, 16, 3, dtype=torch.float64)
        coeffs[:, k, 0] = 1.0
        basis.append(eval_sh(3, coeffs, dirs)[:, 0])
    Y = torch.stack(basis, dim=1)
    gram = 4 * math.pi * (Y.T @ Y) / n
    torch.testing.assert_close(gram, torch.eye(16, dtype=torch.float64), atol=2e-3, rtol=0)


def test_sh_degree_one_signs_follow_3dgs_convention():
    coeffs = torch.zeros(3, 16, 3, dtype=torch.float64)
    coeffs[:, 1:4, 0] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    dirs = torch.eye(3, dtype=torch.float64)  # +x, +y, +z
    out = eval_sh(1, coeffs, dirs)[:, 0]
    c1 = 0.4886025119029199  # sqrt(3 / (4 pi))
    torch.testing.assert_close(out, torch.tensor([-3 * c1, -1 * c1, 2 * c1],
                                                 dtype=torch.float64))
    assert abs(c1 - math.sqrt(3 / (4 * math.pi))) < 1e-15

"""Pixel-aligned Gaussians from depth: rendering reproduces the context image at its own
pose (real 7-Scenes), invalid depth is dropped, the quaternion conversion inverts the
rasterizer's, and the depth-gradient shape lies in the surface."""
from __future__ import annotations

import math

import pytest
import torch

from fit3d_ros.kernels import quat_to_rotmat
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d.scenes import depth_in_color, load_scene, resize_rgb
from fit3d_ros.training.snd.gaussians import (
    backproject,
    pixel_gaussians,
    render_features,
    rotmat_to_quat,
)


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def _view(scene, i, w=160, h=120):
    v = scene.views[i]
    depth = torch.from_numpy(depth_in_color(v, w))
    rgb = resize_rgb(v.rgb, w, h)
    K = torch.from_numpy(v.color_camera.scaled(w, h).K).float()
    return depth, rgb, K, torch.from_numpy(v.T_world_color).float(), \
        torch.from_numpy(v.viewmat).float()


@pytest.mark.parametrize("scale_mode", ["isotropic", "gradient"])
def test_rendering_reproduces_the_context_image(shared_data, scale_mode):
    scene = load_scene(shared_data / "rgbd" / "7scenes", frames="0:60:6", holdout_every=0)
    depth, rgb, K, c2w, vm = _view(scene, 0)
    g = pixel_gaussians(depth, rgb, K, c2w, scale_mode=scale_mode)
    feat = torch.ones(len(g), 1)
    _, alpha, out = render_features(g, feat, vm, K, 160, 120, backend="cpu")
    covered = alpha > 0.5
    assert covered.float().mean() > 0.7  # the colour camera sees beyond the depth FOV
    own = _psnr(out[covered], rgb[covered])
    assert own > 25.0, own  # 26.5 dB measured (blur of the 0.45 px footprint)
    # the same Gaussians seen from a view 50 frames later no longer match its own image
    vm_far = _view(scene, 9)[4]
    _, alpha_far, out_far = render_features(g, feat, vm_far, K, 160, 120, backend="cpu")
    cov = alpha_far > 0.5
    assert _psnr(out_far[cov], rgb[cov]) < own - 6


def test_invalid_depth_is_dropped_and_means_backproject():
    depth = torch.full((6, 8), 2.0)
    depth[1, 2] = float("nan")
    depth[3, 4] = 0.0
    depth[5, 7] = float("inf")
    K = torch.tensor([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]])
    T = torch.eye(4)
    T[:3, 3] = torch.tensor([1.0, 2.0, 3.0])
    g = pixel_gaussians(depth, torch.rand(6, 8, 3), K, T)
    assert len(g) == 45 and not {1 * 8 + 2, 3 * 8 + 4, 5 * 8 + 7} & set(g.index.tolist())
    # pixel (x=5, y=0): centre (5.5, 0.5) at z = 2 -> camera ((5.5-4)/10·2, (0.5-3)/10·2, 2)
    k = g.index.tolist().index(5)
    assert torch.allclose(g.means[k], torch.tensor([1.3, 1.5, 5.0]), atol=1e-6)
    assert torch.allclose(g.scales[k], torch.full((3,), 0.45 * 2 / 10))


def test_quaternion_inverts_the_rasterizer_rotation():
    q = torch.nn.functional.normalize(torch.randn(200, 4, generator=torch.Generator()
                                                  .manual_seed(0)), dim=-1)
    back = rotmat_to_quat(quat_to_rotmat(q))
    assert torch.allclose(quat_to_rotmat(back), quat_to_rotmat(q), atol=1e-5)
    assert torch.allclose(back.abs(), q.abs(), atol=1e-5)


def test_gradient_shape_lies_in_a_slanted_plane():
    h, w = 10, 12
    K = torch.tensor([[20.0, 0, 6], [0, 20.0, 5], [0, 0, 1]])
    # plane z = 2 + 0.5 x (camera frame): solve per pixel ray
    pts = backproject(torch.ones(h, w), K)
    depth = 2.0 / (1 - 0.5 * pts[..., 0])
    g = pixel_gaussians(depth, torch.rand(h, w, 3), K, torch.eye(4), scale_mode="gradient",
                        max_stretch=10.0)
    R = quat_to_rotmat(g.quats)
    normal = torch.nn.functional.normalize(torch.tensor([-0.5, 0.0, 1.0]), dim=0)
    inner = (g.index // w > 0) & (g.index // w < h - 1) & (g.index % w > 0) & \
        (g.index % w < w - 1)
    # the thin (third) axis is the plane's normal; the first two lie in the plane
    assert torch.allclose((R[inner][:, :, 2] @ normal).abs(), torch.ones(int(inner.sum())),
                          atol=1e-4)
    assert (g.scales[inner][:, 2] < g.scales[inner][:, 0]).all()
    assert (g.scales[inner][:, 0] > g.scales[inner][:, 1]).all()  # stretched along x (slant)


def test_confidence_opacity_is_low_at_a_depth_step():
    depth = torch.full((8, 10), 2.0)
    depth[:, 5:] = 3.0
    K = torch.tensor([[10.0, 0, 5], [0, 10.0, 4], [0, 0, 1]])
    g = pixel_gaussians(depth, torch.rand(8, 10, 3), K, torch.eye(4), opacity=0.9,
                        opacity_mode="confidence", depth_edge=0.05)
    alpha = g.opacities.reshape(8, 10)
    # central difference across the step: |3 - 2| / 2 / z
    assert abs(float(alpha[4, 4]) - 0.9 * math.exp(-0.25 / 0.05)) < 1e-7
    assert abs(float(alpha[4, 5]) - 0.9 * math.exp(-0.5 / 3 / 0.05)) < 1e-7
    assert torch.allclose(alpha[:, [0, 1, 2, 3, 6, 7, 8, 9]], torch.tensor(0.9))

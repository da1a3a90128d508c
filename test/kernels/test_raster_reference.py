"""The torch reference against a per-pixel loop over the issue's formulas; gradchecks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fit3d_ros.kernels import rasterize_gaussians
from fit3d_ros.kernels.scenes import SceneConfig, random_scene
from fit3d_ros.sensors.transforms import quat_to_matrix

SH_C0, SH_C1 = 0.28209479177387814, 0.4886025119029199


def _pinhole_jacobian(p: np.ndarray, K: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d(u,v)/d(x,y,z) of u = fx x/z + cx, v = fy y/z + cy by central differences."""
    def pix(q):
        return np.array([K[0, 0] * q[0] / q[2] + K[0, 2], K[1, 1] * q[1] / q[2] + K[1, 2]])
    return np.stack([(pix(p + h * e) - pix(p - h * e)) / (2 * h) for e in np.eye(3)], axis=1)


def dense_render(scene: dict, near: float = 0.01, background=None) -> dict:
    """Every pixel, every Gaussian, front to back: the formulas of issue 3 in float64."""
    s = {k: (v.detach().double().numpy() if isinstance(v, torch.Tensor) else v)
         for k, v in scene.items()}
    Rw, tw, K = s["viewmat"][:3, :3], s["viewmat"][:3, 3], s["K"]
    cam = -Rw.T @ tw
    splats = []
    for i in range(len(s["means"])):
        p = Rw @ s["means"][i] + tw
        if p[2] < near:
            continue
        w, x, y, z = s["quats"][i]
        R = Rw @ quat_to_matrix([x, y, z, w])
        J = _pinhole_jacobian(p, K)
        cov = J @ R @ np.diag(s["scales"][i] ** 2) @ R.T @ J.T + 0.3 * np.eye(2)
        mu = np.array([K[0, 0] * p[0] / p[2] + K[0, 2], K[1, 1] * p[1] / p[2] + K[1, 2]])
        if s["sh_degree"] is None:
            rgb = s["colors"][i]
        else:  # degree 1 written out: C0 c0 - C1 y c1 + C1 z c2 - C1 x c3, then + 0.5, >= 0
            d = (s["means"][i] - cam) / np.linalg.norm(s["means"][i] - cam)
            c = s["colors"][i]
            rgb = np.maximum(SH_C0 * c[0] + SH_C1 * (-d[1] * c[1] + d[2] * c[2] - d[0] * c[3])
                             + 0.5, 0.0)
        feat = np.zeros(0) if s["features"] is None else s["features"][i]
        splats.append((p[2], i, mu, np.linalg.inv(cov), s["opacities"][i],
                       np.concatenate([rgb, [p[2]], feat])))
    splats.sort(key=lambda t: (t[0], t[1]))
    H, W = s["height"], s["width"]
    chans = 4 + (0 if s["features"] is None else s["features"].shape[1])
    img, alpha = np.zeros((H, W, chans)), np.zeros((H, W, 1))
    for v in range(H):
        for u in range(W):
            T = 1.0
            for _, _, mu, inv, o, val in splats:
                d = mu - np.array([u + 0.5, v + 0.5])
                a = min(0.99, o * math.exp(-0.5 * d @ inv @ d))
                if a < 1 / 255:
                    continue
                if T * (1 - a) < 1e-4:
                    break
                img[v, u] += a * T * val
                T *= 1 - a
            alpha[v, u] = 1 - T
    rgb = img[..., :3] + (0 if background is None else (1 - alpha) * np.asarray(background))
    return dict(rgb=rgb, depth=img[..., 3:4], alpha=alpha,
                features=None if s["features"] is None else img[..., 4:])


def _tiny(seed: int, sh_degree=None, n=8, features=3, width=20, height=14):
    cfg = SceneConfig(n=n, width=width, height=height, features=features, sh_degree=sh_degree,
                      scale_range=(0.05, 0.4), depth_range=(2.0, 5.0), frustum_margin=1.0,
                      seed=seed, dtype=torch.float64)
    return random_scene(cfg)


@pytest.mark.parametrize("seed,sh_degree", [(0, None), (1, None), (2, 1)])
def test_torch_reference_matches_dense_per_pixel_evaluation(seed, sh_degree):
    scene = _tiny(seed, sh_degree)
    scene["opacities"][0] = 1.0  # exercise the 0.99 alpha clamp
    scene["means"][1] = scene["means"][0] - torch.tensor([0.0, 0.0, 0.3], dtype=torch.float64)
    bg = [0.2, 0.4, 0.6]
    want = dense_render(scene, background=bg)
    got = rasterize_gaussians(**scene, background=torch.tensor(bg, dtype=torch.float64),
                              backend="torch")
    assert want["alpha"].max() > 0.5  # the scene is not trivially empty
    for key in ("rgb", "depth", "alpha", "features"):
        np.testing.assert_allclose(getattr(got, key).numpy(), want[key], atol=1e-8, err_msg=key)


def test_dense_reference_sees_saturation_stop():
    # Ten Gaussians stacked on the axis: transmittance 0.2**k; the 6th (0.2**6 < 1e-4) stops.
    n = 10
    z = torch.linspace(2.0, 3.0, n, dtype=torch.float64)
    scene = dict(means=torch.stack([torch.zeros(n), torch.zeros(n), z], -1).double(),
                 quats=torch.tensor([[1.0, 0, 0, 0]] * n, dtype=torch.float64),
                 scales=torch.full((n, 3), 0.5, dtype=torch.float64),
                 opacities=torch.full((n,), 0.8, dtype=torch.float64),
                 colors=torch.rand(n, 3, dtype=torch.float64), features=None,
                 viewmat=torch.eye(4, dtype=torch.float64),
                 K=torch.tensor([[20.0, 0, 5.5], [0, 20.0, 4.5], [0, 0, 1]], dtype=torch.float64),
                 width=10, height=8, sh_degree=None)
    want = dense_render(scene)
    got = rasterize_gaussians(**scene, backend="torch")
    assert abs(want["alpha"][4, 5, 0] - (1 - 0.2 ** 5)) < 1e-12
    np.testing.assert_allclose(got.rgb.numpy(), want["rgb"], atol=1e-9)


def _flat_outputs(backend: str, scene: dict, names: list[str]):
    def fn(*params):
        kw = dict(scene)
        kw.update(zip(names, params))
        out = rasterize_gaussians(**kw, backend=backend)
        return torch.cat([out.rgb.flatten(), out.features.flatten(), out.alpha.flatten(),
                          out.depth.flatten()])
    return fn


@pytest.mark.parametrize("backend,fast", [("torch", True), ("cpu", True), ("cpu", False)])
def test_gradcheck_float64(backend, fast):
    # fast mode (random projections of the Jacobian) on a larger scene, full Jacobians on a
    # smaller one; the cpu backend runs its hand-written backward in float64 here.
    scene = _tiny(5, sh_degree=1, n=5, features=2) if fast else _tiny(
        6, sh_degree=1, n=4, features=2, width=9, height=7)
    names = ["means", "quats", "scales", "opacities", "colors", "features"]
    params = [scene[k].clone().requires_grad_(True) for k in names]
    assert torch.autograd.gradcheck(_flat_outputs(backend, scene, names), params,
                                    eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=fast)

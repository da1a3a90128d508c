"""rasterize_gaussians: argument validation, backend choice, output contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.kernels import (KernelBuildError, RasterOutput, cpu, rasterize_gaussians,
                               resolve_backend)
from fit3d_ros.kernels.scenes import SceneConfig, random_scene


@pytest.fixture
def scene() -> dict:
    return random_scene(SceneConfig(n=30, width=16, height=12, features=4, seed=0))


def _bad(scene: dict, **changes) -> dict:
    out = dict(scene)
    out.update(changes)
    return out


BAD_INPUTS = [
    ("means", lambda s: dict(means=s["means"][:, :2])),
    ("means", lambda s: dict(means=s["means"].numpy())),
    ("means", lambda s: dict(means=s["means"].to(torch.int64))),
    ("means", lambda s: dict(means=torch.where(torch.arange(30)[:, None] == 3,
                                               float("nan"), s["means"]))),
    ("quats", lambda s: dict(quats=s["quats"][:-1])),
    ("quats", lambda s: dict(quats=s["quats"].double())),
    ("quats", lambda s: dict(quats=torch.zeros(30, 4))),
    ("quats", lambda s: dict(quats=torch.empty(30, 4, device="meta"))),
    ("scales", lambda s: dict(scales=-s["scales"])),
    ("scales", lambda s: dict(scales=s["scales"].clone().fill_(float("inf")))),
    ("opacities", lambda s: dict(opacities=s["opacities"] + 1.0)),
    ("opacities", lambda s: dict(opacities=s["opacities"][:, None])),
    ("colors", lambda s: dict(colors=s["colors"][:, :2])),
    ("colors", lambda s: dict(colors=torch.zeros(30, 4, 3), sh_degree=2)),
    ("sh_degree", lambda s: dict(colors=torch.zeros(30, 16, 3), sh_degree=4)),
    ("features", lambda s: dict(features=torch.zeros(30, 0))),
    ("features", lambda s: dict(features=torch.zeros(30, 1025))),
    ("features", lambda s: dict(features=torch.zeros(31, 4))),
    ("viewmat", lambda s: dict(viewmat=torch.eye(3))),
    ("viewmat", lambda s: dict(viewmat=2 * torch.eye(4))),
    ("viewmat", lambda s: dict(viewmat=torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0])))),
    ("K", lambda s: dict(K=-s["K"])),
    ("K", lambda s: dict(K=s["K"].clone().index_fill_(0, torch.tensor([2]), 2.0))),
    ("width", lambda s: dict(width=0)),
    ("height", lambda s: dict(height=12.0)),
    ("near_plane", lambda s: dict(near_plane=0.0)),
    ("background", lambda s: dict(background=torch.zeros(4))),
    ("background", lambda s: dict(background="white")),
    ("backend", lambda s: dict(backend="gpu")),
]


@pytest.mark.parametrize("name,change", BAD_INPUTS)
def test_bad_input_raises_value_error_naming_the_argument(scene, name, change):
    kwargs = _bad(scene, **change(scene))
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        rasterize_gaussians(**kwargs)


def test_cpu_backend_rejects_other_devices_and_cuda_needs_gsplat(scene):
    with pytest.raises(ValueError, match="^backend"):
        resolve_backend("cpu", torch.device("meta"))
    with pytest.raises(ValueError, match="^backend"):
        rasterize_gaussians(**scene, backend="cuda")  # CPU tensors


def test_output_contract(scene):
    out = rasterize_gaussians(**scene)
    assert isinstance(out, RasterOutput) and out.backend == "cpu"
    assert out.rgb.shape == (12, 16, 3) and out.features.shape == (12, 16, 4)
    assert out.alpha.shape == (12, 16, 1) and out.depth.shape == (12, 16, 1)
    assert out.means2d.shape == (30, 2) and out.radii.shape == (30, 2)
    a = out.alpha
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    # expected depth of covered pixels lies within the scene's depth range
    covered = a[..., 0] > 0.5
    assert covered.any()
    z = out.depth[covered] / a[covered]
    assert float(z.min()) >= float(scene["means"][:, 2].min()) - 1e-4
    assert float(z.max()) <= float(scene["means"][:, 2].max()) + 1e-4
    # culled Gaussians report zero radius, visible ones their projected centre
    visible = out.radii[:, 0] > 0
    K, m = scene["K"], scene["means"]
    proj = torch.stack([K[0, 0] * m[:, 0] / m[:, 2] + K[0, 2],
                        K[1, 1] * m[:, 1] / m[:, 2] + K[1, 2]], -1)
    torch.testing.assert_close(out.means2d[visible], proj[visible])
    assert (out.means2d[~visible] == 0).all()


def test_means2d_gradient_is_available_for_densification(scene):
    leaves = {k: scene[k].clone().requires_grad_(True) for k in ("means", "opacities")}
    out = rasterize_gaussians(**{**scene, **leaves})
    out.means2d.retain_grad()
    out.rgb.sum().backward()
    visible = out.radii[:, 0] > 0
    assert out.means2d.grad.shape == (30, 2)
    assert float(out.means2d.grad[visible].abs().sum()) > 0
    assert float(out.means2d.grad[~visible].abs().sum()) == 0


def test_missing_compiler_is_named_and_auto_falls_back(scene, monkeypatch):
    monkeypatch.setattr(cpu, "_EXT", None)
    monkeypatch.setenv("CXX", "no-such-c++-compiler")
    with pytest.raises(KernelBuildError, match="no-such-c\\+\\+-compiler"):
        cpu.load_extension()
    with pytest.warns(RuntimeWarning, match="compiler"):
        out = rasterize_gaussians(**scene, backend="auto")
    assert out.backend == "torch"
    with pytest.raises(KernelBuildError):
        rasterize_gaussians(**scene, backend="cpu")


def test_viewmat_moves_the_camera():
    # The same scene seen from a camera shifted by +0.5 along x equals the scene shifted
    # by -0.5 along x seen from the identity camera.
    s = random_scene(SceneConfig(n=200, width=32, height=24, features=2, seed=4))
    view = torch.eye(4)
    view[0, 3] = -0.5  # world -> camera: x_c = x_w - 0.5, i.e. the camera sits at x = +0.5
    moved = dict(s, means=s["means"] - torch.tensor([0.5, 0.0, 0.0]))
    a = rasterize_gaussians(**dict(s, viewmat=view))
    b = rasterize_gaussians(**moved)
    np.testing.assert_allclose(a.rgb.numpy(), b.rgb.numpy(), atol=1e-5)
    np.testing.assert_allclose(a.features.numpy(), b.features.numpy(), atol=1e-5)

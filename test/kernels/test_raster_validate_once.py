"""Validation once: `validate=False` renders the same, `check_camera` keeps the camera checks."""
from __future__ import annotations

import pytest
import torch

from fit3d_ros.kernels import check_camera, rasterize_gaussians
from fit3d_ros.kernels.scenes import SceneConfig, random_scene


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_unvalidated_render_equals_validated(backend):
    s = random_scene(SceneConfig(n=40, width=16, height=12, features=4, seed=1))
    a = rasterize_gaussians(**s, backend=backend)
    b = rasterize_gaussians(**s, backend=backend, validate=False)
    for name in ("rgb", "features", "alpha", "depth", "means2d", "radii"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_public_api_still_validates_and_check_camera_names_the_argument():
    s = random_scene(SceneConfig(n=5, width=8, height=8, features=2, seed=0))
    with pytest.raises(ValueError, match="^scales"):
        rasterize_gaussians(**{**s, "scales": -s["scales"]})  # default: checked
    check_camera(s["viewmat"], s["K"])
    with pytest.raises(ValueError, match="^viewmat"):
        check_camera(2 * s["viewmat"], s["K"])
    with pytest.raises(ValueError, match="^K"):
        check_camera(s["viewmat"], -s["K"])
    with pytest.raises(ValueError, match="^K"):
        check_camera(s["viewmat"], s["K"].to(torch.float16 if s["K"].dtype != torch.float16
                                             else torch.float32))
    with pytest.raises(ValueError, match="^background"):
        rasterize_gaussians(**{**s, "background": [1, 1, 1]}, validate=False)

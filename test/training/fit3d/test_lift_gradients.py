"""FiT3D gradient separation in the lift step, on a real 7-Scenes view.

The feature loss L_f must move only the features f and the decoder d; the colour loss
L_c only geometry and colour. Checked for both CPU rasterizer backends.
"""
from __future__ import annotations

import pytest
import torch

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d.config import LiftConfig
from fit3d_ros.training.fit3d.gaussians import GEOMETRY
from fit3d_ros.training.fit3d.lift import LiftRun, init_gaussians, prepare_views, scene_extent
from fit3d_ros.training.fit3d.scene_file import make_decoder
from fit3d_ros.training.fit3d.scenes import load_scene
from fit3d_ros.training.fit3d.vit_features import build_spec_backbone


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: small ops on a shared 2-core machine are far faster that way."""
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def run_and_views(shared_data):
    scene = load_scene(shared_data / "rgbd" / "7scenes", frames="0:20:10", holdout_every=0)
    cfg = LiftConfig.tiny(image_width=48, max_init_points=2000, feature_dim=8)
    spec = BackboneSpec(name="vit_tiny_test", random_init=True)
    teacher = build_spec_backbone(spec)
    with cpu_threads(1):
        views = prepare_views(scene.subset("train"), cfg.image_width, teacher, 16)
    model = init_gaussians(scene.subset("train"), cfg)
    decoder = make_decoder(cfg.feature_dim, teacher.embed_dim)
    return LiftRun(model, decoder, cfg, scene_extent(views.viewmats)), views


def _grads(run: LiftRun) -> dict[str, torch.Tensor | None]:
    g = {name: getattr(run.model, name).grad for name in GEOMETRY + ("features",)}
    g["decoder"] = run.decoder.weight.grad
    return g


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_feature_loss_leaves_geometry_untouched(run_and_views, backend):
    run, views = run_and_views
    run.opt.zero_grad(set_to_none=True)
    lc, lf, out = run.losses(0, views, backend)
    assert out.alpha.max() > 0.5  # the depth init covers the view
    lf.backward()
    g = _grads(run)
    for name in GEOMETRY:
        assert g[name] is None or torch.count_nonzero(g[name]) == 0, name
    assert out.means2d.grad is None or torch.count_nonzero(out.means2d.grad) == 0
    assert torch.count_nonzero(g["features"]) > 0
    assert torch.count_nonzero(g["decoder"]) > 0


@pytest.mark.parametrize("backend", ["cpu", "torch"])
def test_colour_loss_leaves_features_untouched(run_and_views, backend):
    run, views = run_and_views
    run.opt.zero_grad(set_to_none=True)
    lc, lf, out = run.losses(0, views, backend)
    lc.backward()
    g = _grads(run)
    assert g["features"] is None or torch.count_nonzero(g["features"]) == 0
    assert g["decoder"] is None or torch.count_nonzero(g["decoder"]) == 0
    for name in ("means", "log_scales", "opacity_logits", "sh_dc"):
        assert torch.count_nonzero(g[name]) > 0, name
    assert torch.count_nonzero(out.means2d.grad) > 0  # densification signal

"""Lift per iteration: cached fp16 targets, one argument validation per run, losses read
every N steps (device scalars), and the finite-loss check of `training.loop.run_steps`."""
from __future__ import annotations

import pytest
import torch

import fit3d_ros.kernels.api as raster_api
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d import lift as lift_module
from fit3d_ros.training.fit3d.config import LiftConfig
from fit3d_ros.training.fit3d.lift import Views, lift_scene
from fit3d_ros.training.fit3d.scenes import load_scene
from fit3d_ros.training.loop import run_steps


def _views(v: int = 3, c: int = 6) -> Views:
    g = torch.Generator().manual_seed(0)
    return Views(torch.zeros(v, 24, 32, 3, dtype=torch.uint8), torch.zeros(v, 24, 32, 3),
                 torch.eye(4).repeat(v, 1, 1), torch.eye(3).repeat(v, 1, 1),
                 [torch.randn(c, 3, 4, generator=g).half() for _ in range(v)])


def test_cached_targets_are_the_fp16_upsampled_teacher_computed_once():
    plain, cached = _views(), _views()
    cached.cache_targets()
    for v in range(3):
        ref = plain.target(v)  # float32 bilinear upsampling, per call
        got = cached.target(v)
        assert got.dtype == torch.float16 and got.shape == ref.shape == (1, 6, 24, 32)
        assert torch.equal(got, ref.half()) and cached.target(v) is got
    assert plain.target(0) is not plain.target(0) and plain.cached is None
    small = _views()
    small.cache_targets(budget_mb=2 * 6 * 24 * 32 * 2 / 2 ** 20)  # room for two views
    assert small.target(1).dtype == torch.float16 and small.target(2).dtype == torch.float32
    assert small.to("cpu").cached == [None, None]  # the cache setting travels


@pytest.fixture(scope="module")
def scene(shared_data):
    return load_scene(shared_data / "rgbd" / "7scenes", frames="0:30:6", holdout_every=5)


def test_lift_validates_once_and_reads_losses_every_n(scene, tmp_path, monkeypatch):
    cfg = LiftConfig.tiny(iterations=12, image_width=48, max_init_points=800, feature_dim=4,
                          token_budget=24, densify_from=100, save_every=0)
    checks, reads = [], []
    real_check, real_run = raster_api.check_inputs, lift_module.run_steps
    monkeypatch.setattr(raster_api, "check_inputs",
                        lambda *a, **k: checks.append(1) or real_check(*a, **k))

    def spy_run(start, end, step_fn, *a, **k):
        def step(s):
            out = step_fn(s)
            reads.append(isinstance(out, torch.Tensor) and out.ndim == 0)
            return out
        return real_run(start, end, step, *a, **k)

    monkeypatch.setattr(lift_module, "run_steps", spy_run)
    monkeypatch.setattr(lift_module, "LOG_EVERY", 5)
    with cpu_threads(1):
        r = lift_scene(scene, BackboneSpec("vit_tiny_test", random_init=True), cfg,
                       tmp_path / "s.pt", progress=False, backend="cpu", stop_at=11)
    assert len(reads) == 11 and all(reads)  # every step returned a device scalar
    assert len(checks) == 1                 # the first render only
    assert r["stopped"] and r["loss_first"] > 0


def test_run_steps_reads_every_n_and_stops_on_non_finite_loss():
    values = [0.5, 0.25, 2.0, 1.0, float("nan"), 3.0]
    saved = []
    got = run_steps(0, 4, lambda s: torch.tensor(values[s]), saved.append, 2, False, "t",
                    log_every=3)
    assert got == values[:4] and saved == [2, 4]
    assert run_steps(1, 3, lambda s: values[s], saved.append, 0, False, "t") == [0.25, 2.0]
    saved.clear()
    with pytest.raises(FloatingPointError, match="step 4"):
        run_steps(0, 6, lambda s: torch.tensor(values[s]), saved.append, 5, False, "t",
                  log_every=10)
    assert saved == []  # the NaN is found before the step-5 checkpoint is written

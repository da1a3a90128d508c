"""Train-seg batches: X^2D as host rows + device tables, prefetching, AMP plumbing (CPU)."""
from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

import fit3d_ros.training.ditr.train as train_seg_module
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import load_checkpoint
from fit3d_ros.models.mapping import gather_point_features, project_points
from fit3d_ros.models.preprocess import centered, input_features
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.ditr.augment import augment_points
from fit3d_ros.training.ditr.config import DistillConfig, SegTrainConfig
from fit3d_ros.training.ditr.data import labels_or_ignore
from fit3d_ros.training.ditr.loop import (
    Prefetcher,
    autocast,
    build_optimizer,
    grad_scaler,
    make_batch,
    optimizer_step,
    pick_samples,
)
from fit3d_ros.training.ditr.point_features import PointFeatureSource
from fit3d_ros.training.ditr.sources import load_dataset
from fit3d_ros.training.ditr.train import segmentation_loss, train_segmentation
from fit3d_ros.training.loop import step_rng
import argparse
from fit3d_ros.cli import seg

SPEC = BackboneSpec("vit_tiny_test", random_init=True, token_budget=150)


@pytest.fixture(scope="module")
def kitti(shared_data):
    return load_dataset(shared_data / "kitti" / "object")


@pytest.fixture
def one_thread():
    with cpu_threads(1):  # shared CI machine
        yield


def test_batch_rows_gather_equals_numpy_reference(kitti):
    source = PointFeatureSource(SPEC)
    samples = kitti.samples[:2]
    batch = make_batch(samples, ("xyz",), None, SegTrainConfig.tiny().augment, source=source,
                       view_seed=7)
    n = sum(len(s) for s in samples)
    assert batch.rows_2d.shape == (n,) and batch.rows_2d.dtype == torch.int64
    expected, seen = [], []
    for i, s in enumerate(samples):  # the dense numpy reference, sample by sample
        per_view = [source.image_features(v.rgb, v.camera) for v in s.views]
        proj = project_points(s.xyz, [c for _, c in per_view],
                              [v.T_cam_points for v in s.views], source.patch_size)
        f, v = gather_point_features(proj, torch.stack([m for m, _ in per_view]),
                                     view=SPEC.view, seed=7 + i)
        expected.append(f)
        seen.append(v)
    assert torch.equal(batch.feat_2d, torch.cat(expected))
    assert torch.equal(batch.visible, torch.cat(seen)) and 0.1 < batch.visible.float().mean()
    # per image a table of h*w patches + a zero row, shared by all points of the sample
    h, w = source.image_features(samples[0].views[0].rgb, samples[0].views[0].camera)[0].shape[1:]
    assert batch.table_2d.shape == (2 * (h * w + 1), source.dim)


def _reference_run(ds, cfg: SegTrainConfig) -> dict[str, torch.Tensor]:
    """Train-seg as it was: dense per-point X^2D from `PointFeatureSource.features` per
    step, no prefetch, no AMP, plain backward/step (the same seeded choices)."""
    source = PointFeatureSource(SPEC)
    model, _, _, _ = train_seg_module.build_model(cfg, ds.classes, None, 0, source.dim)
    model.train()
    opt, sched = build_optimizer(list(model.parameters()), cfg.optim, cfg.steps)
    for step in range(cfg.steps):
        rng = step_rng(cfg.seed, step)
        picked = [ds.samples[i] for i in pick_samples(len(ds.samples), cfg.batch_size, rng)]
        view_seed = int(rng.integers(2**31))
        pts, feats, ids, labels, f2d, vis = [], [], [], [], [], []
        for i, s in enumerate(picked):
            s = s.subsample(cfg.max_points, rng)
            f, v = source.features(s, seed=view_seed + i)
            xyz = augment_points(centered(s.xyz), rng, cfg.augment)
            pts.append(torch.from_numpy(xyz))
            feats.append(torch.from_numpy(input_features(s, cfg.input_features, xyz=xyz)))
            ids.append(torch.full((len(xyz),), i, dtype=torch.long))
            labels.append(torch.from_numpy(labels_or_ignore(s)))
            f2d.append(f)
            vis.append(v)
        out = model(torch.cat(pts), torch.cat(feats), batch=torch.cat(ids),
                    feat_2d=torch.cat(f2d), visible_2d=torch.cat(vis))
        loss = segmentation_loss(out.logits, torch.cat(labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.state_dict()


def test_cpu_run_bit_identical_to_dense_reference_with_prefetch_and_amp(kitti, tmp_path,
                                                                         one_thread):
    cfg = SegTrainConfig.tiny(steps=2, max_points=3000, batch_size=2, save_every=0)
    ref = _reference_run(kitti, cfg)
    for i, over in enumerate([dict(prefetch=False), dict(prefetch=True, amp="bf16")]):
        c = SegTrainConfig.from_dict({**cfg.to_dict(), **over})
        r = train_segmentation([kitti], c, tmp_path / f"{i}.ckpt", inject=SPEC, progress=False)
        assert r["amp"] == "off"  # AMP is CUDA-only: the CPU run is unchanged
        got = load_checkpoint(tmp_path / f"{i}.ckpt").state_dict
        assert got.keys() == ref.keys()
        for k in ref:
            assert torch.equal(got[k], ref[k]), (over, k)


def test_amp_config_plumbing():
    with pytest.raises(ValueError, match="amp must be one of"):
        SegTrainConfig.tiny(amp="fp8")
    cfg = DistillConfig.tiny(amp="fp16", prefetch=False)
    back = DistillConfig.from_dict(cfg.to_dict())
    assert (back.amp, back.prefetch) == ("fp16", False)
    old = SegTrainConfig.tiny().to_dict()
    del old["amp"], old["prefetch"]  # checkpoints written before these fields resume
    assert SegTrainConfig.from_dict(old).amp == "off"
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert grad_scaler("fp16", cpu) is None and grad_scaler("bf16", cuda) is None
    with autocast("bf16", cpu):
        assert not torch.is_autocast_enabled("cpu")
    assert not isinstance(autocast("off", cuda), torch.autocast)
    with pytest.warns(UserWarning) if not torch.cuda.is_available() else nullcontext():
        for amp, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            ctx = autocast(amp, cuda)  # (built, not entered: this machine may have no GPU)
            assert isinstance(ctx, torch.autocast) and ctx.device == "cuda"
            assert ctx.fast_dtype == dtype


def test_cli_amp_and_prefetch_flags():
    ap = argparse.ArgumentParser()
    seg.register(ap.add_subparsers())
    a = ap.parse_args(["train-seg", "x", "-o", "y", "--config", "tiny", "--amp", "bf16",
                       "--no-prefetch"])
    cfg = seg._config(SegTrainConfig, a)
    assert (cfg.amp, cfg.prefetch) == ("bf16", False)
    assert seg._config(SegTrainConfig, ap.parse_args(["train-seg", "x", "-o", "y"])).amp == "off"


def _linear_step(scaler, grad_clip, poison=False):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt, sched = build_optimizer(list(model.parameters()), SegTrainConfig.tiny().optim, 10)
    x = torch.randn(8, 4)
    loss = model(x).pow(2).mean() * (float("inf") if poison else 1.0)
    optimizer_step(model, loss, opt, sched, grad_clip, scaler)
    return model.state_dict()


def test_scaled_optimizer_step_equals_plain_and_skips_inf():
    """fp16 AMP's loss scaling (on the CPU scaler: same code path) changes nothing when
    the gradients are finite (power-of-two scale) and skips the step when they are not."""
    plain = _linear_step(None, 1.0)
    scaled = _linear_step(torch.amp.GradScaler("cpu", init_scale=2.0 ** 10), 1.0)
    for k in plain:
        assert torch.equal(plain[k], scaled[k]), k
    torch.manual_seed(0)
    before = torch.nn.Linear(4, 3).state_dict()
    skipped = _linear_step(torch.amp.GradScaler("cpu"), None, poison=True)
    for k in before:
        assert torch.equal(before[k], skipped[k]), k


def test_prefetcher_yields_every_step_in_order_and_propagates_errors():
    made = []

    def make(step):
        made.append(step)
        if step == 4:
            raise RuntimeError("bad batch 4")
        return step * 10

    pf = Prefetcher(make, stop=6)
    assert [pf.get(s) for s in range(3)] == [0, 10, 20]
    assert pf.get(5) == 50  # out of order: built directly, the stale prefetch discarded
    pf.close()
    pf = Prefetcher(make, stop=6)
    pf.get(3)
    with pytest.raises(RuntimeError, match="bad batch 4"):
        pf.get(4)
    pf.close()
    assert Prefetcher(make, stop=2, enabled=False).get(1) == 10

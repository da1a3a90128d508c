"""Segmentation training: overfitting a real scan, exact resume, D-DITR init, DITR injection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import fit3d_ros.training.ditr.train as train_seg_module
from fit3d_ros.models import SpUNet
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    Preprocessing,
    build_model_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.ditr.augment import AugmentConfig
from fit3d_ros.training.ditr.config import SegTrainConfig
from fit3d_ros.training.ditr.evaluate import evaluate
from fit3d_ros.training.ditr.point_features import PointFeatureSource
from fit3d_ros.training.ditr.sources import load_dataset
from fit3d_ros.training.ditr.train import train_segmentation


@pytest.fixture
def one_thread():
    with cpu_threads(1):  # the CI machine is shared; avoid oversubscription stalls
        yield


@pytest.fixture(scope="module")
def scan(shared_data):
    """The real SemanticKITTI scan, a fixed random 20k-point subset (keeps tests fast)."""
    ds = load_dataset(shared_data / "semantickitti")
    ds.samples = [ds.samples[0].subsample(20_000, np.random.default_rng(0))]
    return ds


def test_overfit_one_real_scan(scan, tmp_path, one_thread):
    cfg = SegTrainConfig.tiny(steps=80, max_points=None, augment=AugmentConfig.off(),
                              save_every=0)
    r = train_segmentation([scan], cfg, tmp_path / "seg.ckpt", val=[scan], progress=False)
    assert r["val"]["accuracy"] >= 0.90
    # the rebuilt checkpoint predicts the same
    ck = load_checkpoint(tmp_path / "seg.ckpt")
    again = evaluate(build_model_from_checkpoint(ck), [scan], ck.classes,
                     ck.preprocessing.input_features).result()
    assert again["accuracy"] == pytest.approx(r["val"]["accuracy"])
    assert "optimizer" not in ck.training and ck.training["step"] == 80


def test_resume_reproduces_uninterrupted_run(scan, tmp_path, monkeypatch, one_thread):
    cfg = SegTrainConfig.tiny(steps=6, max_points=4000, save_every=3)
    full = tmp_path / "full.ckpt"
    train_segmentation([scan], cfg, full, progress=False)

    calls = {"n": 0}
    real_step = train_seg_module.optimizer_step

    def interrupted(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_step(*args, **kw)

    part = tmp_path / "part.ckpt"
    monkeypatch.setattr(train_seg_module, "optimizer_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_segmentation([scan], cfg, part, progress=False)
    monkeypatch.setattr(train_seg_module, "optimizer_step", real_step)
    assert load_checkpoint(part).training["step"] == 3
    r = train_segmentation([scan], SegTrainConfig.tiny(steps=999), part, resume=True,
                           progress=False)
    assert r["resumed_from"] == 3 and r["steps"] == 6  # settings come from the checkpoint
    a, b = load_checkpoint(full).state_dict, load_checkpoint(part).state_dict
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k
    with pytest.raises(CheckpointError, match="not a resumable"):
        train_segmentation([scan], cfg, part, resume=True, progress=False)


def test_ddtr_init_keeps_backbone(scan, tmp_path, one_thread):
    torch.manual_seed(3)
    pre_cfg = SegTrainConfig.tiny().unet(in_channels=3, num_classes=None, distill_dim=48)
    pre = SpUNet(pre_cfg)
    init = tmp_path / "dd.ckpt"
    save_checkpoint(init, Checkpoint("distillation", pre_cfg, pre.state_dict(),
                                     Preprocessing(0.2, ("xyz",)),
                                     training={"teacher": "random-init (test)"}))
    # the head swap: every backbone weight is the pretrained one, only the head is new
    model, unet, cfg, fresh = train_seg_module.build_model(SegTrainConfig.tiny(),
                                                           scan.classes,
                                                           load_checkpoint(init))
    assert fresh == ["seg_head.bias", "seg_head.weight"]
    src = pre.state_dict()
    for k, v in model.state_dict().items():
        if not k.startswith("seg_head"):
            assert torch.equal(v, src[k]), k
    assert model.distill_head is None and model.seg_head.out_features == 19
    r = train_segmentation([scan], SegTrainConfig.tiny(steps=2, max_points=3000),
                           tmp_path / "seg.ckpt", init=init, progress=False)
    assert r["teacher"] == "random-init (test)" and r["init"] == str(init)


def test_ditr_injection_on_kitti_box_labels(shared_data, tmp_path, one_thread):
    ds = load_dataset(shared_data / "kitti" / "object")
    spec = BackboneSpec("vit_tiny_test", random_init=True)
    cfg = SegTrainConfig.tiny(steps=3, max_points=6000)
    out = tmp_path / "ditr.ckpt"
    r = train_segmentation([ds], cfg, out, inject=spec, progress=False)
    assert r["inject"] and "random-init" in r["teacher"]
    ck = load_checkpoint(out)
    assert ck.model_config.inject_2d and ck.model_config.feat_2d_dim == 48
    assert ck.preprocessing.backbone == spec
    ev = evaluate(build_model_from_checkpoint(ck), [ds], ck.classes,
                  ck.preprocessing.input_features, PointFeatureSource(spec)).result()
    # all points of both frames are evaluated; about 16-18 % lie in the front camera
    assert ev["points"] == 115384 + 120268
    assert 0.12 < ev["visible_points"] / ev["points"] < 0.25
    assert ev["visible_miou"] is not None and ev["invisible_miou"] is not None


def test_training_needs_labels(shared_data, tmp_path):
    nus = load_dataset(shared_data / "nuscenes")
    with pytest.raises(ValueError, match="no per-point labels"):
        train_segmentation([nus], SegTrainConfig.tiny(steps=1), tmp_path / "x.ckpt",
                           progress=False)

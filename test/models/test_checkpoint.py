"""Checkpoint format: weights_only round trip, model rebuild, D-DITR head swap."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import (
    FORMAT,
    Checkpoint,
    CheckpointError,
    Preprocessing,
    build_model_from_checkpoint,
    load_checkpoint,
    save_checkpoint,
    transfer_for_segmentation,
)
from fit3d_ros.models.classes import kitti_box_classes
from fit3d_ros.threads import cpu_threads


@pytest.fixture(autouse=True)
def one_thread():
    with cpu_threads(1):  # the CI machine is shared; avoid oversubscription stalls
        yield


def _cfg(**kw) -> SpUNetConfig:
    return SpUNetConfig.tiny(in_channels=3, **kw)


def _cloud(n: int = 3000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * torch.tensor([20.0, 20.0, 3.0])


def _seg_ckpt(model: SpUNet) -> Checkpoint:
    return Checkpoint("segmentation", model.config, model.state_dict(),
                      Preprocessing(0.2, ("xyz",), BackboneSpec("vit_tiny_test", random_init=True)),
                      kitti_box_classes(), training={"step": 3, "teacher": "random-init"},
                      metrics={"miou": 0.5})


def test_round_trip_weights_only(tmp_path):
    torch.manual_seed(0)
    model = SpUNet(_cfg(num_classes=8))
    x = _cloud()
    model.train()
    model(x, x)  # move BatchNorm running statistics away from their init
    model.eval()
    path = save_checkpoint(tmp_path / "seg.ckpt", _seg_ckpt(model))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["kind"] == "segmentation"
    assert raw["preprocessing"]["voxel_size"] == 0.2
    assert [c["name"] for c in raw["classes"]["classes"]] == list(kitti_box_classes().names)
    ck = load_checkpoint(path)
    assert ck.class_names == list(kitti_box_classes().names)
    assert ck.palette[1] == (100, 150, 245)
    assert ck.preprocessing.backbone == BackboneSpec("vit_tiny_test", random_init=True)
    assert ck.model_config == model.config and ck.metrics == {"miou": 0.5}
    rebuilt = build_model_from_checkpoint(path)
    assert not rebuilt.training
    with torch.no_grad():
        a, b = model(x, x).logits, rebuilt(x, x).logits
    assert torch.equal(a, b)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a loadable"):
        load_checkpoint(junk)
    other = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a fit3d_ros"):
        load_checkpoint(other)
    with pytest.raises(CheckpointError, match="class map"):
        Checkpoint("segmentation", _cfg(), {}, Preprocessing(0.2))
    model = SpUNet(_cfg(num_classes=8))
    ck = _seg_ckpt(model)
    ck.state_dict = {k: v for k, v in ck.state_dict.items() if not k.startswith("seg_head")}
    with pytest.raises(CheckpointError, match="do not fit"):
        build_model_from_checkpoint(ck)


def test_head_swap_keeps_backbone_and_picks_dataset_norms():
    torch.manual_seed(1)
    pre = SpUNet(_cfg(num_classes=None, distill_dim=16, num_datasets=2))
    x = _cloud()
    pre.train()
    pre(x, x, dataset=0)
    pre(_cloud(seed=1) * 2, x, dataset=1)  # dataset 1's BatchNorms see other statistics
    init = Checkpoint("distillation", pre.config, pre.state_dict(), Preprocessing(0.2))
    seg_cfg = _cfg(num_classes=8)
    state, fresh = transfer_for_segmentation(init, seg_cfg, dataset=1)
    assert fresh == ["seg_head.bias", "seg_head.weight"]
    model = SpUNet(seg_cfg)
    model.load_state_dict(state, strict=False)
    src = pre.state_dict()
    new = model.state_dict()
    for key, value in new.items():
        if key.startswith("seg_head"):
            continue
        # plain BN `a.b.running_mean` <- per-dataset `a.b.norms.1.running_mean`
        parts = key.rsplit(".", 1)
        multi = f"{parts[0]}.norms.1.{parts[1]}"
        assert torch.equal(value, src[multi] if multi in src else src[key]), key
    assert not any(k.startswith("distill_head") for k in state)
    # dataset 0 would give different BatchNorm statistics
    other, _ = transfer_for_segmentation(init, seg_cfg, dataset=0)
    assert not torch.equal(other["stem.1.running_mean"], state["stem.1.running_mean"])
    with pytest.raises(CheckpointError, match="out of range"):
        transfer_for_segmentation(init, seg_cfg, dataset=2)
    wide = SpUNetConfig.tiny(in_channels=3, num_classes=8, base_channels=16)
    with pytest.raises(CheckpointError, match="does not fit"):
        transfer_for_segmentation(init, wide)


def test_injection_layers_are_fresh_after_transfer():
    pre = SpUNet(_cfg(num_classes=None, distill_dim=16))
    init = Checkpoint("distillation", pre.config, pre.state_dict(), Preprocessing(0.2))
    state, fresh = transfer_for_segmentation(init, _cfg(num_classes=4, inject_2d=True,
                                                        feat_2d_dim=48))
    assert any(k.startswith("inject.") for k in fresh)
    assert all(k.startswith(("inject.", "seg_head.")) for k in fresh)
    assert np.isclose(len(state), len(pre.state_dict()) - 2)  # minus distill_head.{w,b}

"""D-DITR: the cosine loss on visible points and a short distillation run on real frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.models import cosine_distillation_loss
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import load_checkpoint
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.ditr.config import DistillConfig
from fit3d_ros.training.ditr.data import LoadOptions
from fit3d_ros.training.ditr.distill import run_distillation
from fit3d_ros.training.ditr.sources import load_dataset

TINY_VIT = BackboneSpec("vit_tiny_test", random_init=True)


@pytest.fixture
def one_thread():
    with cpu_threads(1):  # the CI machine is shared; avoid oversubscription stalls
        yield


def test_cosine_loss_zero_for_identical_targets():
    x = torch.randn(50, 16)
    vis = torch.ones(50, dtype=torch.bool)
    assert float(cosine_distillation_loss(x, x.clone(), vis)) == pytest.approx(0.0, abs=1e-6)
    # scale does not matter for a cosine
    assert float(cosine_distillation_loss(3.0 * x, x, vis)) == pytest.approx(0.0, abs=1e-6)


def test_cosine_loss_ignores_invisible_points():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(40, 8, generator=g, requires_grad=True)
    target = torch.randn(40, 8, generator=g)
    vis = torch.arange(40) % 3 == 0
    loss = cosine_distillation_loss(pred, target, vis)
    p, t = pred.detach().numpy()[vis.numpy()], target.numpy()[vis.numpy()]
    by_hand = np.mean(1 - (p * t).sum(1) / np.linalg.norm(p, axis=1) / np.linalg.norm(t, axis=1))
    assert float(loss) == pytest.approx(by_hand, rel=1e-5)
    loss.backward()
    assert torch.all(pred.grad[~vis] == 0) and torch.any(pred.grad[vis] != 0)
    changed = pred.detach().clone()
    changed[~vis] = torch.randn(int((~vis).sum()), 8, generator=g)
    assert float(cosine_distillation_loss(changed, target, vis)) == pytest.approx(float(loss))
    none = cosine_distillation_loss(pred, target, torch.zeros(40, dtype=torch.bool))
    assert float(none) == 0.0


def test_distillation_on_kitti_and_nuscenes(shared_data, tmp_path, one_thread):
    opts = LoadOptions()
    data = [load_dataset(shared_data / "kitti" / "object", opts),
            load_dataset(shared_data / "nuscenes", opts)]
    cfg = DistillConfig.tiny(steps=12, max_points=8000)
    out = tmp_path / "dd.ckpt"
    r = run_distillation(data, TINY_VIT, cfg, out, cache_dir=tmp_path / "cache",
                         progress=False)
    # KITTI: frame 000001 held out (nuScenes has one sweep: all train)
    assert r["heldout_samples"] == 1 and r["train_samples"] == 2
    assert -1.0 <= r["heldout_cosine"] <= 1.0 and r["heldout_points"] > 10_000
    assert "random-init" in r["teacher"] and r["feature_dim"] == 48
    ck = load_checkpoint(out)
    assert ck.kind == "distillation" and ck.model_config.num_datasets == 2
    assert ck.model_config.distill_dim == 48 and ck.model_config.num_classes is None
    assert ck.preprocessing.backbone == TINY_VIT
    assert "random-init" in ck.training["teacher"] and ck.metrics["heldout_cosine"] == r["heldout_cosine"]
    # per-dataset BatchNorm: each dataset's statistics moved on its own
    s = ck.state_dict
    assert not torch.equal(s["stem.1.norms.0.running_mean"], s["stem.1.norms.1.running_mean"])
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1 + 1 + 6  # one map per image


def test_distillation_needs_cameras(shared_data, tmp_path):
    sk = load_dataset(shared_data / "semantickitti")
    with pytest.raises(ValueError, match="no camera images"):
        run_distillation([sk], TINY_VIT, DistillConfig.tiny(steps=1), tmp_path / "x.ckpt",
                         progress=False)

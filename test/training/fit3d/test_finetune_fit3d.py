"""Fine-tuning (Algorithm 1): output loads into our wrapper and plain timm, LoRA merges
exactly, the loss falls, and scene/backbone mismatches are errors."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from fit3d_ros.compat import import_timm
from fit3d_ros.models import build_backbone
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d.config import FinetuneConfig
from fit3d_ros.training.fit3d.finetune import LoRALinear, epoch_order, finetune
from fit3d_ros.training.fit3d.gaussians import GaussianModel
from fit3d_ros.training.fit3d.scene_file import FeatureScene, make_decoder, save_scene_file
from fit3d_ros.training.resume import checkpoint_path

SPEC = BackboneSpec(name="vit_tiny_test", random_init=True)


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def _scene_file(path, out_dim: int = 48, views: int = 3):
    """A small random feature scene in front of identity-ish cameras (56x42 views)."""
    g = torch.Generator().manual_seed(0)
    n = 400
    xyz = torch.rand(n, 3, generator=g) * torch.tensor([2.0, 1.5, 1.0]) - torch.tensor(
        [1.0, 0.75, -2.0])
    model = GaussianModel.from_points(xyz, torch.rand(n, 3, generator=g), 8, sh_degree=0)
    dec = make_decoder(8, out_dim)
    K = torch.tensor([[50.0, 0, 28], [0, 50.0, 21], [0, 0, 1]])
    vm = torch.eye(4).repeat(views, 1, 1)
    vm[:, 0, 3] = torch.linspace(-0.1, 0.1, views)
    imgs = (torch.rand(views, 42, 56, 3, generator=g) * 255).to(torch.uint8)
    fs = FeatureScene(model, dec, imgs, vm, K.repeat(views, 1, 1),
                      torch.tensor([True] * (views - 1) + [False]), {"name": "vit_tiny_test"})
    save_scene_file(path, fs)
    return path


def test_lora_merge_is_exact():
    base = torch.nn.Linear(6, 5)
    lora = LoRALinear(base, 2, alpha=4.0)
    torch.nn.init.normal_(lora.B)
    x = torch.randn(3, 6)
    want = lora(x).detach()
    assert torch.allclose(lora.merged()(x), want, atol=1e-6)


def test_epoch_order_covers_every_view_once_per_epoch():
    order = epoch_order([2, 3], 2.0, seed=0)
    assert len(order) == 10
    assert sorted(order[:5]) == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    assert sorted(order[5:]) == sorted(order[:5]) and order[:5] != order[5:]


def test_finetune_output_loads_into_wrapper_and_timm(tmp_path):
    scene = _scene_file(tmp_path / "s.pt")
    out = tmp_path / "ft.safetensors"
    cfg = FinetuneConfig.tiny(epochs=4, lr=1e-3, token_budget=12)
    r = finetune([scene, scene], SPEC, cfg, out, progress=False)
    assert r["steps"] == 8 and r["views"] == 16  # 2 scenes × 2 training views × 4 epochs
    assert r["loss_last"] < r["loss_first"]
    tuned = build_backbone("vit_tiny_test", pretrained=False, weights=out)
    orig = build_backbone("vit_tiny_test", pretrained=False)
    changed = [k for k, v in tuned.model.state_dict().items()
               if not torch.equal(v, orig.model.state_dict()[k])]
    assert "blocks.0.attn.qkv.weight" in changed
    timm = import_timm()
    plain = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0,
                              dynamic_img_size=True, depth=2, embed_dim=48, num_heads=2)
    plain.load_state_dict(load_file(str(out)), strict=True)
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["fit3d_ros"])
    assert meta["backbone"]["random_init"] and meta["steps"] == 8


def test_lora_finetune_changes_only_attention(tmp_path):
    scene = _scene_file(tmp_path / "s.pt")
    out = tmp_path / "lora.safetensors"
    cfg = FinetuneConfig.tiny(epochs=2, lr=1e-2, token_budget=12, lora_rank=2)
    finetune([scene], SPEC, cfg, out, progress=False)
    tuned = build_backbone("vit_tiny_test", pretrained=False, weights=out).model.state_dict()
    orig = build_backbone("vit_tiny_test", pretrained=False).model.state_dict()
    changed = {k for k, v in tuned.items() if not torch.equal(v, orig[k])}
    assert changed and all(k.endswith(("attn.qkv.weight", "attn.proj.weight")) for k in changed)


def test_backbone_width_mismatch_is_an_error(tmp_path):
    scene = _scene_file(tmp_path / "s.pt", out_dim=32)
    with pytest.raises(ValueError, match="decoder width 32"):
        finetune([scene], SPEC, FinetuneConfig.tiny(token_budget=12), tmp_path / "x.st",
                 progress=False)


@pytest.mark.parametrize("lora_rank", [None, 2])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, lora_rank):
    scene = _scene_file(tmp_path / "s.pt", views=4)
    cfg = FinetuneConfig.tiny(epochs=3, lr=1e-3, token_budget=12, batch_size=1,
                              save_every=2, lora_rank=lora_rank)
    full = finetune([scene], SPEC, cfg, tmp_path / "full.st", progress=False)
    assert full["steps"] == 9 and not checkpoint_path(tmp_path / "full.st").exists()
    part = tmp_path / "part.st"
    stopped = finetune([scene], SPEC, cfg, part, progress=False, stop_at=5)
    assert stopped["stopped"] and not part.exists()
    assert checkpoint_path(part).exists()  # saved at step 4 and at the stop (5)
    resumed = finetune([scene], SPEC, cfg, part, progress=False, resume=True)
    assert not checkpoint_path(part).exists()
    a, b = load_file(str(tmp_path / "full.st")), load_file(str(part))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6, rtol=0), k
    assert resumed["loss_first"] == pytest.approx(full["loss_first"], abs=1e-6)
    assert resumed["loss_last"] == pytest.approx(full["loss_last"], abs=1e-6)


def test_resume_refuses_another_run(tmp_path):
    scene = _scene_file(tmp_path / "s.pt")
    cfg = FinetuneConfig.tiny(epochs=2, token_budget=12, batch_size=1, save_every=1)
    out = tmp_path / "ft.st"
    finetune([scene], SPEC, cfg, out, progress=False, stop_at=1)
    with pytest.raises(ValueError, match="config differs"):
        finetune([scene], SPEC, cfg.with_overrides(lr=1e-3), out, progress=False, resume=True)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        finetune([scene], SPEC, cfg, tmp_path / "other.st", progress=False, resume=True)

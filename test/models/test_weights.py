"""Backbone weights from local files: bit-exact loading, Meta DINOv2 layout, bad files."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from fit3d_ros.models import TINY_TEST, WeightsFormatError, build_backbone

TINY = dict(depth=2, embed_dim=48, num_heads=2)


def _timm_state(net) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.model.state_dict().items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_local_weights_load_bit_exactly(tmp_path, suffix):
    src = build_backbone(TINY_TEST, seed=7)
    path = tmp_path / f"w{suffix}"
    state = _timm_state(src)
    if suffix == ".pth":
        torch.save({"model": state}, path)  # nested, as many trainers save it
    else:
        save_file(state, str(path))
    dst = build_backbone(TINY_TEST, seed=0, weights=path)
    got = dst.model.state_dict()
    assert set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)
    x = torch.rand(1, 3, 28, 42)
    assert torch.equal(src(x).patch, dst(x).patch)


def test_meta_dinov2_layout_with_chunks_and_nesting(tmp_path):
    src = build_backbone("dinov2_small", pretrained=False, seed=3, **TINY)
    state = _timm_state(src)
    meta = {"mask_token": torch.zeros(1, 48)}
    for k, v in state.items():  # Meta training layout: blocks.<chunk>.<i>, teacher/backbone.
        meta[k.replace("blocks.1.", "blocks.1.1.").replace("blocks.0.", "blocks.0.0.")] = v
    torch.save({"teacher": {f"backbone.{k}": v for k, v in meta.items()}}, tmp_path / "m.pth")
    dst = build_backbone("dinov2_small", pretrained=False, seed=0, weights=tmp_path / "m.pth",
                         **TINY)
    got = dst.model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_meta_dinov2_registers_conversion(tmp_path):
    net = build_backbone("dinov2_reg_small", pretrained=False, **TINY)
    state = _timm_state(net)
    g = torch.Generator().manual_seed(0)
    cls, regs = torch.randn(1, 1, 48, generator=g), torch.randn(1, 4, 48, generator=g)
    grid_pos = torch.randn(state["pos_embed"].shape, generator=g)
    cls_pos = torch.randn(1, 1, 48, generator=g)
    meta = {k: v for k, v in state.items() if k not in ("cls_token", "reg_token", "pos_embed")}
    # Meta: the [CLS] position is part of pos_embed, registers carry no position
    meta.update(mask_token=torch.zeros(1, 48), cls_token=cls, register_tokens=regs,
                pos_embed=torch.cat([cls_pos, grid_pos], dim=1))
    torch.save(meta, tmp_path / "reg.pth")
    dst = build_backbone("dinov2_reg_small", pretrained=False, weights=tmp_path / "reg.pth", **TINY)
    got = dst.model.state_dict()
    assert torch.equal(got["reg_token"], regs)
    assert torch.allclose(got["cls_token"], cls + cls_pos)
    assert torch.equal(got["pos_embed"], grid_pos)
    with pytest.raises(WeightsFormatError, match="register tokens"):
        build_backbone("dinov2_small", pretrained=False, weights=tmp_path / "reg.pth", **TINY)


def test_meta_swiglu_giant_layout(tmp_path):
    net = build_backbone("dinov2_giant", pretrained=False, seed=5, depth=1, embed_dim=48,
                         num_heads=2)
    state = _timm_state(net)
    meta = {k.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3"): v
            for k, v in state.items()}
    assert any("w12" in k for k in meta)
    meta["mask_token"] = torch.zeros(1, 48)
    save_file(meta, str(tmp_path / "g.safetensors"))
    dst = build_backbone("dinov2_giant", pretrained=False, depth=1, embed_dim=48, num_heads=2,
                         weights=tmp_path / "g.safetensors")
    got = dst.model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)


def test_bad_weight_files(tmp_path):
    wide = build_backbone("dinov2_small", pretrained=False, depth=2, embed_dim=64, num_heads=2)
    torch.save(_timm_state(wide), tmp_path / "wide.pth")
    with pytest.raises(WeightsFormatError, match="does not fit"):
        build_backbone(TINY_TEST, weights=tmp_path / "wide.pth")
    partial = _timm_state(build_backbone(TINY_TEST))
    partial.pop("norm.weight")
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(WeightsFormatError, match="norm.weight"):
        build_backbone(TINY_TEST, weights=tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsFormatError, match="cannot read"):
        build_backbone(TINY_TEST, weights=tmp_path / "junk.pth")
    with pytest.raises(FileNotFoundError):
        build_backbone(TINY_TEST, weights=tmp_path / "missing.pth")


def test_pretrained_names_load_from_offline_caches(tmp_path, monkeypatch):
    """FiT3D checkpoints from the torch hub cache, timm weights from the HF cache, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    src = build_backbone("dinov2_small", pretrained=False, seed=9)
    state = _timm_state(src)
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "dinov2_small_finetuned.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(state, ckpt)  # FiT3D's release: a plain timm state dict
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fine = build_backbone("dinov2_small_fine")
    got = fine.model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    snap = tmp_path / "hf" / "models--timm--vit_small_patch14_dinov2.lvd142m"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("0" * 40)
    (snap / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(state, str(snap / "snapshots" / ("0" * 40) / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    hub = build_backbone("dinov2_small")
    got = hub.model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)

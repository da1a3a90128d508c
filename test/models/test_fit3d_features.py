"""FiT3D assembly: original ‖ fine-tuned features, one module, one config."""
from __future__ import annotations

import pytest
import torch

from fit3d_ros.models import FiT3DConfig, FiT3DFeatures, build_backbone


def test_concatenation_of_original_and_finetuned(tmp_path):
    fine = build_backbone("vit_tiny_test", seed=11)
    torch.save(fine.model.state_dict(), tmp_path / "fine.pth")
    cfg = FiT3DConfig(name="vit_tiny_test", pretrained=False, finetuned_weights=tmp_path / "fine.pth")
    feats = FiT3DFeatures.from_config(cfg)
    original = build_backbone("vit_tiny_test", seed=0)
    x = torch.rand(2, 3, 42, 56)
    out = feats(x)
    assert feats.embed_dim == 96 and feats.patch_size == 14
    assert out.patch.shape == (2, 96, 3, 4) and out.cls.shape == (2, 96)
    assert torch.equal(out.patch[:, :48], original(x).patch)
    assert torch.equal(out.patch[:, 48:], fine(x).patch)
    assert torch.equal(out.cls[:, 48:], fine(x).cls)
    assert feats.preprocess(torch.zeros(20, 30, 3, dtype=torch.uint8), 4).shape[2:] == (28, 28)


def test_tiny_config_builds_identical_halves():
    feats = FiT3DFeatures.from_config(FiT3DConfig.tiny())
    out = feats(torch.rand(1, 3, 28, 28))
    assert torch.equal(out.patch[:, :48], out.patch[:, 48:])


def test_mismatched_halves_raise():
    a = build_backbone("vit_tiny_test")
    b = build_backbone("clip_base", pretrained=False, depth=1, embed_dim=48, num_heads=2)
    with pytest.raises(ValueError, match="patch sizes"):
        FiT3DFeatures(a, b)
    with pytest.raises(ValueError, match="no fine-tuned"):
        FiT3DFeatures.from_config(FiT3DConfig(name="dinov2_large", pretrained=True))

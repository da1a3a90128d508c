"""2D backbones: shapes and strides per family, normalisation, token budget, offline errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.compat import import_timm
from fit3d_ros.models import (
    BACKBONES,
    TINY_TEST,
    WeightsUnavailableError,
    build_backbone,
    input_size,
)
from fit3d_ros.models.backbones import weights_source

# family -> (expected patch size, expected normalisation mean), from the models' papers
FAMILIES = {
    "dinov2_small": (14, (0.485, 0.456, 0.406)),
    "dinov2_reg_small": (14, (0.485, 0.456, 0.406)),
    "dinov2_giant": (14, (0.485, 0.456, 0.406)),
    "clip_base": (16, (0.48145466, 0.4578275, 0.40821073)),  # OpenAI CLIP statistics
    "mae_base": (16, (0.485, 0.456, 0.406)),
    "deit3_base": (16, (0.485, 0.456, 0.406)),
    "dinov2_small_fine": (14, (0.485, 0.456, 0.406)),
}
SMALL = dict(embed_dim=32, num_heads=2)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_shapes_per_family(name):
    patch, mean = FAMILIES[name]
    net = build_backbone(name, pretrained=False, depth=1, **SMALL)
    assert net.patch_size == patch and net.embed_dim == 32
    np.testing.assert_allclose(net.mean.flatten().numpy(), mean, rtol=1e-6)
    out = net(torch.rand(2, 3, 3 * patch, 5 * patch))  # non-square input
    assert out.patch.shape == (2, 32, 3, 5) and out.cls.shape == (2, 32)
    assert out.patch.dtype == torch.float32 and torch.isfinite(out.patch).all()


@pytest.mark.parametrize("name", ["dinov2_small", "dinov2_reg_small", "clip_base", "deit3_base"])
def test_patch_grid_stride(name):
    """With no transformer blocks every patch feature depends only on its own pixels."""
    net = build_backbone(name, pretrained=False, depth=0, **SMALL)
    p = net.patch_size
    x = torch.rand(1, 3, 3 * p, 5 * p)
    y = x.clone()
    y[:, :, 1 * p:2 * p, 3 * p:4 * p] = 0.5  # patch (row 1, col 3)
    changed = (net(y).patch - net(x).patch).abs().sum(dim=1)[0] > 1e-6
    expected = torch.zeros(3, 5, dtype=torch.bool)
    expected[1, 3] = True
    assert torch.equal(changed, expected)


def test_random_init_is_seeded():
    a = build_backbone(TINY_TEST, seed=0)
    b = build_backbone(TINY_TEST, seed=0)
    c = build_backbone("dinov2_small", pretrained=False, seed=1, depth=2, embed_dim=48,
                       num_heads=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.blocks.0.attn.qkv.weight"],
                           sc["model.blocks.0.attn.qkv.weight"])


def test_tiny_keeps_dinov2_interface():
    net = build_backbone(TINY_TEST)
    assert net.patch_size == 14 and net.model.has_class_token
    assert hasattr(net.model.blocks[0], "ls1")  # LayerScale as in DINOv2


def test_bfloat16_matches_float32():
    f32 = build_backbone(TINY_TEST)
    bf16 = build_backbone(TINY_TEST, dtype=torch.bfloat16)
    x = torch.rand(1, 3, 28, 56)
    a, b = f32(x).patch, bf16(x).patch
    assert b.dtype == torch.float32
    assert (a - b).norm() / a.norm() < 0.05


def test_token_budget_sizes():
    # DITR: about 37x37 = 1369 tokens at patch 14, aspect ratio kept
    h, w = input_size(375, 1242, 14, 1369)
    assert h % 14 == 0 and w % 14 == 0
    assert abs((h // 14) * (w // 14) - 1369) / 1369 < 0.05
    assert abs(w / h - 1242 / 375) < 0.1
    assert input_size(518, 518, 14, 1369) == (518, 518)
    assert input_size(480, 640, 14) == (476, 644)  # nearest multiples without a budget
    with pytest.raises(ValueError):
        input_size(480, 640, 14, 0)


def test_preprocess_resizes_uint8_rgb():
    net = build_backbone(TINY_TEST)
    rgb = np.zeros((375, 1242, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    x = net.preprocess(rgb, token_budget=1369)
    assert x.shape == (1, 3, *input_size(375, 1242, 14, 1369))
    assert torch.allclose(x[0, 0], torch.ones_like(x[0, 0])) and x[0, 1:].abs().max() == 0
    assert net(x).patch.shape[2:] == (x.shape[2] // 14, x.shape[3] // 14)
    with pytest.raises(ValueError, match="uint8"):
        net.preprocess(rgb.astype(np.float32))


def test_bad_inputs_raise():
    net = build_backbone(TINY_TEST)
    with pytest.raises(ValueError, match="multiples of the patch size"):
        net(torch.rand(1, 3, 30, 28))
    with pytest.raises(ValueError):
        net(torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("no_such_backbone", pretrained=False)
    with pytest.raises(ValueError, match="overrides"):
        build_backbone("dinov2_small", pretrained=True, depth=1)


@pytest.mark.parametrize("name", ["dinov2_small", "dinov2_small_fine", "clip_base_fine"])
def test_offline_without_weights_says_how(name, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty torch hub cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # empty Hugging Face cache
    with pytest.raises(WeightsUnavailableError, match="--weights PATH"):
        build_backbone(name)
    with pytest.raises(WeightsUnavailableError, match="--weights PATH"):
        weights_source(name)  # the same failure, before any network is built


def test_weights_source_without_hub(tmp_path):
    f = tmp_path / "w.safetensors"
    assert weights_source("dinov2_small", weights=f)[2:] == (f, False)
    assert weights_source("dinov2_small", pretrained=False)[2:] == (None, False)
    arch, args, source, download = weights_source(TINY_TEST)
    assert (source, download) == (None, False) and args["depth"] < 12
    assert arch.split(".")[0] == build_backbone(TINY_TEST).model.default_cfg["architecture"]


def test_short_names_are_timm_models():
    timm = import_timm()
    for timm_name in BACKBONES.values():
        assert timm.is_model(timm_name.split(".")[0]), timm_name

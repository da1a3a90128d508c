"""Test fixtures for node tests: a tiny random checkpoint and KITTI extrinsics YAML."""
from __future__ import annotations

from pathlib import Path

import torch

from fit3d_ros.logs.scene_io import read_transform_buffer
from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import Checkpoint, Preprocessing, save_checkpoint
from fit3d_ros.models.classes import semantickitti_classes
from fit3d_ros.sensors.extrinsics_yaml import write_extrinsics
from safetensors.torch import save_file
from fit3d_ros.models.backbones import build_backbone


def tiny_checkpoint(path: Path, inject: bool = True,
                    features: tuple[str, ...] = ("xyz", "intensity")) -> Path:
    """A random-weight DITR (or image-free) checkpoint with the tiny test ViT."""
    torch.manual_seed(0)
    cfg = SpUNetConfig.tiny(in_channels=3 + ("intensity" in features), num_classes=19,
                            inject_2d=inject, feat_2d_dim=48)
    spec = (BackboneSpec(name="vit_tiny_test", random_init=True, token_budget=150,
                         view="center") if inject else None)
    save_checkpoint(path, Checkpoint("segmentation", cfg, SpUNet(cfg).state_dict(),
                                     Preprocessing(cfg.voxel_size, features, spec),
                                     semantickitti_classes()))
    return path


def extrinsics_yaml(bag: Path, out: Path) -> Path:
    """The bag's static transforms as the nodes' extrinsics_file (no tf2 here), as
    ``fit3d-ros bag extrinsics`` writes it."""
    return write_extrinsics(out, read_transform_buffer(bag).static_transforms())


def chroma_vit_weights(path: Path) -> Path:
    """Weights for ``vit_tiny_test`` whose patch feature is the patch's mean chromaticity
    (colour minus grey, plus a small constant so grey is one direction), independent of
    brightness and position: blocks and position embedding zeroed, the patch embedding
    undoes the ImageNet normalisation. A transparent stand-in for a pretrained ViT in
    pixel-query tests: same-colour surfaces have cosine ~1, different hues less."""
    state = build_backbone("vit_tiny_test", pretrained=False).model.state_dict()
    g = torch.Generator().manual_seed(0)
    a = torch.randn(48, 3, generator=g, dtype=torch.float64)
    a -= a.mean(dim=1, keepdim=True)   # rows see chroma only (grey maps to 0)
    a -= a.mean(dim=0, keepdim=True)   # zero-mean over channels: LayerNorm only scales
    e = torch.randn(48, generator=g, dtype=torch.float64)
    e -= e.mean()
    q, _ = torch.linalg.qr(torch.cat([a, e[:, None]], dim=1))
    e = q[:, 3] * a.norm() * 0.05      # the grey direction, orthogonal to the chroma ones
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    p = state["patch_embed.proj.weight"].shape[-1]
    state["patch_embed.proj.weight"] = (a * std.double())[:, :, None, None].expand(
        -1, -1, p, p).float() / (p * p)
    state["patch_embed.proj.bias"] = (a @ mean.double() + e).float()
    for k in state:
        if k == "pos_embed" or k.endswith(("attn.proj.weight", "attn.proj.bias",
                                           "mlp.fc2.weight", "mlp.fc2.bias")):
            state[k] = torch.zeros_like(state[k])
    state["norm.weight"], state["norm.bias"] = torch.ones(48), torch.zeros(48)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def chroma_checkpoint(path: Path, weights: Path, label: int = 0, logit: float = 5.0) -> Path:
    """An xyz-only DITR checkpoint over the `chroma_vit_weights` ViT whose head labels
    every point `label` with softmax confidence e^logit / (e^logit + K - 1)."""
    torch.manual_seed(0)
    cfg = SpUNetConfig.tiny(in_channels=3, num_classes=19, inject_2d=True, feat_2d_dim=48)
    model = SpUNet(cfg)
    with torch.no_grad():
        model.seg_head.weight.zero_()
        model.seg_head.bias.zero_()
        model.seg_head.bias[label] = logit
    spec = BackboneSpec(name="vit_tiny_test", weights=str(weights), token_budget=150,
                        view="center")
    save_checkpoint(path, Checkpoint("segmentation", cfg, model.state_dict(),
                                     Preprocessing(cfg.voxel_size, ("xyz",), spec),
                                     semantickitti_classes()))
    return path

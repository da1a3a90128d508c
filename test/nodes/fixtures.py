"""Test fixtures for node tests: a tiny random checkpoint and KITTI extrinsics YAML."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import Checkpoint, Preprocessing, save_checkpoint
from fit3d_ros.models.classes import semantickitti_classes


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
    """The bag's static transforms as the nodes' extrinsics_file (no tf2 here)."""
    from fit3d_ros.logs.scene_io import read_transform_buffer

    items = [{"parent": t.parent_frame, "child": t.child_frame,
              "translation": t.translation.tolist(), "rotation": t.quat.tolist()}
             for t in read_transform_buffer(bag).static_transforms()]
    out.write_text(yaml.safe_dump({"transforms": items}))
    return out

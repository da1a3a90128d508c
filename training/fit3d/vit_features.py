"""The FiT3D backbones of lift / finetune / evaluations, built the same way everywhere.

Design note: `lift`'s teacher, `finetune`'s starting student and the evaluations'
"original" model must be one network; they are all built here from a
`models.backbone_spec.BackboneSpec` (``random_init`` gives the seeded random ViT of
`fit3d_ros.models.build_backbone`, identical across processes). The fine-tuned model is
the same architecture with our fine-tuning output loaded as a weights file. Feature
extraction is frozen, batched over views and returns patch maps (C,h,w) with [CLS].
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.backbones import Backbone, build_backbone


def build_spec_backbone(spec: BackboneSpec, device: str | torch.device = "cpu",
                        weights: str | Path | None = None) -> Backbone:
    """The backbone of `spec` (or, with `weights`, its architecture with that file)."""
    w = weights if weights is not None else spec.weights
    model = build_backbone(spec.name, pretrained=not spec.random_init and w is None,
                           weights=w, seed=spec.seed)
    return model.to(device).eval()


def spec_dict(spec: BackboneSpec) -> dict:
    """JSON-able identity of the backbone for result files (what, and whether pretrained)."""
    return {"name": spec.name, "weights": spec.weights, "random_init": spec.random_init,
            "seed": spec.seed, "pretrained": not spec.random_init,
            "provenance": spec.teacher}


@torch.no_grad()
def extract(backbone: torch.nn.Module, images: Sequence[np.ndarray] | torch.Tensor,
            token_budget: int | None, batch: int = 8
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Patch maps [(C,h,w)] and [CLS] [(C,)] of uint8 RGB images (same size), frozen."""
    patches: list[torch.Tensor] = []
    cls: list[torch.Tensor] = []
    device = next(backbone.parameters()).device
    for s in range(0, len(images), batch):
        chunk = images[s:s + batch]
        arr = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.stack(chunk))
        x = backbone.preprocess(arr.to(device), token_budget)
        out = backbone(x)
        patches += list(out.patch.cpu())
        cls += list(out.cls.cpu())
    return patches, cls

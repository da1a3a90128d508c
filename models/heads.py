"""Per-point heads of the 3D backbone and D-DITR's distillation loss.

Design note: both heads are linear maps on the last decoder's per-voxel features (a
1x1x1 submanifold conv is the same thing). The segmentation head gives class logits;
the distillation head regresses the 2D ViT feature width (D-DITR), trained with
``L = (1/|V|) Σ_{i∈V} (1 − cos(x_i^pred, x_i^2D))`` over points V visible in a camera.
After pretraining the distillation head is dropped and a segmentation head added, so
inference needs no images.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationHead(nn.Linear):
    """Linear per-point class logits."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(in_channels, num_classes)


class DistillationHead(nn.Linear):
    """Linear regression of the 2D feature (width `out_dim`) for D-DITR."""

    def __init__(self, in_channels: int, out_dim: int) -> None:
        if out_dim < 1:
            raise ValueError(f"distillation out_dim must be >= 1, got {out_dim}")
        super().__init__(in_channels, out_dim)


def cosine_distillation_loss(pred: torch.Tensor, target: torch.Tensor,
                             visible: torch.Tensor) -> torch.Tensor:
    """D-DITR loss: mean of 1 − cos(pred_i, target_i) over visible points (0 if none)."""
    if pred.shape != target.shape or pred.ndim != 2:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must "
                         "be equal (N, D)")
    if visible.shape != pred.shape[:1]:
        raise ValueError(f"visible must be (N,)={tuple(pred.shape[:1])}, got {tuple(visible.shape)}")
    v = visible.to(torch.bool)
    if not v.any():
        return pred.sum() * 0.0
    return (1.0 - F.cosine_similarity(pred[v], target[v].to(pred.dtype), dim=1)).mean()

"""FiT3D feature assembly: original ViT features ‖ 3D-aware fine-tuned ViT features.

Design note: FiT3D's downstream features are the channel-wise concatenation of the
original backbone's and the fine-tuned backbone's patch features (their ablation:
concatenation beats adding or linear fusion, and keeps the original model's generality).
:class:`FiT3DFeatures` holds both backbones behind one config; the fine-tuned half comes
from FiT3D's released checkpoint (``<name>_fine``), from a local file (e.g. our own
fine-tuning run), or — for tests and ``--random-init`` — from the same seeded random
init as the original. Both backbones see the same image, so they must share patch size
and normalisation; the output keeps the :class:`BackboneOutput` interface with width 2C.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .backbones import DITR_TOKEN_BUDGET, FINETUNED, Backbone, BackboneOutput, build_backbone


@dataclass
class FiT3DConfig:
    """One config for both halves. `name` is the base short name (e.g. ``dinov2_small``)."""

    name: str = "dinov2_small"
    pretrained: bool = True                 # False: seeded random init for both halves
    original_weights: str | Path | None = None
    finetuned_weights: str | Path | None = None
    seed: int = 0
    dtype: torch.dtype = torch.float32

    @classmethod
    def tiny(cls) -> "FiT3DConfig":
        """Random tiny ViTs (patch 14) for tests."""
        return cls(name="vit_tiny_test", pretrained=False)


class FiT3DFeatures(nn.Module):
    """Concatenate original and fine-tuned backbone features channel-wise (FiT3D)."""

    def __init__(self, original: Backbone, finetuned: Backbone) -> None:
        super().__init__()
        if original.patch_size != finetuned.patch_size:
            raise ValueError(f"patch sizes differ: {original.patch_size} vs "
                             f"{finetuned.patch_size}")
        if not (torch.equal(original.mean, finetuned.mean)
                and torch.equal(original.std, finetuned.std)):
            raise ValueError("original and fine-tuned backbones normalise differently")
        self.original = original
        self.finetuned = finetuned

    @classmethod
    def from_config(cls, config: FiT3DConfig) -> "FiT3DFeatures":
        """Build both halves; the fine-tuned one is ``<name>_fine`` unless a file is given."""
        base = config.name[: -len("_fine")] if config.name.endswith("_fine") else config.name
        fine_name = f"{base}_fine" if f"{base}_fine" in FINETUNED else base
        if config.finetuned_weights is None and config.pretrained and fine_name == base:
            raise ValueError(f"FiT3D released no fine-tuned {base!r}: pass finetuned_weights "
                             f"(FiT3D models: {sorted(FINETUNED)})")
        common = dict(seed=config.seed, dtype=config.dtype)
        original = build_backbone(base, pretrained=config.pretrained,
                                  weights=config.original_weights, **common)
        finetuned = build_backbone(fine_name, pretrained=config.pretrained,
                                   weights=config.finetuned_weights, **common)
        return cls(original, finetuned)

    @property
    def patch_size(self) -> int:
        return self.original.patch_size

    @property
    def embed_dim(self) -> int:
        return self.original.embed_dim + self.finetuned.embed_dim

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return self.original.normalize(images)

    def input_size(self, height: int, width: int, token_budget: int | None = None) -> tuple[int, int]:
        return self.original.input_size(height, width, token_budget)

    def preprocess(self, rgb, token_budget: int | None = DITR_TOKEN_BUDGET) -> torch.Tensor:
        """Same as :meth:`Backbone.preprocess` (both halves share the input)."""
        return self.original.preprocess(rgb, token_budget)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        """Patch features (B, C_orig + C_fine, h, w) and [CLS] (B, C_orig + C_fine)."""
        a, b = self.original(images), self.finetuned(images)
        return BackboneOutput(patch=torch.cat([a.patch, b.patch], dim=1),
                              cls=torch.cat([a.cls, b.cls], dim=1))

"""The identity of a frozen 2D backbone as stored in checkpoints (`BackboneSpec`).

Design note: DITR injection and the D-DITR teacher need the same ViT at training and at
inference time; a :class:`BackboneSpec` records how to rebuild it (name, weights source,
seed, token budget, view choice, FiT3D assembly) as plain data, so a checkpoint that
carries it reproduces the features it was trained with
(`fit3d_ros.pipeline.features.FeatureConfig.from_spec` turns it into the extractor's
settings).
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .backbones import DITR_TOKEN_BUDGET
from .mapping import VIEW_CHOICES


@dataclass
class BackboneSpec:
    """How to build the frozen 2D backbone (teacher for D-DITR, X^2D source for DITR)."""

    name: str = "dinov2_small"
    weights: str | None = None          # local .pth/.safetensors (wins over pretrained)
    random_init: bool = False           # seeded random ViT (no pretrained weights)
    seed: int = 0
    token_budget: int | None = DITR_TOKEN_BUDGET
    view: str = "random"                # view choice for points seen by several cameras
    fit3d: bool = False                 # FiT3D assembly: original ‖ fine-tuned features
    finetuned_weights: str | None = None

    def __post_init__(self) -> None:
        if self.view not in VIEW_CHOICES:
            raise ValueError(f"view must be one of {VIEW_CHOICES}, got {self.view!r}")
        if self.weights is not None and self.random_init:
            raise ValueError("give either weights or random_init, not both")

    @property
    def teacher(self) -> str:
        """Human-readable weights provenance (goes into every result file)."""
        if self.random_init:
            return f"random-init (seed {self.seed}; no pretrained weights)"
        if self.weights:
            return f"weights file {self.weights}"
        return "pretrained (hub)"

    def cache_id(self) -> str:
        d = asdict(self)
        if self.weights:
            p = Path(self.weights)
            d["weights"] = f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        return hashlib.sha1(repr(sorted(d.items())).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneSpec":
        return cls(**d)

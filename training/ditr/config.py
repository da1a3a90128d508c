"""``tiny`` and ``default`` configs of D-DITR distillation and segmentation training.

Design note: ``default`` follows the reference recipes for a GPU — Pointcept's
SpUNet-v1m1 on SemanticKITTI for segmentation (5 cm voxels, coordinates + intensity,
SGD lr 0.04 Nesterov, weight decay 1e-4, OneCycle with 4 % warm-up, batch 12, ~50 epochs
≈ 80k steps) and the PTv3 recipe DITR/D-DITR train with for distillation (AdamW lr 2e-3,
weight decay 5e-3, OneCycle 5 % warm-up). ``tiny`` keeps the same topology with a
4-level, 8-32-channel U-Net on 20 cm voxels, geometry-only input, AdamW and random
subsets of at most 30k points per scan, so a run on a laptop CPU takes minutes. Both
are plain dataclasses; any field can be overridden (the CLI exposes the common ones).
``amp`` is Pointcept's mixed precision (``torch.autocast`` on CUDA, fp16 with a
``GradScaler``, bf16 without one; ignored on CPU, whose runs stay bit-identical);
``prefetch`` builds the next batch in a background thread.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fit3d_ros.models import SpUNetConfig
from fit3d_ros.training.ditr.augment import AugmentConfig
from fit3d_ros.training.ditr.loop import AMP_MODES, OptimConfig
from fit3d_ros.training.presets import Preset


def _unet(preset: str, **kw: Any) -> Any:
    if preset == "tiny":  # short runs: BatchNorm running stats must catch up in ~100 steps
        return SpUNetConfig.tiny(**{"bn_momentum": 0.1, **kw})
    return SpUNetConfig.default(**kw)


@dataclass
class SegTrainConfig(Preset):
    """Segmentation training (DITR with or without injection, or D-DITR fine-tuning)."""

    preset: str = "default"
    steps: int = 80_000
    batch_size: int = 12
    max_points: int | None = None
    input_features: tuple[str, ...] = ("xyz", "intensity")
    voxel_size: float = 0.05
    optim: OptimConfig = field(default_factory=OptimConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    save_every: int = 1000
    seed: int = 0
    amp: str = "off"                 # off | bf16 | fp16 (CUDA only)
    prefetch: bool = True            # next batch built while the step trains

    @classmethod
    def tiny(cls, **kw: Any) -> "SegTrainConfig":
        base = dict(preset="tiny", steps=150, batch_size=1, max_points=30_000,
                    input_features=("xyz",), voxel_size=0.2, save_every=50,
                    optim=OptimConfig(optimizer="adamw", lr=0.02, weight_decay=1e-4,
                                      pct_start=0.1))
        base.update(kw)
        return cls(**base)

    @classmethod
    def default(cls, **kw: Any) -> "SegTrainConfig":
        return cls(**kw)

    def __post_init__(self) -> None:
        self.input_features = tuple(self.input_features)
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps ({self.steps}) and batch_size ({self.batch_size}) must "
                             "be >= 1")
        if self.max_points is not None and self.max_points < 1:
            raise ValueError(f"max_points must be >= 1, got {self.max_points}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")

    def unet(self, **kw: Any) -> Any:
        """The SpUNetConfig of this preset (voxel size from this config)."""
        return _unet(self.preset, voxel_size=self.voxel_size, **kw)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegTrainConfig":
        """Inverse of :meth:`to_dict` (used by ``--resume``)."""
        d = dict(d)
        d["optim"] = OptimConfig(**d["optim"])
        d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_features"] = list(self.input_features)
        d["augment"]["scale"] = list(self.augment.scale)
        return d


@dataclass
class DistillConfig(SegTrainConfig):
    """D-DITR pretraining: regress X^2D on visible points (cosine loss)."""

    holdout: float = 0.2

    @classmethod
    def default(cls, **kw: Any) -> "DistillConfig":
        base = dict(steps=40_000, optim=OptimConfig(optimizer="adamw", lr=2e-3,
                                                    weight_decay=5e-3, pct_start=0.05))
        base.update(kw)
        return cls(**base)

    @classmethod
    def tiny(cls, **kw: Any) -> "DistillConfig":
        optim = OptimConfig(optimizer="adamw", lr=0.01, weight_decay=1e-4, pct_start=0.1)
        return super().tiny(**{"steps": 100, "save_every": 0, "optim": optim, **kw})

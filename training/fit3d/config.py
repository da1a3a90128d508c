"""``tiny`` and ``default`` configs of FiT3D lifting, fine-tuning and evaluation.

Design note: ``default`` follows the papers for a GPU machine — 3DGS's schedule and
densification (30k iterations, densify every 100 from 500 to 15k, position lr
1.6e-4 → 1.6e-6 × scene extent, opacity reset every 3k, SH degree 3), FiT3D's feature
Gaussians (D = 64, 3×3-conv decoder without bias) at the recorded resolution, and
Algorithm 1's fine-tuning (AdamW lr 1e-5, weight decay 1e-4, batch 2, 1 epoch, clip 0.1)
at DITR's token budget. ``tiny`` keeps every mechanism but shrinks the numbers (160×120
renders, D = 16, a few hundred iterations, 192 tokens, higher fine-tuning lr) so the
whole chain runs on a 2-core laptop in minutes. Plain dataclasses; ``with_overrides``
applies command-line options; ``to_dict`` stores them in result files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fit3d_ros.training.presets import PRESETS, Preset

__all__ = ["PRESETS", "LiftConfig", "FinetuneConfig", "EvalConfig"]


@dataclass
class LiftConfig(Preset):
    """Stage I: one feature-Gaussian scene per log (3DGS + FiT3D feature branch)."""

    preset: str = "default"
    image_width: int | None = None     # render/training width (None: recorded width)
    iterations: int = 30_000
    feature_dim: int = 64              # D of f (FiT3D default)
    sh_degree: int = 3
    sh_increase_every: int = 1000      # 3DGS: one more SH band every 1000 iterations
    token_budget: int | None = 37 * 37  # teacher input (patches per image)
    depth_stride: int = 2              # back-project every n-th depth pixel
    voxel_size: float = 0.01           # init voxel downsampling (m)
    max_init_points: int = 300_000
    max_gaussians: int = 3_000_000
    lr_position: float = 1.6e-4        # × scene extent; exponential decay to lr_position_final
    lr_position_final: float = 1.6e-6
    lr_sh_dc: float = 0.0025
    lr_opacity: float = 0.05
    lr_scaling: float = 0.005
    lr_rotation: float = 0.001
    lr_feature: float = 0.0025
    lr_decoder: float = 0.001
    lambda_dssim: float = 0.2          # L_c = (1-λ) L1 + λ (1 - SSIM)
    densify_from: int = 500
    densify_until: int = 15_000
    densify_every: int = 100
    densify_grad_threshold: float = 0.0002  # NDC view-space gradient (3DGS)
    percent_dense: float = 0.01
    opacity_reset_every: int = 3000
    prune_opacity: float = 0.005
    save_every: int = 1000
    seed: int = 0

    @classmethod
    def default(cls, **kw: Any) -> "LiftConfig":
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> "LiftConfig":
        base: dict[str, Any] = dict(
            preset="tiny", image_width=160, iterations=500, feature_dim=16, sh_degree=0,
            token_budget=192, depth_stride=4, voxel_size=0.03, max_init_points=20_000,
            max_gaussians=40_000, lr_feature=0.02, lr_decoder=0.005, densify_from=100,
            densify_until=350, opacity_reset_every=0, save_every=100)
        base.update(kw)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.feature_dim < 1 or not 0 <= self.sh_degree <= 3:
            raise ValueError(f"iterations ({self.iterations}) and feature_dim "
                             f"({self.feature_dim}) must be >= 1, sh_degree in 0..3 "
                             f"(got {self.sh_degree})")
        if self.voxel_size <= 0 or self.depth_stride < 1:
            raise ValueError("voxel_size must be > 0 and depth_stride >= 1")
        if self.image_width is not None and self.image_width < 16:
            raise ValueError(f"image_width must be >= 16, got {self.image_width}")


@dataclass
class FinetuneConfig(Preset):
    """Stage II (Algorithm 1): fine-tune the ViT on rendered F_high."""

    preset: str = "default"
    epochs: float = 1.0
    batch_size: int = 2
    lr: float = 1e-5
    weight_decay: float = 1e-4
    grad_clip: float = 0.1
    flip: bool = True
    token_budget: int | None = 37 * 37
    lora_rank: int | None = None       # None: full fine-tuning
    lora_alpha: float | None = None    # None: = rank
    seed: int = 0
    save_every: int = 50               # checkpoint every N steps (0: only at the end)

    @classmethod
    def default(cls, **kw: Any) -> "FinetuneConfig":
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> "FinetuneConfig":
        base: dict[str, Any] = dict(preset="tiny", epochs=3.0, lr=1e-4, token_budget=192)
        base.update(kw)
        return cls(**base)

    def __post_init__(self) -> None:
        if not self.epochs > 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs ({self.epochs}) and lr ({self.lr}) must be > 0, "
                             f"batch_size ({self.batch_size}) >= 1")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")


@dataclass
class EvalConfig(Preset):
    """Correspondence and linear-probe evaluations."""

    preset: str = "default"
    token_budget: int | None = 37 * 37
    pairs: int = 50
    point_stride: int = 8              # correspondence: depth-grid stride (pixels)
    ratio: float = 0.9                 # Lowe ratio test on feature distances
    threshold_px: float = 10.0
    min_overlap: float = 0.3           # pairs: share of co-visible points
    depth_tolerance: float = 0.05      # occlusion test: relative depth agreement
    probe_steps: int = 1000
    probe_lr: float = 1e-3
    probe_upsample: int = 4            # SnD: features ×4 before the depth head
    depth_bins: int = 256
    depth_range: tuple[float, float] | None = None  # None: from the training frames
    target_width: int = 160            # probe targets are resized to this width
    seed: int = 0

    @classmethod
    def default(cls, **kw: Any) -> "EvalConfig":
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> "EvalConfig":
        base: dict[str, Any] = dict(preset="tiny", token_budget=192, pairs=20,
                                    probe_steps=150, probe_lr=1e-2, probe_upsample=1,
                                    target_width=64)
        base.update(kw)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.depth_range is not None:
            self.depth_range = tuple(float(x) for x in self.depth_range)  # type: ignore
            if not 0 <= self.depth_range[0] < self.depth_range[1]:
                raise ValueError(f"depth_range must be (lo, hi) with 0 <= lo < hi, got "
                                 f"{self.depth_range}")
        if not 0 < self.ratio <= 1 or self.threshold_px <= 0 or self.point_stride < 1:
            raise ValueError("ratio must be in (0, 1], threshold_px > 0, point_stride >= 1")
        if self.depth_bins < 2 or self.probe_steps < 1:
            raise ValueError("depth_bins must be >= 2 and probe_steps >= 1")

"""``tiny`` and ``default`` configs of Splat-and-Distill (SnD) training.

Design note: ``default`` is the paper's recipe for a GPU machine — 50k iterations, batch 1,
Adam lr 2e-5 with a cosine schedule, LoRA rank 8 on qkv/proj, EMA teacher (momentum
0.999 every 10 steps), mask-aware upscaling, semantic blending with a = 0.5 and a DINO
head (3-layer MLP, hidden 2048, bottleneck 256, 65,536 prototypes) — rendering the
pixel-aligned Gaussians at 320 px wide. ``tiny`` keeps every mechanism and shrinks the
numbers (80×60 renders, 192 tokens, a smaller head, a few hundred steps, a higher lr) so
that a run finishes on a 2-core laptop in minutes. The view-selection thresholds (baseline
range, frustum overlap, span) are in metres / fractions / training-list positions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fit3d_ros.training.presets import Preset

UPSCALES = ("mask", "bilinear")
LOSSES = ("dino", "cosine")
SCALE_MODES = ("isotropic", "gradient")
OPACITY_MODES = ("fixed", "confidence")


@dataclass
class SnDConfig(Preset):
    """One SnD run: view sampling, Gaussians, teacher, upscaling, blending, head, optimiser."""

    preset: str = "default"
    steps: int = 50_000
    lr: float = 2e-5                   # Adam, cosine schedule to 0 over `steps`
    lora_rank: int = 8
    lora_alpha: float | None = None    # None: = rank
    token_budget: int | None = 37 * 37
    image_width: int | None = 640      # stored images (the ViTs' input source)
    render_width: int = 320            # pixel-aligned Gaussians and F_rendered
    # view sampling (pose-based): contexts a < b in the training list, target between
    min_baseline: float = 0.05         # m between the context cameras
    max_baseline: float = 1.0
    min_overlap: float = 0.3           # share of a's depth points inside b's frustum, unoccluded
    max_span: int = 6                  # b - a (positions in the training list)
    # pixel-aligned Gaussians
    scale_mode: str = "isotropic"      # or "gradient": shaped by the depth gradient
    footprint: float = 0.45            # σ = footprint × the pixel's size at its depth
    max_stretch: float = 4.0           # gradient mode: longest axis ≤ this × isotropic σ
    opacity_mode: str = "fixed"        # or "confidence": lower at depth discontinuities
    opacity: float = 0.95
    min_alpha: float = 0.5             # rendered pixels below this are invalid (no loss)
    # masks from discontinuities (when no mask folder / topic is given)
    depth_edge: float = 0.05           # relative depth jump between neighbours
    color_edge: float = 0.12           # colour jump (max over channels, [0,1])
    min_segment: float = 0.002         # segments smaller than this share of pixels merge
    # teacher, upscaling, blending, loss
    ema_momentum: float = 0.999
    ema_every: int = 10
    frozen_teacher: bool = False
    upscale: str = "mask"
    blend: float = 0.5                 # a in F_blend = a F + (1 - a) mean_mask F
    loss: str = "dino"
    head_hidden: int = 2048
    head_bottleneck: int = 256
    prototypes: int = 65_536
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    center_momentum: float = 0.9
    save_every: int = 1000
    seed: int = 0

    @classmethod
    def default(cls, **kw: Any) -> SnDConfig:
        return cls(**kw)

    @classmethod
    def tiny(cls, **kw: Any) -> SnDConfig:
        base: dict[str, Any] = dict(
            preset="tiny", steps=300, lr=1e-4, token_budget=192, image_width=224,
            render_width=80, head_hidden=512, head_bottleneck=128, prototypes=4096,
            save_every=50)
        base.update(kw)
        return cls(**base)

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.lr > 0 or self.lora_rank < 1:
            raise ValueError(f"steps ({self.steps}) and lora_rank ({self.lora_rank}) must "
                             f"be >= 1, lr ({self.lr}) > 0")
        for name, value, allowed in (("upscale", self.upscale, UPSCALES),
                                     ("loss", self.loss, LOSSES),
                                     ("scale_mode", self.scale_mode, SCALE_MODES),
                                     ("opacity_mode", self.opacity_mode, OPACITY_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if not 0 <= self.blend <= 1 or not 0 <= self.ema_momentum <= 1:
            raise ValueError("blend and ema_momentum must be in [0, 1]")
        if self.ema_every < 1 or self.max_span < 2 or self.render_width < 8:
            raise ValueError("ema_every must be >= 1, max_span >= 2, render_width >= 8")
        if not 0 <= self.min_baseline < self.max_baseline:
            raise ValueError(f"need 0 <= min_baseline < max_baseline, got "
                             f"{self.min_baseline}, {self.max_baseline}")
        if not 0 < self.opacity <= 1 or self.prototypes < 2:
            raise ValueError("opacity must be in (0, 1], prototypes >= 2")

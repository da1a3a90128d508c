"""Point-cloud augmentations for segmentation and distillation training.

Design note: Pointcept's outdoor recipe (SemanticKITTI / nuScenes) in one rigid-plus-
scale map applied to centred coordinates: a random rotation about z (uniform in
±``rotate_z`` rad), a random isotropic scale in ``scale``, independent flips of x and y
(probability ``flip_p`` each), then Gaussian jitter (σ ``jitter_sigma``, clipped at
``jitter_clip``). All randomness comes from the caller's ``numpy.random.Generator`` so a
training step is reproducible from (seed, step) alone (this is what makes ``--resume``
bit-exact). 2D features are gathered on the *un-augmented* points before this runs, so
cameras never need to be transformed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AugmentConfig:
    """Augmentation ranges (defaults: Pointcept's SemanticKITTI recipe)."""

    enabled: bool = True
    rotate_z: float = np.pi
    scale: tuple[float, float] = (0.9, 1.1)
    flip_p: float = 0.5
    jitter_sigma: float = 0.005
    jitter_clip: float = 0.02

    def __post_init__(self) -> None:
        self.scale = tuple(float(s) for s in self.scale)
        if len(self.scale) != 2 or not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")
        if not 0.0 <= self.flip_p <= 1.0:
            raise ValueError(f"flip_p must be in [0, 1], got {self.flip_p}")
        if self.rotate_z < 0 or self.jitter_sigma < 0 or self.jitter_clip < 0:
            raise ValueError("rotate_z, jitter_sigma and jitter_clip must be >= 0")

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(enabled=False)


def random_transform(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """The (3,3) linear map of one draw: flips · scale · R_z(angle)."""
    angle = rng.uniform(-cfg.rotate_z, cfg.rotate_z)
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    scale = rng.uniform(*cfg.scale)
    flips = np.where(rng.random(2) < cfg.flip_p, -1.0, 1.0)
    return np.diag([flips[0], flips[1], 1.0]) @ (scale * rot)


def augment_points(xyz: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
                   ) -> np.ndarray:
    """Augmented copy (float32) of (N,3) centred coordinates; unchanged when disabled."""
    xyz = np.asarray(xyz, dtype=np.float32)
    if not cfg.enabled:
        return xyz.copy()
    out = xyz.astype(np.float64) @ random_transform(rng, cfg).T
    if cfg.jitter_sigma > 0:
        noise = rng.normal(0.0, cfg.jitter_sigma, size=out.shape)
        out += np.clip(noise, -cfg.jitter_clip, cfg.jitter_clip)
    return out.astype(np.float32)

"""Semantic blending of rendered features and their reduction to the student's token grid.

Design note: ``F_blend(u) = a·F(u) + (1−a)·mean_{v valid, mask(v)=mask(u)} F(v)`` (SnD,
a = 0.5): the per-segment means are one ``index_add`` over the valid pixels. Invalid
pixels (uncovered by the context Gaussians) are zero and carry no weight when F_blend is
downscaled (bilinear, antialiased) to the token grid: the valid fraction is downscaled
the same way, divides the features, and tokens less than half valid are masked out.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def semantic_blend(feat: Tensor, valid: Tensor, labels: Tensor, a: float = 0.5) -> Tensor:
    """F_blend (C,H,W) of rendered features (C,H,W); zero at invalid pixels."""
    c = feat.shape[0]
    n = int(labels.max()) + 1
    flat = feat.reshape(c, -1)
    lab, ok = labels.reshape(-1), valid.reshape(-1)
    sums = torch.zeros(n, c, dtype=feat.dtype, device=feat.device).index_add_(
        0, lab[ok], flat[:, ok].T)
    counts = torch.zeros(n, dtype=feat.dtype, device=feat.device).index_add_(
        0, lab[ok], torch.ones_like(lab[ok], dtype=feat.dtype))
    means = sums / counts.clamp_min(1)[:, None]
    out = a * flat + (1 - a) * means[lab].T
    return (out * ok).reshape(feat.shape)


def to_tokens(feat: Tensor, valid: Tensor, grid: tuple[int, int], min_valid: float = 0.5
              ) -> tuple[Tensor, Tensor]:
    """(tokens (C,h,w), token mask (h,w)): valid-weighted bilinear antialiased downscale."""
    v = valid.to(feat.dtype)[None, None]
    num = F.interpolate((feat * v[0])[None], size=grid, mode="bilinear", align_corners=False,
                        antialias=True)[0]
    den = F.interpolate(v, size=grid, mode="bilinear", align_corners=False,
                        antialias=True)[0, 0]
    return num / den.clamp_min(1e-6), den > min_valid

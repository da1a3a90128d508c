"""The teacher side of one SnD step: context patch features → mask-aware upscaling →
Gaussians → F_rendered at the target view → semantic blending → token-grid targets.

Design note: everything here runs without gradient (the teacher is a stop-gradient
target). The teacher sees the context images at the run's token budget; its patch maps
are upscaled to the render size with the contexts' own masks and attached to their
pixel-aligned Gaussians (`PreparedScene.gaussians[c].index` picks the pixels with depth).
Pixels whose rendered alpha is below `min_alpha` are invalid: blending ignores them and
the token mask drops tokens that are less than half valid.
"""
from __future__ import annotations

import torch
from torch import Tensor

from fit3d_ros.models.backbones import Backbone
from fit3d_ros.training.snd.blend import semantic_blend, to_tokens
from fit3d_ros.training.snd.config import SnDConfig
from fit3d_ros.training.snd.data import PreparedScene
from fit3d_ros.training.snd.gaussians import concat, render_features
from fit3d_ros.training.snd.upscale import mask_aware_upscale


@torch.no_grad()
def teacher_patches(teacher: Backbone, images: Tensor, token_budget: int | None) -> Tensor:
    """Patch maps (B,C,h,w) of uint8 images (B,H,W,3)."""
    return teacher(teacher.preprocess(images, token_budget)).patch


@torch.no_grad()
def render_from(ps: PreparedScene, teacher: Backbone, contexts: tuple[int, ...], target: int,
                cfg: SnDConfig, backend: str = "auto") -> tuple[Tensor, Tensor]:
    """(F_rendered (C,H,W), alpha (H,W)) at view `target` from the contexts' Gaussians
    carrying the teacher's upscaled features."""
    patches = teacher_patches(teacher, ps.images[list(contexts)], cfg.token_budget)
    feats = []
    for c, p in zip(contexts, patches):
        up = mask_aware_upscale(p, ps.labels[c], cfg.upscale)
        feats.append(up.reshape(up.shape[0], -1)[:, ps.gaussians[c].index].T)
    w, h = ps.size
    f, alpha, _ = render_features(concat([ps.gaussians[c] for c in contexts]),
                                  torch.cat(feats).contiguous(), ps.viewmats[target],
                                  ps.Ks[target], w, h, backend)
    return f.permute(2, 0, 1), alpha


@torch.no_grad()
def token_targets(f: Tensor, alpha: Tensor, labels: Tensor, grid: tuple[int, int],
                  cfg: SnDConfig) -> tuple[Tensor, Tensor]:
    """(F_blend on the token grid (C,h,w), token mask (h,w)) of a rendered map."""
    valid = alpha > cfg.min_alpha
    blended = semantic_blend(f, valid, labels, cfg.blend)
    return to_tokens(blended, valid, grid)

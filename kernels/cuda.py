"""CUDA backend: gsplat.rasterization with colour, depth and D-channel features.

Design note: gsplat renders any channel count (in `channel_chunk` slices), so colour and
features go through one call as extra channels (`render_mode="RGB+D"` appends the
accumulated depth Σ wᵢzᵢ), sharing one projection and one set of blending weights.
Colours are always passed as RGB: SH are evaluated by our `sh_to_rgb` (gsplat's own
convention, max(SH + 0.5, 0)), so every backend shades identically. With
`detach_geometry_for_features` the features get a second call on detached geometry, so
their loss reaches only `features`. The background is blended here as rgb + (1−α)·bg.
Known difference: gsplat clamps alpha at 0.999 (ours: 0.99), so outputs differ where
oᵢ·G > 0.99; with opacities ≤ 0.99 the backends agree. gsplat is imported lazily and
only on CUDA; its private torch implementation is never used.
"""
from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from .projection import EPS2D

CHANNEL_CHUNK = 64


def gsplat_available() -> bool:
    """Whether CUDA is usable and gsplat is installed."""
    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                     rgb: Tensor, features: Tensor | None, viewmat: Tensor, K: Tensor,
                     width: int, height: int, near_plane: float,
                     detach_geometry_for_features: bool,
                     ) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor, Tensor]:
    """Render with gsplat; returns rgb, features, alpha, depth (H,W,·), means2d, radii (N,2)."""
    import gsplat  # optional: gsplat only with the cuda extra

    common = dict(viewmats=viewmat[None], Ks=K[None], width=width, height=height,
                  near_plane=near_plane, eps2d=EPS2D, packed=False, tile_size=16,
                  rasterize_mode="classic", channel_chunk=CHANNEL_CHUNK)
    split = features is not None and detach_geometry_for_features
    colors = rgb if features is None or split else torch.cat([rgb, features], dim=-1)
    image, alpha, meta = gsplat.rasterization(means, quats, scales, opacities, colors,
                                              render_mode="RGB+D", **common)
    image, alpha = image[0], alpha[0]
    feats = None
    if features is not None and not split:
        feats = image[..., 3:-1]
    elif split:
        feats = gsplat.rasterization(means.detach(), quats.detach(), scales.detach(),
                                     opacities.detach(), features, render_mode="RGB",
                                     **common)[0][0]
    radii = meta["radii"][0]
    radii = (radii if radii.dim() == 2 else radii[:, None].expand(-1, 2)).to(means.dtype)
    return image[..., :3], feats, alpha, image[..., -1:], meta["means2d"][0], radii

"""Synthetic Gaussian scenes for the rasterizer's tests and benchmark.

Design note: one seeded generator so tests and `benchmarks/bench_raster.py` render the
same kind of scene: N Gaussians spread through (and a little beyond) the view frustum of
an identity camera at depths 2-8, log-uniform world scales giving footprints from
sub-pixel to a few tens of pixels, random rotations, opacities in (0.05, 0.95), RGB or
SH colours and Gaussian-distributed features.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SceneConfig:
    """Parameters of `random_scene`."""

    n: int = 1000
    width: int = 64
    height: int = 48
    features: int | None = 8       # D, or None for colour only
    sh_degree: int | None = None   # None: RGB colours; 0-3: (N,16,3) SH coefficients
    scale_range: tuple[float, float] = (0.005, 0.08)
    depth_range: tuple[float, float] = (2.0, 8.0)
    frustum_margin: float = 1.15   # >1 puts some Gaussians partly or wholly off screen
    seed: int = 0
    dtype: torch.dtype = torch.float32


def camera(width: int, height: int, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Identity world->camera matrix and a pinhole K with ~64° horizontal field of view."""
    f = 0.8 * width
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=dtype)
    return torch.eye(4, dtype=dtype), K


def random_scene(cfg: SceneConfig) -> dict:
    """Keyword arguments for `rasterize_gaussians` (tensors on CPU, leaf, no grad)."""
    g = torch.Generator().manual_seed(cfg.seed)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    viewmat, K = camera(cfg.width, cfg.height, torch.float64)
    z = cfg.depth_range[0] + (cfg.depth_range[1] - cfg.depth_range[0]) * rand(cfg.n)
    half_w = cfg.frustum_margin * cfg.width / 2 / K[0, 0]
    half_h = cfg.frustum_margin * cfg.height / 2 / K[1, 1]
    x = (2 * rand(cfg.n) - 1) * half_w * z
    y = (2 * rand(cfg.n) - 1) * half_h * z
    lo, hi = torch.log(torch.tensor(cfg.scale_range, dtype=torch.float64))
    scales = torch.exp(lo + (hi - lo) * rand(cfg.n, 3))
    quats = torch.randn(cfg.n, 4, generator=g, dtype=torch.float64)
    opacities = 0.05 + 0.9 * rand(cfg.n)
    if cfg.sh_degree is None:
        colors = rand(cfg.n, 3)
    else:
        colors = 0.3 * torch.randn(cfg.n, 16, 3, generator=g, dtype=torch.float64)
    feats = None
    if cfg.features is not None:
        feats = torch.randn(cfg.n, cfg.features, generator=g, dtype=torch.float64)
    scene = dict(means=torch.stack([x, y, z], dim=-1), quats=quats, scales=scales,
                 opacities=opacities, colors=colors, features=feats, viewmat=viewmat, K=K)
    scene = {k: None if v is None else v.to(cfg.dtype) for k, v in scene.items()}
    scene.update(width=cfg.width, height=cfg.height, sh_degree=cfg.sh_degree)
    return scene

"""SSIM and the 3DGS colour loss L_c = (1−λ)·L1 + λ·(1−SSIM), plus PSNR.

Design note: SSIM with the usual 11×11 Gaussian window (σ = 1.5), C1 = 0.01², C2 = 0.03²,
computed per channel with two separable convolutions and 'same' zero padding as in the
3DGS reference training code, averaged over the image. Written here because it is a
dozen lines of torch and the packages that ship it (torchmetrics, pytorch-msssim,
kornia) would be a dependency for this alone.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

C1 = 0.01 ** 2
C2 = 0.03 ** 2


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32
                    ) -> torch.Tensor:
    """Normalised 1D Gaussian (size,)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x * x / (2 * sigma * sigma))
    return (g / g.sum()).to(dtype)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), padding=(0, k // 2), groups=c)
    return F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), padding=(k // 2, 0), groups=c)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 11, sigma: float = 1.5
         ) -> torch.Tensor:
    """Mean SSIM of two images (H,W,C) or (B,C,H,W) with values in [0,1]."""
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.ndim == 3:
        a, b = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    if a.ndim != 4:
        raise ValueError(f"ssim expects (H,W,C) or (B,C,H,W), got {tuple(a.shape)}")
    g = gaussian_window(window, sigma, a.dtype).to(a.device)
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    var_a = _blur(a * a, g) - mu_a * mu_a
    var_b = _blur(b * b, g) - mu_b * mu_b
    cov = _blur(a * b, g) - mu_a * mu_b
    num = (2 * mu_a * mu_b + C1) * (2 * cov + C2)
    den = (mu_a * mu_a + mu_b * mu_b + C1) * (var_a + var_b + C2)
    return (num / den).mean()


def color_loss(render: torch.Tensor, target: torch.Tensor, lambda_dssim: float = 0.2
               ) -> torch.Tensor:
    """3DGS colour loss (1−λ)·L1 + λ·(1−SSIM) on (H,W,3) images."""
    l1 = (render - target).abs().mean()
    return (1.0 - lambda_dssim) * l1 + lambda_dssim * (1.0 - ssim(render, target))


def psnr(render: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio (dB) for images in [0,1]."""
    mse = float(((render.clamp(0, 1) - target) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)

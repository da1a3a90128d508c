"""Pure-PyTorch reference compositor for projected Gaussians (differentiable by autograd).

Design note: this is the backend the others are tested against, so it is written to be
read, not to be fast: for every pixel it evaluates α_i = min(0.99, o_i·exp(−½ dᵀΣ⁻¹d))
for all depth-sorted Gaussians at once, zeroes α_i < 1/255, takes the transmittance as
a cumulative product (accumulated in float64 by torch, so no float32 cumsum overshoot),
keeps the prefix whose transmittance stays ≥ 1e-4 and composites with a matrix product.
The only concessions to speed and memory are chunking over square pixel blocks, each
seeing just the Gaussians whose alpha-≥-1/255 rectangle touches it (exact, see
projection.py), and activation checkpointing per block (recomputed in backward), so
memory stays O(block² × Gaussians per block) instead of growing with the image.
With `detach_features` the feature channels (after rgb+depth) are composited with
detached weights: their gradient reaches only the feature values, not the Gaussians'
geometry (FiT3D gradient separation).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .projection import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN

DEFAULT_BLOCK = 16  # pixel block edge; bounds memory to block² × (Gaussians touching it)


def composite_pixels(px: Tensor, py: Tensor, means2d: Tensor, conics: Tensor,
                     opacities: Tensor, colors: Tensor, geom_channels: int,
                     ) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing at pixel centres (px, py) (P,) of depth-sorted Gaussians.

    Returns the composited channels (P, C) and the accumulated opacity (P, 1).
    """
    dx = means2d[None, :, 0] - px[:, None]
    dy = means2d[None, :, 1] - py[:, None]
    a, b, c = conics[None, :, 0], conics[None, :, 1], conics[None, :, 2]
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities[None, :] * torch.exp(-sigma), max=ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    trans_after = torch.cumprod(1.0 - alpha, dim=1)
    trans_before = torch.cat([torch.ones_like(trans_after[:, :1]), trans_after[:, :-1]], dim=1)
    keep = trans_after.detach() >= TRANSMITTANCE_MIN  # a prefix: transmittance only falls
    weights = torch.where(keep, alpha * trans_before, torch.zeros_like(alpha))
    out = torch.cat([weights @ colors[:, :geom_channels],
                     weights.detach() @ colors[:, geom_channels:]], dim=1)
    return out, weights.sum(dim=1, keepdim=True)


def composite_torch(means2d: Tensor, conics: Tensor, opacities: Tensor, rgbd: Tensor,
                    features: Tensor | None, feat_rows: Tensor, rect: Tensor, width: int,
                    height: int, detach_features: bool, block: int = DEFAULT_BLOCK,
                    ) -> tuple[Tensor, Tensor | None, Tensor]:
    """Composite M depth-sorted Gaussians: (H,W,4) rgb+depth, (H,W,D) features, (H,W,1) alpha.

    Same contract as `cpu.composite_cpu`: `features` (N,D) is used at rows `feat_rows`.
    """
    colors = rgbd if features is None else torch.cat([rgbd, features[feat_rows]], dim=1)
    geom_channels = 4 if detach_features else colors.shape[1]
    grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, opacities, colors))
    rows_img, rows_alpha = [], []
    for y0 in range(0, height, block):
        y1 = min(y0 + block, height)
        row_img, row_alpha = [], []
        for x0 in range(0, width, block):
            x1 = min(x0 + block, width)
            touch = ((rect[:, 0] < x1) & (rect[:, 1] >= x0)
                     & (rect[:, 2] < y1) & (rect[:, 3] >= y0)).nonzero()[:, 0]
            ys, xs = torch.meshgrid(
                torch.arange(y0, y1, dtype=colors.dtype, device=colors.device) + 0.5,
                torch.arange(x0, x1, dtype=colors.dtype, device=colors.device) + 0.5,
                indexing="ij")
            args = (xs.reshape(-1), ys.reshape(-1), means2d[touch], conics[touch],
                    opacities[touch], colors[touch], geom_channels)
            if grad:
                img, alpha = checkpoint(composite_pixels, *args, use_reentrant=False)
            else:
                img, alpha = composite_pixels(*args)
            row_img.append(img.reshape(y1 - y0, x1 - x0, -1))
            row_alpha.append(alpha.reshape(y1 - y0, x1 - x0, 1))
        rows_img.append(torch.cat(row_img, dim=1))
        rows_alpha.append(torch.cat(row_alpha, dim=1))
    image = torch.cat(rows_img, dim=0)
    feats = None if features is None else image[..., 4:]
    return image[..., :4], feats, torch.cat(rows_alpha, dim=0)

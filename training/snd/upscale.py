"""Mask-aware upscaling of patch features to pixel resolution (SnD).

Design note: pixel u's feature is the bilinear combination of its four neighbouring patch
centres v — the same sample positions and weights as ``F.interpolate(mode="bilinear",
align_corners=False)`` — with every weight zeroed where mask(v) ≠ mask(u) and the rest
renormalised; mask(v) is the label of the pixel under patch centre v. A pixel none of
whose four patch centres shares its segment keeps the plain bilinear weights (nothing to
renormalise). With a uniform mask the result equals bilinear upscaling, which is also
the ``bilinear`` ablation. Four gathers over the flat patch map; on the input's device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _axis(n_out: int, n_in: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(index0, index1, weight of index1) per output position, as F.interpolate computes
    them for bilinear, align_corners=False."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float64) + 0.5) * (n_in / n_out)
           - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    return i0, i1, (src - i0).float().clamp(0, 1)


def patch_centre_labels(labels: Tensor, h: int, w: int) -> Tensor:
    """Label (h,w) of the pixel under each patch centre of an h×w grid over `labels`."""
    H, W = labels.shape
    ys = ((torch.arange(h, device=labels.device) + 0.5) * H / h).floor().long().clamp_max(H - 1)
    xs = ((torch.arange(w, device=labels.device) + 0.5) * W / w).floor().long().clamp_max(W - 1)
    return labels[ys][:, xs]


def mask_aware_upscale(patch: Tensor, labels: Tensor | None, mode: str = "mask") -> Tensor:
    """Patch features (C,h,w) -> pixel features (C,H,W) for a label map (H,W).

    ``mode="bilinear"`` (or no labels) is plain bilinear upscaling."""
    if mode not in ("mask", "bilinear"):
        raise ValueError(f"mode must be mask or bilinear, got {mode!r}")
    if labels is None:
        raise ValueError("mask_aware_upscale needs the output size: pass labels (H,W)")
    H, W = labels.shape
    if mode == "bilinear":
        return F.interpolate(patch[None], size=(H, W), mode="bilinear", align_corners=False)[0]
    c, h, w = patch.shape
    y0, y1, wy = _axis(H, h, patch.device)
    x0, x1, wx = _axis(W, w, patch.device)
    plab = patch_centre_labels(labels, h, w)
    corners = [(y0, x0, (1 - wy)[:, None] * (1 - wx)[None]), (y0, x1, (1 - wy)[:, None] * wx[None]),
               (y1, x0, wy[:, None] * (1 - wx)[None]), (y1, x1, wy[:, None] * wx[None])]
    kept = [wgt * (plab[ys][:, xs] == labels) for ys, xs, wgt in corners]
    total = sum(kept)
    none = total <= 0
    weights = [torch.where(none, wgt, k / total.clamp_min(1e-12))
               for (_, _, wgt), k in zip(corners, kept)]
    flat = patch.reshape(c, h * w)
    out = torch.zeros(c, H * W, dtype=patch.dtype, device=patch.device)
    for (ys, xs, _), wgt in zip(corners, weights):
        idx = (ys[:, None] * w + xs[None]).reshape(-1)
        out += flat[:, idx] * wgt.reshape(1, -1).to(patch.dtype)
    return out.reshape(c, H, W)

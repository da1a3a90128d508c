"""Pixel-aligned Gaussians from depth: our RGB-D stand-in for the paper's MVSplat stage.

Design note: every context pixel with valid depth becomes one Gaussian — μ is the pixel
centre (u + ½, v + ½, the rasterizer's convention) back-projected with the colour camera's
intrinsics and moved to the world frame; Σ is either isotropic with σ = `footprint` × the
pixel's size at its depth (z / f), or shaped by the depth gradient: two axes along the
back-projected point map's finite differences (the pixel's footprint on the surface,
clamped to `max_stretch` × the isotropic σ) and a thin third along the normal; α is a
fixed value or that value × a depth confidence exp(−|∇z| / (z · depth_edge)), low at
discontinuities (flying pixels). Pixels without depth are dropped. All tensor ops on the
inputs' device. The rotation-matrix → quaternion conversion is written here (a few lines;
the rasterizer only provides the inverse).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fit3d_ros.kernels import rasterize_gaussians

MAX_RASTER_CHANNELS = 1024  # feature channels per rasterizer call


@dataclass
class PixelGaussians:
    """N Gaussians, one per valid pixel: rasterizer parameters and the flat pixel index."""

    means: Tensor      # (N,3) world
    quats: Tensor      # (N,4) w,x,y,z
    scales: Tensor     # (N,3)
    opacities: Tensor  # (N,)
    colors: Tensor     # (N,3) in [0,1]
    index: Tensor      # (N,) flat pixel index in its view (y * W + x)

    def __len__(self) -> int:
        return int(self.means.shape[0])

    def to(self, device: str | torch.device) -> PixelGaussians:
        return PixelGaussians(*(getattr(self, k).to(device) for k in
                                ("means", "quats", "scales", "opacities", "colors", "index")))


def rotmat_to_quat(R: Tensor) -> Tensor:
    """Unit quaternions (…,4) w,x,y,z of rotation matrices (…,3,3) (Shepperd: each row
    uses the largest of the four candidate components as the divisor)."""
    m = R
    d = torch.stack([1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2],
                     1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                     1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
                     1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    r = 0.5 * torch.sqrt(d.clamp_min(1e-12))            # (…,4) each candidate's own component
    s21, s02, s10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], \
        m[..., 1, 0] - m[..., 0, 1]
    p01, p02, p12 = m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0], \
        m[..., 1, 2] + m[..., 2, 1]
    cands = torch.stack([
        torch.stack([r[..., 0], s21 / (4 * r[..., 0]), s02 / (4 * r[..., 0]), s10 / (4 * r[..., 0])], -1),
        torch.stack([s21 / (4 * r[..., 1]), r[..., 1], p01 / (4 * r[..., 1]), p02 / (4 * r[..., 1])], -1),
        torch.stack([s02 / (4 * r[..., 2]), p01 / (4 * r[..., 2]), r[..., 2], p12 / (4 * r[..., 2])], -1),
        torch.stack([s10 / (4 * r[..., 3]), p02 / (4 * r[..., 3]), p12 / (4 * r[..., 3]), r[..., 3]], -1),
    ], -2)                                               # (…,4 candidates,4)
    best = d.argmax(-1)[..., None, None].expand(*d.shape[:-1], 1, 4)
    return torch.nn.functional.normalize(cands.gather(-2, best)[..., 0, :], dim=-1)


def backproject(depth: Tensor, K: Tensor) -> Tensor:
    """Camera-frame points (H,W,3) of pixel centres; NaN where depth is not finite > 0."""
    h, w = depth.shape
    v, u = torch.meshgrid(torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5,
                          torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5,
                          indexing="ij")
    z = torch.where(torch.isfinite(depth) & (depth > 0), depth, torch.nan)
    x = (u - K[0, 2] - K[0, 1] * (v - K[1, 2]) / K[1, 1]) / K[0, 0] * z
    y = (v - K[1, 2]) / K[1, 1] * z
    return torch.stack([x, y, z], -1)


def _central_diff(p: Tensor, dim: int) -> Tensor:
    """(p[i+1] − p[i−1]) / 2 along `dim` of (H,W,·); NaN on the border."""
    out = torch.full_like(p, torch.nan)
    n = p.shape[dim]
    mid = (p.narrow(dim, 2, n - 2) - p.narrow(dim, 0, n - 2)) / 2
    out.narrow(dim, 1, n - 2).copy_(mid)
    return out


def pixel_gaussians(depth: Tensor, rgb: Tensor, K: Tensor, cam_to_world: Tensor, *,
                    scale_mode: str = "isotropic", footprint: float = 0.45,
                    max_stretch: float = 4.0, opacity_mode: str = "fixed",
                    opacity: float = 0.95, depth_edge: float = 0.05) -> PixelGaussians:
    """One Gaussian per pixel of `depth` (H,W) with valid depth (see the module note).

    rgb (H,W,3) in [0,1] at the same size; K (3,3) of that size; cam_to_world (4,4)."""
    if scale_mode not in ("isotropic", "gradient"):
        raise ValueError(f"scale_mode must be isotropic or gradient, got {scale_mode!r}")
    if opacity_mode not in ("fixed", "confidence"):
        raise ValueError(f"opacity_mode must be fixed or confidence, got {opacity_mode!r}")
    if depth.shape != rgb.shape[:2]:
        raise ValueError(f"depth {tuple(depth.shape)} and rgb {tuple(rgb.shape)} differ in size")
    pts = backproject(depth, K)
    z = pts[..., 2]
    valid = torch.isfinite(z)
    flat = valid.reshape(-1).nonzero()[:, 0]
    f = torch.sqrt(K[0, 0] * K[1, 1])
    iso = footprint * z / f                                         # (H,W)
    R_wc, t_wc = cam_to_world[:3, :3].to(pts.dtype), cam_to_world[:3, 3].to(pts.dtype)
    means = pts.reshape(-1, 3)[flat] @ R_wc.T + t_wc
    n = flat.numel()
    sig = iso.reshape(-1)[flat]
    if scale_mode == "isotropic":
        scales = sig[:, None].expand(n, 3).contiguous()
        quats = torch.zeros(n, 4, dtype=pts.dtype, device=pts.device)
        quats[:, 0] = 1
    else:
        du = _central_diff(pts, 1).reshape(-1, 3)[flat]
        dv = _central_diff(pts, 0).reshape(-1, 3)[flat]
        e1 = torch.nn.functional.normalize(du, dim=-1)
        t2 = dv - (dv * e1).sum(-1, keepdim=True) * e1
        e2 = torch.nn.functional.normalize(t2, dim=-1)
        nrm = torch.linalg.cross(e1, e2)
        s1 = (footprint * du.norm(dim=-1)).clamp(sig, max_stretch * sig)
        s2 = (footprint * t2.norm(dim=-1)).clamp(sig, max_stretch * sig)
        ok = torch.isfinite(du).all(-1) & torch.isfinite(dv).all(-1) & \
            (t2.norm(dim=-1) > 1e-9 * sig) & (du.norm(dim=-1) > 1e-9 * sig)
        eye = torch.eye(3, dtype=pts.dtype, device=pts.device).expand(n, 3, 3)
        axes = torch.where(ok[:, None, None], torch.stack([e1, e2, nrm], -1), eye)
        quats = rotmat_to_quat(R_wc @ axes)
        scales = torch.stack([torch.where(ok, s1, sig), torch.where(ok, s2, sig),
                              torch.where(ok, 0.2 * sig, sig)], -1)
    alpha = torch.full((n,), float(opacity), dtype=pts.dtype, device=pts.device)
    if opacity_mode == "confidence":
        gz = torch.stack([_central_diff(z[..., None], 0)[..., 0].abs(),
                          _central_diff(z[..., None], 1)[..., 0].abs()]).nan_to_num(0.0)
        rel = (gz.amax(0) / z).reshape(-1)[flat]
        alpha = alpha * torch.exp(-rel / depth_edge)
    return PixelGaussians(means.contiguous(), quats.contiguous(), scales,
                          alpha.contiguous(), rgb.reshape(-1, 3)[flat].contiguous(), flat)


def concat(parts: list[PixelGaussians]) -> PixelGaussians:
    """The union of several views' Gaussians (indices keep their own views' meaning)."""
    return PixelGaussians(*(torch.cat([getattr(p, k) for p in parts]) for k in
                            ("means", "quats", "scales", "opacities", "colors", "index")))


def render_features(g: PixelGaussians, features: Tensor, viewmat: Tensor, K: Tensor,
                    width: int, height: int, backend: str = "auto"
                    ) -> tuple[Tensor, Tensor, Tensor]:
    """(F_rendered (H,W,C), alpha (H,W), rgb (H,W,3)) at a camera, colour and features
    normalised by coverage.

    Coverage normalisation (Σ wᵢfᵢ / Σ wᵢ) keeps partly covered pixels on the features'
    scale; callers mask pixels whose alpha is low."""
    chunks = []
    for s in range(0, features.shape[1], MAX_RASTER_CHANNELS):  # the rasterizer's D limit
        out = rasterize_gaussians(g.means, g.quats, g.scales, g.opacities, g.colors,
                                  features[:, s:s + MAX_RASTER_CHANNELS].contiguous(),
                                  viewmat, K, width, height, backend=backend)
        chunks.append(out.features)
    alpha = out.alpha[..., 0]
    feats = torch.cat(chunks, -1)
    norm = alpha.clamp_min(1e-6)[..., None]
    return feats / norm, alpha, out.rgb / norm

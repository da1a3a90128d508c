"""EWA projection of 3D Gaussians and spherical-harmonic colours, in differentiable torch.

Design note: this is the one place where the projection maths lives; the `torch` and
`cpu` backends both call it (torch autograd provides its backward), so they rasterize
exactly the same 2D Gaussians and differ only in compositing. The conventions follow
3DGS / gsplat's "classic" mode: Σ = R S Sᵀ Rᵀ, Σ₂ᴰ = J W Σ Wᵀ Jᵀ + 0.3·I with the
perspective Jacobian J evaluated at the camera-space mean clamped to 1.3× the field of
view, Gaussians with camera z < near_plane culled, SH colours ``max(SH(d) + 0.5, 0)``
with d the unit view direction. Each Gaussian also gets the pixel rectangle outside
which its alpha is provably below 1/255 (opacity-aware extent √(2 ln(255·o)) times the
marginal standard deviation); compositors use it for tiling and culling, which is
therefore exact, not an approximation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0   # contributions below this alpha are skipped
ALPHA_MAX = 0.99          # alpha clamp (3DGS)
TRANSMITTANCE_MIN = 1e-4  # compositing stops before transmittance would drop below this
EPS2D = 0.3               # low-pass filter added to the 2D covariance (pixels²)
_RECT_MARGIN = 1.001      # radius safety factor: float error never moves a pixel inside

# Real spherical-harmonic constants, degrees 0-3 (the 3DGS / gsplat sign convention).
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005,
          -1.0925484305920792, 0.5462742152960396)
_SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658,
          0.3731763325901154, -0.4570457994644658, 1.445305721320277,
          -0.5900435899266435)


@dataclass
class Projected:
    """Visible Gaussians after projection, sorted front to back by camera depth.

    All tensors have M rows (M ≤ N visible Gaussians); `ids` maps row -> input index.
    """

    ids: Tensor        # (M,) int64 index into the N input Gaussians
    means2d: Tensor    # (M,2) pixel coordinates of the projected centres
    conics: Tensor     # (M,3) (a, b, c) of Σ₂ᴰ⁻¹ = [[a, b], [b, c]]
    depths: Tensor     # (M,) camera z
    rect: Tensor       # (M,4) int32 inclusive pixel box x0, x1, y0, y1 (inside the image)
    means2d_all: Tensor  # (N,2) projected centres scattered to input order (0 if culled)
    radii_all: Tensor    # (N,2) half-extents of the alpha ≥ 1/255 box (0 if culled)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices (N,3,3) from quaternions (N,4) in w, x, y, z order (normalised)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World covariances Σ = R S Sᵀ Rᵀ (N,3,3)."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def camera_center(viewmat: Tensor) -> Tensor:
    """Camera position in world coordinates from a world->camera 4x4 matrix."""
    rot, t = viewmat[:3, :3], viewmat[:3, 3]
    return -(rot.transpose(0, 1) @ t)


def eval_sh(degree: int, coeffs: Tensor, dirs: Tensor) -> Tensor:
    """Evaluate real SH of `degree` (0-3): coeffs (M,K,3), unit dirs (M,3) -> (M,3)."""
    out = _SH_C0 * coeffs[:, 0]
    if degree < 1:
        return out
    x, y, z = (d[:, None] for d in dirs.unbind(-1))
    out = out + _SH_C1 * (-y * coeffs[:, 1] + z * coeffs[:, 2] - x * coeffs[:, 3])
    if degree < 2:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    c2 = _SH_C2
    out = out + (c2[0] * xy * coeffs[:, 4] + c2[1] * yz * coeffs[:, 5]
                 + c2[2] * (2 * zz - xx - yy) * coeffs[:, 6]
                 + c2[3] * xz * coeffs[:, 7] + c2[4] * (xx - yy) * coeffs[:, 8])
    if degree < 3:
        return out
    c3 = _SH_C3
    return out + (c3[0] * y * (3 * xx - yy) * coeffs[:, 9]
                  + c3[1] * xy * z * coeffs[:, 10]
                  + c3[2] * y * (4 * zz - xx - yy) * coeffs[:, 11]
                  + c3[3] * z * (2 * zz - 3 * xx - 3 * yy) * coeffs[:, 12]
                  + c3[4] * x * (4 * zz - xx - yy) * coeffs[:, 13]
                  + c3[5] * z * (xx - yy) * coeffs[:, 14]
                  + c3[6] * x * (xx - 3 * yy) * coeffs[:, 15])


def sh_to_rgb(coeffs: Tensor, degree: int, means: Tensor, viewmat: Tensor) -> Tensor:
    """View-dependent RGB (M,3) = max(SH(d) + 0.5, 0), d = unit(means - camera centre)."""
    dirs = torch.nn.functional.normalize(means - camera_center(viewmat), dim=-1)
    return torch.clamp_min(eval_sh(degree, coeffs, dirs) + 0.5, 0.0)


def _project_2d(means_c: Tensor, cov_factor: Tensor, K: Tensor, width: int, height: int,
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Pixel means (M,2) and 2D covariance entries xx, xy, yy (M,) without eps2d.

    `cov_factor` (M,3,3) holds (W R S)ᵀ, so Σ_cam = factorᵀ·factor and Σ₂ᴰ = (J W R S)
    (J W R S)ᵀ, written out per entry because batched 3x3 matmuls are slow on CPU.
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    x, y, z = means_c.unbind(-1)
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    # Rows of J·(W R S) with J = [[fx/z, 0, -fx tx/z²], [0, fy/z, -fy ty/z²]] (clamped
    # perspective Jacobian); row i of W R S is cov_factor[:, :, i].
    f0, f1, f2 = cov_factor[:, :, 0], cov_factor[:, :, 1], cov_factor[:, :, 2]
    row0 = (fx / z)[:, None] * f0 - (fx * tx / (z * z))[:, None] * f2
    row1 = (fy / z)[:, None] * f1 - (fy * ty / (z * z))[:, None] * f2
    xx = (row0 * row0).sum(-1)
    xy = (row0 * row1).sum(-1)
    yy = (row1 * row1).sum(-1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    return means2d, xx, xy, yy


def project_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                      viewmat: Tensor, K: Tensor, width: int, height: int,
                      near_plane: float = 0.01, eps2d: float = EPS2D) -> Projected:
    """Project, cull (near plane, alpha < 1/255 everywhere, off-image) and depth-sort."""
    n = means.shape[0]
    rot, trans = viewmat[:3, :3], viewmat[:3, 3]
    z_all = means.detach() @ rot[2].detach() + trans[2].detach()
    front = ((z_all >= near_plane) & (opacities.detach() >= ALPHA_MIN)).nonzero()[:, 0]

    means_c = means[front] @ rot.transpose(0, 1) + trans
    # (W R S)ᵀ = S Rᵀ Wᵀ; Rᵀ is the rotation of the conjugate quaternion, built contiguous
    # so that the matmul with a 2D right operand folds into one fast GEMM.
    conj = quats.new_tensor([1.0, -1.0, -1.0, -1.0])
    cov_factor = scales[front][:, :, None] * (quat_to_rotmat(quats[front] * conj)
                                              @ rot.transpose(0, 1))
    means2d, xx, xy, yy = _project_2d(means_c, cov_factor, K, width, height)
    xx = xx + eps2d
    yy = yy + eps2d
    det = xx * yy - xy * xy
    safe_det = torch.where(det > 0, det, torch.ones_like(det))  # culled below; keeps grads finite
    conics = torch.stack([yy / safe_det, -xy / safe_det, xx / safe_det], dim=-1)

    with torch.no_grad():
        opac = opacities[front].detach()
        extend = torch.sqrt(2.0 * torch.log(opac * 255.0).clamp_min(0.0))
        rx = extend * xx.detach().clamp_min(0).sqrt() * _RECT_MARGIN + 1e-3
        ry = extend * yy.detach().clamp_min(0).sqrt() * _RECT_MARGIN + 1e-3
        mx, my = means2d.detach().unbind(-1)
        x0 = torch.ceil(mx - rx - 0.5).clamp_min(0)
        x1 = torch.floor(mx + rx - 0.5).clamp_max(width - 1)
        y0 = torch.ceil(my - ry - 0.5).clamp_min(0)
        y1 = torch.floor(my + ry - 0.5).clamp_max(height - 1)
        ok = (x0 <= x1) & (y0 <= y1) & (det.detach() > 0) & torch.isfinite(conics.detach()).all(-1)
        keep = ok.nonzero()[:, 0]
        depth_order = torch.argsort(means_c.detach()[keep, 2], stable=True)
        keep = keep[depth_order]
        rect = torch.stack([x0, x1, y0, y1], dim=-1)[keep].to(torch.int32)
        radii_all = means.new_zeros(n, 2).detach()
        radii_all[front[keep]] = torch.stack([rx, ry], dim=-1)[keep]

    ids = front[keep]
    means2d_all = means2d.new_zeros(n, 2).index_put((ids,), means2d[keep])
    return Projected(ids=ids, means2d=means2d_all[ids], conics=conics[keep],
                     depths=means_c[keep, 2], rect=rect.contiguous(),
                     means2d_all=means2d_all, radii_all=radii_all)


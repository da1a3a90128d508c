"""`rasterize_gaussians`: one differentiable renderer of colour + D-channel feature Gaussians.

Design note: a functional API in gsplat's style. The call validates its arguments
(validation.py), picks a backend, and for `torch`/`cpu` runs the shared projection
(projection.py: EWA, culling, depth sort; torch autograd) and then one of two
compositors over the per-Gaussian channels [r, g, b, z] and the feature rows f_1..f_D:
the pure-torch reference (torch_ref.py) or the C++ kernel (cpu.py). Depth is composited
as a channel (Σ wᵢzᵢ), and feature channels are composited with detached weights when
`detach_geometry_for_features` is set, so the feature loss moves only `features`
(FiT3D's gradient separation). `cuda` hands the whole job to gsplat (cuda.py).
``validate=False`` skips the checks (each costs a device→host read) for callers that
validated the same kind of tensors already: the training loops check the cameras once
(`check_camera`) and render Gaussians whose activations keep them in range.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from . import cpu, cuda, torch_ref
from .projection import project_gaussians, sh_to_rgb
from .validation import check_inputs


@dataclass
class RasterOutput:
    """Rendered images (H,W,·) and per-Gaussian screen-space data (N,·)."""

    rgb: Tensor               # (H,W,3) colour, background blended in
    features: Tensor | None   # (H,W,D) rendered features F_low, or None
    alpha: Tensor             # (H,W,1) accumulated opacity Σ wᵢ
    depth: Tensor             # (H,W,1) accumulated camera depth Σ wᵢ zᵢ
    means2d: Tensor           # (N,2) projected centres (0 if culled); retain_grad() it
    #                           for the view-space gradient used by densification
    radii: Tensor             # (N,2) half-extents in pixels of the rendered footprint (0 if culled)
    backend: str              # the backend that rendered


def resolve_backend(backend: str, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> str:
    """Concrete backend for `backend` ("auto" picks cuda/cpu, falling back to torch)."""
    if backend == "auto":
        if device.type == "cuda":
            if cuda.gsplat_available() and dtype == torch.float32:
                return "cuda"
            warnings.warn("gsplat is not installed or the tensors are not float32: "
                          "rasterizing CUDA tensors with the slow torch reference",
                          RuntimeWarning, stacklevel=3)
            return "torch"
        if device.type == "cpu":
            try:
                cpu.load_extension()
                return "cpu"
            except cpu.KernelBuildError as err:
                warnings.warn(f"{err}; falling back to the slow torch rasterizer",
                              RuntimeWarning, stacklevel=3)
        return "torch"
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend: 'cpu' needs CPU tensors, got device {device}")
    if backend == "cuda" and (device.type != "cuda" or not cuda.gsplat_available()
                              or dtype != torch.float32):
        raise ValueError(f"backend: 'cuda' needs float32 CUDA tensors and gsplat installed "
                         f"(device {device}, dtype {dtype}, gsplat available: "
                         f"{cuda.gsplat_available()})")
    return backend


def rasterize_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor,
                        colors: Tensor, features: Tensor | None, viewmat: Tensor, K: Tensor,
                        width: int, height: int, *, sh_degree: int | None = None,
                        near_plane: float = 0.01, background: Tensor | None = None,
                        detach_geometry_for_features: bool = False,
                        backend: str = "auto", validate: bool = True) -> RasterOutput:
    """Render N Gaussians (colour or SH, optional (N,D) features) from one camera.

    means (N,3) world; quats (N,4) w,x,y,z; scales (N,3) > 0; opacities (N,) in [0,1];
    colors (N,3) RGB or (N,K,3) SH with `sh_degree`; features (N,D), 1 ≤ D ≤ 1024, or
    None; viewmat (4,4) world -> OpenCV camera; K (3,3). Raises ValueError on bad input
    (with ``validate=False``, see the module note, the kernels trust the arguments).
    """
    if validate:
        bg = check_inputs(means, quats, scales, opacities, colors, features, viewmat, K,
                          width, height, sh_degree, near_plane, background, backend)
    elif background is not None and not isinstance(background, Tensor):
        raise ValueError("background: validate=False needs a tensor or None")
    else:
        bg = background
    chosen = resolve_backend(backend, means.device, means.dtype)
    if chosen == "cuda":
        rgb_all = colors if sh_degree is None else sh_to_rgb(colors, sh_degree, means, viewmat)
        rgb, feats, alpha, depth, means2d, radii = cuda.rasterize_gsplat(
            means, quats, scales, opacities, rgb_all, features, viewmat, K, width, height,
            near_plane, detach_geometry_for_features)
    else:
        proj = project_gaussians(means, quats, scales, opacities, viewmat, K, width, height,
                                 near_plane)
        ids = proj.ids
        rgb_vis = (colors[ids] if sh_degree is None
                   else sh_to_rgb(colors[ids], sh_degree, means[ids], viewmat))
        rgbd = torch.cat([rgb_vis, proj.depths[:, None]], dim=1)
        composite = cpu.composite_cpu if chosen == "cpu" else torch_ref.composite_torch
        rgbd_img, feats, alpha = composite(proj.means2d, proj.conics, opacities[ids], rgbd,
                                           features, ids, proj.rect, width, height,
                                           detach_geometry_for_features)
        rgb, depth = rgbd_img[..., :3], rgbd_img[..., 3:]
        means2d, radii = proj.means2d_all, proj.radii_all
    if bg is not None:
        rgb = rgb + (1.0 - alpha) * bg
    return RasterOutput(rgb=rgb, features=feats, alpha=alpha, depth=depth, means2d=means2d,
                        radii=radii, backend=chosen)

"""Argument checks for `rasterize_gaussians`: every bad input becomes a ValueError.

Design note: the kernels trust their inputs (shapes, one dtype, one device, finite
values), so everything a caller can get wrong is checked here, before any kernel runs,
and the error names the offending argument and what was expected. Checks are vectorised
(one `isfinite(...).all()` per tensor), cheap next to rasterization.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

MAX_FEATURES = 1024
MAX_IMAGE_SIDE = 32768
BACKENDS = ("auto", "cpu", "torch", "cuda")


def _tensor(name: str, x: Any, shape: Sequence[int | None], ref: Tensor | None) -> Tensor:
    """Check type, shape (None = any), dtype/device against `ref` and finiteness."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        want = "(" + ",".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if ref is not None and x.dtype != ref.dtype:
        raise ValueError(f"{name}: dtype {x.dtype} differs from means' {ref.dtype}")
    if ref is not None and x.device != ref.device:
        raise ValueError(f"{name}: device {x.device} differs from means' {ref.device}")
    # a sum is finite iff every entry is (bar overflow, which the exact check then rules out)
    if (x.numel() and not bool(torch.isfinite(x.detach().sum()))
            and not bool(torch.isfinite(x.detach()).all())):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x


def _positive_int(name: str, x: Any, upper: int) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 < x <= upper:
        raise ValueError(f"{name}: expected an int in [1, {upper}], got {x!r}")
    return x


def _camera(viewmat: Any, K: Any, ref: Tensor | None) -> None:
    viewmat = _tensor("viewmat", viewmat, (4, 4), ref)
    K = _tensor("K", K, (3, 3), ref)
    vm = viewmat.detach().double()
    if not torch.equal(vm[3], vm.new_tensor([0.0, 0.0, 0.0, 1.0])):
        raise ValueError(f"viewmat: last row must be (0, 0, 0, 1), got {vm[3].tolist()}")
    rot = vm[:3, :3]
    if (float((rot @ rot.T - torch.eye(3, dtype=rot.dtype, device=rot.device)).abs().max()) > 1e-3
            or float(torch.linalg.det(rot)) <= 0):
        raise ValueError("viewmat: the 3x3 block must be a rotation (world -> camera)")
    k = K.detach().double()
    if float(k[0, 0]) <= 0 or float(k[1, 1]) <= 0:
        raise ValueError("K: focal lengths K[0,0] and K[1,1] must be positive")
    if float(k[0, 1]) != 0 or float(k[1, 0]) != 0 or k[2].tolist() != [0.0, 0.0, 1.0]:
        raise ValueError(f"K: expected [[fx,0,cx],[0,fy,cy],[0,0,1]], got {k.tolist()}")


def check_camera(viewmat: Any, K: Any) -> None:
    """The camera checks of `rasterize_gaussians` alone (validate fixed views once)."""
    _camera(viewmat, K, None)
    if viewmat.dtype != K.dtype or viewmat.device != K.device:
        raise ValueError(f"K: dtype/device {K.dtype}/{K.device} differ from viewmat's "
                         f"{viewmat.dtype}/{viewmat.device}")


def check_inputs(means: Any, quats: Any, scales: Any, opacities: Any, colors: Any,
                 features: Any, viewmat: Any, K: Any, width: Any, height: Any,
                 sh_degree: Any, near_plane: Any, background: Any, backend: Any,
                 ) -> Tensor | None:
    """Validate all arguments; returns `background` as a tensor (or None)."""
    means = _tensor("means", means, (None, 3), None)
    n = means.shape[0]
    _tensor("quats", quats, (n, 4), means)
    _tensor("scales", scales, (n, 3), means)
    _tensor("opacities", opacities, (n,), means)
    if sh_degree is None:
        _tensor("colors", colors, (n, 3), means)
    else:
        if isinstance(sh_degree, bool) or not isinstance(sh_degree, int) or not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree: expected None or an int in 0..3, got {sh_degree!r}")
        _tensor("colors", colors, (n, None, 3), means)
        if colors.shape[1] < (sh_degree + 1) ** 2:
            raise ValueError(f"colors: sh_degree={sh_degree} needs (N,{(sh_degree + 1) ** 2},3)"
                             f" SH coefficients or more, got {tuple(colors.shape)}")
    if features is not None:
        _tensor("features", features, (n, None), means)
        if not 1 <= features.shape[1] <= MAX_FEATURES:
            raise ValueError(f"features: channel count must be in 1..{MAX_FEATURES}, "
                             f"got {features.shape[1]}")
    _camera(viewmat, K, means)
    _positive_int("width", width, MAX_IMAGE_SIDE)
    _positive_int("height", height, MAX_IMAGE_SIDE)
    if (n and float(scales.detach().min()) <= 0):
        raise ValueError("scales: must be positive (pass activated scales, e.g. exp(log_scales))")
    if n and (float(opacities.detach().min()) < 0 or float(opacities.detach().max()) > 1):
        raise ValueError("opacities: must lie in [0, 1] (pass activated opacities)")
    if n and float(quats.detach().norm(dim=-1).min()) < 1e-12:
        raise ValueError("quats: contains a zero quaternion")
    if (isinstance(near_plane, bool) or not isinstance(near_plane, (int, float))
            or not 0 < near_plane < float("inf")):
        raise ValueError(f"near_plane: expected a positive finite number, got {near_plane!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if background is None:
        return None
    if not isinstance(background, Tensor):
        try:
            background = torch.as_tensor(background, dtype=means.dtype, device=means.device)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"background: expected 3 numbers, got {background!r}") from err
    return _tensor("background", background, (3,), means)

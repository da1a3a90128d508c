"""fit3d_ros.kernels: differentiable rasterization of colour + feature Gaussians.

`rasterize_gaussians` renders RGB, D-channel features (F_low), alpha and depth from
one camera with a pure-torch reference, a C++ CPU kernel or gsplat on CUDA.
"""
from .api import RasterOutput, rasterize_gaussians, resolve_backend
from .cpu import KernelBuildError, load_extension
from .projection import project_gaussians, quat_to_rotmat, sh_to_rgb
from .validation import check_camera

__all__ = [
    "KernelBuildError",
    "RasterOutput",
    "check_camera",
    "load_extension",
    "project_gaussians",
    "quat_to_rotmat",
    "rasterize_gaussians",
    "resolve_backend",
    "sh_to_rgb",
]

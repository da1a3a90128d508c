"""The C++ CPU compositor: JIT build (cached per machine) and its autograd.Function.

Design note: the extension in csrc/raster_cpu.cpp is compiled on first use with
torch.utils.cpp_extension.load (ninja + the C++ compiler torch is configured with,
`-O3 -march=native -fopenmp`) into a user cache directory keyed by the sources, torch and
Python versions and CPU flags, so later imports, processes and test runs reuse the build. The
build is needed only by the `cpu` backend; when the compiler or ninja is missing,
`load_extension` raises `KernelBuildError` naming the missing tool. Floating-point
contraction is disabled so the kernel evaluates alpha with the same float operations as
the torch reference and both make the same skip/stop decisions.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

_CSRC = Path(__file__).resolve().parent / "csrc" / "raster_cpu.cpp"
_CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math",
           "-fno-math-errno", "-fopenmp"]
_LOCK = threading.Lock()
_EXT: ModuleType | None = None
_BUILD_ERROR: KernelBuildError | None = None  # a failed build is not retried per call


class KernelBuildError(RuntimeError):
    """The CPU rasterizer extension could not be built (missing compiler, ninja, ...)."""


def cache_dir() -> Path:
    """Build directory: $XDG_CACHE_HOME/fit3d_ros (or ~/.cache/fit3d_ros)/torch_ext/<tag>."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fit3d_ros" / "torch_ext" / _machine_tag()


def _machine_tag() -> str:
    """Hash of the sources and of what makes a -march=native build non-portable."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((ln for ln in f if ln.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    sources = "".join(p.read_text() for p in sorted(_CSRC.parent.glob("*.[ch]*")))
    key = "|".join([torch.__version__, sys.version.split()[0], platform.machine(), flags,
                    " ".join(_CFLAGS), sources])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def _check_toolchain() -> None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise KernelBuildError(
            f"C++ compiler {compiler!r} not found: install g++ (or set CXX) to build the "
            "CPU rasterizer, or use backend='torch'")
    try:
        # costly: torch.utils.cpp_extension (~100 ms) only for the C++ extension build
        from torch.utils.cpp_extension import verify_ninja_availability
        verify_ninja_availability()
    except RuntimeError as err:
        raise KernelBuildError(
            "ninja not found: `pip install ninja` to build the CPU rasterizer, "
            "or use backend='torch'") from err


@contextlib.contextmanager
def _build_guard(build: Path) -> Iterator[None]:
    """One build per cache directory across processes, and no stale torch lock.

    torch's build lock is a plain file (FileBaton) that a process killed mid-build leaves
    behind, and every later `load` then waits for it forever. Under this flock (released
    by the kernel when its holder dies) no other build can be running, so the file is
    stale and is removed.
    """
    with open(build / ".fit3d_ros.flock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            (build / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def load_extension(verbose: bool = False) -> ModuleType:
    """Build (first call on this machine) or load the cached C++ extension."""
    global _EXT, _BUILD_ERROR
    with _LOCK:
        if _EXT is None:
            if _BUILD_ERROR is not None:
                raise _BUILD_ERROR
            _check_toolchain()
            # costly: torch.utils.cpp_extension (~100 ms) only for the C++ extension build
            from torch.utils.cpp_extension import load
            build = cache_dir()
            build.mkdir(parents=True, exist_ok=True)
            try:
                with _build_guard(build):
                    _EXT = load(name="fit3d_ros_raster_cpu", sources=[str(_CSRC)],
                                extra_cflags=_CFLAGS, extra_ldflags=["-fopenmp"],
                                build_directory=str(build), verbose=verbose)
            except (RuntimeError, OSError, ImportError) as err:
                _BUILD_ERROR = KernelBuildError(f"building the CPU rasterizer in {build} "
                                                f"failed: {err}")
                raise _BUILD_ERROR from err
        return _EXT


class _CompositeCPU(torch.autograd.Function):
    """Compositing with the C++ forward and hand-written backward."""

    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, rgbd: Tensor,
                features: Tensor, feat_rows: Tensor, rect: Tensor, width: int, height: int,
                detach_features: bool):
        ext = load_extension()
        tensors = [t.contiguous() for t in (means2d, conics, opacities, rgbd, features)]
        rgbd_img, feat_img, alpha, trans, last, offsets, ids = ext.forward(
            *tensors, feat_rows, rect, width, height)
        ctx.save_for_backward(*tensors, feat_rows, rect, offsets, ids, trans, last)
        ctx.size = (width, height, detach_features)
        return rgbd_img, feat_img, alpha.unsqueeze(-1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_rgbd: Tensor, grad_feat: Tensor, grad_alpha: Tensor):
        width, height, detach_features = ctx.size
        grads = load_extension().backward(*ctx.saved_tensors, grad_rgbd.contiguous(),
                                          grad_feat.contiguous(), grad_alpha.contiguous(),
                                          width, height, detach_features)
        return (*grads, None, None, None, None, None)


def composite_cpu(means2d: Tensor, conics: Tensor, opacities: Tensor, rgbd: Tensor,
                  features: Tensor | None, feat_rows: Tensor, rect: Tensor, width: int,
                  height: int, detach_features: bool,
                  ) -> tuple[Tensor, Tensor | None, Tensor]:
    """Composite M depth-sorted Gaussians: (H,W,4) rgb+depth, (H,W,D) features, (H,W,1) alpha.

    `features` (N,D) is read (and its gradient written) at rows `feat_rows` (M,) in place,
    without gathering a copy.
    """
    feats = rgbd.new_zeros(0, 0) if features is None else features
    rgbd_img, feat_img, alpha = _CompositeCPU.apply(means2d, conics, opacities, rgbd, feats,
                                                    feat_rows, rect, width, height,
                                                    detach_features)
    return rgbd_img, None if features is None else feat_img, alpha

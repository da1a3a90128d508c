"""Compatibility shims for third-party packages, applied only where they are needed.

Design note: two known breakages sit between us and our dependencies. (1) timm imports
torchvision, and the only torchvision wheel for torch 2.13 (0.28.0) is a CUDA build whose
compiled ops cannot load on CPU-only torch; its Python code then registers fake kernels
for ``torchvision::nms``/``qnms`` and fails with ``operator torchvision::nms does not
exist``. We first try the real import; only if it fails that way do we define those op
schemas with ``torch.library`` (kernels that raise a clear error) and import again, so
the shim is a no-op wherever torchvision loads normally. (2) spconv 2.3.8's CPU build
asks ``torch.cuda.current_stream()`` in backward (upstream spconv#366), which raises on
CPU-only torch; when CUDA is unavailable we make ``get_current_stream`` return 0 (the
null stream, which spconv's CPU kernels ignore), in every spconv module that imported it.
(3) spconv 2.3.8's ``SpconvOps.scatter_add_cpu`` (used by every CPU sparse conv, forward
and backward) races under OpenMP: its kernel writes two pointer variables captured by
reference from outside the parallel lambda, so with more than one thread rows land in
the wrong place and results change from run to run (upstream spconv#679 reports the
symptom). We run that one call on a single OpenMP thread.
"""
from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any

import torch

from fit3d_ros.threads import cpu_threads

# torchvision's op schemas (from its csrc/ops/*.cpp), defined only when its library fails.
_TORCHVISION_SCHEMAS: dict[str, str] = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align": ("roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
                  " SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor"),
    "roi_pool": ("roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height,"
                 " SymInt pooled_width) -> (Tensor, Tensor)"),
}

_torchvision_lib: torch.library.Library | None = None  # kept alive: deletion unregisters
_spconv_original: Any = None


class TorchvisionOpsUnavailable(RuntimeError):
    """Raised when code calls a torchvision op whose compiled kernel could not be loaded."""


def _unavailable(name: str):
    def kernel(*args: Any, **kwargs: Any) -> Any:
        raise TorchvisionOpsUnavailable(
            f"torchvision::{name} has no kernel: this torchvision build's compiled ops do not "
            "load with the installed torch (fit3d_ros.compat only registered the op schema so "
            "that timm can import). Install a torchvision matching torch to use its ops.")
    return kernel


def _op_missing_error(exc: BaseException) -> bool:
    text = str(exc)
    return "torchvision::" in text and "does not exist" in text


def _forget_torchvision() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def _define_torchvision_schemas() -> None:
    global _torchvision_lib
    if _torchvision_lib is not None:
        return
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TOR901 (schemas on purpose)
    for name, schema in _TORCHVISION_SCHEMAS.items():
        if hasattr(torch.ops.torchvision, name):
            continue
        lib.define(schema)
        lib.impl(name, _unavailable(name), "CompositeExplicitAutograd")
    _torchvision_lib = lib


def ensure_torchvision_importable() -> bool:
    """Make ``import torchvision`` work; returns True iff the op-schema shim was applied.

    A no-op (False) where torchvision is absent, already imported, or imports normally.
    Other import errors propagate unchanged.
    """
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision")
        return False
    except RuntimeError as exc:
        if not _op_missing_error(exc):
            raise
    _forget_torchvision()
    _define_torchvision_schemas()
    importlib.import_module("torchvision")
    return True


def import_timm() -> ModuleType:
    """``import timm`` after :func:`ensure_torchvision_importable`."""
    ensure_torchvision_importable()
    return importlib.import_module("timm")


def _spconv_stream_cpu() -> int:
    """The null stream; spconv's CPU kernels ignore the stream argument."""
    return 0


def patch_spconv_cpu(cuda_available: bool | None = None) -> bool:
    """Fix spconv#366 when CUDA is unavailable; returns True iff the patch is in place.

    ``cuda_available`` defaults to ``torch.cuda.is_available()``; with CUDA nothing changes.
    """
    global _spconv_original
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return False
    cppcore = importlib.import_module("spconv.pytorch.cppcore")
    if _spconv_original is None:
        _spconv_original = cppcore.get_current_stream
    # patch every spconv module that did `from spconv.pytorch.cppcore import get_current_stream`
    for name, module in list(sys.modules.items()):
        if name.startswith("spconv") and getattr(module, "get_current_stream", None) is _spconv_original:
            module.get_current_stream = _spconv_stream_cpu
    return True


class _SpconvOpsProxy:
    """spconv's ``SpconvOps`` with a race-free ``scatter_add_cpu``; all else delegated."""

    def __init__(self, ops: Any) -> None:
        self._ops = ops

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ops, name)

    def scatter_add_cpu(self, out: Any, inp: Any, inds: Any) -> None:
        """out[inds[i]] += inp[i], run on one OpenMP thread (memory-bound: as fast as the
        racy parallel loop; torch's index_add_ measured 3-10x slower here)."""
        with cpu_threads(1):  # torch and spconv share the OpenMP runtime
            return self._ops.scatter_add_cpu(out, inp, inds)


def patch_spconv_scatter() -> bool:
    """Replace spconv's racy ``scatter_add_cpu``; returns True once the fix is in place."""
    ops = importlib.import_module("spconv.pytorch.ops")
    if not isinstance(ops.SpconvOps, _SpconvOpsProxy):
        ops.SpconvOps = _SpconvOpsProxy(ops.SpconvOps)
    return True


def import_spconv() -> ModuleType:
    """``import spconv.pytorch`` with :func:`patch_spconv_cpu` and the scatter fix applied."""
    spconv = importlib.import_module("spconv.pytorch")
    patch_spconv_cpu()
    patch_spconv_scatter()
    return spconv

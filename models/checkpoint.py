"""One checkpoint format for D-DITR pretraining, segmentation training and the ROS nodes.

Design note: a checkpoint is a plain dict of primitives and tensors, so it loads with
``torch.load(weights_only=True)`` (no pickled classes): the format tag, the kind
(``segmentation`` or ``distillation``), the U-Net config, its weights, the class map
(names, raw ids, palette), the preprocessing needed to reproduce the inputs (voxel size,
named input features, the 2D backbone spec for DITR injection or the D-DITR teacher)
and free-form training state / metrics. :func:`load_checkpoint` returns a typed
:class:`Checkpoint`; :func:`build_model_from_checkpoint` gives a ready `SpUNet`.
:func:`transfer_for_segmentation` is D-DITR's head swap: it keeps every backbone weight
of a pretrained checkpoint, drops the regression head, collapses per-dataset BatchNorm
to one dataset's statistics and leaves the new segmentation head (and any DITR
injection layers) to their fresh initialisation. Writes are atomic (temp file + rename).
Loading verifies before trusting: the zip archive's CRCs (``zipfile.testzip``: flipped
bytes), then :func:`validate_checkpoint` (finite weights, class list vs head size, every
size field within `LIMITS`, so a ``token_budget`` of 1e7 is an error, not 10 GB).
It lives with the models because the runtime (segmenter, nodes, replay) loads it;
`fit3d_ros.training` writes it.
"""
from __future__ import annotations

import os
import re
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from .backbone_spec import BackboneSpec
from .classes import ClassMap
from .preprocess import feature_width
from .spunet import SpUNet, SpUNetConfig

FORMAT = "fit3d_ros.seg_checkpoint/1"
KINDS = ("segmentation", "distillation")
_NORM_KEY = re.compile(r"\.norms\.(\d+)\.")
# Sane (inclusive) ranges of a checkpoint's size fields; anything outside is a corrupt or
# hostile file (the largest published DITR/FiT3D settings sit far inside them).
LIMITS: dict[str, tuple[float, float]] = {
    "voxel_size": (1e-3, 10.0), "token_budget": (1, 16384), "channels": (1, 4096),
    "layers": (0, 64), "num_classes": (1, 1024), "distill_dim": (1, 8192),
    "feat_2d_dim": (1, 8192), "num_datasets": (1, 64), "in_channels": (1, 1024),
}


class CheckpointError(ValueError):
    """A file is not a fit3d_ros segmentation checkpoint, or does not fit the request."""


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary name in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class Preprocessing:
    """What turns a cloud into network input: voxel size, input features, 2D backbone."""

    voxel_size: float
    input_features: tuple[str, ...] = ("xyz",)
    backbone: BackboneSpec | None = None   # DITR injection source or D-DITR teacher
    center: str = "mean"                   # coordinates are centred on the scan mean

    def to_dict(self) -> dict[str, Any]:
        return {"voxel_size": float(self.voxel_size),
                "input_features": list(self.input_features),
                "backbone": None if self.backbone is None else self.backbone.to_dict(),
                "center": self.center}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Preprocessing":
        b = d.get("backbone")
        return cls(float(d["voxel_size"]), tuple(d["input_features"]),
                   None if b is None else BackboneSpec.from_dict(b), d.get("center", "mean"))


@dataclass
class Checkpoint:
    """A loaded checkpoint (see the module note)."""

    kind: str
    model_config: Any                      # fit3d_ros.models.SpUNetConfig
    state_dict: dict[str, torch.Tensor]
    preprocessing: Preprocessing
    classes: ClassMap | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CheckpointError(f"checkpoint kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "segmentation" and self.classes is None:
            raise CheckpointError("a segmentation checkpoint needs its class map")

    @property
    def class_names(self) -> list[str]:
        return [] if self.classes is None else list(self.classes.names)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [] if self.classes is None else list(self.classes.palette)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a dict of primitives (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def config_from_dict(d: dict[str, Any]) -> Any:
    """`SpUNetConfig` from :func:`config_to_dict`'s output (unknown keys are an error)."""
    names = {f.name for f in fields(SpUNetConfig)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise CheckpointError(f"unknown model config keys {unknown}")
    return SpUNetConfig(**d)


def save_checkpoint(path: str | Path, ckpt: Checkpoint) -> Path:
    """Write `ckpt` atomically to `path`; returns the path."""
    payload = {
        "format": FORMAT, "kind": ckpt.kind, "model": config_to_dict(ckpt.model_config),
        "state_dict": {k: v.detach().cpu() for k, v in ckpt.state_dict.items()},
        "preprocessing": ckpt.preprocessing.to_dict(),
        "classes": None if ckpt.classes is None else ckpt.classes.to_dict(),
        "training": ckpt.training, "metrics": ckpt.metrics,
    }
    return atomic_save(payload, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint with ``torch.load(weights_only=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    verify_archive(path)
    try:
        d = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise CheckpointError(f"{path}: not a loadable checkpoint: {type(exc).__name__}: "
                              f"{exc}") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a fit3d_ros segmentation checkpoint (format "
                              f"{d.get('format') if isinstance(d, dict) else type(d).__name__!r},"
                              f" expected {FORMAT!r})")
    try:
        ckpt = Checkpoint(kind=d["kind"], model_config=config_from_dict(d["model"]),
                          state_dict=d["state_dict"],
                          preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                          classes=None if d["classes"] is None else ClassMap.from_dict(d["classes"]),
                          training=d.get("training", {}), metrics=d.get("metrics", {}))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: incomplete or inconsistent checkpoint ({exc!r})"
                              ) from exc
    validate_checkpoint(ckpt, str(path))
    return ckpt


def verify_archive(path: str | Path) -> None:
    """Raise `CheckpointError` unless `path` is a zip archive whose CRCs all check
    (``torch.save``'s format; torch.load itself never verifies them)."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a loadable checkpoint (damaged or not a zip "
                              f"archive: {exc})") from exc
    if bad is not None:
        raise CheckpointError(f"{path}: damaged checkpoint: CRC mismatch in {bad!r} "
                              "(the file was corrupted after it was written)")


def _check_range(where: str, name: str, value: Any) -> None:
    lo, hi = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise CheckpointError(f"{where}: {name}={value!r} outside the sane range "
                              f"[{lo:g}, {hi:g}]")


def validate_checkpoint(ckpt: Checkpoint, where: str = "checkpoint") -> None:
    """Raise `CheckpointError` on non-finite weights, a class list that does not fit the
    head, input features that do not fit the network, or a size field outside `LIMITS`."""
    cfg, pre = ckpt.model_config, ckpt.preprocessing
    _check_range(where, "voxel_size", pre.voxel_size)
    _check_range(where, "voxel_size", cfg.voxel_size)
    for name in ("in_channels", "feat_2d_dim", "num_datasets"):
        _check_range(where, name, getattr(cfg, name))
    for name in ("num_classes", "distill_dim"):
        if getattr(cfg, name) is not None:
            _check_range(where, name, getattr(cfg, name))
    for name in ("channels", "layers"):
        for v in getattr(cfg, name):
            _check_range(where, name, v)
    if pre.backbone is not None and pre.backbone.token_budget is not None:
        _check_range(where, "token_budget", pre.backbone.token_budget)
    try:
        width = feature_width(pre.input_features)
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    if width != cfg.in_channels:
        raise CheckpointError(f"{where}: input features {list(pre.input_features)} give "
                              f"{width} channels, the network takes {cfg.in_channels}")
    if ckpt.classes is not None and cfg.num_classes is not None and \
            len(ckpt.classes.names) != cfg.num_classes:
        raise CheckpointError(f"{where}: {len(ckpt.classes.names)} class names for a "
                              f"{cfg.num_classes}-class head")
    if ckpt.kind == "segmentation" and cfg.num_classes is None:
        raise CheckpointError(f"{where}: a segmentation checkpoint without a head")
    for key, value in ckpt.state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: weight {key} is a {type(value).__name__}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{where}: weight {key} holds non-finite values")


def build_model_from_checkpoint(ckpt: Checkpoint | str | Path,
                                device: str | torch.device = "cpu") -> torch.nn.Module:
    """The checkpoint's `SpUNet` with its weights (strict), in eval mode on `device`."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    model = SpUNet(config_from_dict(config_to_dict(ckpt.model_config)))
    try:
        model.load_state_dict(ckpt.state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights do not fit the stored model config: {exc}") from exc
    return model.to(device).eval()


def collapse_dataset_norms(state: dict[str, torch.Tensor], dataset: int
                           ) -> dict[str, torch.Tensor]:
    """Per-dataset BatchNorm weights (``*.norms.<i>.*``) -> plain BatchNorm of `dataset`."""
    out = {}
    for key, value in state.items():
        m = _NORM_KEY.search(key)
        if m is None:
            out[key] = value
        elif int(m.group(1)) == dataset:
            out[key[:m.start()] + "." + key[m.end():]] = value
    return out


def transfer_for_segmentation(init: Checkpoint, config: Any, dataset: int = 0
                              ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Backbone weights of `init` for a segmentation `SpUNetConfig` (D-DITR head swap).

    Returns (state dict to load with ``strict=False``, keys left to fresh init). Raises if
    the backbones' shapes differ or `dataset` is not one of the checkpoint's datasets.
    """
    n = int(init.model_config.num_datasets)
    if not 0 <= dataset < n:
        raise CheckpointError(f"init dataset {dataset} out of range: the checkpoint has {n} "
                              "dataset(s)")
    state = init.state_dict if n == 1 else collapse_dataset_norms(init.state_dict, dataset)
    state = {k: v for k, v in state.items()
             if not k.startswith(("distill_head.", "seg_head."))}
    target = SpUNet(config).state_dict()
    for k, v in state.items():
        if k not in target or target[k].shape != v.shape:
            raise CheckpointError(f"pretrained weight {k} {tuple(v.shape)} does not fit the "
                                  f"segmentation network ({tuple(target[k].shape) if k in target else 'no such key'})")
    fresh = sorted(k for k in target if k not in state)
    bad = [k for k in fresh if not k.startswith(("seg_head.", "inject."))]
    if bad:
        raise CheckpointError(f"pretrained checkpoint lacks backbone weights {bad[:5]}")
    return state, fresh

"""Backbone weights: local files (timm or Meta DINOv2 layout), the timm hub, FiT3D checkpoints.

Design note: every source ends as a state dict loaded strictly into a timm
VisionTransformer, so a file that does not fit the architecture is an error, never a
partly random model. Meta's original DINOv2 layout (``mask_token``, ``register_tokens``,
SwiGLU ``w12``/``w3``, training-time chunked ``blocks.<chunk>.<i>``, ``teacher``/``backbone.``
nesting) is unwrapped here and then converted by timm's own ``checkpoint_filter_fn``
(which also resamples position embeddings). Online sources are tried only when the host
answers within a short timeout; offline, cached downloads are still used, and otherwise
:class:`WeightsUnavailableError` says how to pass a local file.
"""
from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors.torch import load_file
from torch import nn

# FiT3D's released fine-tuned checkpoints (Yue et al., ECCV 2024), timm layout.
FIT3D_URL = "https://huggingface.co/yuanwenyue/FiT3D/resolve/main/{base}_finetuned.pth"
_NESTING_KEYS = ("state_dict", "model", "teacher", "model_state_dict", "module")
_PREFIXES = ("module.", "backbone.", "model.")


class WeightsUnavailableError(FileNotFoundError):
    """Pretrained weights were asked for but cannot be fetched (offline, no cache)."""


class WeightsFormatError(ValueError):
    """A weights file does not fit the backbone's architecture or cannot be read."""


def hub_reachable(url: str, timeout: float = 2.0) -> bool:
    """True if the URL's host accepts a TCP connection within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    host = urlparse(url).hostname or url
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch (``.pth``/``.pt``/``.bin``) file, unwrapped.

    Unwraps ``{"model"|"state_dict"|"teacher": {...}}`` nesting and a common ``module.``/
    ``backbone.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / foreign file: say which
        raise WeightsFormatError(f"cannot read weights file {path}: {exc}") from exc
    for key in _NESTING_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise WeightsFormatError(f"{path} holds no state dict (got {type(state).__name__})")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFormatError(f"{path}: non-tensor entries {bad[:5]}")
    return state


def convert_state_dict(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a timm- or Meta-layout state dict onto `model` (a timm VisionTransformer)."""
    # costly: timm loads torchvision (patched by fit3d_ros.compat first); import on first use
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = dict(state)
    # Meta training checkpoints group blocks in chunks: blocks.<chunk>.<i>.* -> blocks.<i>.*
    chunked = re.compile(r"^blocks\.\d+\.(\d+)\.")
    if any(chunked.match(k) for k in state):
        state = {chunked.sub(r"blocks.\1.", k): v for k, v in state.items()}
    has_head = any(k.startswith("head.") for k in model.state_dict())
    if not has_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    if "register_tokens" in state and getattr(model, "reg_token", None) is None:
        raise WeightsFormatError("checkpoint has DINOv2 register tokens but the backbone has "
                                 "none: use a *_reg backbone (e.g. dinov2_reg_small)")
    try:
        return checkpoint_filter_fn(state, model)
    except (RuntimeError, ValueError, KeyError) as exc:  # e.g. pos_embed of another grid
        raise WeightsFormatError(f"cannot convert checkpoint for this backbone: {exc}") from exc


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load a (converted) state dict; mismatches raise :class:`WeightsFormatError`."""
    converted = convert_state_dict(state, model)
    try:
        result = model.load_state_dict(converted, strict=False)
    except RuntimeError as exc:  # shape mismatch
        raise WeightsFormatError(f"{source} does not fit the backbone: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise WeightsFormatError(
            f"{source} does not fit the backbone: missing {result.missing_keys[:6]}, "
            f"unexpected {result.unexpected_keys[:6]}")


def load_file_into(model: nn.Module, path: str | Path) -> None:
    """Load a local weights file (timm or Meta DINOv2 layout) into `model`."""
    load_into(model, read_state_dict(path), str(path))


def _how_to(name: str) -> str:
    return (f"pass a local checkpoint with weights=PATH (command line: --weights PATH; "
            f".pth or .safetensors, timm or Meta DINOv2 layout) for {name!r}, or "
            f"pretrained=False / --random-init for a seeded random network")


def fetch_fit3d_checkpoint(base: str, timeout: float = 2.0) -> Path:
    """Local path of FiT3D's fine-tuned checkpoint for `base` (torch hub cache or download)."""
    url = FIT3D_URL.format(base=base)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if cached.is_file():
        return cached
    if not hub_reachable(url, timeout):
        raise WeightsUnavailableError(
            f"FiT3D weights for {base}_fine are not cached ({cached}) and {url} is "
            f"unreachable: download that file elsewhere and {_how_to(base + '_fine')}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.hub.download_url_to_file(url, str(cached), progress=False)
    return cached


def hub_weights_file(arch: str, name: str, timeout: float = 2.0) -> Path | None:
    """Cached timm hub weights for `arch`; None when the hub is reachable (timm downloads).

    Offline without a cached copy raises :class:`WeightsUnavailableError` (before any
    network is built).
    """
    # costly: timm loads torchvision (patched by fit3d_ros.compat first); import on first use
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        raise WeightsUnavailableError(f"timm has no hub weights for {name!r}: {_how_to(name)}")
    if hub_reachable("https://huggingface.co", timeout):
        return None
    from huggingface_hub import try_to_load_from_cache  # costly: ~130 ms; offline path only
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None)
    for filename in ("model.safetensors", "pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename, cache_dir=cache)
        if isinstance(path, str):
            return Path(path)
    raise WeightsUnavailableError(
        f"pretrained weights for {name!r} (hub {hub_id}) are not cached and the hub is "
        f"unreachable: {_how_to(name)}")


def download_hub_weights(model: nn.Module, name: str) -> None:
    """Load timm's pretrained weights for `model` from the hub (online)."""
    # costly: timm loads torchvision (patched by fit3d_ros.compat first); import on first use
    from timm.models import load_pretrained
    from timm.models.vision_transformer import checkpoint_filter_fn

    try:
        load_pretrained(model, num_classes=0, filter_fn=checkpoint_filter_fn, strict=True)
    except Exception as exc:  # network or hub failure after the reachability probe
        raise WeightsUnavailableError(f"could not fetch weights for {name!r}: {exc}; "
                                      f"{_how_to(name)}") from exc

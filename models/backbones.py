"""2D ViT backbones (timm) returning dense patch features and the [CLS] token.

Design note: one thin wrapper, :class:`Backbone`, over any timm VisionTransformer built
with ``dynamic_img_size`` so non-square inputs work. It takes images in [0, 1] and applies
the model's own normalisation (from timm's pretrained config), so callers never mix up
ImageNet and CLIP statistics. :meth:`Backbone.preprocess` implements DITR's token budget:
resize keeping the aspect ratio to about N patches with sides a multiple of the patch
size (N = 37² for DINOv2's 518x518). Short names cover the families FiT3D fine-tuned;
``*_fine`` names load FiT3D's released checkpoints into the same architectures. Random
initialisation is explicit (``pretrained=False``) and seeded, so two commands agree on
the "original" network; asking for pretrained weights offline raises
:class:`~fit3d_ros.models.weights.WeightsUnavailableError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fit3d_ros.compat import import_timm

from .weights import (download_hub_weights, fetch_fit3d_checkpoint, hub_weights_file,
                      load_file_into)

# Short names used on every command line -> timm model names (FiT3D's choices).
BACKBONES: dict[str, str] = {
    "dinov2_small": "vit_small_patch14_dinov2.lvd142m",
    "dinov2_base": "vit_base_patch14_dinov2.lvd142m",
    "dinov2_large": "vit_large_patch14_dinov2.lvd142m",
    "dinov2_giant": "vit_giant_patch14_dinov2.lvd142m",
    "dinov2_reg_small": "vit_small_patch14_reg4_dinov2.lvd142m",
    "clip_base": "vit_base_patch16_clip_384.laion2b_ft_in12k_in1k",
    "mae_base": "vit_base_patch16_224.mae",
    "deit3_base": "deit3_base_patch16_224.fb_in1k",
}
# FiT3D's released fine-tuned models: short name -> base short name.
FINETUNED: dict[str, str] = {f"{b}_fine": b for b in
                             ("dinov2_small", "dinov2_base", "dinov2_reg_small", "clip_base",
                              "mae_base", "deit3_base")}
# A tiny random ViT with the DINOv2 interface (patch 14, [CLS], LayerScale) for tests.
TINY_TEST = "vit_tiny_test"
_TINY_ARGS: dict[str, Any] = {"depth": 2, "embed_dim": 48, "num_heads": 2}
DITR_TOKEN_BUDGET = 37 * 37  # 518x518 at patch 14


def backbone_names() -> list[str]:
    """All short names :func:`build_backbone` accepts (besides any timm model name)."""
    return sorted(BACKBONES) + sorted(FINETUNED) + [TINY_TEST]


@dataclass
class BackboneOutput:
    """Dense patch features ``patch`` (B, C, h, w) and the [CLS] token ``cls`` (B, C)."""

    patch: torch.Tensor
    cls: torch.Tensor


def input_size(height: int, width: int, patch_size: int,
               token_budget: int | None = None) -> tuple[int, int]:
    """ViT input (H', W'): multiples of `patch_size`, aspect kept, about `token_budget` patches.

    Without a budget the sides are rounded to the nearest multiple of the patch size.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    if token_budget is None:
        gh, gw = round(height / patch_size), round(width / patch_size)
    else:
        if token_budget < 1:
            raise ValueError(f"token_budget must be >= 1, got {token_budget}")
        scale = math.sqrt(token_budget * patch_size ** 2 / (height * width))
        gh, gw = round(height * scale / patch_size), round(width * scale / patch_size)
    return max(1, gh) * patch_size, max(1, gw) * patch_size


class Backbone(nn.Module):
    """A timm ViT giving patch features (B, C, H/P, W/P) and [CLS] from [0, 1] images."""

    def __init__(self, model: nn.Module, name: str, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
        self.model = model.to(dtype)
        self.name = name
        self.dtype = dtype
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)

    @property
    def patch_size(self) -> int:
        return int(self.model.patch_embed.patch_size[0])

    @property
    def embed_dim(self) -> int:
        return int(self.model.num_features)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """The model's own normalisation of [0, 1] images (B, 3, H, W)."""
        return (images.float() - self.mean) / self.std

    def input_size(self, height: int, width: int,
                   token_budget: int | None = None) -> tuple[int, int]:
        """See :func:`input_size` (with this model's patch size)."""
        return input_size(height, width, self.patch_size, token_budget)

    def preprocess(self, rgb: np.ndarray | torch.Tensor,
                   token_budget: int | None = DITR_TOKEN_BUDGET) -> torch.Tensor:
        """uint8 RGB (H,W,3) or (B,H,W,3) -> float (B,3,H',W') in [0,1] on this device.

        Resized (bilinear, antialiased) to :meth:`input_size` for `token_budget`.
        """
        x = torch.as_tensor(np.asarray(rgb) if not isinstance(rgb, torch.Tensor) else rgb)
        if x.dtype != torch.uint8:
            raise ValueError(f"preprocess expects uint8 RGB, got {x.dtype}")
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"preprocess expects (H,W,3) or (B,H,W,3), got {tuple(x.shape)}")
        x = x.to(self.mean.device).permute(0, 3, 1, 2).float() / 255.0
        size = self.input_size(x.shape[2], x.shape[3], token_budget)
        if size != tuple(x.shape[2:]):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return x.clamp_(0.0, 1.0)

    def forward(self, images: torch.Tensor) -> BackboneOutput:
        """Patch features (B, C, H/P, W/P) and [CLS] (B, C), float32, from [0,1] images."""
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be float (B,3,H,W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        p = self.patch_size
        b, _, h, w = images.shape
        if h % p or w % p:
            raise ValueError(f"image sides {h}x{w} must be multiples of the patch size {p} "
                             "(use Backbone.preprocess)")
        tokens = self.model.forward_features(self.normalize(images).to(self.dtype))
        n_prefix = int(self.model.num_prefix_tokens)
        patch = tokens[:, n_prefix:].reshape(b, h // p, w // p, -1).permute(0, 3, 1, 2)
        cls = tokens[:, 0] if self.model.has_class_token else patch.mean(dim=(2, 3))
        return BackboneOutput(patch=patch.float().contiguous(), cls=cls.float())


def resolve_name(name: str) -> tuple[str, str | None, dict[str, Any]]:
    """(timm model name, FiT3D base name or None, architecture overrides) for `name`."""
    if name == TINY_TEST:
        return "vit_small_patch14_dinov2.lvd142m", None, dict(_TINY_ARGS)
    if name in FINETUNED:
        base = FINETUNED[name]
        return BACKBONES[base], base, {}
    if name in BACKBONES:
        return BACKBONES[name], None, {}
    timm = import_timm()
    if not timm.is_model(name.split(".")[0]):
        raise ValueError(f"unknown backbone {name!r}: use one of {backbone_names()} "
                         "or a timm model name")
    return name, None, {}


def weights_source(name: str, *, pretrained: bool = True, weights: str | Path | None = None,
                   **kw: Any) -> tuple[str, dict[str, Any], Path | None, bool]:
    """(timm arch, architecture args, weights file or None, download from timm's hub) for
    :func:`build_backbone`; raises ``WeightsUnavailableError`` offline without building."""
    import_timm()
    arch, fit3d_base, args = resolve_name(name)
    args.update(kw)
    if weights is not None:
        return arch, args, Path(weights), False
    if not pretrained or name == TINY_TEST:
        return arch, args, None, False
    if args:
        raise ValueError(f"architecture overrides {sorted(args)} need pretrained=False "
                         "or a weights file")
    if fit3d_base is not None:
        return arch, args, fetch_fit3d_checkpoint(fit3d_base), False
    source = hub_weights_file(arch, name)
    return arch, args, source, source is None


def build_backbone(name: str, *, pretrained: bool = True, weights: str | Path | None = None,
                   seed: int = 0, dtype: torch.dtype = torch.float32,
                   **kw: Any) -> Backbone:
    """Build a :class:`Backbone` by short name (see :func:`backbone_names`) or timm name.

    `weights` (a local .pth/.safetensors, timm or Meta DINOv2 layout) wins over
    `pretrained`; ``pretrained=False`` gives a deterministic random network from `seed`
    (as does the test model ``vit_tiny_test``); `kw` overrides the timm architecture
    (e.g. depth, embed_dim, num_heads). Raises ``WeightsUnavailableError`` when pretrained
    weights are needed but cannot be fetched.
    """
    timm = import_timm()
    arch, args, source, download = weights_source(name, pretrained=pretrained,
                                                  weights=weights, **kw)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            model = timm.create_model(arch, pretrained=False, num_classes=0,
                                      dynamic_img_size=True, **args)
        except TypeError as exc:
            raise ValueError(f"bad architecture arguments for {name!r}: {exc}") from exc
    if source is not None:
        load_file_into(model, source)
    elif download:
        download_hub_weights(model, name)
    model.eval()
    return Backbone(model, name=name, dtype=dtype)

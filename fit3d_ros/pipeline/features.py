"""FeatureExtractor: RGB image → dense ViT patch features (original, fine-tuned or FiT3D).

Design note: the one object that turns images into `F` for both the feature node and
the segmenter, so the composed executable runs the backbone once per image. Modes:
``original`` (the base ViT), ``finetuned`` (FiT3D's 3D-aware ViT), ``concat`` (FiT3D's
assembly, both channel-wise). The ViT input keeps the image's aspect ratio at about
`token_budget` patches (DITR); the returned camera model is the input camera scaled to
that input, so patch (col, row) = ⌊u'/P⌋, ⌊v'/P⌋ for projections through it. A PCA
preview (3 components, basis fitted on the first frame and then kept) gives stable
colours across frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.backbones import FINETUNED, build_backbone
from fit3d_ros.models.fit3d import FiT3DConfig, FiT3DFeatures
from fit3d_ros.msgs import feature_info, features_to_msg
from fit3d_ros.sensors import CameraModel

Mode = Literal["original", "finetuned", "concat"]
MODES = ("original", "finetuned", "concat")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class FeatureConfig:
    """Which features to compute and how (every field is a node parameter)."""

    backbone: str = "dinov2_small"
    mode: Mode = "original"
    weights: str | None = None            # local file for the original backbone
    finetuned_weights: str | None = None  # local file for the fine-tuned one (else <name>_fine)
    random_init: bool = False             # seeded random network (no weights; tests, demos)
    seed: int = 0
    token_budget: int | None = 37 * 37    # about 518x518 at patch 14 (DITR)
    dtype: str = "float32"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @classmethod
    def from_spec(cls, spec: BackboneSpec, device: str | torch.device = "cpu"
                  ) -> "FeatureConfig":
        """The settings that compute the features a checkpoint's `spec` describes."""
        return cls(backbone=spec.name, mode="concat" if spec.fit3d else "original",
                   weights=spec.weights, finetuned_weights=spec.finetuned_weights,
                   random_init=spec.random_init, seed=spec.seed,
                   token_budget=spec.token_budget, device=str(device))


@dataclass
class FeatureResult:
    """Patch features `patch` (C, h, w) float32, [CLS] `cls` (C,), and the ViT-input camera."""

    patch: torch.Tensor
    cls: torch.Tensor
    camera: CameraModel | None
    input_size: tuple[int, int]  # (H', W') fed to the ViT

    def to_image(self, stamp_ns: int, frame_id: str, types) -> object:
        """``~/features`` message: channel-major ``32FC1`` Image (C·h rows, one column per
        patch), decoded by `fit3d_ros.msgs.features_from_msg` with `info`'s channels."""
        feats = self.patch.permute(1, 2, 0).float().cpu().numpy()
        return features_to_msg(feats, stamp_ns, frame_id, types)

    def info(self, **extra) -> str:
        """``~/features/info`` JSON (layout, channels, grid) for these features."""
        c, h, w = self.patch.shape
        return feature_info(c, h, w, **extra)


def build_feature_model(cfg: FeatureConfig) -> torch.nn.Module:
    """The backbone (or FiT3D pair) for `cfg`; raises WeightsUnavailableError offline."""
    dtype = DTYPES[cfg.dtype]
    pretrained = not cfg.random_init
    if cfg.mode == "concat":
        model = FiT3DFeatures.from_config(FiT3DConfig(
            name=cfg.backbone, pretrained=pretrained, original_weights=cfg.weights,
            finetuned_weights=cfg.finetuned_weights, seed=cfg.seed, dtype=dtype))
    elif cfg.mode == "finetuned":
        name = cfg.backbone if cfg.backbone.endswith("_fine") else f"{cfg.backbone}_fine"
        if cfg.finetuned_weights is None and name not in FINETUNED and pretrained:
            raise ValueError(f"no released fine-tuned {cfg.backbone!r}: set finetuned_weights")
        name = name if name in FINETUNED else cfg.backbone
        model = build_backbone(name, pretrained=pretrained, weights=cfg.finetuned_weights,
                               seed=cfg.seed, dtype=dtype)
    else:
        model = build_backbone(cfg.backbone, pretrained=pretrained, weights=cfg.weights,
                               seed=cfg.seed, dtype=dtype)
    return model.to(cfg.device).eval()


class FeatureExtractor:
    """Runs the configured ViT on uint8 RGB images (no ROS)."""

    def __init__(self, cfg: FeatureConfig, model: torch.nn.Module | None = None) -> None:
        self.cfg = cfg
        self.model = model if model is not None else build_feature_model(cfg)
        self.calls = 0  # number of backbone forward passes (tests: once per image)

    @property
    def patch_size(self) -> int:
        return int(self.model.patch_size)

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray, camera: CameraModel | None = None) -> FeatureResult:
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
            raise ValueError(f"expected uint8 RGB (H,W,3), got {rgb.dtype} {rgb.shape}")
        if camera is not None and (camera.height, camera.width) != rgb.shape[:2]:
            raise ValueError(f"image {rgb.shape[1]}x{rgb.shape[0]} does not match camera "
                             f"{camera.width}x{camera.height}")
        x = self.model.preprocess(rgb, self.cfg.token_budget)
        out = self.model(x)
        self.calls += 1
        h, w = int(x.shape[2]), int(x.shape[3])
        scaled = camera.scaled(w, h) if camera is not None else None
        return FeatureResult(out.patch[0].float(), out.cls[0].float(), scaled, (h, w))


class PCAPreview:
    """Feature map (C,h,w) → rgb8 (h,w,3) through a 3-component PCA fitted once."""

    def __init__(self) -> None:
        self.mean: torch.Tensor | None = None
        self.basis: torch.Tensor | None = None
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None

    def fit(self, patch: torch.Tensor) -> None:
        x = patch.detach().flatten(1).T.double()         # (h*w, C)
        self.mean = x.mean(0)
        _, _, v = torch.linalg.svd(x - self.mean, full_matrices=False)
        basis = v[:3].T                                  # (C, k<=3)
        if basis.shape[1] < 3:
            basis = torch.nn.functional.pad(basis, (0, 3 - basis.shape[1]))
        signs = torch.sign(basis.sum(0))                 # deterministic orientation
        self.basis = basis * torch.where(signs == 0, 1.0, signs)
        y = (x - self.mean) @ self.basis
        self.lo, self.hi = torch.quantile(y, 0.01, dim=0), torch.quantile(y, 0.99, dim=0)

    def __call__(self, patch: torch.Tensor) -> np.ndarray:
        if self.basis is None or self.basis.shape[0] != patch.shape[0]:
            self.fit(patch)
        c, h, w = patch.shape
        y = (patch.detach().flatten(1).T.double() - self.mean) @ self.basis
        y = (y - self.lo) / (self.hi - self.lo).clamp_min(1e-12)
        return (y.clamp(0, 1) * 255).round().to(torch.uint8).reshape(h, w, 3).cpu().numpy()

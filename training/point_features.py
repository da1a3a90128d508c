"""Per-point 2D features X^2D from a frozen ViT through the DITR mapping (cached).

Design note: DITR and D-DITR both need, for every LiDAR point, the feature of the ViT
patch it projects into (zeros and ``visible=False`` where no camera sees it). The ViT
runs once per image at DITR's token budget (aspect kept, about 37² patches); its patch
maps (C, h, w) and the camera scaled to the ViT input are kept in memory and, with a
cache folder, on disk (``.npz`` keyed by the backbone's identity and the image bytes),
so the expensive part (`fit3d_ros.pipeline.features.FeatureExtractor`, the same code
the ROS segmenter runs) is paid once per image while the cheap part — projection and the
nearest-patch gather of `fit3d_ros.models.mapping` — is redone per step on the current
points (random view choice per step, as in the paper). :class:`BackboneSpec` is the
backbone's identity (name, weights source, seed, token budget, FiT3D assembly); it is
stored in checkpoints so that inference rebuilds the same teacher.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fit3d_ros.models.backbones import DITR_TOKEN_BUDGET
from fit3d_ros.models.mapping import VIEW_CHOICES, point_features_from_maps
from fit3d_ros.sensors import CameraModel

from .seg_data import Sample


@dataclass
class BackboneSpec:
    """How to build the frozen 2D backbone (teacher for D-DITR, X^2D source for DITR)."""

    name: str = "dinov2_small"
    weights: str | None = None          # local .pth/.safetensors (wins over pretrained)
    random_init: bool = False           # seeded random ViT (no pretrained weights)
    seed: int = 0
    token_budget: int | None = DITR_TOKEN_BUDGET
    view: str = "random"                # view choice for points seen by several cameras
    fit3d: bool = False                 # FiT3D assembly: original ‖ fine-tuned features
    finetuned_weights: str | None = None

    def __post_init__(self) -> None:
        if self.view not in VIEW_CHOICES:
            raise ValueError(f"view must be one of {VIEW_CHOICES}, got {self.view!r}")
        if self.weights is not None and self.random_init:
            raise ValueError("give either weights or random_init, not both")

    @property
    def teacher(self) -> str:
        """Human-readable weights provenance (goes into every result file)."""
        if self.random_init:
            return f"random-init (seed {self.seed}; no pretrained weights)"
        if self.weights:
            return f"weights file {self.weights}"
        return "pretrained (hub)"

    def cache_id(self) -> str:
        d = asdict(self)
        if self.weights:
            p = Path(self.weights)
            d["weights"] = f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
        return hashlib.sha1(repr(sorted(d.items())).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BackboneSpec":
        return cls(**d)

    def feature_config(self, device: str | torch.device = "cpu") -> Any:
        """The `fit3d_ros.pipeline.features.FeatureConfig` that computes these features."""
        from fit3d_ros.pipeline.features import FeatureConfig

        return FeatureConfig(backbone=self.name, mode="concat" if self.fit3d else "original",
                             weights=self.weights, finetuned_weights=self.finetuned_weights,
                             random_init=self.random_init, seed=self.seed,
                             token_budget=self.token_budget, device=str(device))


class PointFeatureSource:
    """Per-point X^2D for samples: ViT patch maps once per image, mapping per call."""

    def __init__(self, spec: BackboneSpec, cache_dir: str | Path | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.spec = spec
        from fit3d_ros.pipeline.features import FeatureExtractor

        self.device = torch.device(device)
        self.extractor = FeatureExtractor(spec.feature_config(self.device))
        for p in self.extractor.model.parameters():
            p.requires_grad_(False)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._id = spec.cache_id()
        self._memory: dict[str, tuple[torch.Tensor, CameraModel]] = {}

    @property
    def dim(self) -> int:
        return self.extractor.embed_dim

    @property
    def patch_size(self) -> int:
        return self.extractor.patch_size

    def _key(self, rgb: np.ndarray) -> str:
        h = hashlib.sha1(self._id.encode())
        h.update(np.ascontiguousarray(rgb).data)
        h.update(repr(rgb.shape).encode())
        return h.hexdigest()

    @torch.no_grad()
    def image_features(self, rgb: np.ndarray, camera: CameraModel
                       ) -> tuple[torch.Tensor, CameraModel]:
        """Patch map (C, h, w) of one image and the camera scaled to the ViT input."""
        key = self._key(rgb)
        if key in self._memory:
            return self._memory[key]
        path = None if self.cache_dir is None else self.cache_dir / f"{key}.npz"
        if path is not None and path.is_file():
            height, width = self.extractor.model.input_size(rgb.shape[0], rgb.shape[1],
                                                            self.spec.token_budget)
            maps, scaled = torch.from_numpy(np.load(path)["patch"]), camera.scaled(width, height)
        else:
            result = self.extractor(rgb, camera)
            maps, scaled = result.patch.cpu(), result.camera
            if path is not None:
                tmp = path.with_name(f".{path.name}.tmp.npz")
                np.savez(tmp, patch=maps.numpy())
                tmp.replace(path)
        self._memory[key] = (maps, scaled)
        return maps, scaled

    def features(self, sample: Sample, xyz: np.ndarray | None = None, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) X^2D and (N,) visible mask for `xyz` (default: the sample's points).

        `xyz` must be in the sample's point frame (i.e. before augmentation).
        """
        pts = sample.xyz if xyz is None else xyz
        per_view = [self.image_features(v.rgb, v.camera) for v in sample.views]
        return point_features_from_maps(pts, [m for m, _ in per_view], [c for _, c in per_view],
                                        [v.T_cam_points for v in sample.views], self.patch_size,
                                        view=self.spec.view, seed=seed, dim=self.dim)

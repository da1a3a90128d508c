"""Per-point 2D features X^2D from a frozen ViT through the DITR mapping (cached).

Design note: DITR and D-DITR both need, for every LiDAR point, the feature of the ViT
patch it projects into (zeros and ``visible=False`` where no camera sees it). The ViT
runs once per image at DITR's token budget (aspect kept, about 37² patches); its patch
maps (C, h, w) and the camera scaled to the ViT input are kept in memory and, with a
cache folder, on disk (``.npz`` keyed by the backbone's identity and the image bytes),
so the expensive part (`fit3d_ros.pipeline.features.FeatureExtractor`, the same code
the ROS segmenter runs) is paid once per image while the cheap part — projection and the
nearest-patch gather of `fit3d_ros.models.mapping` — is redone per step on the current
points (random view choice per step, as in the paper). Patch maps stay on the source's
device; for training steps `rows` returns only the (N,) table rows of the points (8
bytes a point, computed on the host) and the device table to gather from, so the dense
(N, C) features are built on the device (`models.mapping_device`). :class:`BackboneSpec` is the
backbone's identity (name, weights source, seed, token budget, FiT3D assembly); it is
stored in checkpoints so that inference rebuilds the same teacher.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.mapping import point_features_from_maps
from fit3d_ros.models.mapping_device import feature_table, map_rows
from fit3d_ros.pipeline.features import FeatureConfig, FeatureExtractor
from fit3d_ros.sensors import CameraModel
from fit3d_ros.training.ditr.data import Sample


class PointFeatureSource:
    """Per-point X^2D for samples: ViT patch maps once per image, mapping per call."""

    def __init__(self, spec: BackboneSpec, cache_dir: str | Path | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.spec = spec
        self.device = torch.device(device)
        self.extractor = FeatureExtractor(FeatureConfig.from_spec(spec, self.device))
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
        """Patch map (C, h, w) on the device of one image and the camera scaled to the
        ViT input (kept in memory: one map per image)."""
        key = self._key(rgb)
        if key in self._memory:
            return self._memory[key]
        path = None if self.cache_dir is None else self.cache_dir / f"{key}.npz"
        if path is not None and path.is_file():
            height, width = self.extractor.model.input_size(rgb.shape[0], rgb.shape[1],
                                                            self.spec.token_budget)
            maps = torch.from_numpy(np.load(path)["patch"]).to(self.device)
            scaled = camera.scaled(width, height)
        else:
            result = self.extractor(rgb, camera)
            maps, scaled = result.patch, result.camera  # stays on the device
            if path is not None:
                tmp = path.with_name(f".{path.name}.tmp.npz")
                np.savez(tmp, patch=maps.cpu().numpy())
                tmp.replace(path)
        self._memory[key] = (maps, scaled)
        return maps, scaled

    def features(self, sample: Sample, xyz: np.ndarray | None = None, seed: int = 0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C) X^2D and (N,) visible mask for `xyz` (default: the sample's points).

        `xyz` must be in the sample's point frame (i.e. before augmentation).
        """
        pts = torch.from_numpy(np.asarray(sample.xyz if xyz is None else xyz)).to(self.device)
        per_view = [self.image_features(v.rgb, v.camera) for v in sample.views]
        return point_features_from_maps(pts, [m for m, _ in per_view], [c for _, c in per_view],
                                        [v.T_cam_points for v in sample.views], self.patch_size,
                                        view=self.spec.view, seed=seed, dim=self.dim)

    def rows(self, sample: Sample, xyz: np.ndarray | None = None, seed: int = 0
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(table, rows, visible): the sample's `feature_table` on the device and, on the
        host, the (N,) table row and visible mask of every point of `xyz` (default: the
        sample's points); ``table.index_select(0, rows)`` equals :meth:`features`."""
        pts = torch.from_numpy(np.asarray(sample.xyz if xyz is None else xyz))
        if not sample.views:
            n = len(pts)
            return (torch.zeros((1, self.dim), device=self.device),
                    torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.bool))
        per_view = [self.image_features(v.rgb, v.camera) for v in sample.views]
        table, grid = feature_table([m for m, _ in per_view], self.device)
        rows = map_rows(pts, [c for _, c in per_view], [v.T_cam_points for v in sample.views],
                        self.patch_size, grid, view=self.spec.view, seed=seed)
        return table, rows, rows < table.shape[0] - 1

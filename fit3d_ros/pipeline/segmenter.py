"""Segmenter: point cloud (+ camera images) → per-point labels with a trained checkpoint.

Design note: the runtime twin of `training.ditr.evaluate.predict`, shared by the
segmentation node and replay so both produce identical labels. It loads one checkpoint
(`models.checkpoint`: U-Net config + weights + class map + preprocessing) and runs in
the checkpoint's mode: DITR (2D features injected; needs cameras, points no camera sees
get zero features as in training), or image-free (D-DITR-initialised or 3D-only
networks; images ignored). 2D features come from a `FeatureExtractor` built from the
checkpoint's backbone spec, or from a function given to `share_features` so the composed
node computes them once per image. The input limits (`limits`: non-finite, out-of-range
points dropped, subsampled above ``max_points``) run first, as their own step; the result
refers to the kept points (`kept` mask over the input, `drops` says why the others went).
Per-point features (``with_features``) are the U-Net's last decoder features or, with
`set_point_features` ``vit``, each point's ViT patch feature f^2D (zeros where unseen):
the space of a clicked pixel's feature, so a map of them answers pixel queries.
Precision (`dtype`): the ViT runs in float32, bfloat16 or float16; on CUDA the U-Net runs
under ``torch.autocast`` in that dtype (spconv's convolutions cast their inputs to fp16
there: ``custom_fwd(cast_inputs=torch.float16)`` in ``spconv.pytorch.functional``), on
CPU it stays float32 (spconv's CPU kernels have no bfloat16). Labels and confidences are
computed from float32 logits.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from fit3d_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
from fit3d_ros.models.mapping import VIEW_CHOICES, point_features_from_maps
from fit3d_ros.models.preprocess import centered, input_features
from fit3d_ros.sensors import CameraModel, PointCloud
from fit3d_ros.threads import cpu_threads

from .features import DTYPES, FeatureConfig, FeatureExtractor, FeatureResult
from .latency import LatencyStats, device_sync
from .limits import InputLimits, PointDrops, limit_mask


POINT_FEATURE_SOURCES = ("auto", "vit", "unet")


@dataclass
class ViewInput:
    """One camera image for a cloud: RGB, its camera and the camera-from-cloud transform."""

    rgb: np.ndarray
    camera: CameraModel
    T_cam_cloud: np.ndarray          # 4x4, maps cloud-frame points into the camera frame
    key: tuple = ()                  # identity for shared feature caches, e.g. (frame, stamp)


@dataclass
class SegmentationResult:
    labels: np.ndarray               # (M,) int32 class index (0..K-1)
    confidence: np.ndarray           # (M,) float32 softmax probability of the label
    kept: np.ndarray                 # (N,) bool: input points that were segmented
    visible: np.ndarray | None       # (M,) bool: seen by a camera (DITR), else None
    point_features: np.ndarray | None = None  # (M, C) if asked: `point_features` source
    # (U-Net decoder features, or the ViT f^2D of each point's patch: 0 where unseen)
    drops: PointDrops = field(default_factory=PointDrops)  # input points not segmented


class EmptyCloudError(ValueError):
    """No point of a cloud passed the input limits (`drops` says why)."""

    def __init__(self, drops: PointDrops) -> None:
        super().__init__(f"no point to segment ({drops.non_finite} non-finite, "
                         f"{drops.out_of_range} beyond max_range_m)")
        self.drops = drops


class Segmenter:
    """Runs a segmentation checkpoint on clouds (no ROS)."""

    def __init__(self, checkpoint: str | Path, device: str = "cpu", view: str = "center",
                 limits: InputLimits | None = None, dtype: str = "float32") -> None:
        if view not in VIEW_CHOICES:  # before the (slow) checkpoint load
            raise ValueError(f"view must be one of {VIEW_CHOICES}, got {view!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        self.dtype = dtype
        self.ckpt = load_checkpoint(checkpoint, map_location=device)
        if self.ckpt.kind != "segmentation":
            raise ValueError(f"{checkpoint}: a {self.ckpt.kind} checkpoint has no "
                             "segmentation head (fine-tune it with `fit3d-ros train-seg --init`)")
        self.device = torch.device(device)
        self.model = build_model_from_checkpoint(self.ckpt, self.device)
        self.view = view
        self.limits = limits or InputLimits()
        self.pre = self.ckpt.preprocessing
        self.inject = bool(self.ckpt.model_config.inject_2d)
        self.latency = LatencyStats(sync=device_sync(self.device))  # true per-stage GPU time
        self.extractor: FeatureExtractor | None = None
        self._feature_fn: Callable[[ViewInput], FeatureResult] | None = None
        if self.inject:
            self.extractor = FeatureExtractor(self.feature_config(device))
        self.point_features = "unet"  # what with_features returns (`set_point_features`)

    @property
    def class_names(self) -> list[str]:
        return self.ckpt.class_names

    @property
    def palette(self) -> np.ndarray:
        return np.asarray(self.ckpt.palette, dtype=np.uint8).reshape(-1, 3)

    def feature_config(self, device: str = "cpu") -> FeatureConfig:
        """The 2D feature settings this checkpoint was trained with."""
        if self.pre.backbone is None:
            raise ValueError("this checkpoint has no 2D backbone (image-free model)")
        return dataclasses.replace(FeatureConfig.from_spec(self.pre.backbone, device),
                                   dtype=self.dtype)

    def unet_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast in `dtype` for the U-Net on CUDA; float32 elsewhere (see the note)."""
        if self.device.type != "cuda" or self.dtype == "float32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=DTYPES[self.dtype])

    def set_point_features(self, source: str) -> str:
        """Per-point features of `with_features`: ``unet`` (last decoder features),
        ``vit`` (DITR's f^2D: each point's ViT patch feature, the space of a clicked
        pixel's feature; zeros where no camera sees the point) or ``auto`` (vit when the
        checkpoint injects 2D features, else unet). Returns the resolved source."""
        if source not in POINT_FEATURE_SOURCES:
            raise ValueError(f"point features source must be one of {POINT_FEATURE_SOURCES},"
                             f" got {source!r}")
        if source == "auto":
            source = "vit" if self.inject else "unet"
        if source == "vit" and self.extractor is None:  # raises without a 2D backbone
            self.extractor = FeatureExtractor(self.feature_config(str(self.device)))
        self.point_features = source
        return source

    def share_features(self, feature_fn: Callable[[ViewInput], FeatureResult]) -> None:
        """Take 2D features from `feature_fn` (e.g. a per-image cache) instead of running
        this segmenter's own extractor."""
        self._feature_fn = feature_fn

    def _features(self, view: ViewInput) -> FeatureResult:
        if self._feature_fn is not None:
            return self._feature_fn(view)
        return self.extractor(view.rgb, view.camera)

    def _input_features(self, cloud: PointCloud, xyz_c: np.ndarray) -> np.ndarray:
        return input_features(cloud, self.pre.input_features, xyz=xyz_c)

    def _point_2d(self, xyz: np.ndarray, views: Sequence[ViewInput]
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        dim = int(self.ckpt.model_config.feat_2d_dim) if self.inject else \
            self.extractor.embed_dim  # f^2D only for `point_features` vit
        pts = torch.from_numpy(xyz).to(self.device)
        if not views:  # zero features, no latency samples
            return point_features_from_maps(pts, [], [], [], 0, dim=dim)
        with self.latency.time("backbone"):
            results = [self._features(v) for v in views]
        with self.latency.time("mapping"):  # on the device: maps, projection, gather
            maps = [r.patch.to(self.device, torch.float32) for r in results]
            if maps[0].shape[0] != dim:
                raise ValueError(f"2D features have {maps[0].shape[0]} channels, the "
                                 f"checkpoint expects {dim} ({self.pre.backbone})")
            patch = results[0].input_size[0] // maps[0].shape[1]  # ViT patch size
            cams = [r.camera if r.camera is not None else
                    v.camera.scaled(r.input_size[1], r.input_size[0])
                    for r, v in zip(results, views)]
            return point_features_from_maps(pts, maps, cams, [v.T_cam_cloud for v in views],
                                            patch, view=self.view, seed=0, dim=dim)

    @torch.inference_mode()
    def __call__(self, cloud: PointCloud, views: Sequence[ViewInput] = (),
                 with_features: bool = False) -> SegmentationResult:
        with self.latency.time("limits"):  # own step: before any per-point allocation
            kept, drops = limit_mask(cloud, self.limits)
            cloud = cloud.select(kept) if drops.total else cloud
        if len(cloud) == 0:
            raise EmptyCloudError(drops)
        xyz_c = centered(cloud.xyz)
        with self.latency.time("preprocess"):
            feats = torch.from_numpy(self._input_features(cloud, xyz_c)).to(self.device)
        kw, visible, f2d = {}, None, None
        vit_points = with_features and self.point_features == "vit"
        if self.inject or vit_points:
            f2d, vis = self._point_2d(cloud.xyz, views)
            visible = vis.cpu().numpy()
            if self.inject:
                kw = {"feat_2d": f2d, "visible_2d": vis}  # already on self.device
        with self.latency.time("unet"), self.unet_autocast(), \
                cpu_threads(1 if self.device.type == "cpu" else None):
            out = self.model(torch.from_numpy(xyz_c).to(self.device), feats, **kw)
            prob = torch.softmax(out.logits.float(), dim=1)
            conf, labels = prob.max(dim=1)
        conf_np = conf.cpu().numpy().astype(np.float32)
        if not np.isfinite(conf_np).all():  # never publish NaN confidences
            raise ValueError("the network produced non-finite scores for this cloud")
        return SegmentationResult(
            labels.cpu().numpy().astype(np.int32), conf_np,
            kept, visible, (f2d if vit_points else out.features).float().cpu().numpy()
            if with_features else None, drops)


def labelled_cloud(cloud: PointCloud, result: SegmentationResult, palette: np.ndarray
                   ) -> PointCloud:
    """The segmented points with `label`, `confidence` and palette `rgb` (for RViz)."""
    kept = cloud.select(result.kept) if not result.kept.all() else cloud
    pal = palette if len(palette) else np.zeros((1, 3), np.uint8)
    rgb = pal[np.clip(result.labels, 0, len(pal) - 1)]
    extra = {"confidence": result.confidence}
    feature = result.point_features
    return PointCloud(kept.stamp, kept.frame_id, kept.xyz, rgb=rgb, label=result.labels,
                      feature=feature, extra=extra)


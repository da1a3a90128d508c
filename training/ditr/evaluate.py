"""Evaluate a segmentation U-Net on labelled data: mIoU, accuracy, DITR's visible split.

Design note: evaluation sees every point of every scan (no subsampling, no
augmentation), centred exactly as in training; with DITR injection the 2D features use
a fixed view seed so results are repeatable. A point is *visible* when it projects
inside at least one camera image of its scan (DITR Table 8); scans without cameras count
as invisible when other scans have cameras, and the split is ``None`` when no scan has
any. Class maps of the data and the checkpoint must agree (names and raw ids), so a
model is never scored against a differently encoded ground truth.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fit3d_ros.models import project_points
from fit3d_ros.models.classes import ClassMap
from fit3d_ros.models.preprocess import centered, input_features
from fit3d_ros.pipeline.metrics import SegEvaluator
from fit3d_ros.training.ditr.data import Sample, SegDataset
from fit3d_ros.training.ditr.point_features import PointFeatureSource


def visible_any(sample: Sample) -> np.ndarray:
    """(N,) True where the point lies inside at least one of the sample's camera images."""
    if not sample.views:
        return np.zeros(len(sample), dtype=bool)
    proj = project_points(sample.xyz, [v.camera for v in sample.views],
                          [v.T_cam_points for v in sample.views], patch_size=1)
    return proj.visible_any()


def check_classes(expected: ClassMap, datasets: Sequence[SegDataset]) -> None:
    """Raise ValueError unless every dataset is labelled with `expected`'s classes."""
    for ds in datasets:
        if not ds.labelled:
            raise ValueError(f"{ds.name}: no per-point labels (or no class map; pass --classes)")
        c = ds.classes
        if c.names != expected.names or c.raw_ids != expected.raw_ids:
            raise ValueError(f"{ds.name}: classes {list(c.names)} do not match the model's "
                             f"{list(expected.names)}")


@torch.no_grad()
def predict(model: torch.nn.Module, sample: Sample, feature_names: Sequence[str],
            source: PointFeatureSource | None, device: torch.device) -> np.ndarray:
    """(N,) predicted class index of every point of `sample`."""
    xyz = centered(sample.xyz)
    kw = {}
    if source is not None:
        f2d, vis = source.features(sample, seed=0)
        kw = {"feat_2d": f2d.to(device), "visible_2d": vis.to(device)}
    out = model(torch.from_numpy(xyz).to(device),
                torch.from_numpy(input_features(sample, feature_names, xyz=xyz)).to(device),
                **kw)
    return out.logits.argmax(dim=1).cpu().numpy()


def evaluate(model: torch.nn.Module, datasets: Sequence[SegDataset], classes: ClassMap,
             feature_names: Sequence[str], source: PointFeatureSource | None = None,
             device: str | torch.device = "cpu") -> SegEvaluator:
    """Accumulate predictions of `model` over all samples of `datasets`."""
    check_classes(classes, datasets)
    dev = torch.device(device)
    was_training = model.training
    model.eval()
    ev = SegEvaluator(classes.names)
    cams = any(ds.has_cameras for ds in datasets)
    for ds in datasets:
        for sample in ds.samples:
            pred = predict(model, sample, feature_names, source, dev)
            ev.update(pred, sample.labels, visible_any(sample) if cams else None)
    model.train(was_training)
    return ev

"""SAB3R's Map and Locate metrics for a `VoxelMap` against labelled ground-truth points.

Design note: following SAB3R (METHODS.md §4), every ground-truth point takes the label
of its nearest map point (the voxel's mean point); mIoU and accuracy come from the
confusion matrix of `pipeline.metrics` (the same definitions as replay). Completeness is
the distance from each ground-truth point to the nearest map point: overall, and per
class to the nearest map point *of that class* (mean and median; None for a class the
map never predicts). Nearest neighbours are exact, by chunked ``torch.cdist`` on the
map's device — O(ground truth × map) work, which suits offline evaluation.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fit3d_ros.models.classes import IGNORE_INDEX
from fit3d_ros.pipeline.metrics import SegEvaluator

from .voxel_map import VoxelMap


def nearest(src: torch.Tensor, dst: torch.Tensor, chunk: int = 8192
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(distance, index into dst) of the nearest `dst` point to each `src` point."""
    if dst.shape[0] == 0:
        raise ValueError("nearest neighbour in an empty set")
    dist = torch.empty(src.shape[0], device=src.device)
    idx = torch.empty(src.shape[0], dtype=torch.int64, device=src.device)
    for i in range(0, src.shape[0], chunk):
        d, j = torch.cdist(src[i:i + chunk], dst).min(dim=1)
        dist[i:i + chunk], idx[i:i + chunk] = d, j
    return dist, idx


def _stats(d: torch.Tensor) -> dict[str, float | None]:
    if d.numel() == 0:
        return {"mean": None, "median": None}
    return {"mean": float(d.mean()), "median": float(d.median())}


def evaluate_map(vmap: VoxelMap, gt_xyz: np.ndarray, gt_labels: np.ndarray,
                 ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """{"miou", "accuracy", "per_class_iou", "completeness", "per_class_completeness",
    "points", "map_voxels"} for ground-truth points (map frame) with class indices."""
    if len(vmap) == 0:
        raise ValueError("the map is empty")
    d = vmap.device
    gt = torch.as_tensor(np.asarray(gt_xyz, np.float32).reshape(-1, 3), device=d)
    lab = np.asarray(gt_labels).astype(np.int64).reshape(-1)
    if len(lab) != gt.shape[0]:
        raise ValueError(f"{len(lab)} labels for {gt.shape[0]} ground-truth points")
    keep = lab != ignore_index
    gt, lab = gt[torch.as_tensor(keep, device=d)], lab[keep]
    m = len(vmap)
    pts, pred_labels = vmap.s.mean[:m], vmap.labels()
    dist, idx = nearest(gt, pts)
    ev = SegEvaluator(vmap.class_names, ignore_index)
    ev.update(pred_labels[idx].cpu().numpy(), lab)
    seg = ev.result()
    lab_t = torch.as_tensor(lab, device=d)
    per_class: dict[str, dict[str, float | None]] = {}
    for c, name in enumerate(vmap.class_names):
        mine, theirs = lab_t == c, pred_labels == c
        if not bool(mine.any()):
            continue
        if not bool(theirs.any()):
            per_class[name] = {"mean": None, "median": None, "points": int(mine.sum())}
            continue
        per_class[name] = {**_stats(nearest(gt[mine], pts[theirs])[0]),
                           "points": int(mine.sum())}
    means = [v["mean"] for v in per_class.values() if v["mean"] is not None]
    return {"miou": seg["miou"], "accuracy": seg["accuracy"],
            "per_class_iou": seg["per_class_iou"], "completeness": _stats(dist),
            "per_class_completeness": per_class,
            "mean_class_completeness": float(np.mean(means)) if means else None,
            "points": int(gt.shape[0]), "map_voxels": m}

"""Segmentation metrics: confusion matrix, IoU / mIoU, accuracy, DITR's visible split.

Design note: everything derives from one K×K confusion matrix (rows = ground truth,
columns = prediction; ignored points excluded), accumulated with ``np.bincount`` over
scans. IoU_c = TP / (TP + FP + FN); a class with an empty union (absent from both
ground truth and prediction) has no IoU (``None`` in JSON) and is left out of the mean,
the convention for small evaluation sets where not every class occurs. DITR's Table 8
splits points into *visible* (inside at least one camera image) and *invisible*; we keep
one confusion matrix per split, so the split mIoUs are computed exactly like the total
(``None`` when the data had no cameras). The confusion matrix is also written as a
row-normalised PNG heat map (PIL).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from fit3d_ros.models.classes import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(K, K) int64 counts: [true class, predicted class]; `ignore_index` targets skipped."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"pred has {pred.size} entries, target {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    bad = (target < 0) | (target >= num_classes) | (pred < 0) | (pred >= num_classes)
    if bad.any():
        raise ValueError(f"labels outside 0..{num_classes - 1} (and not ignore {ignore_index})")
    return np.bincount(target * num_classes + pred,
                       minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """(K,) IoU, NaN where the class's union is empty."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray) -> float | None:
    """Mean IoU over classes with a non-empty union (None when there are none)."""
    iou = iou_per_class(conf)
    return None if np.all(np.isnan(iou)) else float(np.nanmean(iou))


def accuracy(conf: np.ndarray) -> float | None:
    """Overall point accuracy (None without evaluated points)."""
    total = conf.sum()
    return None if total == 0 else float(np.trace(conf) / total)


@dataclass
class SegEvaluator:
    """Accumulates confusion matrices (all points, visible, invisible) over scans."""

    class_names: Sequence[str]
    ignore_index: int = IGNORE_INDEX
    total: np.ndarray = field(init=False)
    visible: np.ndarray = field(init=False)
    invisible: np.ndarray = field(init=False)
    has_cameras: bool = False

    def __post_init__(self) -> None:
        k = len(self.class_names)
        self.total = np.zeros((k, k), dtype=np.int64)
        self.visible = np.zeros((k, k), dtype=np.int64)
        self.invisible = np.zeros((k, k), dtype=np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray,
               visible: np.ndarray | None = None) -> None:
        """Add one scan; `visible` (N,) marks points inside a camera image (None: no cameras)."""
        k = len(self.class_names)
        self.total += confusion_matrix(pred, target, k, self.ignore_index)
        if visible is not None:
            visible = np.asarray(visible, dtype=bool).reshape(-1)
            self.has_cameras = True
            self.visible += confusion_matrix(pred[visible], target[visible], k,
                                             self.ignore_index)
            self.invisible += confusion_matrix(pred[~visible], target[~visible], k,
                                               self.ignore_index)

    def result(self) -> dict[str, Any]:
        """{"miou", "accuracy", "per_class_iou", "visible_miou", "invisible_miou", ...}."""
        iou = iou_per_class(self.total)
        split = self.has_cameras
        return {
            "miou": mean_iou(self.total),
            "accuracy": accuracy(self.total),
            "per_class_iou": {n: None if np.isnan(v) else float(v)
                              for n, v in zip(self.class_names, iou)},
            "visible_miou": mean_iou(self.visible) if split else None,
            "invisible_miou": mean_iou(self.invisible) if split else None,
            "visible_accuracy": accuracy(self.visible) if split else None,
            "invisible_accuracy": accuracy(self.invisible) if split else None,
            "points": int(self.total.sum()),
            "visible_points": int(self.visible.sum()) if split else None,
        }


def write_confusion(conf: np.ndarray, names: Sequence[str], out_dir: str | Path,
                    stem: str = "confusion", cell: int = 22) -> tuple[Path, Path]:
    """Write ``<stem>.json`` (counts + names) and ``<stem>.png`` (row-normalised heat map)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    conf = np.asarray(conf, dtype=np.int64)
    jpath = out / f"{stem}.json"
    jpath.write_text(json.dumps({"classes": list(names), "rows": "ground truth",
                                 "columns": "prediction", "matrix": conf.tolist()}))
    k = len(names)
    rows = conf.sum(axis=1, keepdims=True)
    norm = np.divide(conf, rows, out=np.zeros(conf.shape), where=rows > 0)
    margin = 28 + 7 * max((len(n) for n in names), default=1)
    heat = (255 * (1.0 - norm)).astype(np.uint8)           # white (0) .. blue (1)
    rgb = np.stack([heat, heat, np.full_like(heat, 255)], axis=-1)
    grid = np.kron(rgb, np.ones((cell, cell, 1), dtype=np.uint8))
    top = 18
    img = Image.new("RGB", (margin + k * cell, top + k * cell), "white")
    img.paste(Image.fromarray(grid), (margin, top))
    draw = ImageDraw.Draw(img)
    for i, n in enumerate(names):  # labels: rows on the left, column indices on top
        draw.text((2, top + i * cell + cell // 4), f"{i} {n}", fill="black")
        draw.text((margin + i * cell + 2, 2), str(i), fill="black")
    ppath = out / f"{stem}.png"
    img.save(ppath)
    return jpath, ppath

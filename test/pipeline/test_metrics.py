"""Segmentation metrics against hand-computed confusion matrices."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from fit3d_ros.pipeline.metrics import (
    SegEvaluator,
    accuracy,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    write_confusion,
)

# 3 classes; ground truth / prediction for 10 points (-1 ignored)
GT = np.array([0, 0, 0, 1, 1, 2, 2, 2, -1, -1])
PR = np.array([0, 0, 1, 1, 2, 2, 2, 0, 2, 0])
# by hand: rows = truth, cols = prediction
CONF = np.array([[2, 1, 0],
                 [0, 1, 1],
                 [1, 0, 2]])


def test_confusion_matches_hand_count():
    assert np.array_equal(confusion_matrix(PR, GT, 3), CONF)


def test_iou_and_accuracy_by_hand():
    # class 0: TP 2, FP 1 (a 2 predicted 0), FN 1 -> 2/4; class 1: TP 1, FP 1, FN 1 -> 1/3;
    # class 2: TP 2, FP 1, FN 1 -> 2/4
    assert np.allclose(iou_per_class(CONF), [0.5, 1 / 3, 0.5])
    assert mean_iou(CONF) == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    assert accuracy(CONF) == pytest.approx(5 / 8)


def test_absent_class_is_left_out_of_the_mean():
    conf = np.zeros((4, 4), dtype=np.int64)
    conf[:3, :3] = CONF
    iou = iou_per_class(conf)
    assert np.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx((0.5 + 1 / 3 + 0.5) / 3)
    # a class predicted but never true has IoU 0 and counts
    conf[0, 3] = 2
    assert iou_per_class(conf)[3] == 0.0
    assert mean_iou(np.zeros((2, 2))) is None and accuracy(np.zeros((2, 2))) is None


def test_visible_split_and_json_keys():
    ev = SegEvaluator(["a", "b", "c"])
    vis = np.array([1, 1, 1, 1, 0, 0, 0, 0, 1, 0], dtype=bool)
    ev.update(PR, GT, vis)
    ev.update(PR, GT, vis)  # accumulates over scans
    r = ev.result()
    assert np.array_equal(ev.total, 2 * CONF)
    # visible points: (gt, pred) = (0,0) (0,0) (0,1) (1,1) -> IoU a 2/3, b 1/2, c none
    assert r["visible_miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # invisible: (1,2) (2,2) (2,2) (2,0) -> a 0/1, b 0/1, c 2/4
    assert r["invisible_miou"] == pytest.approx((0 + 0 + 0.5) / 3)
    assert r["per_class_iou"] == pytest.approx({"a": 0.5, "b": 1 / 3, "c": 0.5})
    assert set(r) >= {"miou", "accuracy", "per_class_iou", "visible_miou", "invisible_miou"}
    json.dumps(r)
    no_cams = SegEvaluator(["a", "b", "c"])
    no_cams.update(PR, GT)
    assert no_cams.result()["visible_miou"] is None


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(ValueError, match="entries"):
        confusion_matrix(np.array([0, 1, 2]), np.array([0, 1]), 3)


def test_confusion_files(tmp_path):
    j, p = write_confusion(CONF, ["a", "b", "c"], tmp_path)
    d = json.loads(j.read_text())
    assert d["matrix"] == CONF.tolist() and d["classes"] == ["a", "b", "c"]
    img = np.asarray(Image.open(p).convert("RGB"))
    # the diagonal cell of row 1 (1 of 2 points) is half blue: red channel ~ 127
    h, w = img.shape[:2]
    cell = 22
    x0, y0 = w - 3 * cell, h - 3 * cell
    assert abs(int(img[y0 + cell + 11, x0 + cell + 11, 0]) - 127) <= 1
    assert int(img[y0 + 11, x0 + 2 * cell + 11, 0]) == 255  # row 0 never predicted 2: white

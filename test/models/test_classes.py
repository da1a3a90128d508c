"""Class maps: builtin maps, errors, bag sidecars."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fit3d_ros.models.classes import (
    ClassMap,
    ClassMapError,
    kitti_box_classes,
    load_classes,
    semantickitti_classes,
    sidecar_path,
    write_sidecar,
)


def test_class_map_errors_and_sidecar(tmp_path):
    sk = semantickitti_classes()
    assert sk.to_train(np.array([0, 1, 19])).tolist() == [-1, 0, 18]
    with pytest.raises(ClassMapError, match=r"\[20\]"):
        sk.to_train(np.array([1, 20]))
    with pytest.raises(ClassMapError, match="unique"):
        ClassMap(["a", "b"], [1, 1], [(0, 0, 0)] * 2)
    with pytest.raises(ClassMapError, match="colours"):
        ClassMap(["a", "b"], [1, 2], [(0, 0, 0)])
    bag = tmp_path / "run.mcap"
    assert load_classes(None, bag) is None
    path = write_sidecar(bag, kitti_box_classes())
    assert path == sidecar_path(bag) == tmp_path / "run.mcap.classes.json"
    assert load_classes(None, bag) == kitti_box_classes()
    assert load_classes("semantickitti") == sk
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"classes": [{"name": "a"}]}))
    with pytest.raises(ClassMapError, match="class-map description"):
        load_classes(bad)
    with pytest.raises(ClassMapError, match="neither a builtin"):
        load_classes("nope")

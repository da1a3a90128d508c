"""U-Net input features from named per-point columns."""
from __future__ import annotations

import numpy as np
import pytest

from fit3d_ros.models.preprocess import input_features
from fit3d_ros.sensors import PointCloud
from fit3d_ros.training.ditr.data import Sample


def test_input_features():
    s = Sample("s", np.array([[0, 0, 0], [2, 4, 6]], np.float32),
               intensity=np.array([0.0, 200.0], np.float32))
    f = input_features(s, ["xyz", "intensity"])
    assert np.allclose(f, [[-1, -2, -3, 0], [1, 2, 3, 200 / 255]])
    with pytest.raises(ValueError, match="no per-point colour"):
        input_features(s, ["rgb"])
    with pytest.raises(ValueError, match="unknown input feature"):
        input_features(s, ["normal"])
    with pytest.raises(ValueError, match="labels has 1 rows"):
        Sample("bad", np.zeros((2, 3)), labels=np.zeros(1))
    with pytest.raises(ValueError, match="non-finite"):
        Sample("nan", np.full((2, 3), np.nan))


def test_input_features_of_a_runtime_cloud_equal_a_training_sample():
    xyz = np.array([[0, 0, 0], [2, 4, 6], [1, 1, 1]], np.float32)
    inten = np.array([0.0, 0.5, 1.0], np.float32)
    cloud = PointCloud(0, "lidar", xyz, intensity=inten)
    names = ["xyz", "intensity"]
    assert np.array_equal(input_features(cloud, names),
                          input_features(Sample("s", xyz, intensity=inten), names))
    with pytest.raises(ValueError, match="the point cloud has no per-point colour"):
        input_features(cloud, ["rgb"])

"""Device mapping (torch) against the numpy reference: KITTI, nuScenes 6 cameras, distortion."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.models.mapping import (gather_point_features, point_features_from_maps,
                                      project_points)
from fit3d_ros.models.mapping_device import project_device
from fit3d_ros.sensors import CameraModel

from test_mapping import kitti_frame, nuscenes_sample

P = 14


def _vit_cams(cams, div=2):
    return [c.scaled(c.width // P * P // div, c.height // P * P // div) for c in cams]


@pytest.mark.parametrize("view", ["center", "first", "random"])
def test_nuscenes_features_equal_numpy_reference(shared_data, view):
    pts, cams, Ts = nuscenes_sample(shared_data)
    vc = _vit_cams(cams)
    g = torch.Generator().manual_seed(1)
    maps = [torch.randn(8, c.height // P, c.width // P, generator=g) for c in vc]
    ref, ref_vis = gather_point_features(project_points(pts, vc, Ts, P), torch.stack(maps),
                                         view=view, seed=5)
    got, vis = point_features_from_maps(torch.from_numpy(pts), maps, vc, Ts, P, view=view, seed=5)
    assert vis.sum() > 1000 and torch.equal(vis, ref_vis)
    assert torch.equal(got, ref)


def test_kitti_features_equal_numpy_reference_float32_and_float64(shared_data):
    pts, _, _, _, cam, T = kitti_frame(shared_data)
    vc = _vit_cams([cam], 1)
    maps = [torch.randn(16, vc[0].height // P, vc[0].width // P)]
    ref, ref_vis = gather_point_features(project_points(pts, vc, [T], P), maps[0][None])
    for dtype in (torch.float32, torch.float64):
        got, vis = point_features_from_maps(torch.from_numpy(pts).to(dtype), maps, vc, [T], P)
        assert torch.equal(vis, ref_vis) and torch.equal(got, ref)


@pytest.mark.parametrize("model,D", [("plumb_bob", [-0.3, 0.1, 1e-3, -2e-3, 0.01]),
                                     ("rational_polynomial", [0.1, 0.01, 0, 0, 0, 0.05, 0, 0]),
                                     ("equidistant", [0.05, -0.01, 0.002, 0.0])])
def test_distortion_models_match_camera_model(model, D):
    cam = CameraModel(K=[[300, 0, 160], [0, 300, 120], [0, 0, 1]], width=320, height=240,
                      D=np.array(D), distortion_model=model)
    pts = np.random.default_rng(0).uniform([-3, -3, -1], [3, 3, 6], (5000, 3))
    ref = project_points(pts, [cam], [np.eye(4)], P)
    vis, uv, patch = project_device(torch.from_numpy(pts), [cam], [np.eye(4)], P)
    assert np.array_equal(vis.numpy(), ref.visible) and ref.visible.sum() > 500
    np.testing.assert_array_equal(patch.numpy(), ref.patch)
    np.testing.assert_array_equal(uv.numpy()[ref.visible], ref.uv[ref.visible])


def test_no_cameras_and_errors():
    pts = torch.zeros(5, 3, dtype=torch.float64)
    f, v = point_features_from_maps(pts, [], [], [], 14, dim=4)
    assert f.shape == (5, 4) and not v.any() and f.device == pts.device
    cam = CameraModel(K=[[100, 0, 50], [0, 100, 50], [0, 0, 1]], width=100, height=100)
    with pytest.raises(ValueError, match="scaled"):
        point_features_from_maps(pts, [torch.zeros(2, 3, 3)], [cam], [np.eye(4)], 14)
    with pytest.raises(ValueError, match="one transform per camera"):
        project_device(pts, [cam], [], 14)
    with pytest.raises(ValueError, match="view must be"):
        point_features_from_maps(pts, [torch.zeros(2, 8, 8)], [cam], [np.eye(4)], 14, view="x")

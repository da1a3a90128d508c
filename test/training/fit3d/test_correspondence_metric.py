"""Correspondence recall on a synthetic pair with a known pose (closed-form geometry)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.sensors import CameraModel
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d.correspondence import (
    ViewPoints,
    bin_name,
    covisible_points,
    mutual_matches,
    rotation_angle_deg,
    sample_features,
    score_matches,
    select_pairs,
    view_points,
    visible_in,
)
from fit3d_ros.training.fit3d.scenes import SceneView


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: small ops on a shared 2-core machine are far faster that way."""
    with cpu_threads(1):
        yield


W, H, F, Z, STRIDE = 80, 60, 100.0, 2.0, 4


def _view(tx: float, index: int = 0) -> SceneView:
    """A camera at x = tx looking at the fronto-parallel plane z = Z (registered RGB-D)."""
    cam = CameraModel(K=np.array([[F, 0, W / 2], [0, F, H / 2], [0, 0, 1]]), width=W, height=H)
    T = np.eye(4)
    T[0, 3] = tx
    # depth of the plane seen from this camera is Z everywhere
    return SceneView(index, 0, np.zeros((H, W, 3), np.uint8), cam, T,
                     np.full((H, W), Z, np.float32), cam, T)


def _rff(xyz: np.ndarray, dim: int = 64, seed: int = 0) -> torch.Tensor:
    """Random Fourier features of world position: identical for identical 3D points."""
    w = np.random.default_rng(seed).normal(0, 40.0, (3, dim))
    p = xyz.astype(np.float64) @ w
    return torch.from_numpy(np.concatenate([np.sin(p), np.cos(p)], 1))


def _covisible_points(va: SceneView, vb: SceneView) -> tuple[ViewPoints, ViewPoints]:
    return covisible_points(va, vb, STRIDE, 0.05)


def test_identical_features_give_recall_one():
    # an 8-pixel shift: b's grid points are exactly a's points seen from b
    va, vb = _view(0.0), _view(8 * Z / F)
    pa, pb = _covisible_points(va, vb)
    assert 0 < len(pa.xyz) < len(view_points(va, STRIDE).xyz)  # some points leave the view
    correct, proposed = score_matches(pa, pb, vb, _rff(pa.xyz), _rff(pb.xyz), 0.9, 10.0)
    assert proposed == len(pa.xyz) and correct == proposed  # recall exactly 1.0


def test_shuffled_features_fall():
    va, vb = _view(0.0), _view(8 * Z / F)
    pa, pb = _covisible_points(va, vb)
    fb = _rff(pb.xyz)[torch.randperm(len(pb.xyz), generator=torch.Generator().manual_seed(0))]
    correct, proposed = score_matches(pa, pb, vb, _rff(pa.xyz), fb, 0.9, 10.0)
    assert proposed > 0 and correct / proposed < 0.2


def test_visibility_excludes_points_outside_and_occluded():
    va, vb = _view(0.0), _view(0.4)  # 20 px shift
    pa = view_points(va, STRIDE)
    ok, uv = visible_in(vb, pa.xyz, 0.05)
    assert np.array_equal(ok, (uv[:, 0] >= 0) & (uv[:, 0] < W))
    vb.depth[:] = Z / 2  # something in front of the plane everywhere: all occluded
    assert not visible_in(vb, pa.xyz, 0.05)[0].any()


def test_mutual_matches_ratio_test():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.01], [0.02, 1.0], [-0.021, 1.0]])
    ia, ib = mutual_matches(a, b, 0.9)
    # row 0 is unambiguous; row 1 has two nearly equal candidates and fails the ratio test
    assert ia.tolist() == [0] and ib.tolist() == [0]
    ia, ib = mutual_matches(a, b, 1.0)
    assert ia.tolist() == [0, 1] and ib.tolist() == [0, 1]


def test_sample_features_bilinear_is_exact_on_a_ramp():
    # a 4x3 patch map covering a 40x30 image: value = x-coordinate of the patch centre
    centres = (torch.arange(4, dtype=torch.float32) + 0.5) * 10
    fmap = centres.view(1, 1, 4).expand(1, 3, 4).clone()
    uv = np.array([[10.0, 5.0], [17.5, 20.0], [25.0, 15.0]])
    got = sample_features(fmap, uv, 40, 30)[:, 0]
    assert torch.allclose(got, torch.tensor([10.0, 17.5, 25.0]), atol=1e-5)


def test_pose_angle_and_bins():
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    Tb = np.eye(4)
    Tb[:3, :3] = [[c, 0, s], [0, 1, 0], [-s, 0, c]]
    assert rotation_angle_deg(np.eye(4), Tb) == pytest.approx(30.0)
    assert bin_name(10.0) == "0-15deg" and bin_name(30.0) == "30-60deg"
    assert bin_name(180.0) == "60-180deg"


def test_select_pairs_needs_overlap():
    views = [_view(0.0, 0), _view(0.1, 1), _view(5.0, 2)]
    pairs = select_pairs(views, 10, STRIDE, 0.3, 0.05)
    assert [(i, j) for i, j, *_ in pairs] == [(0, 1)]

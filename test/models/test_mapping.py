"""DITR 2D→3D mapping on real data: KITTI, nuScenes (6 cameras), 7-Scenes (occlusion)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fit3d_ros.models import gather_point_features, project_points
from fit3d_ros.sensors import CameraModel, Transform

P = 14
NUSC_RING = ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT",
             "CAM_FRONT_LEFT"]


def kitti_frame(root: Path, idx: str = "000000"):
    """Velodyne points, KITTI matrices and our camera model / transform for image_2."""
    calib = {}
    for line in (root / "kitti/object/calib" / f"{idx}.txt").read_text().splitlines():
        if ":" in line:
            key, vals = line.split(":", 1)
            calib[key] = np.array(vals.split(), dtype=np.float64)
    P2 = calib["P2"].reshape(3, 4)
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    Tr = np.vstack([calib["Tr_velo_to_cam"].reshape(3, 4), [0, 0, 0, 1]])
    pts = np.fromfile(root / "kitti/object/velodyne" / f"{idx}.bin", dtype=np.float32)
    w, h = Image.open(root / "kitti/object/image_2" / f"{idx}.png").size
    K = P2[:, :3]
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(K, P2[:, 3])  # P2 = K [I | t]
    T = offset @ R0 @ Tr
    return pts.reshape(-1, 4)[:, :3], P2, R0, Tr, CameraModel(K=K, width=w, height=h), T


def nuscenes_sample(root: Path):
    meta = json.loads((root / "nuscenes/sample.json").read_text())
    pts = np.fromfile(root / "nuscenes" / meta["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
    cams = [CameraModel(K=np.array(meta["cameras"][c]["cam2img"]), width=1600, height=900)
            for c in NUSC_RING]
    Ts = [np.array(meta["cameras"][c]["lidar2cam"]) for c in NUSC_RING]
    return pts[:, :3], cams, Ts


def test_kitti_projection_matches_calibration_formula(shared_data):
    pts, P2, R0, Tr, cam, T = kitti_frame(shared_data)
    proj = project_points(pts, [cam], [T], P)
    vis = proj.visible[:, 0]
    # KITTI devkit: x_img = P2 · R0_rect · Tr_velo_to_cam · x_velo
    x = (P2 @ R0 @ Tr @ np.c_[pts, np.ones(len(pts))].T).T
    uv_ref = x[:, :2] / x[:, 2:3]
    ref_vis = (x[:, 2] > 0) & (uv_ref[:, 0] >= 0) & (uv_ref[:, 0] < cam.width) & \
        (uv_ref[:, 1] >= 0) & (uv_ref[:, 1] < cam.height)
    # two differently ordered float chains: a point within rounding of a border may flip
    m = 1e-3
    edge = ((np.abs(x[:, 2]) < 1e-6) | (np.abs(uv_ref[:, 0]) < m)
            | (np.abs(uv_ref[:, 0] - cam.width) < m) | (np.abs(uv_ref[:, 1]) < m)
            | (np.abs(uv_ref[:, 1] - cam.height) < m))
    assert edge.sum() < 10
    assert np.array_equal(vis[~edge], ref_vis[~edge])
    np.testing.assert_allclose(proj.uv[vis, 0], uv_ref[vis], atol=1e-3)
    u, v = proj.uv[vis, 0, 0], proj.uv[vis, 0, 1]
    assert u.min() >= 0 and u.max() < cam.width and v.min() >= 0 and v.max() < cam.height
    assert np.array_equal(proj.patch[vis, 0], np.floor(proj.uv[vis, 0] / P).astype(np.int64))
    assert (proj.patch[~vis] == -1).all()
    # one front camera of a 360° HDL-64 scan sees a small share (DITR: 18.9 % labelled pts)
    share = vis.mean()
    assert 0.08 < share < 0.3, share


def test_kitti_pixel_ray_point_round_trip(shared_data):
    pts, _, _, _, cam, T = kitti_frame(shared_data)
    proj = project_points(pts, [cam], [Transform(T)], P)
    vis = proj.visible[:, 0]
    uv, z = proj.uv[vis, 0].astype(np.float64), proj.depth[vis, 0].astype(np.float64)
    ray = np.linalg.solve(cam.K, np.c_[uv, np.ones(len(uv))].T).T  # pixel -> ray (z = 1)
    back = Transform(T).inverse().apply(ray * z[:, None])
    np.testing.assert_allclose(back, pts[vis], atol=2e-3)


def test_gather_takes_the_projected_patch(shared_data):
    pts, _, _, _, cam, T = kitti_frame(shared_data)
    small = cam.scaled(cam.width // P * P, cam.height // P * P)  # what a ViT input would be
    proj = project_points(pts, [small], [T], P)
    h, w = small.height // P, small.width // P
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    maps = torch.stack([torch.full((h, w), 7.0), rows.float(), cols.float()])[None]
    feats, seen = gather_point_features(proj, maps)
    vis = proj.visible[:, 0]
    assert np.array_equal(seen.numpy(), vis)
    expected = np.c_[np.full(vis.sum(), 7.0), np.floor(proj.uv[vis, 0, 1] / P),
                     np.floor(proj.uv[vis, 0, 0] / P)]
    np.testing.assert_array_equal(feats[torch.from_numpy(vis)].numpy(), expected)
    assert (feats[~torch.from_numpy(vis)] == 0).all()
    with pytest.raises(ValueError, match="scaled"):
        gather_point_features(project_points(pts, [cam], [T], P), maps)


def test_nuscenes_six_cameras_overlap_only_neighbours(shared_data):
    pts, cams, Ts = nuscenes_sample(shared_data)
    proj = project_points(pts, cams, Ts, P)
    vis = proj.visible
    per_cam = vis.mean(axis=0)
    assert (per_cam > 0.02).all(), per_cam
    assert 0.3 < vis.any(axis=1).mean() < 0.95  # surround rig, minus ground near the car
    assert vis.sum(axis=1).max() <= 2
    pair = vis[:, :, None] & vis[:, None, :]
    counts = pair.sum(axis=0)
    for a in range(6):
        for b in range(a + 1, 6):
            adjacent = (b - a) % 6 in (1, 5)
            if not adjacent:
                assert counts[a, b] == 0, (NUSC_RING[a], NUSC_RING[b], counts[a, b])
    assert sum(counts[a, (a + 1) % 6] > 0 for a in range(6)) >= 4


def test_view_choices_on_overlaps(shared_data):
    pts, cams, Ts = nuscenes_sample(shared_data)
    proj = project_points(pts, cams, Ts, P)
    both = proj.visible.sum(axis=1) == 2
    assert both.sum() > 100
    idx = np.nonzero(both)[0]
    for view in ("random", "center", "first"):
        chosen = proj.choose_view(view, seed=3)
        assert (chosen[~proj.visible.any(axis=1)] == -1).all()
        assert proj.visible[np.arange(len(chosen))[chosen >= 0], chosen[chosen >= 0]].all()
    first = proj.choose_view("first")
    assert np.array_equal(first[idx], proj.visible[idx].argmax(axis=1))
    centre = proj.choose_view("center")
    for i in idx[:200]:  # slow reference: normalised distance to each image centre
        ks = np.nonzero(proj.visible[i])[0]
        d = [np.sum(((proj.uv[i, k] - [800, 450]) / [800, 450]) ** 2) for k in ks]
        assert centre[i] == ks[int(np.argmin(d))]
    r1, r2 = proj.choose_view("random", seed=1), proj.choose_view("random", seed=1)
    assert np.array_equal(r1, r2)
    picked_first = (r1[idx] == first[idx]).mean()
    assert 0.4 < picked_first < 0.6, picked_first
    assert not np.array_equal(r1[idx], proj.choose_view("random", seed=2)[idx])


def _seven_scenes(root: Path, frame: int):
    base = root / "rgbd/7scenes" / f"frame-{frame:06d}"
    depth = np.asarray(Image.open(f"{base}.depth.png"), dtype=np.float32) / 1000.0
    depth[depth >= 65.0] = 0.0  # 65535 = invalid in 7-Scenes
    pose = np.loadtxt(f"{base}.pose.txt")
    K = np.loadtxt(root / "rgbd/7scenes/camera-intrinsics.txt")
    return depth, pose, CameraModel(K=K, width=640, height=480)


def test_depth_occlusion_on_rgbd_frame(shared_data):
    depth, _, cam = _seven_scenes(shared_data, 0)
    pts, _ = cam.backproject(depth, stride=4)
    I = np.eye(4)
    on_surface = project_points(pts, [cam], [I], P, depths=[depth])
    assert on_surface.visible.mean() > 0.99
    behind = pts * ((pts[:, 2] + 0.5) / pts[:, 2])[:, None]  # 0.5 m further along each ray
    assert project_points(behind, [cam], [I], P).visible.mean() > 0.99  # frustum only
    occl = project_points(behind, [cam], [I], P, depths=[depth])
    assert occl.visible.mean() < 0.01
    # a depth image of another resolution is looked up proportionally
    half = depth[::2, ::2]
    assert project_points(behind, [cam], [I], P, depths=[half]).visible.mean() < 0.05


def test_depth_consistency_across_frames(shared_data):
    d0, pose0, cam = _seven_scenes(shared_data, 0)
    d1, pose1, _ = _seven_scenes(shared_data, 25)
    pts, _ = cam.backproject(d0, stride=4)
    world = Transform(pose0).apply(pts)
    T = np.linalg.inv(pose1)  # world -> camera of frame 25
    plain = project_points(world, [cam], [T], P)
    checked = project_points(world, [cam], [T], P, depths=[d1])
    assert plain.visible.mean() > 0.5
    kept = checked.visible.sum() / plain.visible.sum()
    assert 0.9 < kept < 1.0, kept  # most points agree with the other view's depth, not all


def test_mapping_speed_and_errors():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-50, 50, (100_000, 3))
    cams = [CameraModel(K=[[800, 0, 800], [0, 800, 450], [0, 0, 1]], width=1600, height=900)] * 6
    Ts = []
    for k in range(6):
        a = 2 * np.pi * k / 6
        R = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
        Ts.append(np.vstack([np.c_[R, np.zeros(3)], [0, 0, 0, 1]]))
    t = time.perf_counter()
    proj = project_points(pts, cams, Ts, P)
    feats, _ = gather_point_features(proj, torch.zeros(6, 8, 65, 115))
    assert time.perf_counter() - t < 1.0  # tens of ms normally; loose on a shared CPU
    assert feats.shape == (100_000, 8)
    with pytest.raises(ValueError, match="one transform per camera"):
        project_points(pts, cams, Ts[:2], P)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        project_points(pts[:, :2], cams, Ts, P)
    with pytest.raises(ValueError, match="view"):
        proj.choose_view("nearest")
    with pytest.raises(ValueError, match="K=6"):
        gather_point_features(proj, torch.zeros(5, 8, 65, 115))

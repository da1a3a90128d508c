"""VoxelMap integration against a per-point Python reference, forgetting, files."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.mapping import MapConfig, VoxelMap, load_map, save_map
from fit3d_ros.mapping.io import export_ply, read_ply
from fit3d_ros.mapping.voxel_hash import VoxelHash, pack_coords
from fit3d_ros.sensors import Transform

NAMES = ["a", "b", "c"]


def _reference(frames, voxel):
    """dict voxel -> [hits, hist, sum xyz, min, max, conf sum, last stamp], point by point."""
    ref: dict = {}
    for xyz, lab, conf, stamp in frames:
        for p, c, w in zip(xyz.astype(np.float64), lab, conf):
            if not 0 <= c < len(NAMES):
                continue
            key = tuple(int(v) for v in np.floor(p.astype(np.float32) / np.float32(voxel)))
            e = ref.setdefault(key, [0, np.zeros(len(NAMES)), np.zeros(3), p.copy(), p.copy(),
                                     0.0, 0])
            e[0] += 1
            e[1][c] += 1
            e[2] += p
            e[3], e[4] = np.minimum(e[3], p), np.maximum(e[4], p)
            e[5] += w
            e[6] = stamp
    return ref


def test_integrate_matches_pointwise_reference():
    rng = np.random.default_rng(0)
    frames = []
    for i in range(3):
        xyz = rng.uniform(-1, 1, (3000, 3)).astype(np.float32)
        lab = rng.integers(-1, 4, 3000).astype(np.uint32 if i == 1 else np.int64)
        if i == 1:  # unsigned labels (issue 14's UINT32 field): out-of-range ones skipped
            lab = np.where(lab > 3, 7, lab).astype(np.uint32)
        frames.append((xyz, lab, rng.uniform(0.2, 1, 3000).astype(np.float32), 10 + i))
    vmap = VoxelMap(NAMES, MapConfig(voxel_size=0.25))
    skipped = sum(vmap.integrate(x, lb, s, confidence=c).skipped_label for x, lb, c, s in frames)
    ref = _reference([(x, lb.astype(np.int64), c, s) for x, lb, c, s in frames], 0.25)
    assert len(vmap) == len(ref)
    assert skipped == sum(int(((lb.astype(np.int64) < 0) | (lb.astype(np.int64) > 2)).sum())
                          for _, lb, _, _ in frames)
    keys = torch.tensor([list(k) for k in ref], dtype=torch.int64)
    slots = vmap.index.find(pack_coords(keys)).numpy()
    assert (slots >= 0).all()
    s = vmap.s
    for j, e in zip(slots, ref.values()):
        assert s.hits[j] == e[0]
        np.testing.assert_array_equal(s.hist[j].numpy(), e[1])
        np.testing.assert_allclose(s.mean[j].numpy(), e[2] / e[0], atol=1e-5)
        np.testing.assert_allclose(s.lo[j].numpy(), e[3], atol=1e-6)
        np.testing.assert_allclose(s.hi[j].numpy(), e[4], atol=1e-6)
        assert s.conf_sum[j].item() == pytest.approx(e[5], rel=1e-4)
        assert s.last_seen[j] == e[6]
    labels = vmap.labels().numpy()
    assert all(labels[j] == int(np.argmax(e[1])) for j, e in zip(slots, ref.values()))


def test_static_point_seen_from_many_poses_lands_in_one_voxel():
    """A fixed world point observed in the sensor frame of 20 different poses."""
    rng = np.random.default_rng(1)
    world = np.array([2.33, -1.27, 0.61])
    vmap = VoxelMap(NAMES, MapConfig(voxel_size=0.1))
    for i in range(20):
        yaw, t = rng.uniform(-np.pi, np.pi), rng.uniform(-5, 5, 3)
        m = np.eye(4)
        m[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
        m[:3, 3] = t
        pose = Transform(m, parent_frame="map", child_frame="lidar")  # map <- lidar
        local = pose.inverse().apply(world[None])
        vmap.integrate(local, [2], i, T_map_points=pose.matrix)
    assert len(vmap) == 1
    assert vmap.s.hits[0] == 20
    np.testing.assert_allclose(vmap.s.mean[0].numpy(), world, atol=1e-5)
    assert vmap.labels().tolist() == [2]


def test_max_voxels_bounds_memory_and_forgets_least_recent():
    vmap = VoxelMap(NAMES, MapConfig(voxel_size=1.0, max_voxels=100, evict_fraction=0.5))
    sizes = []
    for i in range(30):  # each frame: 20 fresh voxels along x
        xyz = np.stack([np.arange(20) + 20 * i + 0.5, np.zeros(20), np.zeros(20)], 1)
        st = vmap.integrate(xyz, np.zeros(20, np.int64), i)
        assert st.points == 20 and st.dropped_overflow == 0
        sizes.append(len(vmap))
    assert max(sizes) <= 100
    assert vmap.s.last_seen[:len(vmap)].min() >= 30 - 100 // 20  # only recent frames kept
    newest = vmap.s.mean[:len(vmap), 0]
    assert newest.max() == pytest.approx(20 * 29 + 19.5)
    # a frame with more new voxels than the whole map may hold keeps max_voxels of them
    st = vmap.integrate(np.stack([np.arange(300) + 1e4, np.zeros(300), np.zeros(300)], 1),
                        np.zeros(300, np.int64), 99)
    assert len(vmap) == 100 and st.dropped_overflow == 200 and st.points == 100


def test_age_and_distance_forgetting():
    vmap = VoxelMap(NAMES, MapConfig(voxel_size=1.0, max_age_s=2.0, sweep_period_s=0.0))
    vmap.integrate([[0.5, 0.5, 0.5]], [0], 0)
    vmap.integrate([[5.5, 0.5, 0.5]], [1], int(1.5e9))
    assert len(vmap) == 2
    vmap.integrate([[9.5, 0.5, 0.5]], [1], int(3e9))  # voxel 0 is now 3 s old
    assert sorted(vmap.s.mean[:len(vmap), 0].tolist()) == [5.5, 9.5]
    far = VoxelMap(NAMES, MapConfig(voxel_size=1.0, max_distance_m=10.0, sweep_period_s=0.0))
    m = np.eye(4)
    far.integrate([[0.5, 0.5, 0.5]], [0], 0, T_map_points=m)
    m[0, 3] = 20.0  # the sensor moved 20 m along x: the first voxel is 19.5 m away
    far.integrate([[0.5, 0.5, 0.5]], [0], 1, T_map_points=m)
    assert far.s.mean[:len(far), 0].tolist() == [20.5]


def test_hash_finds_every_key_after_growth_and_rebuild():
    rng = np.random.default_rng(2)
    keys = torch.unique(torch.as_tensor(rng.integers(0, 1 << 40, 50_000)))
    table = VoxelHash()
    slots, new = table.find_or_add(keys[:20_000])
    assert new.all() and torch.equal(slots, torch.arange(20_000))
    slots, new = table.find_or_add(keys)
    assert torch.equal(slots, torch.arange(keys.numel())) and new.sum() == keys.numel() - 20_000
    assert (table.find(keys + (1 << 41)) == -1).all()
    table.rebuild(keys[::2])
    assert torch.equal(table.find(keys[::2]), torch.arange(keys[::2].numel()))
    assert (table.find(keys[1::2]) == -1).all()


def test_save_load_and_ply(tmp_path):
    rng = np.random.default_rng(3)
    vmap = VoxelMap(NAMES, MapConfig(voxel_size=0.5))
    xyz = rng.uniform(-2, 2, (500, 3))
    vmap.integrate(xyz, rng.integers(0, 3, 500), 5, features=rng.normal(size=(500, 4)))
    back = load_map(save_map(vmap, tmp_path / "map.npz"))
    assert back.class_names == NAMES and len(back) == len(vmap) and back.feature_dim == 4
    for name in ("hits", "hist", "mean", "lo", "hi", "feat"):
        np.testing.assert_array_equal(getattr(back.s, name)[:len(back)].numpy(),
                                      getattr(vmap.s, name)[:len(vmap)].numpy())
    back.integrate(xyz, np.zeros(500, np.int64), 6)  # the reloaded map keeps integrating
    assert back.s.hits[:len(back)].sum() == 1000
    path, writer = export_ply(vmap, tmp_path / "map.ply", prefer_open3d=False)
    assert writer == "fit3d_ros"
    cols = read_ply(path)
    cloud = vmap.cloud()
    np.testing.assert_array_equal(np.stack([cols["x"], cols["y"], cols["z"]], 1), cloud.xyz)
    np.testing.assert_array_equal(cols["label"], cloud.label)
    np.testing.assert_array_equal(np.stack([cols["red"], cols["green"], cols["blue"]], 1),
                                  cloud.rgb)


def test_unseen_points_zero_features_stay_out_of_the_feature_mean():
    """Points no camera saw carry all-zero features (segmentation_node, vit source): the
    voxel's feature mean is that of its seen points only, in any frame order."""
    rng = np.random.default_rng(3)
    xyz = rng.uniform(0, 1, (400, 3)).astype(np.float32)
    feats = rng.normal(size=(400, 5)).astype(np.float32)
    seen = rng.random(400) < 0.6
    feats[~seen] = 0
    vmap = VoxelMap(NAMES, MapConfig(voxel_size=0.5))
    for part in np.array_split(np.arange(400), 3):  # three frames
        vmap.integrate(xyz[part], np.zeros(len(part), np.int64), 1, features=feats[part])
    keys = np.floor(xyz / 0.5).astype(np.int64)
    for key in np.unique(keys, axis=0):
        mine = (keys == key).all(axis=1)
        j = int(vmap.index.find(pack_coords(torch.as_tensor(key[None])))[0])
        assert int(vmap.s.feat_hits[j]) == int((mine & seen).sum())
        want = feats[mine & seen].mean(0) if (mine & seen).any() else np.zeros(5)
        np.testing.assert_allclose(vmap.s.feat[j].numpy(), want, atol=1e-5)

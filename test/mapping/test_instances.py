"""Instances in the demo room (known objects, moving sensor), clustering, feature queries."""
from __future__ import annotations

from collections import deque

import numpy as np
import pytest
import torch

from fit3d_ros.demo import scene as S
from fit3d_ros.mapping import (MapConfig, VoxelMap, connected_components, locate,
                               locate_feature)
from fit3d_ros.mapping.bags import bag_classes, ground_truth, map_from_labels


@pytest.fixture(scope="module")
def room_map(room_bag):
    vmap, report = map_from_labels([room_bag], MapConfig(voxel_size=0.1),
                                   bag_classes([room_bag], None))
    assert report.integrated == report.clouds == 6 and report.missing_transform == 0
    return vmap


# the table stands free; the cabinet touches floor and wall, so its boundary voxels also
# hold floor/wall points: its box may reach up to one voxel beyond the true faces
@pytest.mark.parametrize("name,tol", [("table", 0.03), ("cabinet", 0.1)])
def test_boxes_found_at_their_place_and_size(room_map, name, tol):
    lo, hi = S.BOXES[S.CLASSES.index(name)]
    (inst,) = locate(room_map, name, min_points=5)
    np.testing.assert_allclose(inst.box_max, hi, atol=tol)
    np.testing.assert_allclose(inst.box_min, lo, atol=tol)
    assert inst.obb_yaw == pytest.approx(0.0, abs=1e-6)  # axis-aligned boxes stay so
    np.testing.assert_allclose(inst.obb_size, np.subtract(hi, lo), atol=2 * tol)
    assert inst.confidence == 1.0 and inst.points >= inst.voxels > 10


def test_ball_centroid_and_points(room_map, room_bag):
    (centre, r) = S.BALL
    (inst,) = locate(room_map, "ball", min_points=5)
    assert np.all(np.asarray(inst.box_min) >= np.asarray(centre) - r - 0.1)
    assert np.all(np.asarray(inst.box_max) <= np.asarray(centre) + r + 0.1)
    assert np.linalg.norm(np.asarray(inst.centroid) - centre) < r  # surface seen from outside
    # reference: the bag's points in the map frame, voxelised with numpy; points and
    # centroid over the voxels whose majority label is the ball
    xyz, lab, _ = ground_truth(room_bag, "map", bag_classes([room_bag], None))
    keys, inv = np.unique(np.floor(xyz / np.float32(0.1)).astype(np.int64), axis=0,
                          return_inverse=True)
    inv = inv.reshape(-1)
    hist = np.zeros((len(keys), len(S.CLASSES)), np.int64)
    np.add.at(hist, (inv, lab), 1)
    mine = hist.argmax(1)[inv] == S.CLASSES.index("ball")
    assert inst.points == int(mine.sum())
    np.testing.assert_allclose(inst.centroid, xyz[mine].astype(np.float64).mean(0), atol=1e-4)


def test_unknown_class_is_a_clear_error(room_map):
    with pytest.raises(KeyError, match=r"unknown class 'car'.*'floor', 'wall', 'ceiling', "
                                        r"'table', 'cabinet', 'ball'"):
        locate(room_map, "car")


def test_largest_first_or_nearest_first():
    vmap = VoxelMap(["thing"], MapConfig(voxel_size=0.1))
    small = np.full((5, 3), 0.05) + [4, 0, 0]
    big = np.full((50, 3), 0.05)
    vmap.integrate(np.concatenate([small, big]), np.zeros(55, np.int64), 1)
    assert [i.points for i in locate(vmap, "thing")] == [50, 5]
    assert [i.points for i in locate(vmap, "thing", near=(3.9, 0, 0))] == [5, 50]
    assert [i.points for i in locate(vmap, "thing", min_points=6)] == [50]


def _bfs_components(coords: np.ndarray, gap: int) -> list[set[int]]:
    """Slow reference: breadth-first search over all pairs within `gap` cells."""
    left, comps = set(range(len(coords))), []
    while left:
        seed = left.pop()
        comp, queue = {seed}, deque([seed])
        while queue:
            i = queue.popleft()
            near = [j for j in list(left) if np.abs(coords[j] - coords[i]).max() <= gap]
            for j in near:
                left.discard(j)
                comp.add(j)
                queue.append(j)
        comps.append(comp)
    return comps


@pytest.mark.parametrize("gap", [1, 2])
def test_connected_components_match_bfs(gap):
    rng = np.random.default_rng(gap)
    coords = np.unique(rng.integers(0, 12, (300, 3)), axis=0)
    got = connected_components(torch.as_tensor(coords), gap).numpy()
    ref = _bfs_components(coords, gap)
    assert len(set(got.tolist())) == len(ref)
    for comp in ref:
        assert len({got[i] for i in comp}) == 1


def test_locate_feature_finds_the_featured_object():
    rng = np.random.default_rng(4)
    vmap = VoxelMap(["thing", "stuff"], MapConfig(voxel_size=0.1))
    a = rng.uniform([0, 0, 0], [0.5, 0.5, 0.5], (400, 3))      # object A
    b = rng.uniform([3, 3, 0], [3.4, 3.4, 0.4], (400, 3))      # object B
    fa, fb = np.eye(8)[0], np.eye(8)[1]
    feats = np.concatenate([fa + 0.05 * rng.normal(size=(400, 8)),
                            fb + 0.05 * rng.normal(size=(400, 8))])
    vmap.integrate(np.concatenate([a, b]), np.zeros(800, np.int64), 1, features=feats)
    top, found = locate_feature(vmap, fb, top_k=5, min_similarity=0.8)
    assert len(found) == 1 and found[0].similarity > 0.9
    np.testing.assert_allclose(found[0].centroid, b.mean(0), atol=1e-4)
    assert found[0].points == 400
    assert all(np.all(np.asarray(v["xyz"][:2]) >= 2.9) for v in top)
    with pytest.raises(ValueError, match="8"):
        locate_feature(vmap, np.ones(3))

"""Voxelisation: exact inverse map, representative points, reductions, order invariance."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.models import voxelize


def _points(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 2.0, (n, 3)).astype(np.float32) - 5.0


def test_inverse_map_is_exact():
    pts = _points()
    vs = 0.37
    vox = voxelize(pts, vs)
    cell = np.floor(pts.astype(np.float64) / vs).astype(np.int64)  # independent grid
    grid = cell - cell.min(axis=0)
    assert np.array_equal(vox.coords[vox.inverse].numpy(), grid)
    # one voxel per distinct cell (slow reference: a Python set of tuples)
    assert vox.num_voxels == len({tuple(c) for c in grid})
    assert np.array_equal(vox.counts.numpy(), np.bincount(vox.inverse.numpy()))
    assert np.array_equal(vox.inverse[vox.index].numpy(), np.arange(vox.num_voxels))
    centres = vox.centers().numpy()
    assert np.all(np.abs(centres[vox.inverse.numpy()] - pts) <= vs / 2 + 1e-6)
    assert vox.spatial_shape(16) == [int(-(-(g + 1) // 16) * 16) for g in grid.max(axis=0)]


def test_center_pick_is_nearest_to_voxel_centre():
    pts = _points(800)
    vox = voxelize(pts, 0.8, pick="center")
    centres = vox.centers().numpy()
    inv = vox.inverse.numpy()
    d = np.linalg.norm(pts - centres[inv], axis=1)
    for v in range(vox.num_voxels):  # slow reference per voxel
        members = np.nonzero(inv == v)[0]
        assert d[vox.index[v]] == d[members].min()
    first = voxelize(pts, 0.8, pick="first")
    for v in range(first.num_voxels):
        assert first.index[v] == np.nonzero(inv == v)[0].min()
    rnd = voxelize(pts, 0.8, pick="random", seed=1)
    assert np.array_equal(rnd.inverse[rnd.index].numpy(), np.arange(rnd.num_voxels))
    assert not torch.equal(rnd.index, first.index)


def test_reductions_match_numpy():
    pts = _points(2000)
    vox = voxelize(pts, 0.5)
    vals = torch.randn(len(pts), 4, generator=torch.Generator().manual_seed(0))
    inv = vox.inverse.numpy()
    m = vox.num_voxels
    s = np.zeros((m, 4))
    np.add.at(s, inv, vals.numpy())
    mx = np.full((m, 4), -np.inf)
    np.maximum.at(mx, inv, vals.numpy())
    np.testing.assert_allclose(vox.reduce(vals, "sum").numpy(), s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vox.reduce(vals, "mean").numpy(),
                               s / np.bincount(inv)[:, None], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(vox.reduce(vals, "max").numpy(), mx)
    mask = torch.from_numpy(pts[:, 0] > -5.0)
    mm = np.full((m, 4), -np.inf)
    np.maximum.at(mm, inv[mask.numpy()], vals.numpy()[mask.numpy()])
    np.testing.assert_array_equal(vox.reduce(vals, "max", mask=mask).numpy(),
                                  np.where(np.isinf(mm), 0.0, mm))
    assert torch.equal(vox.reduce(vals, "pick"), vals[vox.index])
    assert torch.equal(vox.to_points(vox.reduce(vals, "pick")), vals[vox.index][vox.inverse])


def test_order_invariance_and_batches():
    pts = _points()
    perm = np.random.default_rng(1).permutation(len(pts))
    a, b = voxelize(pts, 0.3), voxelize(pts[perm], 0.3)
    assert torch.equal(a.coords, b.coords)
    assert torch.equal(a.inverse[perm], b.inverse)
    both = voxelize(np.concatenate([pts, pts]), 0.3,
                    batch=np.r_[np.zeros(len(pts)), np.ones(len(pts))])
    assert both.num_voxels == 2 * a.num_voxels and both.batch_size == 2
    idx = both.spconv_indices()
    assert idx.dtype == torch.int32 and idx.shape == (both.num_voxels, 4)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="non-empty"):
        voxelize(np.zeros((0, 3)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.array([[0, 0, np.nan]]), 0.1)
    with pytest.raises(ValueError, match="voxel_size"):
        voxelize(np.zeros((3, 3)), 0.0)
    with pytest.raises(ValueError, match="pick"):
        voxelize(np.zeros((3, 3)), 0.1, pick="middle")
    with pytest.raises(ValueError, match="too large"):
        voxelize(np.array([[0, 0, 0], [1e6, 1e6, 1e6]]), 1e-6)


def test_keys_equal_python_reference_for_any_input_dtype():
    """Voxel coordinates equal a per-point floor-and-dedup reference (float32 / float64)."""
    rng = np.random.default_rng(3)
    pts64 = rng.uniform(-7, 7, (4000, 3))
    for pts in (pts64, pts64.astype(np.float32)):
        batch = rng.integers(0, 3, len(pts))
        vox = voxelize(torch.from_numpy(pts), 0.3, batch=torch.from_numpy(batch))
        cells = [tuple(int(np.floor(float(c) / 0.3)) for c in p) for p in pts.astype(np.float64)]
        low = np.min(np.array(cells), axis=0)
        want = sorted({(int(b), *(np.array(c) - low).tolist()) for b, c in zip(batch, cells)})
        got = torch.cat([vox.batch[:, None], vox.coords], 1).tolist()
        assert [tuple(r) for r in got] == want  # same keys, same (batch, x, y, z) order
        assert vox.coords.device == vox.inverse.device == vox.origin.device


def test_voxelize_stays_on_the_points_device():
    pts = torch.rand(100, 3)
    vox = voxelize(pts, 0.1, batch=torch.zeros(100, dtype=torch.long), pick="random")
    assert all(t.device == pts.device for t in (vox.coords, vox.batch, vox.inverse, vox.index))
    assert torch.equal(vox.inverse.unique(), torch.arange(vox.num_voxels))

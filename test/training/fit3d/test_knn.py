"""Grid k-NN (scale init) against brute force; voxel downsampling against torch.unique rows."""
from __future__ import annotations

import pytest
import torch

from fit3d_ros.training.fit3d.gaussians import voxel_downsample
from fit3d_ros.training.fit3d.knn import knn_mean_sq_dist, knn_sq_dists


def _brute(x: torch.Tensor, k: int) -> torch.Tensor:
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    d.fill_diagonal_(float("inf"))
    return d.sort(1).values[:, :k]


def _clouds():
    g = torch.Generator().manual_seed(0)
    yield torch.rand(1500, 3, generator=g)                                    # volume
    yield torch.cat([torch.rand(1200, 3, generator=g) * torch.tensor([10, 10, 0.01]),
                     torch.rand(15, 3, generator=g) * 100])                    # surface + outliers
    yield torch.randn(1000, 3, generator=g, dtype=torch.float64)               # float64, tails
    yield torch.rand(400, 3, generator=g).round(decimals=1)                    # duplicates
    yield torch.cat([torch.zeros(600, 3), torch.rand(50, 3, generator=g)])     # one crowded cell


@pytest.mark.parametrize("k", [1, 3, 8])
def test_knn_equals_brute_force(k):
    for x in _clouds():
        assert torch.equal(knn_sq_dists(x, k, chunk=333), _brute(x, k))
    x = next(_clouds())
    assert torch.equal(knn_mean_sq_dist(x), _brute(x, 3).mean(1))


def test_knn_errors():
    with pytest.raises(ValueError, match="more than 3"):
        knn_sq_dists(torch.rand(3, 3))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        knn_sq_dists(torch.rand(10, 2))


def test_voxel_downsample_equals_unique_rows_reference():
    g = torch.Generator().manual_seed(1)
    xyz = (torch.rand(5000, 3, generator=g) * 4 - 2).double()
    rgb = torch.rand(5000, 3, generator=g).double()
    p, c = voxel_downsample(xyz, rgb, 0.25)
    keys = torch.floor(xyz / 0.25).long()
    _, inv, cnt = torch.unique(keys, dim=0, return_inverse=True, return_counts=True)
    want = torch.zeros(len(cnt), 6, dtype=torch.float64).index_add_(0, inv, torch.cat([xyz, rgb], 1))
    want = (want / cnt[:, None]).float()
    assert torch.equal(p, want[:, :3]) and torch.equal(c, want[:, 3:])

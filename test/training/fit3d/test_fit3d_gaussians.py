"""Gaussian init from points, density control bookkeeping, SSIM against a slow reference."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fit3d_ros.training.fit3d.config import LiftConfig
from fit3d_ros.training.fit3d.densify import (
    DensifyStats,
    build_optimizer,
    densify_and_prune,
    edit_rows,
)
from fit3d_ros.training.fit3d.gaussians import (
    PARAMS,
    SH_C0,
    GaussianModel,
    knn_mean_sq_dist,
    voxel_downsample,
)
from fit3d_ros.training.fit3d.scene_file import make_decoder
from fit3d_ros.training.fit3d.ssim import gaussian_window, psnr, ssim


def test_voxel_downsample_means_per_voxel():
    xyz = torch.tensor([[0.01, 0.01, 0.01], [0.03, 0.05, 0.07], [0.55, 0.0, 0.0]])
    rgb = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    p, c = voxel_downsample(xyz, rgb, 0.1)
    order = p[:, 0].argsort()
    assert torch.allclose(p[order], torch.tensor([[0.02, 0.03, 0.04], [0.55, 0, 0]]))
    assert torch.allclose(c[order], torch.tensor([[0.5, 0.5, 0], [0, 0, 1.0]]))


def test_knn_against_brute_force():
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(0))
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    d2.fill_diagonal_(float("inf"))
    want = d2.sort(1).values[:, :3].mean(1)
    assert torch.allclose(knn_mean_sq_dist(x, chunk=64), want, atol=1e-5)


def test_init_from_points():
    xyz = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], np.float32)
    rgb = np.full((5, 3), 0.75, np.float32)
    g = GaussianModel.from_points(xyz, rgb, feature_dim=4, sh_degree=2)
    assert len(g) == 5 and g.sh_rest.shape == (5, 8, 3) and g.feature_dim == 4
    assert torch.allclose(g.opacities, torch.full((5,), 0.1))
    assert torch.allclose(g.sh_dc[:, 0] * SH_C0 + 0.5, torch.full((5, 3), 0.75))
    # point 0's three nearest neighbours are at distance 1
    assert g.scales[0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        GaussianModel.from_points(xyz * np.nan, rgb, 4)


def test_densify_clone_split_prune_keeps_adam_aligned():
    g = GaussianModel.from_points(np.random.default_rng(0).random((50, 3)),
                                  np.full((50, 3), 0.5), 4, sh_degree=0)
    with torch.no_grad():
        g.log_scales[:10] = math.log(2.0)    # big (> percent_dense·extent = 1): split
        g.opacity_logits[40:] = -10.0        # transparent: pruned
    cfg = LiftConfig.tiny(max_gaussians=1000)
    opt = build_optimizer(g, make_decoder(4, 3), cfg, extent=100.0)
    for name in PARAMS:  # fake Adam moments = row index, to follow them through the edit
        p = getattr(g, name)
        opt.state[p] = {"step": torch.tensor(1.0),
                        "exp_avg": torch.arange(50.0).view(-1, *[1] * (p.ndim - 1)).expand_as(p).clone(),
                        "exp_avg_sq": torch.ones_like(p)}
    stats = DensifyStats.zeros(50)
    stats.grad_accum[:20] = 1.0  # rows 0-9 split, 10-19 clone
    stats.denom[:] = 1.0
    densify_and_prune(g, opt, stats, cfg, 100.0, 100, torch.Generator().manual_seed(0))
    # 50 - 10 split + 10 clones + 20 children - 10 transparent = 60
    assert len(g) == 60
    for name in PARAMS:
        p = getattr(g, name)
        assert opt.state[p]["exp_avg"].shape == p.shape
        assert opt.param_groups[PARAMS.index(name)]["params"][0] is p
    first = opt.state[g.means]["exp_avg"][:, 0]
    assert first[:30].tolist() == list(range(10, 40))  # survivors keep their moments
    assert torch.count_nonzero(first[30:]) == 0         # new rows start at zero
    assert torch.allclose(g.scales[-20:], torch.full((20, 3), 2.0 / 1.6))
    edit_rows(g, opt, torch.ones(60, dtype=torch.bool))
    assert len(g) == 60


def _ssim_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Per-pixel windowed SSIM with explicit zero padding (slow, obviously correct)."""
    g1 = gaussian_window().double().numpy()
    w = np.outer(g1, g1)
    pad = 5
    vals = []
    for c in range(a.shape[2]):
        A = np.pad(a[:, :, c], pad)
        B = np.pad(b[:, :, c], pad)
        for y in range(a.shape[0]):
            for x in range(a.shape[1]):
                pa, pb = A[y:y + 11, x:x + 11], B[y:y + 11, x:x + 11]
                ma, mb = (w * pa).sum(), (w * pb).sum()
                va = (w * pa * pa).sum() - ma ** 2
                vb = (w * pb * pb).sum() - mb ** 2
                cov = (w * pa * pb).sum() - ma * mb
                c1, c2 = 0.01 ** 2, 0.03 ** 2
                vals.append((2 * ma * mb + c1) * (2 * cov + c2)
                            / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_ssim_matches_reference_and_identity():
    rng = np.random.default_rng(0)
    a = rng.random((12, 14, 3))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    got = float(ssim(torch.from_numpy(a), torch.from_numpy(b)))
    assert got == pytest.approx(_ssim_reference(a, b), abs=1e-9)
    assert float(ssim(torch.from_numpy(a), torch.from_numpy(a))) == pytest.approx(1.0)
    assert psnr(torch.zeros(2, 2, 3), torch.full((2, 2, 3), 0.1)) == pytest.approx(20.0)

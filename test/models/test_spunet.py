"""Sparse U-Net on a real SemanticKITTI scan: outputs, order invariance, DITR injection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.models import (SpUNet, SpUNetConfig, cosine_distillation_loss, voxelize)
from fit3d_ros.models.sparse_blocks import max_pool_to, spconv


@pytest.fixture(scope="module")
def scan(shared_data):
    """20k points of the shared SemanticKITTI scan, centred, with labels 0-18 (-1: none)."""
    pts = np.load(shared_data / "semantickitti/points/000700.npy")
    labels = np.load(shared_data / "semantickitti/labels/000700.npy").reshape(-1)
    keep = np.random.default_rng(0).choice(len(pts), 20_000, replace=False)
    xyz = torch.from_numpy(pts[keep] - pts[keep].mean(axis=0))
    return xyz, torch.from_numpy(labels[keep].astype(np.int64)) - 1  # classes 0-18, -1 ignored


def _net(**kw) -> SpUNet:
    torch.manual_seed(0)
    return SpUNet(SpUNetConfig.tiny(in_channels=3, **kw))


def test_pointcept_defaults():
    cfg = SpUNetConfig()
    assert cfg.channels == (32, 64, 128, 256, 256, 128, 96, 96)
    assert cfg.layers == (2, 3, 4, 6, 2, 2, 2, 2)
    assert cfg.base_channels == 32 and cfg.num_stages == 4
    with pytest.raises(ValueError, match="even length"):
        SpUNetConfig(channels=(8, 8, 8), layers=(1, 1, 1))


def test_default_config_forward_on_real_scan(scan):
    xyz, _ = scan
    torch.manual_seed(0)
    net = SpUNet(SpUNetConfig(in_channels=3, voxel_size=0.1)).eval()
    with torch.no_grad():
        out = net(xyz[:8000], xyz[:8000])
    assert out.logits.shape == (8000, 19) and torch.isfinite(out.logits).all()
    assert out.features.shape == (8000, 96)


def test_per_point_outputs_and_order_invariance(scan):
    xyz, _ = scan
    net = _net(distill_dim=12).eval()
    with torch.no_grad():
        out = net(xyz, xyz)
        perm = torch.from_numpy(np.random.default_rng(2).permutation(len(xyz)))
        out_p = net(xyz[perm], xyz[perm])
    assert out.logits.shape == (len(xyz), 19) and out.distill.shape == (len(xyz), 12)
    # points of one voxel share one output; all N points get one
    inv = out.voxels.inverse
    assert torch.equal(out.logits, out.logits[out.voxels.index][inv])
    torch.testing.assert_close(out_p.logits, out.logits[perm], atol=1e-4, rtol=1e-4)


def test_spconv_forward_backward_on_cpu(scan):
    xyz, labels = scan
    net = _net().train()
    out = net(xyz, xyz)
    loss = torch.nn.functional.cross_entropy(out.logits, labels, ignore_index=-1)
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def _feat_2d(xyz: torch.Tensor, dim: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    visible = xyz[:, 0] > 0  # a "front camera": about half the points
    feat = torch.randn(len(xyz), dim, generator=g) * visible[:, None]
    return feat, visible


def test_injection_changes_outputs_and_trains_every_level(scan):
    xyz, labels = scan
    net = _net(inject_2d=True, feat_2d_dim=16).train()
    f2d, vis = _feat_2d(xyz)
    out = net(xyz, xyz, feat_2d=f2d, visible_2d=vis)
    torch.nn.functional.cross_entropy(out.logits, labels, ignore_index=-1).backward()
    assert len(net.inject) == 4
    for level, proj in enumerate(net.inject):  # every f_l^2D gets a gradient
        g = proj[0].weight.grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, level
    net.eval()
    with torch.no_grad():
        a = net(xyz, xyz, feat_2d=f2d, visible_2d=vis).logits
        b = net(xyz, xyz, feat_2d=_feat_2d(xyz, seed=1)[0], visible_2d=vis).logits
    changed = (a - b).abs().sum(dim=1) > 1e-6
    assert changed[vis].float().mean() > 0.9  # seen points change
    with pytest.raises(ValueError, match="feat_2d"):
        net(xyz, xyz)
    with pytest.raises(ValueError, match="inject_2d=False"):
        _net()(xyz, xyz, feat_2d=f2d)


def test_max_pool_follows_encoder_downsampling(scan):
    xyz, _ = scan
    vox = voxelize(xyz, 0.2)
    x = spconv.SparseConvTensor(torch.ones(vox.num_voxels, 1), vox.spconv_indices(),
                                vox.spatial_shape(16), 1)
    coarse = spconv.SparseConv3d(1, 1, 2, stride=2, bias=False)(x)
    vals = torch.randn(vox.num_voxels, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.rand(vox.num_voxels, generator=torch.Generator().manual_seed(1)) > 0.5
    pooled, pmask = max_pool_to(x.indices, vals, mask, coarse.indices)
    # slow reference: a dict from parent cell to the max over masked children
    ref: dict[tuple, np.ndarray] = {}
    for idx, v, m in zip(x.indices.tolist(), vals.numpy(), mask.tolist()):
        key = (idx[0], idx[1] // 2, idx[2] // 2, idx[3] // 2)
        ref.setdefault(key, np.full(3, -np.inf))
        if m:
            ref[key] = np.maximum(ref[key], v)
    assert len(ref) == len(coarse.indices)  # the conv produced exactly the parents
    for row, idx in enumerate(coarse.indices.tolist()):
        r = ref[tuple(idx)]
        assert bool(pmask[row]) == bool(np.isfinite(r).all())
        np.testing.assert_array_equal(pooled[row].numpy(), np.where(np.isfinite(r), r, 0.0))


def test_per_dataset_batchnorm(scan):
    xyz, _ = scan
    net = _net(num_datasets=2).train()
    bn = net.stem[1]
    before = [n.running_mean.clone() for n in bn.norms]
    net(xyz, xyz, dataset=1)
    assert torch.equal(bn.norms[0].running_mean, before[0])
    assert not torch.equal(bn.norms[1].running_mean, before[1])
    with pytest.raises(ValueError, match="dataset index"):
        net(xyz, xyz, dataset=2)


def test_distillation_head_and_loss(scan):
    xyz, _ = scan
    net = _net(num_classes=None, distill_dim=16, inject_2d=False)
    out = net(xyz, xyz)
    assert out.logits is None and out.distill.shape == (len(xyz), 16)
    target, vis = _feat_2d(xyz)
    loss = cosine_distillation_loss(out.distill, target, vis)
    loss.backward()
    assert net.distill_head.weight.grad.abs().sum() > 0
    net.replace_heads(num_classes=5)  # D-DITR fine-tuning: drop regression, add seg head
    out = net(xyz, xyz)
    assert out.distill is None and out.logits.shape == (len(xyz), 5)
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    p = torch.tensor([[2.0, 0.0], [0.0, -1.0], [0.0, 5.0]])
    v = torch.tensor([True, True, True])
    assert torch.isclose(cosine_distillation_loss(p, t, v), torch.tensor((0 + 2 + 1) / 3))
    assert cosine_distillation_loss(p, t, torch.tensor([True, False, False])) == 0
    assert cosine_distillation_loss(p, t, torch.zeros(3, dtype=torch.bool)) == 0


def test_bad_inputs(scan):
    xyz, _ = scan
    with pytest.raises(ValueError, match="features must be"):
        _net()(xyz, xyz[:, :2])

"""Semantic blending on a synthetic mask and the valid-weighted reduction to tokens."""
from __future__ import annotations

import torch

from fit3d_ros.training.snd.blend import semantic_blend, to_tokens


def test_semantic_blending_on_a_synthetic_mask():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(3, 4, 6, generator=g)
    labels = torch.zeros(4, 6, dtype=torch.long)
    labels[:, 3:] = 1
    labels[0, 0] = 2                           # a one-pixel segment
    valid = torch.ones(4, 6, dtype=torch.bool)
    valid[3, 5] = False                        # invalid pixel: excluded from the mean
    out = semantic_blend(feat, valid, labels, a=0.5)
    for y in range(4):
        for x in range(6):
            if not valid[y, x]:
                assert torch.all(out[:, y, x] == 0)
                continue
            same = [(i, j) for i in range(4) for j in range(6)
                    if labels[i, j] == labels[y, x] and valid[i, j]]
            mean = torch.stack([feat[:, i, j] for i, j in same]).mean(0)
            assert torch.allclose(out[:, y, x], 0.5 * feat[:, y, x] + 0.5 * mean, atol=1e-6)
    assert torch.allclose(out[:, 0, 0], feat[:, 0, 0])  # its own mean
    assert torch.allclose(semantic_blend(feat, valid, labels, a=1.0), feat * valid)


def test_tokens_ignore_invalid_pixels():
    feat = torch.ones(2, 8, 8) * torch.tensor([1.0, -2.0])[:, None, None]
    valid = torch.zeros(8, 8, dtype=torch.bool)
    valid[:, :4] = True
    feat = feat * valid + 100.0 * ~valid       # garbage where invalid
    tok, mask = to_tokens(feat * valid, valid, (2, 2))
    assert mask.tolist() == [[True, False], [True, False]]
    assert torch.allclose(tok[:, mask], torch.tensor([[1.0, 1.0], [-2.0, -2.0]]), atol=1e-5)

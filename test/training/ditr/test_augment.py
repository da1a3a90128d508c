"""Point-cloud augmentation for DITR training."""
from __future__ import annotations

import numpy as np
import pytest

from fit3d_ros.training.ditr.augment import AugmentConfig, augment_points, random_transform


def test_augmentation_is_a_seeded_similarity_about_z():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(500, 3)).astype(np.float32)
    cfg = AugmentConfig(jitter_sigma=0.0)
    a = augment_points(xyz, np.random.default_rng(7), cfg)
    b = augment_points(xyz, np.random.default_rng(7), cfg)
    assert np.array_equal(a, b)
    M = random_transform(np.random.default_rng(7), cfg)
    assert np.allclose(a, xyz @ M.T, atol=1e-5)
    s = np.linalg.norm(M[:, 0])
    assert 0.9 <= s <= 1.1 and np.allclose(M.T @ M, s * s * np.eye(3))
    assert np.allclose(a[:, 2], s * xyz[:, 2], atol=1e-5)  # z only scaled
    jit = augment_points(xyz, np.random.default_rng(7), AugmentConfig(jitter_clip=0.02))
    assert np.abs(jit - a).max() <= 0.02 + 1e-6
    assert np.array_equal(augment_points(xyz, rng, AugmentConfig.off()), xyz)
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.2, 0.8))

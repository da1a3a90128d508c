"""FeatureExtractor on a real 7-Scenes image with the tiny random ViT; PCA preview."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fit3d_ros.pipeline.features import FeatureConfig, FeatureExtractor, PCAPreview
from fit3d_ros.sensors import CameraModel


@pytest.fixture(scope="module")
def real_rgb(shared_data) -> np.ndarray:
    path = shared_data / "rgbd" / "7scenes" / "frame-000000.color.jpg"
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("mode, width_factor", [("original", 1), ("concat", 2)])
def test_extractor_modes_shapes_and_scaled_camera(real_rgb, mode, width_factor):
    cfg = FeatureConfig(backbone="vit_tiny_test", mode=mode, random_init=True, token_budget=300)
    ex = FeatureExtractor(cfg)
    cam = CameraModel(np.array([[585.0, 0, 320], [0, 585.0, 240], [0, 0, 1]]), 640, 480)
    out = ex(real_rgb, cam)
    h, w = out.input_size
    assert h % 14 == 0 and w % 14 == 0
    assert abs((h // 14) * (w // 14) - 300) < 40           # about the token budget
    assert abs(w / h - 640 / 480) < 0.1                    # aspect kept
    assert out.patch.shape == (48 * width_factor, h // 14, w // 14)
    assert out.camera.width == w and out.camera.height == h
    # the image centre maps to the same relative position in the ViT input
    uv, _ = out.camera.project(np.array([[0.0, 0.0, 1.0]]))
    assert np.allclose(uv[0], [(320 + 0.5) * w / 640 - 0.5, (240 + 0.5) * h / 480 - 0.5])
    assert ex.calls == 1


def test_concat_halves_equal_original_for_same_seed(real_rgb):
    """With the same seeded random init, both FiT3D halves equal the original model."""
    a = FeatureExtractor(FeatureConfig(backbone="vit_tiny_test", random_init=True,
                                       token_budget=100))(real_rgb)
    b = FeatureExtractor(FeatureConfig(backbone="vit_tiny_test", mode="concat",
                                       random_init=True, token_budget=100))(real_rgb)
    torch.testing.assert_close(b.patch[:48], a.patch)
    torch.testing.assert_close(b.patch[48:], a.patch)


def test_extractor_rejects_bad_images():
    ex = FeatureExtractor(FeatureConfig(backbone="vit_tiny_test", random_init=True))
    with pytest.raises(ValueError, match="uint8 RGB"):
        ex(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="does not match camera"):
        ex(np.zeros((10, 10, 3), np.uint8),
           CameraModel(np.diag([5.0, 5.0, 1.0]), 20, 10))
    with pytest.raises(ValueError, match="mode"):
        FeatureConfig(mode="sum")


def test_pca_preview_is_stable_and_orders_principal_axis():
    g = torch.Generator().manual_seed(0)
    direction = torch.randn(16, generator=g)
    t = torch.linspace(-1, 1, 64)
    patch = (t[:, None] * direction[None] + 0.01 * torch.randn(64, 16, generator=g))
    patch = patch.T.reshape(16, 8, 8)
    pca = PCAPreview()
    first = pca(patch)
    assert first.dtype == np.uint8 and first.shape == (8, 8, 3)
    # the first component follows t monotonically (up to sign), so the red channel is sorted
    red = first[..., 0].reshape(-1).astype(int)
    assert abs(np.corrcoef(red, t.numpy())[0, 1]) > 0.99
    basis = pca.basis.clone()
    pca(patch * 3.0)                      # a different frame keeps the same basis
    assert torch.equal(pca.basis, basis)

"""Segmenter equals the training-side predictor (`training.ditr.evaluate.predict`) on real data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fit3d_ros.logs.datasets import read_kitti_object
from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import Checkpoint, Preprocessing, save_checkpoint
from fit3d_ros.models.classes import semantickitti_classes
from fit3d_ros.models.mapping import gather_point_features, project_points
from fit3d_ros.pipeline.features import FeatureExtractor
from fit3d_ros.pipeline.segmenter import Segmenter, ViewInput
from fit3d_ros.sensors import CameraModel, PointCloud
from fit3d_ros.training.ditr.data import CameraView, Sample
from fit3d_ros.training.ditr.evaluate import predict
from fit3d_ros.training.ditr.point_features import PointFeatureSource


def _checkpoint(path, inject: bool, features=("xyz", "intensity")) -> Checkpoint:
    torch.manual_seed(0)
    cfg = SpUNetConfig.tiny(in_channels=len(features) + 2 * ("intensity" in features),
                            num_classes=19, inject_2d=inject, feat_2d_dim=48)
    model = SpUNet(cfg)
    spec = BackboneSpec(name="vit_tiny_test", random_init=True, token_budget=150,
                        view="center") if inject else None
    ck = Checkpoint("segmentation", cfg, model.state_dict(),
                    Preprocessing(cfg.voxel_size, tuple(features), spec),
                    semantickitti_classes())
    save_checkpoint(path, ck)
    return ck


@pytest.fixture(scope="module")
def kitti(shared_data):
    frame = next(iter(read_kitti_object(shared_data / "kitti" / "object", frames=["000000"])))
    frame.cloud = frame.cloud.select(slice(0, None, 4))  # ~30k points keep the test quick
    return frame


def test_image_free_segmenter_matches_predict(kitti, tmp_path):
    _checkpoint(tmp_path / "seg.ckpt", inject=False)
    seg = Segmenter(tmp_path / "seg.ckpt")
    cloud = kitti.cloud
    xyz = cloud.xyz.copy()
    xyz[:5] = np.nan                                  # dropped, and reported in `kept`
    noisy = PointCloud(cloud.stamp, cloud.frame_id, xyz, intensity=cloud.intensity)
    out = seg(noisy)
    assert out.kept.sum() == len(xyz) - 5 and not out.kept[:5].any()
    sample = Sample("s", xyz[5:], intensity=cloud.intensity[5:])
    expected = predict(seg.model, sample, ("xyz", "intensity"), None, torch.device("cpu"))
    np.testing.assert_array_equal(out.labels, expected)
    assert out.confidence.shape == out.labels.shape
    assert np.all((out.confidence > 0) & (out.confidence <= 1)) and out.visible is None


def test_ditr_segmenter_matches_predict_and_uses_cameras(kitti, tmp_path):
    ck = _checkpoint(tmp_path / "ditr.ckpt", inject=True)
    seg = Segmenter(tmp_path / "ditr.ckpt")
    T = kitti.T_cam_velo.matrix if hasattr(kitti.T_cam_velo, "matrix") else kitti.T_cam_velo
    view = ViewInput(kitti.image.rgb, kitti.camera, T)
    out = seg(kitti.cloud, [view])
    sample = Sample("s", kitti.cloud.xyz, intensity=kitti.cloud.intensity,
                    views=[CameraView(kitti.camera, kitti.image.rgb, T)])
    source = PointFeatureSource(ck.preprocessing.backbone)
    expected = predict(seg.model, sample, ("xyz", "intensity"), source, torch.device("cpu"))
    np.testing.assert_array_equal(out.labels, expected)
    # KITTI's front camera sees a minority of the 360° scan
    assert 0.05 < out.visible.mean() < 0.5
    # without the camera the injected features are zero and predictions change
    blind = seg(kitti.cloud, [])
    assert not blind.visible.any() and (blind.labels != out.labels).any()


def test_segmenter_rejects_bad_checkpoints(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        Segmenter(bad)
    with pytest.raises(FileNotFoundError):
        Segmenter(tmp_path / "missing.ckpt")


def test_vit_point_features_are_each_points_patch_feature(kitti, tmp_path):
    """`point_features` vit: f^2D of each point's patch (the numpy projection + gather
    reference on the extractor's map), zeros where the camera does not see the point."""
    _checkpoint(tmp_path / "ditr.ckpt", inject=True)
    seg = Segmenter(tmp_path / "ditr.ckpt")
    assert seg.set_point_features("auto") == "vit"
    T = kitti.T_cam_velo.matrix if hasattr(kitti.T_cam_velo, "matrix") else kitti.T_cam_velo
    out = seg(kitti.cloud, [ViewInput(kitti.image.rgb, kitti.camera, T)], with_features=True)
    fr = FeatureExtractor(seg.feature_config())(kitti.image.rgb, kitti.camera)
    patch = fr.input_size[0] // fr.patch.shape[1]
    ref, seen = gather_point_features(project_points(kitti.cloud.xyz, [fr.camera], [T], patch),
                                      fr.patch[None], view="center")
    np.testing.assert_array_equal(out.visible, seen.numpy())
    np.testing.assert_allclose(out.point_features, ref.numpy(), atol=1e-5)
    assert out.point_features.shape[1] == 48 and 0.05 < out.visible.mean() < 0.5
    assert not out.point_features[~out.visible].any() and out.point_features[out.visible].any()
    seg.set_point_features("unet")  # the decoder's features (another width and space)
    unet = seg(kitti.cloud, [ViewInput(kitti.image.rgb, kitti.camera, T)], with_features=True)
    assert unet.point_features.shape == (len(kitti.cloud), seg.model.out_channels)


def test_point_features_source_needs_a_backbone_for_vit(tmp_path):
    _checkpoint(tmp_path / "free.ckpt", inject=False)
    seg = Segmenter(tmp_path / "free.ckpt")
    assert seg.set_point_features("auto") == "unet"
    with pytest.raises(ValueError, match="no 2D backbone"):
        seg.set_point_features("vit")
    with pytest.raises(ValueError, match="one of"):
        seg.set_point_features("dino")


def test_vit_point_features_of_a_non_injecting_checkpoint(tmp_path):
    """A checkpoint that names a backbone without injecting it (D-DITR) runs that ViT for
    `vit` point features only: the reference projection + gather, zeros behind the camera."""
    torch.manual_seed(0)
    cfg = SpUNetConfig.tiny(in_channels=3, num_classes=19, inject_2d=False)
    spec = BackboneSpec(name="vit_tiny_test", random_init=True, token_budget=150, view="center")
    save_checkpoint(tmp_path / "dd.ckpt", Checkpoint(
        "segmentation", cfg, SpUNet(cfg).state_dict(), Preprocessing(cfg.voxel_size, ("xyz",),
                                                                      spec),
        semantickitti_classes()))
    seg = Segmenter(tmp_path / "dd.ckpt")
    assert seg.extractor is None and seg.set_point_features("auto") == "unet"
    assert seg.set_point_features("vit") == "vit" and seg.extractor is not None
    rng = np.random.default_rng(0)
    cam = CameraModel([[80.0, 0, 63.5], [0, 80.0, 47.5], [0, 0, 1]], 128, 96)
    xyz = rng.uniform([-3, -2, -4], [3, 2, 6], (3000, 3)).astype(np.float32)  # some behind
    rgb = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    out = seg(PointCloud(0, "cam", xyz), [ViewInput(rgb, cam, np.eye(4))], with_features=True)
    fr = FeatureExtractor(seg.feature_config())(rgb, cam)
    patch = fr.input_size[0] // fr.patch.shape[1]
    ref, seen = gather_point_features(project_points(xyz, [fr.camera], [np.eye(4)], patch),
                                      fr.patch[None], view="center")
    np.testing.assert_array_equal(out.visible, seen.numpy())
    np.testing.assert_allclose(out.point_features, ref.numpy(), atol=1e-5)
    assert 0.1 < out.visible.mean() < 0.9 and not out.point_features[~out.visible].any()

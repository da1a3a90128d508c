"""Segmenter precision: the bfloat16 ViT path against float32 on a real KITTI frame (CPU),
and the `dtype` option through replay."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from nodes.fixtures import tiny_checkpoint

from fit3d_ros.cli.main import main as cli_main
from fit3d_ros.logs.bag import BagReader
from fit3d_ros.logs.convert import kitti_to_bag
from fit3d_ros.msgs import features_from_msg, pointcloud2_to_cloud
from fit3d_ros.pipeline.replay import ReplayConfig, replay_bag
from fit3d_ros.pipeline.segmenter import Segmenter, ViewInput

from .test_segmenter import _checkpoint, kitti  # noqa: F401  (fixture)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def test_bf16_vit_features_and_labels_match_fp32(kitti, tmp_path):  # noqa: F811
    _checkpoint(tmp_path / "ditr.ckpt", inject=True)
    fp32 = Segmenter(tmp_path / "ditr.ckpt")
    bf16 = Segmenter(tmp_path / "ditr.ckpt", dtype="bfloat16")
    assert next(bf16.extractor.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.extractor.model.parameters()).dtype == torch.float32
    assert bf16.feature_config().dtype == "bfloat16"
    view = ViewInput(kitti.image.rgb, kitti.camera, kitti.T_cam_velo.matrix)
    a, b = fp32.extractor(view.rgb, view.camera), bf16.extractor(view.rgb, view.camera)
    assert a.patch.dtype == b.patch.dtype == torch.float32 and a.patch.shape == b.patch.shape
    assert not torch.equal(a.patch, b.patch)  # the bf16 path really ran
    cos = _cosine(a.patch.flatten(1).T, b.patch.flatten(1).T)  # per patch
    assert cos.min() >= 0.99, float(cos.min())
    ra = fp32(kitti.cloud, [view], with_features=True)
    rb = bf16(kitti.cloud, [view], with_features=True)
    np.testing.assert_array_equal(ra.visible, rb.visible)
    seen = torch.from_numpy(ra.visible)
    pc = _cosine(torch.from_numpy(ra.point_features), torch.from_numpy(rb.point_features))
    assert pc[seen].mean() >= 0.99 and pc.min() >= 0.9, (float(pc[seen].mean()), float(pc.min()))
    agree = (ra.labels == rb.labels).mean()
    assert agree >= 0.99, agree
    # CPU: the U-Net stays float32 (spconv's CPU kernels have no bfloat16)
    assert rb.point_features.dtype == np.float32
    assert isinstance(bf16.unet_autocast(), type(fp32.unet_autocast()))


def test_precision_option_is_validated(tmp_path):
    with pytest.raises(ValueError, match="dtype must be one of"):
        Segmenter(tmp_path / "missing.ckpt", dtype="float8")


def test_replay_dtype_option_runs_the_bf16_path(shared_data, tmp_path, capsys):
    """`fit3d-ros replay --dtype bfloat16` reaches the Segmenter: same labels (>= 99 %),
    different (bf16) features than the float32 replay of the same bag."""
    bag = tmp_path / "kitti.mcap"
    kitti_to_bag(shared_data / "kitti" / "object", bag, frames=["000000"])
    ckpt = tiny_checkpoint(tmp_path / "ditr.ckpt", inject=True)
    replay_bag(bag, tmp_path / "fp32", ReplayConfig(checkpoint=str(ckpt)))
    assert cli_main(["replay", str(bag), "--checkpoint", str(ckpt), "--dtype", "bfloat16",
                     "--out", str(tmp_path / "bf16"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["frames_out"] == 1
    out = {}
    for name in ("fp32", "bf16"):
        with BagReader(tmp_path / name / "outputs.mcap") as r:
            labels = pointcloud2_to_cloud(
                next(r.messages(["/segmentation_node/segmentation"])).msg).label
            feats = features_from_msg(next(r.messages(["/feature_node/features"])).msg,
                                      next(r.messages(["/feature_node/features/info"])).msg.data)
        out[name] = labels, feats
    assert (out["fp32"][0] == out["bf16"][0]).mean() >= 0.99
    assert not np.array_equal(out["fp32"][1], out["bf16"][1])

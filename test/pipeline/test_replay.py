"""Replay over converted shared bags: outputs.mcap, metrics.json, report.html."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from fit3d_ros.logs.bag import BagReader, BagWriter
from fit3d_ros.logs.convert import kitti_to_bag, semantickitti_to_bag
from fit3d_ros.logs.datasets import read_kitti_object
from fit3d_ros.logs.lidar_datasets import read_semantickitti
from fit3d_ros.msgs import (features_from_msg, numpy_to_image,
                            pointcloud2_to_cloud, rosbags_types)
from fit3d_ros.pipeline.features import FeatureConfig, FeatureExtractor
from fit3d_ros.pipeline.replay import ReplayConfig, replay_bag
from fit3d_ros.pipeline.segmenter import Segmenter, ViewInput
from nodes.fixtures import tiny_checkpoint


def test_replay_kitti_ditr_outputs(shared_data, tmp_path):
    bag = tmp_path / "kitti.mcap"
    kitti_to_bag(shared_data / "kitti" / "object", bag, frames=["000000", "000001"])
    ckpt = tiny_checkpoint(tmp_path / "ditr.ckpt", inject=True)
    metrics = replay_bag(bag, tmp_path / "out", ReplayConfig(checkpoint=str(ckpt)))
    assert metrics["frames_in"] == 2 and metrics["frames_out"] == 2 and metrics["drops"] == 0
    for stage in ("read", "decode", "backbone", "segment", "write"):
        assert {"p50", "p90", "p99"} <= set(metrics["latency_ms"][stage]), stage
    assert 0 < metrics["io_share"] < 1
    assert "RANDOM-INIT" in metrics["weights"]
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["frames_out"] == 2
    # the written outputs equal the pipeline objects run directly on the source frames
    frames = list(read_kitti_object(shared_data / "kitti" / "object", frames=["000000", "000001"]))
    seg = Segmenter(ckpt)
    ex = FeatureExtractor(seg.feature_config())
    with BagReader(tmp_path / "out" / "outputs.mcap") as out:
        assert out.topics["/segmentation_node/segmentation"].count == 2
        assert out.topics["/feature_node/features"].count == 2
        assert out.topics["/feature_node/features_pca"].count == 2
        clouds = [m.msg for m in out.messages(["/segmentation_node/segmentation"])]
        feats = [m.msg for m in out.messages(["/feature_node/features"])]
        (info,) = [m.msg.data for m in out.messages(["/feature_node/features/info"])]
        # the inputs a viewer needs are copied as recorded (replay = live topics)
        with BagReader(bag) as src:
            for topic, meta in src.topics.items():
                assert out.topics[topic].count == meta.count, topic
                assert out.topics[topic].msgtype == meta.msgtype, topic
    for frame, cmsg, fmsg in zip(frames, clouds, feats):
        direct = seg(frame.cloud, [ViewInput(frame.image.rgb, frame.camera,
                                             frame.T_cam_velo.matrix)])
        got = pointcloud2_to_cloud(cmsg)
        np.testing.assert_array_equal(got.xyz, frame.cloud.xyz)
        assert np.mean(got.label == direct.labels) > 0.99
        expected = ex(frame.image.rgb).patch.permute(1, 2, 0).numpy()
        assert fmsg.encoding == "32FC1" and json.loads(info)["channels"] == expected.shape[2]
        np.testing.assert_allclose(features_from_msg(fmsg, info), expected, atol=1e-5)
    page = (tmp_path / "out" / "report.html").read_text()
    # self-contained: camera / PCA / blend for both frames, two top-down views, embedded
    srcs = re.findall(r"src='([^']+)'", page)
    assert len(srcs) == 3 * 2 + 2 and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_replay_semantickitti_scores_labels(shared_data, tmp_path):
    bag = tmp_path / "sk.mcap"
    semantickitti_to_bag(shared_data / "semantickitti", bag)
    ckpt = tiny_checkpoint(tmp_path / "free.ckpt", inject=False, features=("xyz",))
    metrics = replay_bag(bag, tmp_path / "out", ReplayConfig(checkpoint=str(ckpt)))
    cloud = next(iter(read_semantickitti(shared_data / "semantickitti")))
    direct = Segmenter(ckpt)(cloud)
    target = cloud.label.astype(np.int64) - 1                 # training ids 1..19, 0 ignored
    keep = target >= 0
    assert metrics["accuracy"] == pytest.approx(np.mean(direct.labels[keep] == target[keep]),
                                                abs=1e-3)
    assert metrics["miou"] is not None and 0 <= metrics["miou"] <= 1
    assert (tmp_path / "out" / "confusion.png").is_file()


def test_replay_counts_bad_messages_and_needs_work(shared_data, tmp_path):
    """A corrupt image is counted and skipped; the other frames are still processed."""
    with pytest.raises(ValueError, match="nothing to do"):
        replay_bag(tmp_path / "x.mcap", tmp_path / "out", ReplayConfig())
    types = rosbags_types()
    rgb = np.zeros((28, 42, 3), np.uint8)
    bag = tmp_path / "bad.mcap"
    with BagWriter(bag) as w:
        for i in range(3):
            msg = numpy_to_image(rgb + i, "rgb8", 10**9 * (i + 1), "cam", types)
            if i == 1:
                msg.step = 7  # size/step mismatch
            w.write("/cam/image_raw", "sensor_msgs/msg/Image", 10**9 * (i + 1), msg)

    feats = FeatureConfig(backbone="vit_tiny_test", random_init=True, token_budget=6)
    metrics = replay_bag(bag, tmp_path / "out", ReplayConfig(features=feats,
                                                            cameras=["/cam/image_raw"]))
    assert metrics["counts"]["images_in"] == 3 and metrics["counts"]["features_out"] == 2
    assert metrics["counts"]["bad_messages"] == 1
    assert "message 1" in metrics["counts"]["errors"][0]


def test_replay_feature_backbone_does_not_replace_the_checkpoints(shared_data, tmp_path):
    """--backbone changes the feature outputs only; segmentation keeps its own backbone."""

    bag = tmp_path / "kitti.mcap"
    kitti_to_bag(shared_data / "kitti" / "object", bag, frames=["000000"])
    ckpt = tiny_checkpoint(tmp_path / "ditr.ckpt", inject=True)
    plain = replay_bag(bag, tmp_path / "a", ReplayConfig(checkpoint=str(ckpt)))
    other = FeatureConfig(backbone="vit_tiny_test", random_init=True, seed=3, token_budget=40)
    mixed = replay_bag(bag, tmp_path / "b", ReplayConfig(checkpoint=str(ckpt), features=other))
    assert plain["frames_out"] == mixed["frames_out"] == 1
    with BagReader(tmp_path / "a" / "outputs.mcap") as a, \
            BagReader(tmp_path / "b" / "outputs.mcap") as b:
        la = pointcloud2_to_cloud(next(a.messages(["/segmentation_node/segmentation"])).msg).label
        lb = pointcloud2_to_cloud(next(b.messages(["/segmentation_node/segmentation"])).msg).label
        fa = features_from_msg(next(a.messages(["/feature_node/features"])).msg,
                               next(a.messages(["/feature_node/features/info"])).msg.data)
        fb = features_from_msg(next(b.messages(["/feature_node/features"])).msg,
                               next(b.messages(["/feature_node/features/info"])).msg.data)
    np.testing.assert_array_equal(la, lb)
    assert fa.shape[0] * fa.shape[1] > 2 * fb.shape[0] * fb.shape[1]  # 150 vs 40 tokens

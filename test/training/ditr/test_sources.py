"""DITR data: dataset folders and bags -> samples (sources, bag loader, hold-out split)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fit3d_ros.cli.main import main as cli
from fit3d_ros.logs.convert import nuscenes_to_bag, rgbd_to_bag, semantickitti_to_bag
from fit3d_ros.logs.datasets import open_rgbd_dir
from fit3d_ros.logs.lidar_datasets import read_kitti_object, read_nuscenes
from fit3d_ros.models.classes import (
    SEMANTICKITTI_LEARNING_MAP,
    kitti_box_classes,
    sidecar_path,
)
from fit3d_ros.training.ditr.box_labels import kitti_frame_box_labels
from fit3d_ros.training.ditr.data import LoadOptions, Sample, split_holdout
from fit3d_ros.training.ditr.sources import detect_kind, load_dataset


def test_detect_kind(shared_data, tmp_path):
    kinds = {"semantickitti": "semantickitti", "kitti/object": "kitti", "nuscenes": "nuscenes",
             "rgbd/7scenes": "7scenes", "rgbd/redwood": "redwood"}
    for sub, kind in kinds.items():
        assert detect_kind(shared_data / sub) == kind
    with pytest.raises(ValueError, match="unknown data layout"):
        detect_kind(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not a bag"):
        detect_kind(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError):
        detect_kind(tmp_path / "missing")


def test_semantickitti_labels_are_training_ids_minus_one(shared_data):
    ds = load_dataset(shared_data / "semantickitti")
    raw = np.load(shared_data / "semantickitti" / "labels" / "000700.npy").ravel()
    s = ds.samples[0]
    assert ds.classes.name == "semantickitti" and ds.labelled and not ds.has_cameras
    assert np.array_equal(s.labels, np.where(raw == 0, -1, raw - 1))
    assert len(s) == 85962 and s.intensity is None


def test_original_semantickitti_layout(shared_data, tmp_path):
    """velodyne/*.bin + labels/*.label (raw ids with instance bits) map to the same ids."""
    pts = np.load(shared_data / "semantickitti" / "points" / "000700.npy")
    train = np.load(shared_data / "semantickitti" / "labels" / "000700.npy").ravel()
    first_raw = {}
    for raw_id, t in sorted(SEMANTICKITTI_LEARNING_MAP.items()):
        first_raw.setdefault(t, raw_id)  # e.g. car: 10, road: 40
    raw = np.array([first_raw[t] for t in range(20)], dtype=np.uint32)[train]
    raw |= np.random.default_rng(0).integers(0, 50, len(raw)).astype(np.uint32) << 16
    (tmp_path / "velodyne").mkdir()
    (tmp_path / "labels").mkdir()
    scan = np.hstack([pts, np.full((len(pts), 1), 0.25, np.float32)]).astype("<f4")
    scan.tofile(tmp_path / "velodyne" / "000700.bin")
    raw.astype("<u4").tofile(tmp_path / "labels" / "000700.label")
    s = load_dataset(tmp_path).samples[0]
    assert np.array_equal(s.labels, np.where(train == 0, -1, train - 1))
    assert np.array_equal(s.xyz, pts) and np.all(s.intensity == 0.25)
    raw[:5].astype("<u4").tofile(tmp_path / "labels" / "000700.label")
    with pytest.raises(ValueError, match="5 labels for"):
        load_dataset(tmp_path)


def test_semantickitti_bag_needs_a_class_map(shared_data, tmp_path):
    out = tmp_path / "sk.mcap"
    semantickitti_to_bag(shared_data / "semantickitti", out)
    with pytest.raises(ValueError, match="pass --classes"):
        load_dataset(out)
    bag = load_dataset(out, LoadOptions(classes="semantickitti"))
    folder = load_dataset(shared_data / "semantickitti")
    assert bag.labelled and not bag.has_cameras
    assert np.array_equal(bag.samples[0].labels, folder.samples[0].labels)
    assert np.array_equal(bag.samples[0].xyz, folder.samples[0].xyz)


def test_kitti_folder_samples(shared_data):
    ds = load_dataset(shared_data / "kitti" / "object")
    frames = list(read_kitti_object(shared_data / "kitti" / "object"))
    assert ds.classes == kitti_box_classes() and len(ds.samples) == 2
    for s, f in zip(ds.samples, frames):
        assert np.array_equal(s.xyz, f.cloud.xyz) and np.array_equal(s.intensity, f.cloud.intensity)
        assert np.array_equal(s.labels, kitti_frame_box_labels(f))
        assert np.array_equal(s.views[0].T_cam_points, f.T_cam_velo.matrix)
    assert load_dataset(shared_data / "kitti" / "object",
                        LoadOptions(box_labels=False)).samples[0].labels is None


def test_kitti_bag_with_box_labels_matches_folder(shared_data, tmp_path, capsys):
    out = tmp_path / "kitti.mcap"
    assert cli(["bag", "from-kitti", str(shared_data / "kitti" / "object"), "--box-labels",
                "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["classes"] == str(tmp_path / "kitti.mcap.classes.json")
    bag = load_dataset(out)
    folder = load_dataset(shared_data / "kitti" / "object")
    assert bag.classes == folder.classes
    for b, f in zip(bag.samples, folder.samples):
        assert np.array_equal(b.xyz, f.xyz) and np.array_equal(b.labels, f.labels)
        assert np.array_equal(b.views[0].rgb, f.views[0].rgb)
        assert np.allclose(b.views[0].T_cam_points, f.views[0].T_cam_points, atol=1e-9)
        assert np.allclose(b.views[0].camera.K, f.views[0].camera.K, atol=1e-9)
    sidecar_path(out).unlink()
    with pytest.raises(ValueError, match="--classes"):
        load_dataset(out)
    assert load_dataset(out, LoadOptions(classes="kitti_boxes")).labelled


def test_nuscenes_bag_views_match_motion_compensated_extrinsics(shared_data, tmp_path):
    out = tmp_path / "nus.mcap"
    nuscenes_to_bag(shared_data / "nuscenes", out)
    sample = read_nuscenes(shared_data / "nuscenes")
    s = load_dataset(out).samples[0]
    assert len(s.views) == 6 and s.labels is None
    frames = {v.camera.frame_id: v for v in s.views}
    for name, f in sample.cameras.items():
        v = frames[f.camera.frame_id]
        # map at both stamps: T = (map<-cam(t_cam))^-1 (map<-lidar(t_lidar)) = lidar2cam
        assert np.allclose(v.T_cam_points, sample.T_cam_lidar[name].matrix, atol=1e-6)
    # only CAM_BACK_LEFT was exposed within 1 ms of the LiDAR stamp (0.53 ms)
    near = load_dataset(out, LoadOptions(max_dt_s=0.001)).samples[0]
    assert [v.camera.frame_id for v in near.views] == ["cam_back_left_optical_frame"]


def test_rgbd_folder_and_bag(shared_data, tmp_path):
    root = shared_data / "rgbd" / "7scenes"
    folder = load_dataset(root, LoadOptions(every=50, rgbd_stride=8))
    out = tmp_path / "rgbd.mcap"
    rgbd_to_bag(root, out, every=50)
    bag = load_dataset(out, LoadOptions(rgbd_stride=8))
    assert len(folder.samples) == len(bag.samples) == 2
    T = open_rgbd_dir(root, "7scenes").T_depth_color.inverse().matrix
    for a, b in zip(folder.samples, bag.samples):
        assert np.allclose(a.xyz, b.xyz, atol=1e-6)
        assert np.allclose(b.views[0].T_cam_points, T, atol=1e-9)
        assert np.array_equal(a.views[0].rgb, b.views[0].rgb)
    # a 640x480 depth image at stride 8 has at most 80*60 points
    assert 0 < len(folder.samples[0]) <= 80 * 60


def test_split_holdout():
    items = [Sample(str(i), np.zeros((1, 3))) for i in range(10)]
    train, held = split_holdout(items, 0.2)
    assert [s.key for s in held] == ["8", "9"] and len(train) == 8
    assert split_holdout(items[:1], 0.5) == (items[:1], [])
    assert len(split_holdout(items[:2], 0.9)[1]) == 1
    with pytest.raises(ValueError):
        split_holdout(items, 1.0)

"""Hostile inputs against the pipeline objects (issue 17): codec, limits, Segmenter,
checkpoint loading, CameraInfo, synchroniser, replay. Each case: a clear error or a
counted drop, and the good data around it still processed exactly as on its own."""
from __future__ import annotations

import struct
import subprocess
import sys
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fit3d_ros.logs.bag import BagWriter
from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import (Checkpoint, CheckpointError, Preprocessing,
                                         load_checkpoint, save_checkpoint)
from fit3d_ros.models.classes import ClassMap, semantickitti_classes
from fit3d_ros.msgs import (ConversionError, camera_info_to_model, cloud_to_pointcloud2,
                            model_to_camera_info, numpy_to_image, pointcloud2_to_cloud,
                            rosbags_types, stamp_to_ns)
from fit3d_ros.pipeline.limits import InputLimits, limit_mask
from fit3d_ros.pipeline.segmenter import EmptyCloudError, Segmenter
from fit3d_ros.sensors import CameraModel, PointCloud
from fit3d_ros.sensors.camera_history import CameraInfoHistory
from fit3d_ros.sensors.sync import StampGate, SyncMonitor, make_ros_synchronizer

S = 1_000_000_000
TYPES = rosbags_types()


def _image_free(path, num_classes=19, names=None, token_budget=None, nan=False):
    torch.manual_seed(0)
    cfg = SpUNetConfig.tiny(in_channels=4, num_classes=num_classes)
    state = SpUNet(cfg).state_dict()
    if nan:
        next(v for v in state.values() if v.is_floating_point()).view(-1)[3] = float("nan")
    classes = semantickitti_classes() if names is None else ClassMap(
        tuple(names), tuple(range(len(names))), tuple((0, 0, 0) for _ in names))
    spec = None if token_budget is None else BackboneSpec(
        name="vit_tiny_test", random_init=True, token_budget=token_budget)
    return save_checkpoint(path, Checkpoint("segmentation", cfg, state, Preprocessing(
        cfg.voxel_size, ("xyz", "intensity"), spec), classes))


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return _image_free(tmp_path_factory.mktemp("hostile") / "seg.ckpt")


@pytest.fixture(scope="module")
def good_cloud():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-30, 30, (3000, 3)).astype(np.float32)
    return PointCloud(5 * S, "lidar", xyz, intensity=rng.uniform(0, 1, 3000).astype(np.float32))


# ----------------------------------------------------------------- item 1 / 3: limits
def test_bad_points_are_dropped_counted_and_the_rest_labelled_as_alone(ckpt, good_cloud):
    seg = Segmenter(ckpt, limits=InputLimits(max_range_m=200.0))
    bad_xyz = np.array([[1e30, 0, 0], [3.4e38, -3.4e38, 1], [5e5, 0, 0], [-5e5, 1, 1],
                        [np.nan, 0, 0], [0, np.inf, 0], [1, 2, 3]], np.float32)
    bad_int = np.array([0, 0, 0, 0, 0, 0, np.nan], np.float32)  # garbage intensity
    cloud = PointCloud(good_cloud.stamp, "lidar", np.concatenate([bad_xyz, good_cloud.xyz]),
                       intensity=np.concatenate([bad_int, good_cloud.intensity]))
    result = seg(cloud)
    alone = seg(good_cloud)
    assert (result.drops.non_finite, result.drops.out_of_range) == (3, 4)
    np.testing.assert_array_equal(result.kept, np.r_[np.zeros(7, bool), np.ones(3000, bool)])
    np.testing.assert_array_equal(result.labels, alone.labels)
    assert np.isfinite(result.confidence).all()


def test_a_cloud_scaled_by_1e30_is_an_error_not_one_voxel(ckpt, good_cloud):
    seg = Segmenter(ckpt)
    with pytest.raises(EmptyCloudError) as err:
        seg(PointCloud(0, "lidar", good_cloud.xyz * np.float32(1e30),
                       intensity=good_cloud.intensity))
    assert err.value.drops.out_of_range == 3000


@pytest.mark.parametrize("mode", ["random", "range"])
def test_max_points_subsamples_as_specified(good_cloud, mode):
    keep, drops = limit_mask(good_cloud, InputLimits(max_points=500, subsample=mode))
    assert keep.sum() == 500 and drops.subsampled == 2500
    if mode == "range":  # the 500 nearest points, by a plain sort
        nearest = np.argsort(np.linalg.norm(good_cloud.xyz.astype(np.float64), axis=1))[:500]
        assert set(np.flatnonzero(keep)) == set(nearest)


def test_five_million_points_are_subsampled_before_the_network(ckpt):
    n = 5_000_000
    rng = np.random.default_rng(1)
    cloud = PointCloud(0, "lidar", rng.uniform(-50, 50, (n, 3)).astype(np.float32),
                       intensity=np.zeros(n, np.float32))
    msg = cloud_to_pointcloud2(cloud, TYPES)
    seg = Segmenter(ckpt, limits=InputLimits(max_points=20_000))
    result = seg(pointcloud2_to_cloud(msg))
    assert len(result.labels) == 20_000 and result.drops.subsampled == n - 20_000
    assert result.kept.sum() == 20_000


# ----------------------------------------------------------------- item 3: field layouts
def _xyz_msg(offsets, point_step=12, bigendian=False, data=None, n=4):
    fields = [TYPES.PointField(name=a, offset=o, datatype=7, count=1)
              for a, o in zip("xyz", offsets)]
    data = np.zeros(n * point_step, np.uint8) if data is None else data
    return TYPES.PointCloud2(header=cloud_to_pointcloud2(PointCloud(0, "l", np.zeros((1, 3),
                             np.float32)), TYPES).header, height=1, width=n, fields=fields,
                             is_bigendian=bigendian, point_step=point_step,
                             row_step=point_step * n, data=data, is_dense=True)


@pytest.mark.parametrize("offsets", [(0, 0, 0), (0, 2, 8), (0, 4, 6)])
def test_overlapping_fields_are_rejected(offsets):
    with pytest.raises(ConversionError, match="overlap"):
        pointcloud2_to_cloud(_xyz_msg(offsets))


def test_big_endian_clouds_decode_like_struct():
    values = [(1.5, -2.25, 3.0), (100.0, 0.5, -7.75)]
    data = np.frombuffer(b"".join(struct.pack(">fff", *v) for v in values), np.uint8)
    cloud = pointcloud2_to_cloud(_xyz_msg((0, 4, 8), data=data.copy(), bigendian=True, n=2))
    np.testing.assert_array_equal(cloud.xyz, np.array(values, np.float32))


def test_little_endian_data_flagged_big_endian_never_gives_nan_labels(ckpt, good_cloud):
    msg = cloud_to_pointcloud2(good_cloud, TYPES)
    msg.is_bigendian = True
    seg = Segmenter(ckpt)
    try:
        result = seg(pointcloud2_to_cloud(msg))
    except EmptyCloudError as exc:  # everything out of range: said and counted
        assert exc.drops.total > 0
    else:
        assert result.drops.total > 0 and np.isfinite(result.confidence).all()


# ----------------------------------------------------------------- item 1 / 4: checkpoints
def test_corrupt_checkpoints_do_not_load(ckpt, tmp_path):
    data = bytearray(ckpt.read_bytes())
    with zipfile.ZipFile(ckpt) as zf:  # flip 64 bytes inside the largest weight's record
        info = max(zf.infolist(), key=lambda i: i.file_size)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 64
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    flipped = tmp_path / "flipped.ckpt"
    flipped.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="CRC"):
        load_checkpoint(flipped)
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(_image_free(tmp_path / "nan.ckpt", nan=True))
    with pytest.raises(CheckpointError, match="1 class names for a 19-class head"):
        load_checkpoint(_image_free(tmp_path / "one.ckpt", names=["car"]))
    with pytest.raises(CheckpointError, match="token_budget"):
        load_checkpoint(_image_free(tmp_path / "budget.ckpt", token_budget=10_000_000))
    load_checkpoint(ckpt)  # the intact one still loads


# ----------------------------------------------------------------- item 8: CameraInfo
@pytest.mark.parametrize("edit", ["fx_tiny", "fx_huge", "k22", "d_many", "d_huge"])
def test_absurd_camera_info_is_rejected(edit):
    cam = CameraModel(K=np.array([[700.0, 0, 620], [0, 700, 187], [0, 0, 1]]), width=1242,
                      height=375, D=np.zeros(5))
    msg = model_to_camera_info(cam, 0, "cam", TYPES)
    camera_info_to_model(msg)  # the unedited one is fine
    k = np.array(msg.k)
    if edit == "fx_tiny":
        k[0] = 1e-300
    elif edit == "fx_huge":
        k[0] = 1e300
    elif edit == "k22":
        k[8] = 0
    msg.k = k
    if edit == "d_many":
        msg.d = np.zeros(1000)
    elif edit == "d_huge":
        msg.d = np.array([1e6, 0, 0, 0, 0])
    with pytest.raises(ConversionError):
        camera_info_to_model(msg)


def test_stamp_nanosec_out_of_range_is_a_conversion_error():
    with pytest.raises(ConversionError):
        stamp_to_ns(SimpleNamespace(sec=1, nanosec=1_500_000_000))


# ----------------------------------------------------------------- item 5: CameraInfo history
def test_each_image_gets_the_camera_info_of_its_size_and_stamp():
    big = CameraModel(K=np.array([[700.0, 0, 620], [0, 700, 187], [0, 0, 1]]), width=1242,
                      height=375)
    small = CameraModel(K=np.array([[690.0, 0, 610], [0, 690, 185], [0, 0, 1]]), width=1224,
                        height=370)
    other = CameraModel(K=np.array([[600.0, 0, 610], [0, 600, 185], [0, 0, 1]]), width=1224,
                        height=370)
    h = CameraInfoHistory(capacity=4)
    h.add(1, big)
    h.add(2, small)
    h.add(3, other)
    assert h.for_image(1, 1242, 375) is big        # same stamp
    assert h.for_image(2, 1224, 370) is small      # same stamp, not the newest of that size
    assert h.for_image(9, 1224, 370) is other      # unknown stamp: newest of that size
    assert h.for_image(9, 1242, 375) is big
    assert h.for_image(9, 640, 480) is None        # never another size


# ----------------------------------------------------------------- item 2 / 9: sync
class _Sub:
    def __init__(self, topic):
        self.topic, self.cbs = topic, []

    def registerCallback(self, cb, *args):  # noqa: N802
        self.cbs.append((cb, args))

    def signalMessage(self, msg):  # noqa: N802
        for cb, args in self.cbs:
            cb(msg, *args)


def _msg(stamp):
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(
        sec=stamp // S, nanosec=stamp % S), frame_id=""))


def _future_then_good(gate_on: bool) -> tuple[int, list]:
    """The issue's sequence: 10 (= sync_queue_size) unpaired clouds stamped an hour
    ahead of the clock, then 20 good cloud + image pairs."""
    now = 1000 * S
    rejected = []
    gate = StampGate(2, lambda: now, 5.0, on_reject=lambda i, s, a: rejected.append(i)) \
        if gate_on else None
    subs, out = [_Sub("points"), _Sub("image")], []
    make_ros_synchronizer(subs, 10, 0.05, lambda *m: out.append(m), gate=gate)
    for k in range(10):
        subs[0].signalMessage(_msg(now + 3600 * S + k * S // 10))
    for k in range(20):
        stamp = now - S + k * S // 10
        subs[0].signalMessage(_msg(stamp))
        subs[1].signalMessage(_msg(stamp + 1000))
    return len(out), rejected


def test_future_stamps_no_longer_block_the_synchroniser():
    assert _future_then_good(gate_on=False)[0] == 0  # the reported permanent loss
    matched, rejected = _future_then_good(gate_on=True)
    assert matched == 20 and rejected == [0] * 10


def test_a_stamp_jump_back_flushes_the_queues():
    flushed = []
    gate = StampGate(2, lambda: 0, 5.0, on_flush=flushed.append)
    subs, out = [_Sub("points"), _Sub("image")], []
    make_ros_synchronizer(subs, 10, 0.05, lambda *m: out.append(m), gate=gate)
    for k in range(10):  # a first pass whose images never came
        subs[0].signalMessage(_msg(500 * S + k * S))
    for k in range(5):   # the log restarts at its beginning
        subs[0].signalMessage(_msg(100 * S + k * S))
        subs[1].signalMessage(_msg(100 * S + k * S + 1000))
    assert len(out) == 5 and flushed == [10]


def test_sync_monitor_warns_only_when_a_match_is_impossible():
    mon = SyncMonitor(2, 0.05, down_s=3600)
    for k in range(5):  # every image arrives after its cloud: matched late, no problem
        mon.seen(0, k * S)
        assert mon.problems() == []
        mon.seen(1, k * S + 1000)
        mon.matched(k * S)
        assert mon.problems() == []
    mon.seen(0, 10 * S)                 # an image 0.5 s later: the camera's clock is off
    assert mon.problems() == []         # (its image may still come)
    mon.seen(1, 10 * S + S // 2)
    (problem,) = mon.problems()
    assert "can never match" in problem and "0.500 s" in problem
    dead = SyncMonitor(2, 0.05, down_s=0.0)
    dead.seen(0, 20 * S)
    assert any("stream down" in p for p in dead.problems())


# ----------------------------------------------------------------- item 8: replay
def test_replay_of_a_bag_without_clouds_warns_and_fails(ckpt, tmp_path):
    bag = tmp_path / "images.mcap"
    with BagWriter(bag) as w:
        w.write("/velodyne_points", "sensor_msgs/msg/Image", 1,
                numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8", 1, "cam", TYPES))
    run = subprocess.run([sys.executable, "-m", "fit3d_ros.cli", "replay", str(bag),
                          "--checkpoint", str(ckpt), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "no PointCloud2 topic" in run.stderr and "nothing could be processed" in run.stderr
    run = subprocess.run([sys.executable, "-m", "fit3d_ros.cli", "replay", str(bag),
                          "--checkpoint", str(ckpt), "--cloud-topic", "/velodyne_points",
                          "--out", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode != 0 and "not sensor_msgs/msg/PointCloud2" in run.stderr

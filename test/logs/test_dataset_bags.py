"""Round trips on the shared real data: source files -> bag -> typed frames equal the source.

Expected values come straight from the source files (PIL, numpy.loadtxt/fromfile, json)
read here in the test, never from the readers under test. Rotations stored as text or
float32 are only orthonormal to ~1e-5, so TF (a quaternion) carries their nearest
rotation: the reference for that is the Newton polar iteration R <- (R + R^-T) / 2, an
algorithm independent of the SVD the code uses.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fit3d_ros.logs.bag import BagReader
from fit3d_ros.logs.convert import (
    KITTI_TOPICS,
    NUSCENES_LIDAR_TOPIC,
    RGBD_TOPICS,
    kitti_to_bag,
    nuscenes_to_bag,
    nuscenes_topics,
    rgbd_to_bag,
    semantickitti_to_bag,
)
from fit3d_ros.logs.datasets import read_nuscenes
from fit3d_ros.logs.scene_io import (
    read_camera_frames,
    read_clouds,
    read_rgbd_frames,
    read_rgbd_pairs,
    read_transform_buffer,
    replay,
)
from fit3d_ros.msgs import camera_info_to_model, image_to_numpy, pointcloud2_to_numpy

T0 = 1_700_000_000 * 10 ** 9


def polar_rigid(m) -> np.ndarray:
    """Nearest rigid transform by Newton's polar iteration (reference, not SVD)."""
    m = np.asarray(m, dtype=np.float64)
    out = np.eye(4)
    r = m[:3, :3].copy()
    for _ in range(30):
        r = 0.5 * (r + np.linalg.inv(r).T)
    out[:3, :3], out[:3, 3] = r, m[:3, 3]
    return out


def rgb_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def bags(shared_data, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bags")
    made = {"7scenes": out / "7scenes.mcap", "redwood": out / "redwood",  # sqlite3 dir
            "kitti": out / "kitti.mcap", "nuscenes": out / "nuscenes.mcap",
            "semantickitti": out / "semantickitti.db3"}
    rgbd_to_bag(shared_data / "rgbd/7scenes", made["7scenes"], "7scenes", every=20)
    rgbd_to_bag(shared_data / "rgbd/redwood", made["redwood"], "redwood")
    kitti_to_bag(shared_data / "kitti/object", made["kitti"])
    nuscenes_to_bag(shared_data / "nuscenes", made["nuscenes"])
    semantickitti_to_bag(shared_data / "semantickitti", made["semantickitti"])
    return made


def _raw_depth_images(bag: Path) -> dict[int, np.ndarray]:
    with BagReader(bag) as b:
        return {m.log_time_ns: image_to_numpy(m.msg) for m in b.messages([RGBD_TOPICS["depth"]])}


def test_7scenes_round_trip(shared_data, bags):
    root = shared_data / "rgbd/7scenes"
    frames = read_rgbd_frames(bags["7scenes"])
    numbers = [0, 100, 200, 300, 400]  # every 20th of the files 0, 5, ..., 495
    assert [f.stamp for f in frames] == [T0 + round(n * 1e9 / 30) for n in numbers]
    raw = _raw_depth_images(bags["7scenes"])
    K = np.loadtxt(root / "camera-intrinsics.txt")
    for n, f in zip(numbers, frames):
        stem = root / f"frame-{n:06d}"
        np.testing.assert_array_equal(f.rgb, rgb_of(f"{stem}.color.jpg"))
        depth_mm = np.asarray(Image.open(f"{stem}.depth.png")).astype(np.uint16)
        np.testing.assert_array_equal(raw[f.stamp], depth_mm)  # 16UC1, exactly in mm
        expect_m = np.where(depth_mm > 0, depth_mm.astype(np.float32) / np.float32(1000), np.nan)
        np.testing.assert_array_equal(f.depth, expect_m.astype(np.float32))
        np.testing.assert_allclose(f.camera.K, K, rtol=0, atol=1e-9)
        assert f.frame_id == f.camera.frame_id == "camera_depth_optical_frame"
        pose = np.loadtxt(f"{stem}.pose.txt")
        np.testing.assert_allclose(f.pose.matrix, polar_rigid(pose), rtol=0, atol=1e-9)
        # 7-Scenes (KinectFusion) rotations are orthonormal to ~1.1e-4 only
        np.testing.assert_allclose(f.pose.matrix, pose, rtol=0, atol=2e-4)
        assert (f.pose.parent_frame, f.pose.child_frame) == ("map", f.frame_id)


def test_7scenes_colour_camera(bags):
    """Colour camera per the data notes: f = 515, colour = depth + (-0.025, 0, 0) m."""
    frames = read_rgbd_frames(bags["7scenes"], reference="color")
    depth_frames = read_rgbd_frames(bags["7scenes"])
    tf = read_transform_buffer(bags["7scenes"]).lookup(
        "camera_color_optical_frame", "camera_depth_optical_frame", None)
    p = np.array([[0.3, -0.2, 2.0], [1.0, 1.0, 1.0]])
    np.testing.assert_allclose(tf.apply(p), p + [-0.025, 0.0, 0.0], rtol=0, atol=1e-12)
    for c, d in zip(frames, depth_frames):
        assert (c.camera.fx, c.camera.fy, c.camera.cx, c.camera.cy) == (515, 515, 320, 240)
        # the same world point seen from both poses: colour = depth + (-0.025, 0, 0)
        world = d.pose.apply(p)
        np.testing.assert_allclose(c.pose.inverse().apply(world), p + [-0.025, 0, 0],
                                   rtol=0, atol=1e-9)
        np.testing.assert_array_equal(c.rgb, d.rgb)


def test_rgbd_pairs_are_both_references_in_one_pass(bags):
    """read_rgbd_pairs gives, per pair, the depth- and the colour-referenced frame."""
    pairs = read_rgbd_pairs(bags["7scenes"], every=2)
    depth = read_rgbd_frames(bags["7scenes"], every=2)
    color = read_rgbd_frames(bags["7scenes"], reference="color", every=2)
    assert len(pairs) == len(depth) == len(color) > 1
    for (d, c), d_ref, c_ref in zip(pairs, depth, color):
        for got, ref in ((d, d_ref), (c, c_ref)):
            cam = (got.camera.width, got.camera.height, got.camera.fx, got.camera.cx)
            assert (got.stamp, got.frame_id, *cam) == (
                ref.stamp, ref.frame_id, ref.camera.width, ref.camera.height, ref.camera.fx,
                ref.camera.cx)
            np.testing.assert_array_equal(got.pose.matrix, ref.pose.matrix)
            np.testing.assert_array_equal(got.rgb, ref.rgb)
            np.testing.assert_array_equal(got.depth, ref.depth)
        assert d.frame_id != c.frame_id

def test_redwood_round_trip(shared_data, bags):
    root = shared_data / "rgbd/redwood"
    frames = read_rgbd_frames(bags["redwood"])
    assert len(frames) == 5
    meta = json.loads((root / "camera_primesense.json").read_text())
    K = np.array(meta["intrinsic_matrix"]).reshape(3, 3).T
    rows = [line.split() for line in (root / "trajectory.log").read_text().splitlines()]
    poses = [np.array(rows[5 * i + 1:5 * i + 5], dtype=float) for i in range(5)]
    raw = _raw_depth_images(bags["redwood"])
    for i, f in enumerate(frames):
        assert f.stamp == T0 + round(i * 1e9 / 30)
        np.testing.assert_array_equal(f.rgb, rgb_of(root / f"color/{i:05d}.jpg"))
        np.testing.assert_array_equal(raw[f.stamp], np.asarray(Image.open(
            root / f"depth/{i:05d}.png")).astype(np.uint16))
        np.testing.assert_allclose(f.camera.K, K, rtol=0, atol=1e-9)
        np.testing.assert_allclose(f.pose.matrix, polar_rigid(poses[i]), rtol=0, atol=1e-9)
        np.testing.assert_allclose(f.pose.matrix, poses[i], rtol=0, atol=1e-5)


def _kitti_calib(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            out[k] = np.array(v.split(), dtype=float)
    return out


def test_kitti_round_trip(shared_data, bags):
    root = shared_data / "kitti/object"
    frames = {}
    for m, buf in replay(bags["kitti"], [KITTI_TOPICS["cloud"], KITTI_TOPICS["image"],
                                         KITTI_TOPICS["info"]]):
        stamp = m.log_time_ns
        entry = frames.setdefault(stamp, {})
        if m.topic == KITTI_TOPICS["cloud"]:
            entry["cloud"] = pointcloud2_to_numpy(m.msg)
            entry["T"] = buf.lookup("camera_color_left_optical_frame", "velodyne", stamp)
            entry["T_base"] = buf.lookup("base_link", "velodyne", stamp)
        elif m.topic == KITTI_TOPICS["image"]:
            entry["image"] = image_to_numpy(m.msg)
        else:
            entry["camera"] = camera_info_to_model(m.msg)
    assert sorted(frames) == [T0, T0 + 100_000_000]
    for i, stamp in enumerate(sorted(frames)):
        f = frames[stamp]
        name = f"{i:06d}"
        scan = np.fromfile(root / f"velodyne/{name}.bin", dtype=np.float32).reshape(-1, 4)
        assert f["cloud"].dtype.names == ("x", "y", "z", "intensity")
        got = np.stack([f["cloud"][k] for k in ("x", "y", "z", "intensity")], axis=1)
        np.testing.assert_array_equal(got, scan)
        np.testing.assert_array_equal(f["image"], rgb_of(root / f"image_2/{name}.png"))
        c = _kitti_calib(root / f"calib/{name}.txt")
        P2 = c["P2"].reshape(3, 4)
        np.testing.assert_allclose(f["camera"].K, P2[:, :3], rtol=0, atol=1e-9)
        assert (f["camera"].width, f["camera"].height) == f["image"].shape[1::-1]
        # extrinsics: [I | K^-1 P2[:,3]] · R0_rect · Tr_velo_to_cam (made rigid)
        R0 = np.eye(4)
        R0[:3, :3] = c["R0_rect"].reshape(3, 3)
        Tr = np.vstack([c["Tr_velo_to_cam"].reshape(3, 4), [0, 0, 0, 1]])
        off = np.eye(4)
        off[:3, 3] = np.linalg.inv(P2[:, :3]) @ P2[:, 3]
        expect = polar_rigid(off @ polar_rigid(R0) @ polar_rigid(Tr))
        np.testing.assert_allclose(f["T"].matrix, expect, rtol=0, atol=1e-9)
        imu = np.vstack([c["Tr_imu_to_velo"].reshape(3, 4), [0, 0, 0, 1]])
        np.testing.assert_allclose(f["T_base"].matrix, np.linalg.inv(polar_rigid(imu)),
                                   rtol=0, atol=1e-9)
        # pixels: K · (T · x) reproduces KITTI's P2 · R0_rect · Tr_velo_to_cam · x
        X = np.hstack([scan[:, :3].astype(np.float64), np.ones((len(scan), 1))])
        ref = (P2 @ R0 @ Tr @ X.T).T
        front = ref[:, 2] > 1.0
        uv, _ = f["camera"].project(f["T"].apply(X[front, :3]))
        np.testing.assert_allclose(uv, ref[front, :2] / ref[front, 2:], rtol=0, atol=2e-3)
    # the two frames come from different drives: each keeps its own calibration
    assert not np.allclose(frames[T0]["T"].matrix, frames[T0 + 100_000_000]["T"].matrix)


def test_nuscenes_round_trip(shared_data, bags):
    root = shared_data / "nuscenes"
    meta = json.loads((root / "sample.json").read_text())
    (cloud,) = read_clouds(bags["nuscenes"], NUSCENES_LIDAR_TOPIC)
    scan = np.fromfile(root / meta["lidar"]["file"], dtype=np.float32).reshape(-1, 5)
    np.testing.assert_array_equal(cloud.xyz, scan[:, :3])
    np.testing.assert_array_equal(cloud.intensity, scan[:, 3])
    np.testing.assert_array_equal(cloud.extra["ring"], scan[:, 4])
    lidar_stamp = round(meta["timestamp"] * 1e6) * 1000
    assert cloud.stamp == lidar_stamp and cloud.frame_id == "lidar_top"
    buf = read_transform_buffer(bags["nuscenes"])
    np.testing.assert_allclose(buf.lookup("base_link", "lidar_top", None).matrix,
                               polar_rigid(meta["lidar"]["lidar2ego"]), rtol=0, atol=1e-9)
    np.testing.assert_allclose(buf.lookup("map", "base_link", lidar_stamp).matrix,
                               polar_rigid(meta["ego2global"]), rtol=0, atol=1e-9)
    assert len(meta["cameras"]) == 6
    for name, c in meta["cameras"].items():
        image_topic, info_topic = nuscenes_topics(name)
        (f,) = read_camera_frames(bags["nuscenes"], image_topic, info_topic)
        np.testing.assert_array_equal(f.rgb, rgb_of(root / c["img_path"]))
        np.testing.assert_allclose(f.camera.K, c["cam2img"], rtol=0, atol=1e-9)
        assert f.stamp == round(c["timestamp"] * 1e6) * 1000
        frame = f"{name.lower()}_optical_frame"
        np.testing.assert_allclose(buf.lookup("base_link", frame, None).matrix,
                                   polar_rigid(c["cam2ego"]), rtol=0, atol=1e-9)
        np.testing.assert_allclose(buf.lookup("base_link", frame, None).matrix, c["cam2ego"],
                                   rtol=0, atol=1e-6)
        # time travel through map: cam(t_cam) <- lidar(t_lidar) equals the sample's lidar2cam
        cam_from_lidar = f.pose.inverse().matrix @ buf.lookup("map", "lidar_top",
                                                              lidar_stamp).matrix
        np.testing.assert_allclose(cam_from_lidar, c["lidar2cam"], rtol=0, atol=1e-5)


def test_semantickitti_round_trip(shared_data, bags):
    root = shared_data / "semantickitti"
    (cloud,) = read_clouds(bags["semantickitti"])
    np.testing.assert_array_equal(cloud.xyz, np.load(root / "points/000700.npy"))
    np.testing.assert_array_equal(cloud.label, np.load(root / "labels/000700.npy")[:, 0])
    assert cloud.label.dtype == np.int32 and cloud.frame_id == "velodyne"
    assert cloud.stamp == T0 + 700 * 100_000_000


def test_nuscenes_reader_camera_poses(shared_data):
    """Camera poses at their own stamps reproduce the sample's motion-compensated
    lidar2cam through the lidar-time ego pose (ego2global · lidar2ego)."""
    meta = json.loads((shared_data / "nuscenes/sample.json").read_text())
    sample = read_nuscenes(shared_data / "nuscenes")
    lidar_to_map = np.asarray(meta["ego2global"]) @ np.asarray(meta["lidar"]["lidar2ego"])
    for name, c in meta["cameras"].items():
        frame = sample.cameras[name]
        assert frame.pose.parent_frame == "map"
        assert frame.frame_id == f"{name.lower()}_optical_frame"
        np.testing.assert_allclose(np.linalg.inv(frame.pose.matrix) @ lidar_to_map,
                                   c["lidar2cam"], rtol=0, atol=1e-5)


def test_rgbd_frame_without_pose_reads_back_with_pose_none(shared_data, tmp_path):
    """A frame recorded without a pose (inf in the pose file) has no /tf; reading the bag
    back keeps the frame with pose None instead of failing the whole read."""
    src = shared_data / "rgbd" / "7scenes"
    scene = tmp_path / "scene"
    scene.mkdir()
    shutil.copy(src / "camera-intrinsics.txt", scene)
    for i in (0, 5, 10):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(src / f"frame-{i:06d}.{kind}", scene)
    (scene / "frame-000010.pose.txt").write_text("inf inf inf inf\n" * 4)
    rgbd_to_bag(scene, tmp_path / "s.mcap", fmt="7scenes")
    frames = read_rgbd_frames(tmp_path / "s.mcap")
    assert len(frames) == 3
    assert frames[0].pose is not None and frames[1].pose is not None
    assert frames[2].pose is None
    raw = np.loadtxt(src / "frame-000005.pose.txt")
    np.testing.assert_allclose(frames[1].pose.matrix, raw, atol=2e-4)

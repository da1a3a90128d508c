"""``fit3d-ros bag from-*`` and ``fit3d-ros info`` through the real command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fit3d_ros.cli.main import main
from fit3d_ros.logs.lidar_datasets import read_kitti_object
from fit3d_ros.logs.scene_io import read_transform_buffer
from fit3d_ros.sensors import TransformBuffer


def test_from_rgbd_then_info_json_subprocess(shared_data, tmp_path):
    out = tmp_path / "scene.mcap"
    assert main(["bag", "from-rgbd", str(shared_data / "rgbd/7scenes"), "--format", "7scenes",
                 "--every", "25", "-o", str(out)]) == 0
    proc = subprocess.run([sys.executable, "-m", "fit3d_ros.cli", "info", str(out), "--json"],
                          capture_output=True, text=True, timeout=120, check=True)
    info = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert proc.stdout.strip().count("\n") == 0
    # files 0, 125, 250, 375 of 0..495 step 5 -> frame numbers 0, 125, 250, 375 at 30 Hz
    assert info["duration_s"] == pytest.approx(375 / 30, abs=1e-9)
    assert info["topics"]["/camera/color/image_raw"] == {
        "type": "sensor_msgs/msg/Image", "count": 4, "rate_hz": pytest.approx(3 / (375 / 30))}
    assert info["topics"]["/tf"]["type"] == "tf2_msgs/msg/TFMessage"
    assert info["topics"]["/tf_static"]["count"] == 1
    assert {t: v["count"] for t, v in info["topics"].items()} == {
        "/camera/color/camera_info": 4, "/camera/color/image_raw": 4,
        "/camera/depth/camera_info": 4, "/camera/depth/image_raw": 4, "/tf": 4,
        "/tf_static": 1}


@pytest.mark.parametrize("args,topics", [
    (["from-kitti", "kitti/object", "--frames", "1"],
     {"/velodyne_points": 1, "/camera/color/image_raw": 1, "/camera/color/camera_info": 1,
      "/tf_static": 1}),
    (["from-semantickitti", "semantickitti", "--compress"], {"/velodyne_points": 1}),
    (["from-nuscenes", "nuscenes"], None),
    (["from-rgbd", "rgbd/redwood", "--format", "redwood"], None),
])
def test_converters_and_text_info(shared_data, tmp_path, capsys, args, topics):
    args = list(args)
    args[1] = str(shared_data / args[1])
    out = tmp_path / "out.mcap"
    assert main(["bag", *args, "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["output"] == str(out) and out.is_file()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    counts = {t: v["count"] for t, v in info["topics"].items()}
    assert counts == summary["topics"]
    if topics is not None:
        assert counts == topics
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert all(t in text for t in counts)


def test_nuscenes_topics_and_counts(shared_data, tmp_path, capsys):
    out = tmp_path / "nus"
    assert main(["bag", "from-nuscenes", str(shared_data / "nuscenes"), "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["storage"] == "sqlite3"
    cams = ["cam_front", "cam_front_left", "cam_front_right", "cam_back", "cam_back_left",
            "cam_back_right"]
    for cam in cams:
        assert info["topics"][f"/{cam}/image_raw"]["count"] == 1
        assert info["topics"][f"/{cam}/camera_info"]["type"] == "sensor_msgs/msg/CameraInfo"
    assert info["topics"]["/lidar_top/points"]["type"] == "sensor_msgs/msg/PointCloud2"
    # map -> base_link at the lidar stamp and at each of the six camera stamps
    assert info["topics"]["/tf"]["count"] == 7
    stamps = [1532402927604844, 1532402927647951]  # first camera, lidar (microseconds)
    assert info["duration_s"] == pytest.approx((stamps[1] - stamps[0]) / 1e6, abs=1e-9)


def test_user_errors_exit_2(shared_data, tmp_path, capsys):
    out = tmp_path / "x.mcap"
    src = str(shared_data / "semantickitti")
    assert main(["bag", "from-semantickitti", src, "-o", str(out)]) == 0
    assert main(["bag", "from-semantickitti", src, "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["bag", "from-semantickitti", src, "-o", str(out), "--force"]) == 0
    assert main(["info", str(tmp_path / "missing.mcap")]) == 2
    (tmp_path / "broken.mcap").write_bytes(b"\x89MCAP0\r\n" + bytes(50))
    assert main(["info", str(tmp_path / "broken.mcap")]) == 2
    err = capsys.readouterr().err
    assert "missing.mcap" in err and "broken.mcap" in err
    assert main(["bag", "from-rgbd", str(tmp_path), "--format", "7scenes", "-o",
                 str(tmp_path / "y.mcap")]) == 2
    assert "camera-intrinsics.txt" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["broken.mcap", "x.mcap"]
    assert out.stat().st_size > 0


def test_bag_extrinsics_dumps_tf_static_and_reads_back(shared_data, tmp_path, capsys):
    """``fit3d-ros bag from-kitti`` writes a static TF; ``bag extrinsics`` dumps it into the
    extrinsics YAML, which reads back to the calibration file's transforms."""
    bag, yaml_path = tmp_path / "kitti.mcap", tmp_path / "extrinsics.yaml"
    assert main(["bag", "from-kitti", str(shared_data / "kitti/object"), "--frames", "1",
                 "-o", str(bag)]) == 0
    assert main(["bag", "extrinsics", str(bag), "-o", str(yaml_path)]) == 0
    (frame,) = read_kitti_object(shared_data / "kitti/object", ["1"])   # calib_*.txt
    buf = TransformBuffer.from_yaml(yaml_path)
    cam, velo = frame.camera.frame_id, frame.T_cam_velo.child_frame
    np.testing.assert_allclose(buf.lookup(cam, velo).matrix, frame.T_cam_velo.matrix,
                               atol=1e-12)
    np.testing.assert_allclose(buf.lookup("base_link", velo).matrix, frame.T_base_velo.matrix,
                               atol=1e-12)
    bag_tfs = read_transform_buffer(bag).static_transforms()
    got = {(t.parent_frame, t.child_frame): t.matrix for t in buf.static_transforms()}
    assert set(got) == {(t.parent_frame, t.child_frame) for t in bag_tfs}
    for t in bag_tfs:
        np.testing.assert_allclose(got[t.parent_frame, t.child_frame], t.matrix, atol=1e-12)
    assert main(["bag", "extrinsics", str(bag), "-o", str(yaml_path)]) == 2
    assert "exists" in capsys.readouterr().err
    sk = tmp_path / "sk.mcap"
    assert main(["bag", "from-semantickitti", str(shared_data / "semantickitti"),
                 "-o", str(sk)]) == 0
    assert main(["bag", "extrinsics", str(sk), "-o", str(tmp_path / "none.yaml")]) == 2
    assert "no static transforms" in capsys.readouterr().err

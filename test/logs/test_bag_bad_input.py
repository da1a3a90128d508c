"""Bad bags and bad messages: clear BagErrors naming topic and message index; no partial
outputs from failed conversions."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from fit3d_ros.logs.bag import BagError, BagReader, BagWriter
from fit3d_ros.logs.convert import RGBD_TOPICS, rgbd_to_bag
from fit3d_ros.logs.scene_io import read_camera_frames, read_clouds, read_rgbd_frames
from fit3d_ros.msgs import (cloud_to_pointcloud2, depth_to_image, model_to_camera_info,
                            numpy_to_image, rosbags_types)
from fit3d_ros.msgs import rosbags_typestore as rosbags_types_store
from fit3d_ros.sensors import CameraModel, PointCloud

T0 = 2_000_000_000
IMAGE, INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
CAM = CameraModel(K=[[50, 0, 4], [0, 50, 3], [0, 0, 1]], width=8, height=6, frame_id="cam")


def _rgb(i: int) -> np.ndarray:
    return np.full((6, 8, 3), 10 * i, dtype=np.uint8)


def _camera_bag(path: Path, spoil=None, n: int = 4) -> None:
    """n colour frames + camera infos; `spoil(i, msg)` may damage message i's Image."""
    types = rosbags_types()
    with BagWriter(path) as w:
        for i in range(n):
            stamp = T0 + i * 1000
            w.write("/info", INFO, stamp, model_to_camera_info(CAM, stamp, "cam", types))
            msg = numpy_to_image(_rgb(i), "rgb8", stamp, "cam", types)
            if spoil is not None:
                spoil(i, msg)
            w.write("/image", IMAGE, stamp, msg)


def test_good_camera_bag_reads(tmp_path):
    _camera_bag(tmp_path / "ok.mcap")
    frames = list(read_camera_frames(tmp_path / "ok.mcap", "/image", "/info", world_frame=None))
    assert [int(f.rgb[0, 0, 0]) for f in frames] == [0, 10, 20, 30]


def _spoil_encoding(i, msg):
    if i == 2:
        msg.encoding = "yuv422_exotic"


def _spoil_step(i, msg):
    if i == 1:
        msg.step = 8 * 3 - 1


def _spoil_data(i, msg):
    if i == 3:
        msg.data = msg.data[:-5]


def _spoil_size(i, msg):
    if i == 2:
        # a self-consistent 4x6 image, but not the camera's 8x6
        msg.width, msg.step = 4, 12
        msg.data = np.ascontiguousarray(msg.data.reshape(6, 24)[:, :12]).reshape(-1)


@pytest.mark.parametrize("spoil,index,what", [
    (_spoil_encoding, 2, "yuv422_exotic"), (_spoil_step, 1, "step"),
    (_spoil_data, 3, "bytes"), (_spoil_size, 2, "rgb must be")])
def test_bad_image_names_topic_and_index(tmp_path, spoil, index, what):
    path = tmp_path / "bad.mcap"
    _camera_bag(path, spoil)
    with pytest.raises(BagError, match=rf"topic /image message {index} .*{what}"):
        list(read_camera_frames(path, "/image", "/info", world_frame=None))


def test_bad_pointcloud_names_topic_and_index(tmp_path):
    types = rosbags_types()
    path = tmp_path / "cloud.mcap"
    with BagWriter(path) as w:
        for i in range(3):
            msg = cloud_to_pointcloud2(PointCloud(T0 + i, "velodyne", np.ones((5, 3)) * i),
                                       types)
            if i == 1:
                msg.row_step -= 4
            w.write("/points", "sensor_msgs/msg/PointCloud2", T0 + i, msg)
    with pytest.raises(BagError, match=r"topic /points message 1 .*row_step"):
        list(read_clouds(path))


def test_missing_field_names_topic_and_index(tmp_path):
    """A bag whose Image type lacks `step` (its own message definition) fails on that field."""
    store = get_typestore(Stores.EMPTY)
    store.register({k: v for k, v in rosbags_types_store().fielddefs.items() if k != IMAGE})
    store.register(get_types_from_msg(
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\n"
        "uint8 is_bigendian\nuint8[] data", IMAGE))
    t = store.types
    path = tmp_path / "nostep.mcap"
    with BagWriter(path, typestore=store) as w:
        hdr = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=2, nanosec=0),
                                       frame_id="cam")
        info = model_to_camera_info(CAM, T0, "cam", rosbags_types())
        w.write("/info", INFO, T0, info)
        w.write("/image", IMAGE, T0, t[IMAGE](header=hdr, height=6, width=8, encoding="rgb8",
                                              is_bigendian=0,
                                              data=np.zeros(144, dtype=np.uint8)))
    with BagReader(path) as bag:
        (m,) = bag.messages(["/image"])
        assert not hasattr(m.msg, "step")  # deserialised with the bag's own definition
    with pytest.raises(BagError, match=r"topic /image message 0 .*step"):
        list(read_camera_frames(path, "/image", "/info", world_frame=None))


def _good_mcap(tmp_path: Path) -> bytes:
    _camera_bag(tmp_path / "src.mcap")
    return (tmp_path / "src.mcap").read_bytes()


@pytest.mark.parametrize("cut", [0.5, 0.9, 40])
def test_truncated_mcap(tmp_path, cut):
    data = _good_mcap(tmp_path)
    n = int(len(data) * cut) if isinstance(cut, float) else cut
    (tmp_path / "t.mcap").write_bytes(data[:n])
    with pytest.raises(BagError, match=r"t\.mcap: cannot open bag"):
        with BagReader(tmp_path / "t.mcap") as bag:
            list(bag.messages())


def test_truncated_sqlite(tmp_path):
    _camera_bag(tmp_path / "s.db3")
    data = (tmp_path / "s.db3").read_bytes()
    (tmp_path / "t.db3").write_bytes(data[:len(data) // 2])
    with pytest.raises(BagError, match=r"t\.db3"):
        with BagReader(tmp_path / "t.db3") as bag:
            list(bag.messages())


def test_corrupt_payload_names_topic_and_index(tmp_path):
    """Overwrite the encoding-string length of the 3rd image with a huge value."""
    data = bytearray(_good_mcap(tmp_path))
    marker = bytes(_rgb(2)[:2].reshape(-1))  # start of image 2's pixel bytes
    at = data.find(marker)
    enc = data.rfind(b"rgb8\x00", 0, at)
    assert at > 0 and enc > 0
    data[enc - 4:enc] = (10 ** 9).to_bytes(4, "little")
    (tmp_path / "c.mcap").write_bytes(bytes(data))
    with BagReader(tmp_path / "c.mcap") as bag:
        with pytest.raises(BagError, match=r"topic /image message 2 .*does not deserialise"):
            list(bag.messages(["/image"]))


def test_corrupt_directory_metadata(tmp_path):
    _camera_bag(tmp_path / "d")
    (tmp_path / "d" / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    with pytest.raises(BagError, match="metadata"):
        with BagReader(tmp_path / "d") as bag:
            list(bag.messages())


def test_failed_conversion_leaves_no_partial_output(tmp_path, shared_data):
    """A broken depth file in the 3rd frame: ValueError naming it, and no output at all."""
    src = tmp_path / "scene"
    src.mkdir()
    shutil.copy(shared_data / "rgbd/7scenes/camera-intrinsics.txt", src)
    for i in (0, 5, 10):
        for kind in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(shared_data / f"rgbd/7scenes/frame-{i:06d}.{kind}", src)
    (src / "frame-000010.depth.png").write_bytes(b"\x89PNG broken")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ValueError, match="frame-000010.depth.png"):
        rgbd_to_bag(src, out_dir / "scene.mcap", "7scenes")
    assert os.listdir(out_dir) == []
    (src / "frame-000010.depth.png").unlink()
    (src / "frame-000010.color.jpg").unlink()
    summary = rgbd_to_bag(src, out_dir / "scene.mcap", "7scenes")  # the good frames convert
    assert summary["frames"] == 2 and os.listdir(out_dir) == ["scene.mcap"]


def test_depth_mismatch_in_bag(tmp_path):
    """Depth image of another size than its CameraInfo -> BagError naming the topic."""
    types = rosbags_types()
    path = tmp_path / "rgbd.mcap"
    with BagWriter(path) as w:
        for i in range(2):
            stamp = T0 + i
            for kind in ("color", "depth"):
                w.write(RGBD_TOPICS[kind + "_info"], INFO, stamp,
                        model_to_camera_info(CAM, stamp, "cam", types))
            w.write(RGBD_TOPICS["color"], IMAGE, stamp,
                    numpy_to_image(_rgb(i), "rgb8", stamp, "cam", types))
            depth = np.ones((6, 8) if i == 0 else (5, 8), dtype=np.float32)
            w.write(RGBD_TOPICS["depth"], IMAGE, stamp, depth_to_image(depth, stamp, "cam", types))
    with pytest.raises(BagError, match=r"/camera/depth/image_raw message 1 .*depth must be"):
        read_rgbd_frames(path, world_frame=None)

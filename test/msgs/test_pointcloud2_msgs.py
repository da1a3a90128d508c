"""PointCloud2: hand-packed odd layouts (struct), writer checked by struct, real KITTI scan."""
from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from fit3d_ros.msgs import (ConversionError, cloud_to_pointcloud2, pointcloud2_to_cloud,
                            pointcloud2_to_numpy, rosbags_types,
                            rosbags_typestore)
from fit3d_ros.sensors import PointCloud

RB = rosbags_types()
F32, F64, U8, U16, I32, U32 = 7, 8, 2, 4, 5, 6
NAN = float("nan")


def raw_cloud(types, fields, data: bytes, point_step, width, height=1, row_step=None,
              bigendian=False, dense=False):
    """A PointCloud2 built field by field; fields = [(name, offset, datatype, count)]."""
    hdr = types.Header(stamp=types.Time(sec=3, nanosec=4), frame_id="lidar")
    return types.PointCloud2(
        header=hdr, height=height, width=width,
        fields=[types.PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
        is_bigendian=bigendian, point_step=point_step,
        row_step=point_step * width if row_step is None else row_step,
        data=types.uint8_array(np.frombuffer(data, dtype=np.uint8)), is_dense=dense)


def test_reordered_fields_with_padding(types):
    # 32-byte points: intensity@0, z@8, x@16, y@20, ring(u16)@26, rest padding
    pts = [(1.5, -2.0, 3.25, 0.75, 7), (4.0, 5.0, -6.0, 0.5, 63)]
    data = b""
    for x, y, z, i, ring in pts:
        buf = bytearray(b"\xee" * 32)
        struct.pack_into("<f", buf, 0, i)
        struct.pack_into("<f", buf, 8, z)
        struct.pack_into("<ff", buf, 16, x, y)
        struct.pack_into("<H", buf, 26, ring)
        data += bytes(buf)
    fields = [("intensity", 0, F32, 1), ("z", 8, F32, 1), ("x", 16, F32, 1),
              ("y", 20, F32, 1), ("ring", 26, U16, 1)]
    cloud = pointcloud2_to_cloud(raw_cloud(types, fields, data, 32, 2))
    np.testing.assert_array_equal(cloud.xyz, [p[:3] for p in pts])
    np.testing.assert_array_equal(cloud.intensity, [0.75, 0.5])
    np.testing.assert_array_equal(cloud.extra["ring"], [7, 63])
    assert cloud.extra["ring"].dtype == np.uint16
    assert (cloud.stamp, cloud.frame_id) == (3 * 10 ** 9 + 4, "lidar")


def test_float64_xyz_big_endian(types):
    pts = [(1.0 / 3, 2.5, -1e3), (0.1, 0.2, 0.3)]
    data = b"".join(struct.pack(">dddxxxxf", x, y, z, 9.5) for x, y, z in pts)
    fields = [("x", 0, F64, 1), ("y", 8, F64, 1), ("z", 16, F64, 1), ("intensity", 28, F32, 1)]
    msg = raw_cloud(types, fields, data, 32, 2, bigendian=True)
    arr = pointcloud2_to_numpy(msg)
    assert arr.dtype.names == ("x", "y", "z", "intensity")
    assert arr["x"].dtype == np.float64 and arr["x"].dtype.isnative
    np.testing.assert_array_equal(arr["x"], [1.0 / 3, 0.1])
    np.testing.assert_array_equal(arr["intensity"], [9.5, 9.5])
    cloud = pointcloud2_to_cloud(msg)
    np.testing.assert_array_equal(cloud.xyz, np.array(pts, dtype=np.float32))


def test_nan_points_not_dense(types):
    pts = [(1, 2, 3), (NAN, NAN, NAN), (4, NAN, 6), (7, 8, 9)]
    data = b"".join(struct.pack("<fff", *p) for p in pts)
    fields = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)]
    msg = raw_cloud(types, fields, data, 12, 4, dense=False)
    np.testing.assert_array_equal(pointcloud2_to_cloud(msg).xyz, [(1, 2, 3), (7, 8, 9)])
    kept = pointcloud2_to_cloud(msg, drop_nan=False)
    assert len(kept) == 4 and np.isnan(kept.xyz[1]).all() and np.isnan(kept.xyz[2, 1])
    assert cloud_to_pointcloud2(kept, types).is_dense is False


def test_organised_cloud_with_row_padding(types):
    # 2 x 3 organised cloud, rows padded to 40 bytes (3 * 12 + 4)
    rows = [[(r, c, r * 10 + c) for c in range(3)] for r in range(2)]
    data = b"".join(b"".join(struct.pack("<fff", *p) for p in row) + b"\x99" * 4
                    for row in rows)
    fields = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)]
    msg = raw_cloud(types, fields, data, 12, 3, height=2, row_step=40)
    cloud = pointcloud2_to_cloud(msg, drop_nan=False)
    np.testing.assert_array_equal(cloud.xyz, [p for row in rows for p in row])
    organised = pointcloud2_to_numpy(msg, organized=True)
    assert organised.shape == (2, 3)
    np.testing.assert_array_equal(organised["z"], [[0, 1, 2], [10, 11, 12]])


def test_rgb_label_and_feature_fields(types):
    # rgb as PCL packed float, label uint32, features interleaved (non-contiguous)
    pts = [((1, 2, 3), (255, 128, 1), 17, (0.5, -1.0, 2.0)),
           ((4, 5, 6), (0, 10, 250), 3, (1.5, 0.25, -3.0))]
    data = b""
    for xyz, (r, g, b), label, (f0, f1, f2) in pts:
        rgb_bits = struct.unpack("<f", struct.pack("<I", (r << 16) | (g << 8) | b))[0]
        data += struct.pack("<fffffIfxxxxff", *xyz, f1, rgb_bits, label, f0, f2, 0.0)[:40]
    fields = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("feature_1", 12, F32, 1),
              ("rgb", 16, F32, 1), ("label", 20, U32, 1), ("feature_0", 24, F32, 1),
              ("feature_2", 32, F32, 1)]
    cloud = pointcloud2_to_cloud(raw_cloud(types, fields, data, 40, 2))
    np.testing.assert_array_equal(cloud.rgb, [p[1] for p in pts])
    np.testing.assert_array_equal(cloud.label, [17, 3])
    assert cloud.label.dtype == np.int32
    np.testing.assert_array_equal(cloud.feature, [p[3] for p in pts])
    assert cloud.extra == {}


def test_rgba_uint32_and_feature_block(types):
    data = b"".join(struct.pack("<fffI4f", i, 0, 0, (0x7F << 24) | (i << 16) | (2 << 8) | 3,
                                i, i + 0.5, i + 1, i + 1.5) for i in range(3))
    fields = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("rgba", 12, U32, 1),
              ("feature", 16, F32, 4)]
    cloud = pointcloud2_to_cloud(raw_cloud(types, fields, data, 32, 3))
    np.testing.assert_array_equal(cloud.rgb, [[i, 2, 3] for i in range(3)])
    np.testing.assert_array_equal(cloud.feature[2], [2, 2.5, 3, 3.5])


@pytest.mark.parametrize("fields, data_len, match", [
    ([("x", 0, F32, 1), ("y", 4, F32, 1)], 12, "no 'z' field"),
    ([("x", 0, F32, 1), ("x", 4, F32, 1), ("z", 8, F32, 1)], 12, "appears twice"),
    ([("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 10, F32, 1)], 12, "overruns point_step"),
    ([("x", 0, 9, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)], 12, "unknown datatype"),
    ([("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)], 11, "expected row_step"),
    ([("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 0)], 12, "count 0"),
])
def test_malformed_clouds(types, fields, data_len, match):
    msg = raw_cloud(types, fields, b"\0" * data_len, 12, 1)
    with pytest.raises(ConversionError, match=match):
        pointcloud2_to_cloud(msg)


def test_row_step_and_label_range_errors():
    fields = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1)]
    with pytest.raises(ConversionError, match="row_step 20 < width"):
        pointcloud2_to_cloud(raw_cloud(RB, fields, b"\0" * 20, 12, 2, row_step=20))
    fields.append(("label", 12, U32, 1))
    with pytest.raises(ConversionError, match="exceed int32"):
        pointcloud2_to_cloud(raw_cloud(RB, fields, b"\0" * 12 + struct.pack("<I", 2 ** 31),
                                       16, 1))


def test_writer_layout_decoded_with_struct(types):
    cloud = PointCloud(stamp=7, frame_id="base_link",
                       xyz=[[1, 2, 3], [-4, 5.5, 6]], intensity=[0.25, 8],
                       rgb=[[255, 0, 16], [1, 2, 3]], label=[0, 19],
                       feature=[[0.5, 1.5], [2.5, 3.5]],
                       extra={"ring": np.array([3, 4], np.uint16),
                              "t": np.array([[1.0, 2.0], [3.0, 4.0]])})
    msg = cloud_to_pointcloud2(cloud, types)
    offsets = {f.name: (f.offset, f.datatype, f.count) for f in msg.fields}
    assert offsets == {"x": (0, F32, 1), "y": (4, F32, 1), "z": (8, F32, 1),
                       "intensity": (12, F32, 1), "rgb": (16, F32, 1), "label": (20, U32, 1),
                       "feature_0": (24, F32, 1), "feature_1": (28, F32, 1),
                       "ring": (32, U16, 1), "t": (34, F64, 2)}
    assert msg.point_step == 50 and msg.row_step == 100 and msg.width == 2
    assert msg.height == 1 and not msg.is_bigendian and msg.is_dense
    raw = bytes(msg.data)
    for k in range(2):
        p = raw[k * 50:(k + 1) * 50]
        assert struct.unpack_from("<ffff", p, 0) == (*cloud.xyz[k], cloud.intensity[k])
        r, g, b = cloud.rgb[k]
        assert struct.unpack_from("<I", p, 16)[0] == (int(r) << 16) | (int(g) << 8) | int(b)
        assert struct.unpack_from("<I", p, 20)[0] == cloud.label[k]
        assert struct.unpack_from("<ff", p, 24) == tuple(cloud.feature[k])
        assert struct.unpack_from("<H", p, 32)[0] == cloud.extra["ring"][k]
        assert struct.unpack_from("<dd", p, 34) == tuple(cloud.extra["t"][k])
    back = pointcloud2_to_cloud(msg)
    for name in ("xyz", "intensity", "rgb", "label", "feature"):
        np.testing.assert_array_equal(getattr(back, name), getattr(cloud, name))
    np.testing.assert_array_equal(back.extra["t"], cloud.extra["t"])
    assert (back.stamp, back.frame_id) == (7, "base_link")


def test_writer_rejects_unrepresentable_columns():
    xyz = np.zeros((2, 3))
    with pytest.raises(ConversionError, match="int64"):
        cloud_to_pointcloud2(PointCloud(0, "f", xyz, extra={"id": np.arange(2)}), RB)
    with pytest.raises(ConversionError, match="collides"):
        cloud_to_pointcloud2(PointCloud(0, "f", xyz, extra={"feature_0": np.zeros(2)}), RB)


def test_real_kitti_scan_exact(shared_data, types):
    path = shared_data / "kitti/object/velodyne/000000.bin"
    raw = path.read_bytes()
    pts = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    fields = [("x", 0, F32, 1), ("y", 4, F32, 1), ("z", 8, F32, 1), ("intensity", 12, F32, 1)]
    msg = raw_cloud(types, fields, raw, 16, len(pts), dense=True)
    cloud = pointcloud2_to_cloud(msg)
    assert len(cloud) == len(pts) > 100_000
    np.testing.assert_array_equal(cloud.xyz, pts[:, :3])
    np.testing.assert_array_equal(cloud.intensity, pts[:, 3])
    out = cloud_to_pointcloud2(cloud, types)
    assert bytes(out.data) == raw  # same x,y,z,intensity packed layout: identical bytes
    assert [(f.name, f.offset, f.datatype) for f in out.fields] == [f[:3] for f in fields]


def test_rosbags_cdr_round_trip(shared_data):
    store = rosbags_typestore()
    pts = np.fromfile(shared_data / "kitti/object/velodyne/000001.bin", "<f4").reshape(-1, 4)
    cloud = PointCloud(10 ** 18 + 5, "velodyne", pts[:, :3], intensity=pts[:, 3],
                       label=np.arange(len(pts)) % 20)
    msg = cloud_to_pointcloud2(cloud, RB)
    back = store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/PointCloud2"),
                                 "sensor_msgs/msg/PointCloud2")
    got = pointcloud2_to_cloud(back)
    np.testing.assert_array_equal(got.xyz, cloud.xyz)
    np.testing.assert_array_equal(got.label, cloud.label)
    assert got.stamp == 10 ** 18 + 5 and not math.isnan(got.intensity.sum())


def test_label_is_written_as_pcl_uint32_and_negative_labels_are_refused(types):
    # PCL's PointXYZL / PointXYZRGBL declare `uint32 label`; pcl::fromROSMsg matches datatypes
    big = PointCloud(stamp=1, frame_id="f", xyz=np.zeros((2, 3)), label=[7, 2 ** 31 - 1])
    msg = cloud_to_pointcloud2(big, types)
    (field,) = [f for f in msg.fields if f.name == "label"]
    assert (field.datatype, field.count) == (U32, 1)
    assert struct.unpack_from("<I", bytes(msg.data), msg.point_step + field.offset)[0] \
        == 2 ** 31 - 1
    with pytest.raises(ConversionError, match="uint32 label"):
        cloud_to_pointcloud2(PointCloud(stamp=1, frame_id="f", xyz=np.zeros((2, 3)),
                                        label=[3, -1]), types)

"""Image conversions: every encoding both ways, padding, byte order, real 7-Scenes frames."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fit3d_ros.msgs import (
    ConversionError,
    depth_to_image,
    image_to_depth,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    rosbags_types,
    rosbags_typestore,
)

RB = rosbags_types()


def raw_image(types, height, width, encoding, data: bytes, step, bigendian=0):
    """An Image built field by field from hand-made bytes (independent of the encoder)."""
    hdr = types.Header(stamp=types.Time(sec=1, nanosec=2), frame_id="cam")
    return types.Image(header=hdr, height=height, width=width, encoding=encoding,
                       is_bigendian=bigendian, step=step,
                       data=types.uint8_array(np.frombuffer(data, dtype=np.uint8)))


ENCODINGS = [  # encoding, dtype, channels
    ("rgb8", np.uint8, 3), ("bgr8", np.uint8, 3), ("rgba8", np.uint8, 4),
    ("bgra8", np.uint8, 4), ("mono8", np.uint8, 1), ("mono16", np.uint16, 1),
    ("16UC1", np.uint16, 1), ("32FC1", np.float32, 1), ("8UC1", np.uint8, 1),
    ("8UC3", np.uint8, 3), ("8SC2", np.int8, 2), ("16UC4", np.uint16, 4),
    ("16SC1", np.int16, 1), ("32SC1", np.int32, 1), ("32FC3", np.float32, 3),
    ("64FC2", np.float64, 2), ("32FC384", np.float32, 384),
]


@pytest.mark.parametrize("encoding, dtype, channels", ENCODINGS)
def test_every_encoding_round_trips(types, encoding, dtype, channels):
    rng = np.random.default_rng(len(encoding) + channels)
    h, w = 5, 7
    shape = (h, w) if channels == 1 else (h, w, channels)
    if np.dtype(dtype).kind == "f":
        arr = rng.normal(size=shape).astype(dtype)
    else:
        info = np.iinfo(dtype)
        arr = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    msg = numpy_to_image(arr, encoding, 1_700_000_000_123_456_789, "cam", types)
    # closed form of the wire layout: little-endian, tightly packed rows
    assert msg.step == w * channels * np.dtype(dtype).itemsize
    assert bytes(msg.data) == arr.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
    assert (msg.height, msg.width, msg.encoding, msg.is_bigendian) == (h, w, encoding, 0)
    assert msg.header.stamp.sec == 1_700_000_000 and msg.header.stamp.nanosec == 123_456_789
    back = image_to_numpy(msg)
    assert back.dtype == dtype and back.shape == shape
    np.testing.assert_array_equal(back, arr)


def test_row_padding_via_step(types):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    pad = b"\xab" * 7
    data = b"".join(rgb[r].tobytes() + pad for r in range(2))
    msg = raw_image(types, 2, 3, "rgb8", data, step=9 + 7)
    np.testing.assert_array_equal(image_to_numpy(msg), rgb)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_big_endian_16bit_and_float(types):
    depth = np.array([[0, 1, 258], [65535, 1000, 4096]], dtype=np.uint16)
    data = b"".join(int(v).to_bytes(2, "big") for v in depth.ravel())
    msg = raw_image(types, 2, 3, "16UC1", data, step=6, bigendian=1)
    np.testing.assert_array_equal(image_to_numpy(msg), depth)
    got = image_to_depth(msg)
    assert np.isnan(got[0, 0])
    np.testing.assert_array_equal(got[depth > 0], depth[depth > 0].astype(np.float32) / 1000)
    feats = np.arange(12, dtype=np.float32).reshape(1, 2, 6) / 7
    msg = raw_image(types, 1, 2, "32FC6", feats.astype(">f4").tobytes() + b"\0" * 4,
                    step=52, bigendian=1)
    np.testing.assert_array_equal(image_to_numpy(msg), feats)


def test_colour_conversions_by_hand(types):
    bgr = np.array([[[10, 20, 30], [40, 50, 60]]], dtype=np.uint8)
    msg = raw_image(types, 1, 2, "bgr8", bgr.tobytes(), step=6)
    np.testing.assert_array_equal(image_to_rgb(msg), [[[30, 20, 10], [60, 50, 40]]])
    msg = raw_image(types, 1, 2, "bgra8", bytes([1, 2, 3, 255, 4, 5, 6, 0]), step=8)
    np.testing.assert_array_equal(image_to_rgb(msg), [[[3, 2, 1], [6, 5, 4]]])
    msg = raw_image(types, 1, 2, "rgba8", bytes([1, 2, 3, 255, 4, 5, 6, 0]), step=8)
    np.testing.assert_array_equal(image_to_rgb(msg), [[[1, 2, 3], [4, 5, 6]]])
    msg = raw_image(types, 1, 2, "mono8", bytes([7, 200]), step=2)
    np.testing.assert_array_equal(image_to_rgb(msg), [[[7, 7, 7], [200, 200, 200]]])
    msg = raw_image(types, 1, 1, "mono16", (0x1234).to_bytes(2, "little"), step=2)
    np.testing.assert_array_equal(image_to_rgb(msg), [[[0x12, 0x12, 0x12]]])


def test_depth_conventions(types):
    d = np.array([[1.2344, 1.2346, np.nan], [0.0, -1.0, 65.535]], dtype=np.float32)
    msg = depth_to_image(d, 0, "depth", types)
    assert msg.encoding == "16UC1"
    np.testing.assert_array_equal(image_to_numpy(msg), [[1234, 1235, 0], [0, 0, 65535]])
    back = image_to_depth(msg)
    np.testing.assert_array_equal(np.isnan(back), [[False, False, True], [True, True, False]])
    f = np.array([[1.5, 0.0, np.inf, np.nan, -2.0]], dtype=np.float32)
    msg = depth_to_image(f, 0, "depth", types, encoding="32FC1")
    back = image_to_depth(msg)
    assert back[0, 0] == np.float32(1.5) and np.isnan(back[0, 1:]).all()
    with pytest.raises(ConversionError, match="65.535"):
        depth_to_image(np.full((1, 1), 70.0), 0, "depth", types)
    with pytest.raises(ConversionError, match="16UC1 or 32FC1"):
        depth_to_image(np.ones((1, 1)), 0, "depth", types, encoding="8UC1")
    with pytest.raises(ConversionError, match="float"):
        depth_to_image(np.ones((1, 1), dtype=np.uint16), 0, "depth", types)


@pytest.mark.parametrize("encoding", ["yuv422", "bayer_rggb8", "32FC0", "16FC1", ""])
def test_unknown_encodings(encoding):
    msg = raw_image(RB, 1, 1, encoding, b"\0" * 4, step=4)
    with pytest.raises(ConversionError, match="encoding"):
        image_to_numpy(msg)


def test_size_and_step_mismatch(types):
    with pytest.raises(ConversionError, match="expected step\\*height"):
        image_to_numpy(raw_image(types, 2, 2, "rgb8", b"\0" * 11, step=6))
    with pytest.raises(ConversionError, match="step 5 < width"):
        image_to_numpy(raw_image(types, 2, 2, "rgb8", b"\0" * 10, step=5))
    with pytest.raises(ConversionError, match="not a colour"):
        image_to_rgb(raw_image(types, 1, 1, "16UC1", b"\0" * 2, step=2))
    with pytest.raises(ConversionError, match="not a depth"):
        image_to_depth(raw_image(types, 1, 1, "rgb8", b"\0" * 3, step=3))
    with pytest.raises(ConversionError, match="does not match"):
        numpy_to_image(np.zeros((2, 2, 3), np.float32), "rgb8", 0, "c", types)
    with pytest.raises(ConversionError, match="does not fit"):
        numpy_to_image(np.zeros((2, 2, 4), np.uint8), "rgb8", 0, "c", types)


def test_real_7scenes_frame_round_trips(shared_data, types):
    root = shared_data / "rgbd/7scenes"
    rgb = np.asarray(Image.open(root / "frame-000000.color.jpg").convert("RGB"))
    depth_mm = np.asarray(Image.open(root / "frame-000000.depth.png")).astype(np.uint16)
    msg = numpy_to_image(rgb, "rgb8", 5, "kinect_rgb", types)
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    bgr = numpy_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", 5, "k", types)
    np.testing.assert_array_equal(image_to_rgb(bgr), rgb)
    dmsg = numpy_to_image(depth_mm, "16UC1", 5, "kinect_depth", types)
    metres = image_to_depth(dmsg)
    np.testing.assert_array_equal(np.isnan(metres), depth_mm == 0)
    again = depth_to_image(metres, 5, "kinect_depth", types)
    assert bytes(again.data) == bytes(dmsg.data)  # millimetres exactly


def test_rosbags_cdr_serialisation_round_trip():
    store = rosbags_typestore()
    feats = np.random.default_rng(1).normal(size=(2, 3, 384)).astype(np.float32)
    for arr, enc in ((feats, "32FC384"), (np.arange(12, dtype=np.uint16).reshape(3, 4),
                                          "16UC1")):
        msg = numpy_to_image(arr, enc, 42, "cam", RB)
        raw = store.serialize_cdr(msg, "sensor_msgs/msg/Image")
        back = store.deserialize_cdr(raw, "sensor_msgs/msg/Image")
        np.testing.assert_array_equal(image_to_numpy(back), arr)
        assert back.header.frame_id == "cam" and back.header.stamp.nanosec == 42

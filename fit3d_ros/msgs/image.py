"""``sensor_msgs/Image`` ⇄ numpy (colour, depth and multi-channel feature images).

Design note: decoding is one zero-copy view of the byte buffer — rows of ``step`` bytes,
the first ``width * channels * itemsize`` of each kept (row padding dropped), the
element dtype taken with the message's byte order (``is_bigendian``) — then a single copy
into a native-order array, so the result never aliases message memory. Depth
convention (REP 117 / 118): ``16UC1`` is millimetres, ``32FC1``/``64FC1`` metres; on
decode every "no return" (0, NaN, ±inf, negative) becomes NaN, on encode NaN becomes
0 mm. Millimetres are rounded half-to-even (``np.rint``). ``32FC<N>`` with large N carries
dense ViT feature maps (f_l^2D) between nodes.
"""
from __future__ import annotations

import re

import numpy as np

from .types import ConversionError, MsgTypes, header, message_bytes

# encoding -> (numpy dtype, channels) for the named encodings (sensor_msgs image_encodings)
_NAMED: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "mono8": ("u1", 1), "mono16": ("u2", 1),
    "rgb16": ("u2", 3), "bgr16": ("u2", 3), "rgba16": ("u2", 4), "bgra16": ("u2", 4),
}
_CV_DEPTHS = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4",
              "32F": "f4", "64F": "f8"}
_CV_RE = re.compile(r"^(8U|8S|16U|16S|32S|32F|64F)C(\d+)$")
MM_PER_M = 1000.0


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(element dtype, channels) of an Image encoding; ConversionError if unsupported."""
    enc = str(encoding)
    if enc in _NAMED:
        code, channels = _NAMED[enc]
        return np.dtype(code), channels
    m = _CV_RE.match(enc.upper())
    if m is None:
        raise ConversionError(f"unsupported image encoding {enc!r} (supported: "
                              f"{', '.join(_NAMED)}, 8U|8S|16U|16S|32S|32F|64F C<N>)")
    channels = int(m.group(2))
    if channels < 1:
        raise ConversionError(f"image encoding {enc!r} has no channels")
    return np.dtype(_CV_DEPTHS[m.group(1)]), channels


def image_to_numpy(msg) -> np.ndarray:
    """Pixels of an Image as (H,W) or (H,W,C) in the encoding's dtype (native order)."""
    dtype, channels = encoding_layout(msg.encoding)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h < 0 or w < 0:
        raise ConversionError(f"image size {w}x{h} is negative")
    dtype = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ConversionError(f"image step {step} < width*channels*itemsize = {row_bytes} "
                              f"({msg.encoding}, width {w})")
    data = message_bytes(msg.data)
    if data.size != step * h:
        raise ConversionError(f"image data has {data.size} bytes, expected step*height = "
                              f"{step}*{h} = {step * h} ({msg.encoding} {w}x{h})")
    rows = data.reshape(h, step)[:, :row_bytes]
    pixels = rows.view(dtype).reshape(h, w, channels)
    out = pixels.astype(dtype.newbyteorder("="), copy=True)
    return out[..., 0] if channels == 1 else out


def image_to_rgb(msg) -> np.ndarray:
    """(H,W,3) uint8 RGB from rgb8/bgr8/rgba8/bgra8/mono8 (and mono16, scaled by 1/256)."""
    enc = str(msg.encoding)
    if enc not in ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16"):
        raise ConversionError(f"image encoding {enc!r} is not a colour encoding "
                              "(rgb8, bgr8, rgba8, bgra8, mono8, mono16)")
    px = image_to_numpy(msg)
    if enc == "mono16":
        px = (px >> 8).astype(np.uint8)
    if px.ndim == 2:
        return np.repeat(px[:, :, None], 3, axis=2)
    if enc.startswith("bgr"):
        return np.ascontiguousarray(px[:, :, 2::-1])
    return np.ascontiguousarray(px[:, :, :3])


def image_to_depth(msg) -> np.ndarray:
    """(H,W) float32 metres from 16UC1 (mm) or 32FC1/64FC1 (m); no return -> NaN."""
    enc = str(msg.encoding).upper()
    if enc not in ("16UC1", "32FC1", "64FC1"):
        raise ConversionError(f"image encoding {msg.encoding!r} is not a depth encoding "
                              "(16UC1 millimetres, 32FC1 metres)")
    px = image_to_numpy(msg)
    if enc == "16UC1":
        depth = px.astype(np.float32) / np.float32(MM_PER_M)
    else:
        depth = px.astype(np.float32)
    with np.errstate(invalid="ignore"):
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
    return depth


def numpy_to_image(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                   types: MsgTypes):
    """An Image of `array` ((H,W) or (H,W,C), dtype matching `encoding`), little-endian."""
    dtype, channels = encoding_layout(encoding)
    a = np.asarray(array)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != channels:
        raise ConversionError(f"array of shape {np.shape(array)} does not fit encoding "
                              f"{encoding!r} ({channels} channel(s))")
    if a.dtype.kind != dtype.kind or a.dtype.itemsize != dtype.itemsize:
        raise ConversionError(f"array dtype {a.dtype} does not match encoding {encoding!r} "
                              f"({dtype}); cast it explicitly first")
    h, w = a.shape[:2]
    data = np.ascontiguousarray(a, dtype=dtype.newbyteorder("<"))
    return types.Image(header=header(stamp_ns, frame_id, types), height=h, width=w,
                       encoding=encoding, is_bigendian=0,
                       step=w * channels * dtype.itemsize,
                       data=types.uint8_array(data.view(np.uint8)))


def depth_to_image(depth_m: np.ndarray, stamp_ns: int, frame_id: str, types: MsgTypes,
                   encoding: str = "16UC1"):
    """A depth Image from (H,W) metres: 16UC1 rounds to mm (NaN/<=0 -> 0), 32FC1 as is."""
    d = np.asarray(depth_m)
    if d.ndim != 2 or d.dtype.kind != "f":
        raise ConversionError(f"depth must be a (H,W) float array in metres, got "
                              f"{d.dtype} {d.shape}")
    enc = encoding.upper()
    if enc == "32FC1":
        return numpy_to_image(d.astype(np.float32), "32FC1", stamp_ns, frame_id, types)
    if enc != "16UC1":
        raise ConversionError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")
    mm = d.astype(np.float64) * MM_PER_M
    with np.errstate(invalid="ignore"):
        mm[~((mm > 0) & (mm < np.inf))] = 0.0  # NaN, inf, <= 0: no return
    np.rint(mm, out=mm)
    if mm.max(initial=0.0) > np.iinfo(np.uint16).max:
        raise ConversionError(f"depth {float(np.nanmax(d)):.3f} m exceeds the 16UC1 range "
                              "(65.535 m); use encoding='32FC1'")
    return numpy_to_image(mm.astype(np.uint16), "16UC1", stamp_ns, frame_id, types)

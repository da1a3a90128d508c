"""Dense feature maps (h, w, C) ⇄ ``sensor_msgs/Image`` that standard tools decode for any C.

Design note: ``32FC<C>`` is a valid encoding, but cv_bridge derives the channel count
through OpenCV's type mask (``CV_CN_MAX`` = 512): ``32FC768`` decodes as 256 channels
and ``32FC1536`` as 512, silently wrong. Features are therefore published
**channel-major** as one ``32FC1`` image of ``C·h`` rows and ``w`` columns (channel c's
plane is rows ``c·h … c·h+h-1``), which every Image decoder reads correctly and which
views as a stack of per-channel maps. The channel count travels beside it on the latched
``~/features/info`` topic (``std_msgs/String`` JSON, `feature_info`), independent of
``frame_id``. `features_from_msg` reassembles (h, w, C); it also reads the plain
``32FC<C>`` form (C ≤ 512) that other publishers use.
"""
from __future__ import annotations

import json
from typing import Any, Iterable

import numpy as np

from .image import encoding_layout, image_to_numpy, numpy_to_image
from .types import ConversionError, MsgTypes

LAYOUT = "channel_major_32FC1"
CV_CN_MAX = 512  # OpenCV's channel limit (cv_bridge decodes 32FC<N> through it)


def features_to_msg(feats: np.ndarray, stamp_ns: int, frame_id: str, types: MsgTypes):
    """A ``32FC1`` Image of (h, w, C) float32 features, channel-major (C·h rows × w)."""
    a = np.asarray(feats)
    if a.ndim != 3 or a.dtype != np.float32:
        raise ConversionError(f"features must be (h, w, C) float32, got {a.dtype} {a.shape}")
    h, w, c = a.shape
    planes = np.ascontiguousarray(a.transpose(2, 0, 1)).reshape(c * h, w)
    return numpy_to_image(planes, "32FC1", stamp_ns, frame_id, types)


def feature_info(channels: int, height: int, width: int, **extra: Any) -> str:
    """The JSON of ``~/features/info``: layout, channel count, grid (and `extra` keys)."""
    return json.dumps({"layout": LAYOUT, "channels": int(channels), "height": int(height),
                       "width": int(width), **extra})


def features_from_msg(msg, channels: int | str | None = None) -> np.ndarray:
    """(h, w, C) float32 features of a ``~/features`` Image.

    `channels`: the channel count C (or the ``~/features/info`` JSON); needed for the
    channel-major ``32FC1`` form, checked against ``32FC<C>`` messages when given.
    """
    if isinstance(channels, str):
        info = json.loads(channels)
        if info.get("layout") != LAYOUT:
            raise ConversionError(f"unknown feature layout {info.get('layout')!r}")
        channels = int(info["channels"])
    dtype, n = encoding_layout(msg.encoding)
    if dtype.kind != "f":
        raise ConversionError(f"feature image encoding {msg.encoding!r} is not float")
    px = image_to_numpy(msg).astype(np.float32, copy=False)
    if n > 1 or channels in (None, 1):
        if channels is not None and channels != n:
            raise ConversionError(f"feature image has {n} channels, expected {channels}")
        return px.reshape(px.shape[0], px.shape[1], n)
    rows, w = px.shape
    if channels < 1 or rows % channels:
        raise ConversionError(f"channel-major feature image of {rows} rows cannot hold "
                              f"{channels} channels")
    return np.ascontiguousarray(px.reshape(channels, rows // channels, w).transpose(1, 2, 0))


def features_from_msgs(msgs: Iterable[Any], channels: int | str | None = None
                       ) -> list[np.ndarray]:
    """`features_from_msg` of each message (one stream's feature images)."""
    return [features_from_msg(m, channels) for m in msgs]

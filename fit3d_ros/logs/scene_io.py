"""Read a bag back as typed data: clouds, camera frames, RGB-D frames with TF poses.

Design note: `replay` walks the bag in log order like a live node would, feeding every
``tf2_msgs/TFMessage`` (``/tf_static`` as static) into a `TransformBuffer` *before* the
other messages of the same log time, so a sensor message sees exactly the transforms
published up to its stamp (and a KITTI frame its own re-published calibration). Every
message conversion failure is re-raised as `BagError` naming the bag, topic and
per-topic message index. RGB-D frames pair colour and depth images by exact header stamp
(what the converters write); unsynchronised live streams belong to `sensors.sync`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..msgs import (camera_info_to_model, image_to_depth, image_to_rgb, pointcloud2_to_cloud,
                    stamp_to_ns, tf_message_to_transforms)
from ..sensors.camera import CameraModel
from ..sensors.frames import PointCloud, RGBDFrame
from ..sensors.tf_buffer import ExtrapolationException, TransformBuffer, TransformError
from .bag import BagError, BagMessage, BagReader
from .convert import POINTCLOUD2, RGBD_TOPICS, TF_MESSAGE
from .sources import MAP

T = TypeVar("T")


def decode(m: BagMessage, fn: Callable[[Any], T], path: str | Path) -> T:
    """``fn(m.msg)``, with any conversion failure re-raised as BagError naming topic/index."""
    try:
        return fn(m.msg)
    except (ValueError, AttributeError, TypeError, KeyError, IndexError) as exc:
        raise BagError(f"{path}: topic {m.topic} message {m.index} ({m.msgtype}): "
                       f"{type(exc).__name__}: {exc}") from exc


def _tf_topics(bag: BagReader) -> dict[str, bool]:
    """TFMessage topics -> static flag."""
    return {name: name.endswith("tf_static") for name, info in bag.topics.items()
            if info.msgtype == TF_MESSAGE}


def _buffer_for(bag: BagReader) -> TransformBuffer:
    """A buffer whose cache spans the whole bag (no sample is pruned)."""
    return TransformBuffer(cache_time_s=max(10.0, bag.duration_s + 1.0))


def replay(path: str | Path, topics: Iterable[str] | None = None, start_ns: int | None = None,
           stop_ns: int | None = None) -> Iterator[tuple[BagMessage, TransformBuffer]]:
    """(message, TF buffer so far) for messages of ``topics`` (all non-TF when None).

    The buffer is shared and mutated as the replay proceeds; look up what you need
    before advancing.
    """
    with BagReader(path) as bag:
        tf_topics = _tf_topics(bag)
        wanted = None if topics is None else set(topics)
        read = None if wanted is None else sorted(wanted | set(tf_topics))
        buffer = _buffer_for(bag)
        group: list[BagMessage] = []

        def flush() -> Iterator[tuple[BagMessage, TransformBuffer]]:
            for m in group:
                if m.topic in tf_topics:
                    tfs = decode(m, tf_message_to_transforms, path)
                    try:
                        buffer.set_transforms(tfs, static=tf_topics[m.topic])
                    except ValueError as exc:
                        raise BagError(f"{path}: topic {m.topic} message {m.index}: "
                                       f"{exc}") from exc
            for m in group:
                if m.topic not in tf_topics and (wanted is None or m.topic in wanted):
                    yield m, buffer
            group.clear()

        for m in bag.messages(read, start_ns, stop_ns):
            if group and m.log_time_ns != group[0].log_time_ns:
                yield from flush()
            group.append(m)
        yield from flush()


def read_transform_buffer(path: str | Path) -> TransformBuffer:
    """Every transform of the bag's TFMessage topics (``*tf_static`` as static)."""
    with BagReader(path) as bag:
        tf_topics = _tf_topics(bag)
        buffer = _buffer_for(bag)
        if tf_topics:
            for m in bag.messages(sorted(tf_topics)):
                buffer.set_transforms(decode(m, tf_message_to_transforms, path),
                                      static=tf_topics[m.topic])
        return buffer


def read_clouds(path: str | Path, topic: str | None = None) -> Iterator[PointCloud]:
    """Clouds of ``topic`` (every PointCloud2 topic when None), NaN points dropped."""
    with BagReader(path) as bag:
        if topic is None:
            names = sorted(n for n, i in bag.topics.items() if i.msgtype == POINTCLOUD2)
            if not names:
                raise BagError(f"{path}: no {POINTCLOUD2} topic (topics: {sorted(bag.topics)})")
        else:
            names = [topic]
        for m in bag.messages(names):
            yield decode(m, pointcloud2_to_cloud, path)


def _lookup(buffer: TransformBuffer, world: str, frame: str, stamp: int, m: BagMessage,
            path: str | Path):
    try:
        return buffer.lookup(world, frame, stamp)
    except ExtrapolationException:  # frame recorded without a pose (e.g. lost tracking)
        return None
    except TransformError as exc:
        raise BagError(f"{path}: topic {m.topic} message {m.index}: no pose "
                       f"{world}<-{frame} at {stamp}: {exc}") from exc


def read_camera_frames(path: str | Path, image_topic: str, info_topic: str,
                       world_frame: str | None = MAP) -> Iterator[RGBDFrame]:
    """Colour frames of ``image_topic`` with the newest CameraInfo of ``info_topic`` and,
    when ``world_frame`` is given, the camera -> world pose looked up at the image stamp."""
    camera: CameraModel | None = None
    for m, buffer in replay(path, [image_topic, info_topic]):
        if m.topic == info_topic:
            camera = decode(m, camera_info_to_model, path)
            continue
        if camera is None:
            raise BagError(f"{path}: topic {m.topic} message {m.index}: no CameraInfo on "
                           f"{info_topic} before it")
        rgb = decode(m, image_to_rgb, path)
        stamp, frame_id = decode(m, lambda msg: (stamp_to_ns(msg.header.stamp),
                                                 str(msg.header.frame_id)), path)
        pose = None if world_frame is None else _lookup(buffer, world_frame, frame_id, stamp,
                                                        m, path)
        yield decode(m, lambda _: RGBDFrame(stamp, frame_id, rgb, None, camera, pose), path)


def _rgbd_frames(path: str | Path, references: tuple[str, ...], world_frame: str | None,
                 every: int, topics: dict[str, str] | None, start_ns: int | None,
                 stop_ns: int | None) -> Iterator[tuple[RGBDFrame, ...]]:
    """One bag pass: per colour/depth pair (every `every`-th), one frame per reference."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    t = {**RGBD_TOPICS, **(topics or {})}
    cams: dict[str, CameraModel] = {}
    pending: dict[int, dict[str, tuple[BagMessage, np.ndarray]]] = {}
    pairs = 0
    for m, buffer in replay(path, list(t.values()), start_ns, stop_ns):
        kind = next(k for k, v in t.items() if v == m.topic)
        if kind.endswith("_info"):
            cams[kind[:-5]] = decode(m, camera_info_to_model, path)
            continue
        stamp = decode(m, lambda msg: stamp_to_ns(msg.header.stamp), path)
        pixels = decode(m, image_to_rgb if kind == "color" else image_to_depth, path)
        slot = pending.setdefault(stamp, {})
        slot[kind] = (m, pixels)
        if len(slot) < 2:
            continue
        del pending[stamp]
        pairs += 1
        if (pairs - 1) % every:
            continue
        rgb, depth = slot["color"][1], slot["depth"][1]
        out = []
        for reference in references:
            ref_msg = slot[reference][0]
            if reference not in cams:
                raise BagError(f"{path}: topic {ref_msg.topic} message {ref_msg.index}: no "
                               f"CameraInfo on {t[reference + '_info']} before it")
            cam = cams[reference]
            pose = None if world_frame is None else _lookup(buffer, world_frame, cam.frame_id,
                                                            stamp, ref_msg, path)
            out.append(decode(ref_msg, lambda _: RGBDFrame(stamp, cam.frame_id, rgb, depth,
                                                           cam, pose), path))
        yield tuple(out)


def read_rgbd_frames(path: str | Path, reference: str = "depth", world_frame: str | None = MAP,
                     every: int = 1, topics: dict[str, str] | None = None,
                     start_ns: int | None = None, stop_ns: int | None = None
                     ) -> list[RGBDFrame]:
    """RGB-D frames (colour + depth paired by header stamp) with poses from TF.

    ``reference`` picks whose camera model, frame id and pose the frame carries
    (``"depth"`` or ``"color"``; see `datasets` for 7-Scenes' unregistered colour).
    ``topics`` overrides `convert.RGBD_TOPICS` keys (color, color_info, depth, depth_info).
    """
    if reference not in ("depth", "color"):
        raise ValueError(f"reference must be 'depth' or 'color', got {reference!r}")
    return [f for f, in _rgbd_frames(path, (reference,), world_frame, every, topics, start_ns,
                                     stop_ns)]


def read_rgbd_pairs(path: str | Path, world_frame: str | None = MAP, every: int = 1,
                    topics: dict[str, str] | None = None
                    ) -> list[tuple[RGBDFrame, RGBDFrame]]:
    """(depth-referenced, colour-referenced) frames of each RGB-D pair, from one bag pass:
    both cameras' models and poses (what an unregistered colour camera needs)."""
    return list(_rgbd_frames(path, ("depth", "color"), world_frame, every, topics, None, None))

"""``fit3d-ros overlay BAG --out DIR``: the LiDAR-camera calibration check.

Design note: the bag is replayed in log order (``fit3d_ros.logs.scene_io.replay``) so each
cloud is matched with the TF the bag had published by then (a KITTI frame's own
re-published calibration, nuScenes' moving ego pose). For every camera (an Image topic
next to a CameraInfo topic) the image nearest in time to the cloud is used; the
transform is camera(t_image) ← fixed frame ← cloud(t_cloud) when the bag has a fixed
frame (map/odom/world), else camera ← cloud at the cloud stamp. Points are projected
with DITR's frustum test (`fit3d_ros.models.project_points`) and drawn, coloured by
range, onto the image as PNGs; ``--json`` prints ``{"visible_fraction", "per_camera",
"points", ...}`` where ``visible_fraction`` is the share of points seen by at least one
camera.
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fit3d_ros.cli.main import CommandError

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
FIXED_FRAMES = ("map", "odom", "world")


def jet(t: np.ndarray) -> np.ndarray:
    """(N,) values in [0,1] -> (N,3) uint8 'jet' colours (blue = near, red = far)."""
    t = np.clip(np.asarray(t, dtype=np.float32), 0.0, 1.0)[:, None]
    rgb = np.clip(1.5 - np.abs(4.0 * t - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255).astype(np.uint8)


def draw_points(rgb: np.ndarray, uv: np.ndarray, ranges: np.ndarray, max_range: float,
                radius: int = 1) -> np.ndarray:
    """Copy of `rgb` with points (M,2) drawn as squares, near points on top."""
    out = rgb.copy()
    h, w = out.shape[:2]
    order = np.argsort(-ranges)  # far first, near drawn last (on top)
    px = np.floor(uv[order]).astype(np.int64)
    colours = jet(ranges[order] / max_range)
    for dv in range(-radius, radius + 1):  # loop over the square's offsets, not points
        for du in range(-radius, radius + 1):
            u, v = px[:, 0] + du, px[:, 1] + dv
            ok = (u >= 0) & (u < w) & (v >= 0) & (v < h)
            out[v[ok], u[ok]] = colours[ok]
    return out


@dataclass
class _Pending:
    """A cloud waiting for the nearest image of each camera."""

    index: int
    cloud: Any
    best: dict[str, tuple[int, Any]] = field(default_factory=dict)  # topic -> (|dt|, image msg)
    done: set[str] = field(default_factory=set)


def camera_topics(topics: dict[str, Any]) -> dict[str, str]:
    """Image topic -> CameraInfo topic, for images next to a camera_info."""
    pairs = {}
    for name, info in topics.items():
        if info.msgtype != CAMERA_INFO:
            continue
        ns = name.rsplit("/", 1)[0]
        for leaf in ("image_raw", "image_rect_color", "image_color", "image_rect", "image"):
            cand = f"{ns}/{leaf}"
            if cand in topics and topics[cand].msgtype == IMAGE:
                pairs[cand] = name
                break
    return pairs


def _transform(buffer, cam_frame: str, cloud_frame: str, t_img: int, t_cloud: int) -> np.ndarray:
    # costly: `fit3d-ros --help` imports this module; fit3d_ros.sensors costs ~20 ms
    from fit3d_ros.sensors.tf_buffer import TransformError
    for fixed in FIXED_FRAMES:  # motion-compensated through a fixed frame when there is one
        if fixed in buffer.frames():
            try:
                a = buffer.lookup(cam_frame, fixed, t_img).matrix
                return a @ buffer.lookup(fixed, cloud_frame, t_cloud).matrix
            except TransformError:
                break
    return buffer.lookup(cam_frame, cloud_frame, t_cloud).matrix


class OverlayJob:
    """State of one overlay run (see :func:`run_overlay`)."""

    def __init__(self, out: Path, cameras: dict[str, str], max_range: float,
                 max_dt_ns: int) -> None:
        self.out, self.cameras = out, cameras
        self.max_range, self.max_dt_ns = max_range, max_dt_ns
        self.infos: dict[str, Any] = {}
        self.last_image: dict[str, Any] = {}
        self.pending: list[_Pending] = []
        self.points = 0
        self.seen_any = 0
        self.seen: dict[str, int] = {t: 0 for t in cameras}
        self.written: list[str] = []
        self.skipped: list[str] = []
        self.clouds = 0
        self._frames: dict[int, np.ndarray] = {}

    def _consider(self, p: _Pending, topic: str, img_msg: Any, stamp: int) -> None:
        dt = abs(stamp - p.cloud.stamp)
        if dt <= self.max_dt_ns and (topic not in p.best or dt < p.best[topic][0]):
            p.best[topic] = (dt, img_msg)

    def on_cloud(self, cloud: Any, buffer: Any) -> None:
        p = _Pending(self.clouds, cloud)
        self.clouds += 1
        self.points += len(cloud)
        self._frames[p.index] = np.zeros(len(cloud), dtype=bool)
        for topic, (msg, stamp) in self.last_image.items():
            self._consider(p, topic, msg, stamp)
            if stamp == cloud.stamp:
                self._finish(p, topic, buffer)
        self.pending.append(p)
        self._retire()

    def on_image(self, topic: str, msg: Any, stamp: int, buffer: Any) -> None:
        self.last_image[topic] = (msg, stamp)
        for p in self.pending:
            if topic in p.done:
                continue
            self._consider(p, topic, msg, stamp)
            if stamp >= p.cloud.stamp:  # later images only get farther away
                self._finish(p, topic, buffer)
        self._retire()

    def flush(self, buffer: Any) -> None:
        for p in self.pending:
            for topic in self.cameras:
                if topic not in p.done:
                    self._finish(p, topic, buffer)
        self._retire()

    def _retire(self) -> None:
        keep = []
        for p in self.pending:
            if p.done >= set(self.cameras):
                self.seen_any += int(self._frames.pop(p.index).sum())
            else:
                keep.append(p)
        self.pending = keep

    def _finish(self, p: _Pending, topic: str, buffer: Any) -> None:
        # costly: `fit3d-ros --help` imports this module; these load torch, msgs, sensors
        from fit3d_ros.models import project_points
        from fit3d_ros.msgs import image_to_rgb, stamp_to_ns
        from fit3d_ros.sensors.tf_buffer import TransformError
        p.done.add(topic)
        info = self.infos.get(self.cameras[topic])
        if topic not in p.best or info is None:
            self.skipped.append(f"frame {p.index} {topic}: no image/CameraInfo near the cloud")
            return
        msg = p.best[topic][1]
        rgb = image_to_rgb(msg)
        cam = info if (info.width, info.height) == (rgb.shape[1], rgb.shape[0]) \
            else info.scaled(rgb.shape[1], rgb.shape[0])
        frame = cam.frame_id or str(msg.header.frame_id)
        try:
            T = _transform(buffer, frame, p.cloud.frame_id, stamp_to_ns(msg.header.stamp),
                           p.cloud.stamp)
        except TransformError as exc:
            self.skipped.append(f"frame {p.index} {topic}: no TF {frame}<-{p.cloud.frame_id}: "
                                f"{exc}")
            return
        proj = project_points(p.cloud.xyz, [cam], [T], 1)
        vis = proj.visible[:, 0]
        self._frames[p.index] |= vis
        self.seen[topic] += int(vis.sum())
        ranges = np.linalg.norm(p.cloud.xyz[vis], axis=1)
        img = draw_points(rgb, proj.uv[vis, 0], ranges, self.max_range)
        name = re.sub(r"[^A-Za-z0-9]+", "_", topic).strip("_")
        path = self.out / f"frame{p.index:04d}_{name}.png"
        from PIL import Image  # costly: ~20 ms on `fit3d-ros --help`, which imports this module
        Image.fromarray(img).save(path)
        self.written.append(str(path))


def run_overlay(bag: str, out: str | Path, frames: int = 1, cloud_topic: str | None = None,
                image_topics: list[str] | None = None, max_range: float = 60.0,
                max_dt: float = 0.1) -> dict[str, Any]:
    """Project the first `frames` clouds into every camera; write PNGs; return the summary."""
    # costly: `fit3d-ros --help` imports this module; fit3d_ros.logs loads rosbags (~150 ms)
    from fit3d_ros.logs.bag import open_bag
    from fit3d_ros.logs.scene_io import decode, replay
    from fit3d_ros.msgs import camera_info_to_model, pointcloud2_to_cloud, stamp_to_ns

    if frames < 1:
        raise CommandError(f"--frames must be >= 1, got {frames}")
    with open_bag(bag) as reader:
        topics = dict(reader.topics)
    clouds = sorted(t for t, i in topics.items() if i.msgtype == POINTCLOUD2)
    if cloud_topic is None:
        if len(clouds) != 1:
            raise CommandError(f"{bag}: need exactly one PointCloud2 topic or --cloud-topic "
                               f"(found {clouds})")
        cloud_topic = clouds[0]
    elif cloud_topic not in clouds:
        raise CommandError(f"{bag}: no PointCloud2 topic {cloud_topic!r} (found {clouds})")
    cameras = camera_topics(topics)
    if image_topics:
        missing = [t for t in image_topics if t not in cameras]
        if missing:
            raise CommandError(f"{bag}: no Image+CameraInfo pair for {missing} "
                               f"(found {sorted(cameras)})")
        cameras = {t: cameras[t] for t in image_topics}
    if not cameras:
        raise CommandError(f"{bag}: no Image topic with a CameraInfo next to it")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    job = OverlayJob(out, cameras, max_range, int(max_dt * 1e9))
    buffer = None
    wanted = [cloud_topic, *cameras, *set(cameras.values())]
    for m, buffer in replay(bag, wanted):
        if m.topic in cameras.values():
            job.infos[m.topic] = decode(m, camera_info_to_model, bag)
        elif m.topic == cloud_topic:
            if job.clouds >= frames:
                if not job.pending:
                    break
                continue
            job.on_cloud(decode(m, lambda msg: pointcloud2_to_cloud(msg).finite(), bag), buffer)
        else:
            job.on_image(m.topic, m.msg, decode(m, lambda msg: stamp_to_ns(msg.header.stamp), bag),
                         buffer)
            if job.clouds >= frames and not job.pending:
                break
    if buffer is not None:
        job.flush(buffer)
    if job.points == 0:
        raise CommandError(f"{bag}: no points on {cloud_topic}")
    return {"visible_fraction": job.seen_any / job.points,
            "per_camera": {t: job.seen[t] / job.points for t in cameras},
            "points": job.points, "frames": job.clouds, "cloud_topic": cloud_topic,
            "images": job.written, "skipped": job.skipped}


def _handler(args: argparse.Namespace) -> int:
    summary = run_overlay(args.bag, args.out, frames=args.frames, cloud_topic=args.cloud_topic,
                          image_topics=args.cameras, max_range=args.max_range,
                          max_dt=args.max_dt)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"{summary['points']} points in {summary['frames']} frame(s) of "
          f"{summary['cloud_topic']}: {100 * summary['visible_fraction']:.1f} % visible in "
          "at least one camera")
    for topic, share in summary["per_camera"].items():
        print(f"  {topic:<32} {100 * share:6.2f} %")
    for line in summary["skipped"]:
        print(f"  skipped: {line}")
    print(f"wrote {len(summary['images'])} overlay(s) to {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("overlay", help="project LiDAR clouds into the bag's cameras "
                              "(calibration check): PNG overlays and visible fractions")
    p.add_argument("bag", help="a .mcap / .db3 file or a rosbag2 directory")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG overlays")
    p.add_argument("--frames", type=int, default=1, metavar="N", help="first N clouds (1)")
    p.add_argument("--cloud-topic", help="PointCloud2 topic (needed if the bag has several)")
    p.add_argument("--cameras", nargs="+", metavar="IMAGE_TOPIC",
                   help="image topics to use (default: every Image next to a CameraInfo)")
    p.add_argument("--max-range", type=float, default=60.0, metavar="M",
                   help="range at the red end of the colour scale (60)")
    p.add_argument("--max-dt", type=float, default=0.1, metavar="S",
                   help="largest cloud-image time difference in seconds (0.1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_handler)

"""Replay: drive the node pipeline from a rosbag2 log without ROS (offline evaluation).

Design note: the same objects as the nodes (`FeatureExtractor`, `Segmenter`,
`ApproximateTimeSynchronizer`, `SharedResults`) fed in log order, with extrinsics from
the bag's own TF at each cloud's stamp (`logs.scene_io.replay`). Every frame is
processed (no latest-wins dropping offline); bad messages are counted, reported and
skipped. Outputs: ``outputs.mcap`` (the live nodes' topics — features, their info, PCA
previews, labelled clouds — plus the input cloud, images, CameraInfo and TF as recorded,
so one Foxglove layout serves replay and robot), ``metrics.json`` (per-stage latency p50/p90/p99, counts,
mIoU/accuracy when the clouds carry labels) and ``report.html`` (see `report`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fit3d_ros.logs.bag import BagReader, BagWriter
from fit3d_ros.logs.scene_io import replay as bag_replay
from fit3d_ros.msgs import (
    ConversionError,
    camera_info_to_model,
    cloud_to_pointcloud2,
    image_to_rgb,
    numpy_to_image,
    pointcloud2_to_cloud,
    rosbags_types,
    rosbags_typestore,
    stamp_to_ns,
)
from fit3d_ros.sensors import PointCloud
from fit3d_ros.sensors.camera_history import CameraInfoHistory
from fit3d_ros.sensors.sync import ApproximateTimeSynchronizer
from fit3d_ros.sensors.tf_buffer import TransformError

from .features import FeatureConfig, FeatureExtractor, PCAPreview
from .latency import LatencyStats
from .limits import InputLimits
from .metrics import SegEvaluator
from .report import write_report
from .segmenter import Segmenter, ViewInput, labelled_cloud
from .shared import SharedResults

STRING, TF_MESSAGE = "std_msgs/msg/String", "tf2_msgs/msg/TFMessage"
SEGMENTATION_TOPIC = "/segmentation_node/segmentation"  # the live node's topic


def feature_namespaces(cams: list[str]) -> dict[str, str]:
    """Where the live feature node publishes for each camera topic: ``/feature_node``
    for one camera; with several, one node per camera in the camera's namespace
    (``/cam_front/feature_node`` for ``/cam_front/image_raw``)."""
    if len(cams) == 1:
        return {cams[0]: "/feature_node"}
    return {t: f"{t.rsplit('/', 1)[0]}/feature_node" for t in cams}


IMAGE, CLOUD, INFO = ("sensor_msgs/msg/Image", "sensor_msgs/msg/PointCloud2",
                      "sensor_msgs/msg/CameraInfo")


@dataclass
class ReplayConfig:
    checkpoint: str | None = None           # segmentation checkpoint (None: features only)
    features: FeatureConfig | None = None   # 2D features to publish (None: checkpoint's)
    cloud_topic: str | None = None          # default: the bag's first PointCloud2 topic
    cameras: list[str] | None = None        # image topics; default: those with CameraInfo
    slop_s: float = 0.1
    queue_size: int = 10
    view: str = "center"
    device: str = "cpu"
    dtype: str = "float32"                  # ViT precision (CUDA: U-Net autocast), as the node
    max_frames: int | None = None
    limits: InputLimits = field(default_factory=InputLimits)  # as the node's parameters
    # called as on_labelled(labelled cloud, TF buffer at its stamp, segmenter) per cloud
    on_labelled: Callable[[PointCloud, Any, Segmenter], None] | None = None


@dataclass
class ReplayCounts:
    clouds_in: int = 0
    images_in: int = 0
    frames_synced: int = 0
    clouds_out: int = 0
    features_out: int = 0
    bad_messages: int = 0
    skipped_cameras: int = 0
    points_dropped: int = 0                 # non-finite, out of range, subsampled
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the run as a whole

    def error(self, text: str) -> None:
        """Count a bad message and note why."""
        self.bad_messages += 1
        self.note(text)

    def note(self, text: str) -> None:
        """Keep `text` among the first 20 error notes (counts nothing)."""
        if len(self.errors) < 20:
            self.errors.append(text)


def _topics(bag: BagReader, cfg: ReplayConfig) -> tuple[str | None, list[str], dict[str, str]]:
    topics = bag.topics
    clouds = [t for t, i in topics.items() if i.msgtype == CLOUD]
    cloud = cfg.cloud_topic if cfg.cloud_topic is not None else (clouds[0] if clouds else None)
    if cloud is not None and cloud not in topics:
        raise ValueError(f"{bag.path}: no topic {cloud} (PointCloud2 topics: {clouds})")
    if cloud is not None and topics[cloud].msgtype != CLOUD:
        raise ValueError(f"{bag.path}: {cloud} carries {topics[cloud].msgtype}, not "
                         f"{CLOUD} (PointCloud2 topics: {clouds})")
    infos = {t.rsplit("/", 1)[0]: t for t, i in topics.items() if i.msgtype == INFO}
    images = [t for t, i in topics.items() if i.msgtype == IMAGE
              and t.rsplit("/", 1)[0] in infos and "depth" not in t]
    cams = cfg.cameras if cfg.cameras is not None else images
    for t in cams:
        if t not in topics or topics[t].msgtype != IMAGE:
            raise ValueError(f"{bag.path}: {t} is not an Image topic")
    return cloud, cams, {t: infos.get(t.rsplit("/", 1)[0], "") for t in cams}


class _Run:
    """State of one replay (kept off the public API)."""

    def __init__(self, path: Path, out: Path, cfg: ReplayConfig) -> None:
        self.path, self.cfg = path, cfg
        self.counts = ReplayCounts()
        self.latency = LatencyStats(window=100_000)
        self.types = rosbags_types()
        self.shared = SharedResults(capacity=64)
        self.decoded = SharedResults(capacity=cfg.queue_size + 1)  # decoded images, by message
        self.segmenter = (Segmenter(cfg.checkpoint, device=cfg.device, view=cfg.view,
                                    limits=cfg.limits, dtype=cfg.dtype)
                          if cfg.checkpoint else None)
        # the segmenter keeps its checkpoint's backbone; feature outputs use --backbone if
        # given, else the same backbone (then one pass per image serves both)
        seg_cfg = (self.segmenter.feature_config(cfg.device)
                   if self.segmenter is not None and self.segmenter.inject else None)
        out_cfg = cfg.features or seg_cfg
        self.extractor = (self.segmenter.extractor if out_cfg is not None and out_cfg == seg_cfg
                          else FeatureExtractor(out_cfg) if out_cfg is not None else None)
        if seg_cfg is not None:
            seg_ex = self.segmenter.extractor
            tag = "out" if seg_ex is self.extractor else "seg"
            self.segmenter.share_features(
                lambda v: self.shared.get((tag, *v.key), lambda: seg_ex(v.rgb)))
        self.pca: dict[str, PCAPreview] = {}
        self.infos: dict[str, CameraInfoHistory] = {}
        self.previews: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}  # (rgb, PCA)
        self.bev: list[tuple[PointCloud, np.ndarray]] = []
        self.evaluator = None
        self.writer = BagWriter(out / "outputs.mcap", overwrite=True)
        self._string = rosbags_typestore().types[STRING]  # ~/features/info

    def _rgb(self, m):
        """The message's image, decoded once (on_image and on_frame both need it)."""
        return self.decoded.get((m.topic, m.index), lambda: image_to_rgb(m.msg))

    def _features(self, key, rgb):
        return self.shared.get(("out", *key), lambda: self.extractor(rgb))


    # ------------------------------------------------------------------ per message
    def on_image(self, m, topic: str) -> None:
        self.counts.images_in += 1
        if self.extractor is None:
            return
        try:
            with self.latency.time("decode"):
                rgb = self._rgb(m)
            stamp, frame = stamp_to_ns(m.msg.header.stamp), m.msg.header.frame_id
        except (ConversionError, ValueError) as exc:
            self.counts.error(f"{topic} message {m.index}: {exc}")
            return
        with self.latency.time("backbone"):
            result = self._features((frame, stamp), rgb)
        with self.latency.time("preview"):
            preview = self.pca.setdefault(topic, PCAPreview())(result.patch)
        with self.latency.time("write"):
            ns = self.feature_ns[topic]
            info = result.info(backbone=self.extractor.cfg.backbone, mode=self.extractor.cfg.mode)
            if info != self._info.get(topic):  # the live node latches it on each change
                self.writer.write(f"{ns}/features/info", STRING, m.log_time_ns,
                                  self._string(data=info))
                self._info[topic] = info
            self.writer.write(f"{ns}/features", IMAGE, m.log_time_ns,
                              result.to_image(stamp, frame, self.types))
            self.writer.write(f"{ns}/features_pca", IMAGE, m.log_time_ns,
                              numpy_to_image(preview, "rgb8", stamp, frame, self.types))
        shots = self.previews.setdefault(topic, [])
        if len(shots) < 2:
            shots.append((rgb, preview))
        else:
            shots[1] = (rgb, preview)
        self.counts.features_out += 1

    def on_frame(self, cloud_m, image_ms: list, cams: list[str], buffer) -> None:
        """One synchronised cloud (+ images): segment and write the labelled cloud."""
        try:
            with self.latency.time("decode"):
                cloud = pointcloud2_to_cloud(cloud_m.msg)
        except (ConversionError, ValueError) as exc:
            self.counts.error(f"cloud message {cloud_m.index}: {exc}")
            return
        if len(cloud) == 0:
            self.counts.error(f"cloud message {cloud_m.index}: no finite points")
            return
        views = []
        for topic, im in zip(cams, image_ms):
            history = self.infos.get(topic)
            try:
                if history is None:
                    raise ValueError("no CameraInfo before this image")
                rgb = self._rgb(im)
                cam = history.for_image(stamp_to_ns(im.msg.header.stamp), rgb.shape[1],
                                        rgb.shape[0])
                if cam is None:
                    raise ValueError(f"image {rgb.shape[1]}x{rgb.shape[0]} matches no recent "
                                     f"CameraInfo (sizes {history.sizes()})")
                T = buffer.lookup(im.msg.header.frame_id or cam.frame_id, cloud.frame_id,
                                  cloud.stamp)
            except (ConversionError, ValueError, TransformError) as exc:
                self.counts.skipped_cameras += 1
                self.counts.note(f"{topic} message {im.index}: camera skipped: {exc}")
                continue
            views.append(ViewInput(rgb, cam, T.matrix,
                                   key=(im.msg.header.frame_id, stamp_to_ns(im.msg.header.stamp))))
        with self.latency.time("segment"):
            result = self.segmenter(cloud, views)
        if result.drops.total:
            self.counts.points_dropped += result.drops.total
            self.counts.note(f"cloud message {cloud_m.index}: {result.drops}")
        for stage, ms in self.segmenter.latency.last().items():
            self.latency.add(f"segment.{stage}", ms)
        out = labelled_cloud(cloud, result, self.segmenter.palette)
        with self.latency.time("write"):
            self.writer.write(SEGMENTATION_TOPIC, CLOUD, cloud_m.log_time_ns,
                              cloud_to_pointcloud2(out, self.types))
        self.counts.clouds_out += 1
        if self.cfg.on_labelled is not None:
            self.cfg.on_labelled(out, buffer, self.segmenter)
        if len(self.bev) < 2:
            self.bev.append((out, result.labels))
        else:
            self.bev[1] = (out, result.labels)
        self._score(cloud, result)

    def _score(self, cloud: PointCloud, result) -> None:
        if cloud.label is None or self.segmenter.ckpt.classes is None:
            return
        classes = self.segmenter.ckpt.classes
        if self.evaluator is None:
            self.evaluator = SegEvaluator(list(classes.names))
        target = classes.to_train(cloud.label[result.kept])
        visible = result.visible if self.segmenter.inject else None
        self.evaluator.update(result.labels, target, visible)

    # ------------------------------------------------------------------ the loop
    def run(self, cloud_topic: str | None, cams: list[str], infos: dict[str, str],
            progress: bool) -> None:
        segment = self.segmenter is not None and cloud_topic is not None
        use_cams = cams if (segment and self.segmenter.inject) else []
        state: dict[str, Any] = {}

        def matched(cloud_m, *image_ms) -> None:
            self.counts.frames_synced += 1
            self._guarded(self.on_frame, cloud_m, list(image_ms), use_cams, state["buffer"])

        sync = ApproximateTimeSynchronizer(1 + len(use_cams), self.cfg.queue_size,
                                           self.cfg.slop_s, matched)
        info_of = {v: k for k, v in infos.items() if v}
        wanted = set(cams) | set(info_of) | ({cloud_topic} if cloud_topic else set())
        self.feature_ns = feature_namespaces(cams)
        self._info: dict[str, str] = {}
        copy = self._copy_tf()
        t_read = time.perf_counter()
        for m, buffer in bag_replay(self.path, sorted(wanted)):
            self.latency.add("read", (time.perf_counter() - t_read) * 1e3)
            state["buffer"] = buffer
            with self.latency.time("write"):  # the inputs a viewer needs, as recorded
                self.writer.write(m.topic, copy[m.topic], m.log_time_ns, m.msg)
            if m.topic in info_of:
                try:
                    self.infos.setdefault(info_of[m.topic], CameraInfoHistory()).add(
                        stamp_to_ns(m.msg.header.stamp), camera_info_to_model(m.msg))
                except (ConversionError, ValueError) as exc:
                    self.counts.error(f"{m.topic} message {m.index}: {exc}")
            elif m.topic in cams:
                self._guarded(self.on_image, m, m.topic)
                if m.topic in use_cams:
                    self._feed(sync, 1 + use_cams.index(m.topic), m)
            elif m.topic == cloud_topic:
                self.counts.clouds_in += 1
                if segment:
                    self._feed(sync, 0, m)
                if self.cfg.max_frames and self.counts.clouds_in >= self.cfg.max_frames:
                    break
            if progress:
                print(f"\rclouds {self.counts.clouds_in} images {self.counts.images_in}",
                      end="", flush=True)
            t_read = time.perf_counter()
        if progress:
            print()

    def _copy_tf(self) -> dict[str, str]:
        """Copies the bag's TF into the outputs; returns msgtype by topic of the bag."""
        with BagReader(self.path) as bag:
            types = {t: i.msgtype for t, i in bag.topics.items()}
            tf = [t for t, ty in types.items() if ty == TF_MESSAGE]
            for m in bag.messages(tf):
                self.writer.write(m.topic, TF_MESSAGE, m.log_time_ns, m.msg)
        return types

    def _guarded(self, fn, m, *args) -> None:
        """Run one message's processing; a failure is counted and reported, not fatal."""
        try:
            fn(m, *args)
        except Exception as exc:  # noqa: BLE001 - keep replaying, like the nodes do
            self.counts.error(f"{m.topic} message {m.index}: {type(exc).__name__}: {exc}")

    def _feed(self, sync: ApproximateTimeSynchronizer, index: int, m) -> None:
        try:
            stamp = stamp_to_ns(m.msg.header.stamp)
        except (AttributeError, ValueError) as exc:
            self.counts.error(f"{m.topic} message {m.index}: no header stamp: {exc}")
            return
        sync.add(index, m, stamp)


def replay_bag(path: str | Path, out_dir: str | Path, cfg: ReplayConfig | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Run the pipeline over a bag; writes outputs.mcap, metrics.json, report.html."""
    cfg = cfg or ReplayConfig()
    path, out = Path(path), Path(out_dir)
    if cfg.checkpoint is None and cfg.features is None:
        raise ValueError("nothing to do: give a checkpoint and/or a 2D backbone")
    out.mkdir(parents=True, exist_ok=True)
    run = _Run(path, out, cfg)
    with BagReader(path) as bag:
        cloud, cams, infos = _topics(bag, cfg)
        msgtypes = {t: i.msgtype for t, i in bag.topics.items()}
    t0 = time.perf_counter()
    with run.writer:
        run.run(cloud, cams, infos, progress)
    wall = time.perf_counter() - t0
    if cfg.checkpoint and cloud is None:
        run.counts.warnings.append(f"{path}: no PointCloud2 topic (topics: "
                                   f"{msgtypes}): "
                                   "nothing to segment")
    if run.counts.clouds_out == 0 and run.counts.features_out == 0:
        run.counts.warnings.append("nothing could be processed (see counts.errors)")
    lat = run.latency.summary()
    io_ms = sum(lat[k]["mean"] * lat[k]["count"] for k in ("read", "write") if k in lat)
    metrics: dict[str, Any] = {
        "bag": str(path), "cloud_topic": cloud, "camera_topics": cams,
        "checkpoint": cfg.checkpoint,
        "weights": _weights_note(run),
        "counts": asdict(run.counts),
        "frames_in": run.counts.clouds_in, "frames_out": run.counts.clouds_out,
        "drops": (run.counts.clouds_in - run.counts.clouds_out) if run.segmenter else 0,
        "latency_ms": lat, "wall_s": wall, "io_share": io_ms / 1e3 / wall if wall else None,
    }
    if run.evaluator is not None:
        metrics["segmentation"] = run.evaluator.result()
        metrics["miou"] = metrics["segmentation"]["miou"]
        metrics["accuracy"] = metrics["segmentation"]["accuracy"]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_report(out, metrics, run.previews, run.bev, run.segmenter, run.evaluator)
    return metrics


def _weights_note(run: _Run) -> str:
    cfg = run.extractor.cfg if run.extractor is not None else None
    if cfg is None:
        return "no 2D backbone"
    if cfg.random_init:
        return f"RANDOM-INIT {cfg.backbone} (seed {cfg.seed}): no pretrained weights"
    return f"{cfg.backbone}: {cfg.weights or 'pretrained (hub/cache)'}"

"""`segmentation_node`: PointCloud2 / depth + cameras → ``~/segmentation`` (labelled cloud).

Design note: modes follow the checkpoint and the `mode` parameter: ``ditr`` (LiDAR cloud
+ cameras, approximate-time synchronised; features injected), ``image_free`` (cloud only:
D-DITR-initialised or 3D-only checkpoints) and ``rgbd`` (the depth image back-projected
in its camera, with that camera's colour image). CameraInfo is cached per camera, not
synchronised: each image gets the CameraInfo of its stamp, else the newest of its size
(`CameraInfoHistory`). Extrinsics come from tf2 at the cloud's stamp (or the static
YAML); a camera without matching CameraInfo or transform is left out of that frame with
a throttled warning, and every dropped input is counted on ``/diagnostics``. Hostile
input is bounded before it costs anything: stamps far ahead of the node clock never
reach the synchroniser (`StampGate`), points beyond ``max_range_m`` or above
``max_points`` are dropped / subsampled and counted (`pipeline.limits`). Work happens
on one latest-wins worker and only while someone subscribes. ``~/point_features``
(`point_features_source`) carry each point's ViT patch feature f^2D by default for
injecting checkpoints (``visible`` 0 and zeros where unseen): the space of a clicked
pixel's feature, so `semantic_map_node` answers pixel queries.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from fit3d_ros.msgs import (ConversionError, camera_info_to_model, cloud_to_pointcloud2,
                            image_to_depth, image_to_rgb, pointcloud2_to_cloud, rclpy_types,
                            stamp_to_ns)
from fit3d_ros.pipeline import LatestWinsWorker
from fit3d_ros.pipeline.limits import MAX_POINTS_DEFAULT, InputLimits, PointDrops
from fit3d_ros.pipeline.segmenter import EmptyCloudError, Segmenter, ViewInput, labelled_cloud
from fit3d_ros.sensors import PointCloud
from fit3d_ros.sensors.camera_history import CameraInfoHistory
from fit3d_ros.sensors.sync import (StampGate, SyncMonitor, header_stamp_ns,
                                    make_ros_synchronizer, make_subscriber)
from fit3d_ros.sensors.tf_buffer import TransformError

from .common import (NodeHealth, RuntimeParams, Throttle, declare, has_subscribers,
                     qos_from_name, rate_period, run_node)
from .extrinsics import Extrinsics
from .qos_match import QOS_HELP, QoSMatcher

MODES = ("ditr", "image_free", "rgbd")


@dataclass
class Frame:
    """One synchronised input: header of the cloud (or depth) and the raw messages."""

    cloud_msg: Any
    image_msgs: list[Any]


class SegmentationNode(Node):
    """Segments each (synchronised) cloud with a trained checkpoint."""

    def __init__(self, segmenter: Segmenter | None = None, **kwargs) -> None:
        super().__init__("segmentation_node", **kwargs)
        p = lambda name, default, text, bounds=None: declare(  # noqa: E731
            self, name, default, text, bounds=bounds)
        runtime = RuntimeParams(self)
        self.checkpoint = p("checkpoint", "", "segmentation checkpoint (fit3d-ros train-seg)")
        self.mode = p("mode", "ditr", "ditr | image_free | rgbd")
        device = p("device", "cpu", "torch device")
        view = p("view", "center", "camera choice for multi-view points: center|first|random")
        dtype = p("dtype", "float32", "ViT precision float32 | bfloat16 | float16 (CUDA: "
                  "the U-Net under autocast too; CPU: U-Net float32)")
        self.cameras = list(p("cameras", ["camera"], "camera names: NAME/image_raw + "
                              "NAME/camera_info"))
        cloud_topic = p("cloud_topic", "points", "LiDAR PointCloud2 topic")
        depth_topic = p("depth_topic", "depth/image_raw", "depth Image topic (rgbd)")
        depth_info = p("depth_info_topic", "depth/camera_info", "depth CameraInfo (rgbd)")
        rgbd_image = p("rgbd_image_topic", "color/image_raw", "colour Image registered to "
                       "the depth camera (rgbd)")
        self._sync = self._monitor = None
        slop = runtime.declare("sync_slop_s", 0.1, "approximate-time sync slop (s)",
                               self._set_slop, bounds=(0.0, 10.0))
        queue = p("sync_queue_size", 10, "sync queue per input", bounds=(1, 10_000))
        self._rate = Throttle(0.0)  # output rate limit
        runtime.declare("rate_limit_hz", 0.0, "max output rate (0 = no limit)",
                        lambda v: setattr(self._rate, "period_s", rate_period(v)),
                        bounds=(0.0, 1000.0))
        runtime.declare("publish_point_features", False, "publish ~/point_features",
                        lambda v: setattr(self, "with_features", v))
        feature_source = p("point_features_source", "auto", "~/point_features: vit (each "
                           "point's ViT patch feature f^2D, the space of pixel queries; "
                           "zeros and visible 0 where no camera sees it) | unet (last "
                           "decoder features) | auto (vit when the checkpoint injects 2D "
                           "features and images are used, else unet)")
        qos_name = p("qos", "auto", QOS_HELP)
        qos = qos_from_name(qos_name)
        limits = InputLimits(
            max_points=p("max_points", MAX_POINTS_DEFAULT, "points per cloud; more are "
                         "subsampled (counted: points_subsampled)"),
            max_range_m=p("max_range_m", 250.0, "points farther from the sensor are "
                          "dropped (counted: points_out_of_range)"),
            subsample=p("subsample", "random", "above max_points keep: random | range "
                        "(the nearest)"))
        stamp_tolerance = p("stamp_tolerance_s", 5.0, "inputs stamped further ahead of "
                            "the node clock are rejected (future_stamp); a stamp jump "
                            "back by more flushes the sync queues (0 = off)")
        if self.mode not in MODES:
            raise ValueError(f"parameter mode must be one of {MODES}, got {self.mode!r}")
        if not self.checkpoint and segmenter is None:
            raise ValueError("parameter checkpoint is required (a SEG.ckpt from "
                             "`fit3d-ros train-seg`)")
        self.segmenter = segmenter or Segmenter(self.checkpoint, device=device, view=view,
                                                limits=limits, dtype=dtype)
        if segmenter is not None:
            segmenter.limits = limits
        self.point_source = self._point_source(feature_source)
        needs = set(self.segmenter.pre.input_features) - {"xyz"}
        if self.mode == "rgbd" and needs:
            raise ValueError(f"checkpoint {self.checkpoint} needs input features {sorted(needs)}"
                             " that depth clouds do not have (rgbd mode needs an xyz-only "
                             "checkpoint: fit3d-ros train-seg --features xyz)")
        if self.mode == "ditr" and not self.segmenter.inject:
            self.get_logger().info("checkpoint has no 2D injection: images are not used")
        self.health = NodeHealth(self)
        runtime.declare("throttle_s", 5.0, "warning period (s)",
                        lambda v: setattr(self.health.throttle, "period_s", v),
                        bounds=(0.0, 3600.0))
        self.extrinsics = Extrinsics.from_params(self)
        self.types = rclpy_types()
        self.infos: dict[str, CameraInfoHistory] = {}
        self.pub = self.create_publisher(PointCloud2, "~/segmentation", 5)
        self.pub_feat = self.create_publisher(PointCloud2, "~/point_features", 5)
        self.worker = LatestWinsWorker(self._process, on_error=self._on_error)
        self.health.watch_worker("segmentation", self.worker.counters)
        use_images = self.mode == "rgbd" or (self.mode == "ditr" and (
            self.segmenter.inject or self.point_source == "vit"))
        cams = (["rgbd"] if self.mode == "rgbd" else self.cameras) if use_images else []
        for name in cams:
            topic = depth_info if name == "rgbd" else f"{name}/camera_info"
            self.create_subscription(CameraInfo, topic,
                                     lambda m, n=name: self._on_info(n, m), qos)
        own = qos_name == "auto"  # QoSMatcher re-creates them (message_filters' cannot)
        first = (make_subscriber(self, Image, depth_topic, qos, own) if self.mode == "rgbd"
                 else make_subscriber(self, PointCloud2, cloud_topic, qos, own))
        images = [make_subscriber(self, Image, rgbd_image if n == "rgbd" else f"{n}/image_raw",
                                  qos, own) for n in cams]
        self.camera_names = cams
        self._qos_match = QoSMatcher(self, [first, *images], qos) if qos_name == "auto" else None
        first.registerCallback(lambda m: self.health.count("clouds_in"))
        if images:
            period = max(2.0, 4 * slop)
            self._monitor = SyncMonitor(1 + len(images), slop, down_s=period)
            for i, sub in enumerate([first, *images]):
                sub.registerCallback(lambda m, i=i: self._monitor.seen(i, header_stamp_ns(m)))
            gate = StampGate(1 + len(images), lambda: self.get_clock().now().nanoseconds,
                             stamp_tolerance, on_reject=self._on_future_stamp,
                             on_flush=self._on_sync_flush)
            self._sync = make_ros_synchronizer([first, *images], queue, slop, self._on_synced,
                                               gate=gate)
            self.create_timer(period, self._check_sync)
        else:
            first.registerCallback(lambda m: self._on_synced(m))
        self.get_logger().info(f"segmentation_node ready: mode {self.mode}, "
                               f"{len(self.segmenter.class_names)} classes, cameras {cams}")

    def _point_source(self, source: str) -> str:
        """Resolve `point_features_source` (a clear start-up error where vit cannot be)."""
        if source == "auto" and self.mode == "image_free":
            source = "unet"
        if source == "vit" and self.mode == "image_free":
            raise ValueError("parameter point_features_source vit needs camera images: "
                             "not in mode image_free (use unet)")
        try:
            return self.segmenter.set_point_features(source)
        except ValueError as exc:
            raise ValueError(f"parameter point_features_source: {exc}") from exc

    def _visible(self, result) -> dict:
        """``visible`` (uint8) of vit point features: 0 = no camera saw the point (zeros)."""
        if self.point_source != "vit" or result.visible is None:
            return {}
        return {"visible": result.visible.astype(np.uint8)}

    # ------------------------------------------------------------------ callbacks
    def _check_sync(self) -> None:
        """Warn when clouds cannot pair with a camera's images (dead or clock-shifted
        stream), not when images merely arrive after their clouds."""
        for index, problem in self._monitor.problems_by_input():
            self.health.warn("unsynchronised", f"camera {self.camera_names[index - 1]} "
                             f"{problem}")

    def _on_future_stamp(self, index: int, stamp_ns: int, ahead_s: float) -> None:
        what = "cloud" if index == 0 else f"camera {self.camera_names[index - 1]} image"
        self.health.warn("future_stamp", f"dropping {what} stamped {ahead_s:.1f} s ahead "
                         "of the node clock (stamp_tolerance_s)",
                         throttle_key=f"future_stamp:{index}")

    def _on_sync_flush(self, dropped: int) -> None:
        self.health.warn("sync_flushed", f"input stamps jumped back (restarted log or "
                         f"clock): sync queues flushed ({dropped} messages)")

    def _set_slop(self, slop_s: float) -> None:
        """Run-time sync slop: ours keeps nanoseconds, message_filters a Duration."""
        if self._sync is not None:
            if hasattr(self._sync, "slop_ns"):
                self._sync.slop_ns = int(slop_s * 1e9)
            else:
                old = self._sync.slop
                self._sync.slop = (type(old)(seconds=slop_s) if hasattr(old, "nanoseconds")
                                   else slop_s)
        if self._monitor is not None:
            self._monitor.slop_ns = int(slop_s * 1e9)

    def _on_info(self, name: str, msg) -> None:
        try:
            model = camera_info_to_model(msg)
            stamp = stamp_to_ns(msg.header.stamp)
        except (ConversionError, ValueError) as exc:
            self.health.warn("bad_camera_info", f"camera {name}: bad CameraInfo: {exc}")
            return
        self.infos.setdefault(name, CameraInfoHistory()).add(stamp, model)

    def _camera_for(self, name: str, msg, shape: tuple[int, ...]):
        """The CameraInfo model for this image (stamp, then size); None: warned."""
        history = self.infos.get(name)
        if history is None or not len(history):
            self.health.warn("missing_camera_info", f"camera {name}: no CameraInfo yet; "
                             "segmenting without it", throttle_key=f"missing_info:{name}")
            return None
        cam = history.for_image(stamp_to_ns(msg.header.stamp), shape[1], shape[0])
        if cam is None:
            self.health.warn("bad_image", f"camera {name}: image {shape[1]}x{shape[0]} "
                             f"matches no recent CameraInfo (sizes {history.sizes()}); "
                             "segmenting without it", throttle_key=f"bad_image:{name}")
        return cam

    def _on_synced(self, cloud_msg, *image_msgs) -> None:
        self.health.count("frames_in")
        if self._monitor is not None:
            self._monitor.matched(header_stamp_ns(cloud_msg))
        if not has_subscribers(self.pub, self.pub_feat):
            self.health.count("skipped_no_subscribers")
            return
        if not self._rate.ready("out"):
            self.health.count("skipped_rate_limit")
            return
        self.worker.submit(Frame(cloud_msg, list(image_msgs)))

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()

    def _on_error(self, exc: BaseException) -> None:
        self.health.warn("processing_error", f"segmentation failed: {type(exc).__name__}: {exc}")

    # ------------------------------------------------------------------ processing
    def _cloud(self, frame: Frame) -> PointCloud | None:
        try:
            if self.mode != "rgbd":
                return pointcloud2_to_cloud(frame.cloud_msg)
            depth = image_to_depth(frame.cloud_msg)
            cam = self._camera_for("rgbd", frame.cloud_msg, depth.shape)
            if cam is None:
                return None
            xyz, _ = cam.backproject(depth)
            stamp, frame_id = stamp_to_ns(frame.cloud_msg.header.stamp), frame.cloud_msg.header.frame_id
            return PointCloud(stamp, frame_id, xyz)
        except (ConversionError, ValueError) as exc:
            self.health.warn("bad_cloud", f"dropping input: {exc}")
            return None

    def _views(self, cloud: PointCloud, image_msgs: list) -> list[ViewInput]:
        views = []
        for name, msg in zip(self.camera_names, image_msgs):
            try:
                rgb = image_to_rgb(msg)
                key = (msg.header.frame_id, stamp_to_ns(msg.header.stamp))
                cam = self._camera_for(name, msg, rgb.shape)
                if cam is None:
                    continue
                frame_id = msg.header.frame_id or cam.frame_id
                T = self.extrinsics.lookup(frame_id, cloud.frame_id, cloud.stamp)
            except ConversionError as exc:
                self.health.warn("bad_image", f"camera {name}: {exc}",
                                 throttle_key=f"bad_image:{name}")
                continue
            except TransformError as exc:
                self.health.warn("missing_transform", f"camera {name}: no transform "
                                 f"{msg.header.frame_id} <- {cloud.frame_id}: {exc}",
                                 throttle_key=f"missing_transform:{name}", error=True)
                continue
            views.append(ViewInput(rgb, cam, T.matrix, key=key))
        return views

    def _count_drops(self, drops: PointDrops, frame_id: str) -> None:
        if drops.non_finite:
            self.health.count("points_non_finite", drops.non_finite)
        limits = self.segmenter.limits
        for key, n, limit in (
                ("points_out_of_range", drops.out_of_range, f"max_range_m {limits.max_range_m:g}"),
                ("points_subsampled", drops.subsampled, f"max_points {limits.max_points}")):
            if n:  # n points in all: n - 1 here, 1 by the (throttled) warning
                self.health.count(key, n - 1)
                self.health.warn(key, f"cloud on {frame_id}: {n} points dropped ({limit})")

    def _process(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        with self.health.latency.time("decode"):
            cloud = self._cloud(frame)
        if cloud is None:
            return
        finite = cloud.finite()
        if len(finite) == 0:
            self.health.warn("empty_cloud", f"cloud on {cloud.frame_id} has no finite points")
            return
        with self.health.latency.time("views"):
            views = self._views(finite, frame.image_msgs)
        with self.health.latency.time("segment"):
            want_features = self.with_features and self.pub_feat.get_subscription_count() > 0
            try:
                result = self.segmenter(finite, views, with_features=want_features)
            except EmptyCloudError as exc:
                self._count_drops(exc.drops, cloud.frame_id)
                self.health.warn("empty_cloud", f"cloud on {cloud.frame_id}: {exc}")
                return
        self._count_drops(result.drops, cloud.frame_id)
        with self.health.latency.time("publish"):
            out = labelled_cloud(finite, result, self.segmenter.palette)
            feats, out.feature = out.feature, None
            self.pub.publish(cloud_to_pointcloud2(out, self.types))
            if feats is not None and self.pub_feat.get_subscription_count():
                self.pub_feat.publish(cloud_to_pointcloud2(
                    PointCloud(out.stamp, out.frame_id, out.xyz, feature=feats,
                               extra=self._visible(result)), self.types))
        self.health.count("clouds_out")
        stages = {**self.health.latency.last(), **{f"model.{k}": v for k, v in
                                                   self.segmenter.latency.last().items()}}
        stages["total"] = (time.perf_counter() - t0) * 1e3
        self.health.publish_latency(stages)


def main(args: list[str] | None = None) -> int:
    return run_node(SegmentationNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

"""`semantic_map_node`: segmented clouds + TF → ``~/map`` and instance queries (Map and Locate).

Design note: the ROS edge of `fit3d_ros.mapping`. Each ``~/segmentation`` cloud (labels
0..K-1 of any integer datatype, ``confidence``) is moved into the fixed frame with the
transform at its own stamp (tf2, or our buffer fed by ``/tf`` and the extrinsics YAML)
and integrated; a cloud without transform is skipped with a counted, throttled warning.
With ``use_features`` the matching ``~/point_features`` cloud (same stamp and size)
brings per-point features; a cloud whose features do not come within
``feature_wait_s`` is integrated without them (counted). ``~/map`` (x, y, z, label,
confidence, rgb: one point per voxel) is published at ``map_rate_hz`` while someone
listens. Queries arrive as JSON strings on ``~/locate``: ``{"class": "car"}`` (optional
``near``, ``min_points``) or ``{"image_topic": T, "u": U, "v": V}`` (the newest feature
image on T, one of ``feature_topics``, decoded with its latched ``T/info`` by
`msgs.features_from_msg`; U, V in pixels of an image of ``width`` x ``height``, default
the source image's size from ``T/info``, else the feature grid). Pixel queries compare
the clicked patch's ViT feature with the voxels' mean point features, so the map must be
fed ViT features of the same backbone: the segmentation node's ``~/point_features`` with
``point_features_source`` vit (its default for injecting checkpoints); points no camera
saw (``visible`` 0, zero features) do not enter the feature mean. Queries are answered on
``~/locate_result`` (JSON, the request echoed), plus boxes as
``visualization_msgs/MarkerArray`` on ``~/markers`` where that package is importable.
Integration is cheap (milliseconds per cloud) and runs in the subscription callback, so
no cloud is dropped.
"""
from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import String

from fit3d_ros.mapping import MapConfig, VoxelMap, locate, locate_feature
from fit3d_ros.mapping.instances import Instance
from fit3d_ros.models.checkpoint import load_checkpoint
from fit3d_ros.models.classes import load_classes
from fit3d_ros.msgs import (ConversionError, cloud_to_pointcloud2, features_from_msg,
                            pointcloud2_to_cloud, rclpy_types)
from fit3d_ros.sensors import PointCloud
from fit3d_ros.sensors.tf_buffer import TransformError

from .common import NodeHealth, declare, has_subscribers, qos_from_name, run_node
from .extrinsics import Extrinsics
from .qos_match import QOS_HELP, match_if_auto, subscribe


class SemanticMapNode(Node):
    """Accumulates the segmentation output into a voxel map and answers locate requests."""

    def __init__(self, class_names: list[str] | None = None,
                 palette: np.ndarray | None = None, **kwargs) -> None:
        super().__init__("semantic_map_node", **kwargs)
        p = lambda name, default, text: declare(self, name, default, text)  # noqa: E731
        cfg = MapConfig(
            frame=p("frame", "map", "fixed frame of the map"),
            voxel_size=p("voxel_size", 0.1, "voxel edge (m)"),
            max_voxels=p("max_voxels", 2_000_000, "memory bound: least recently seen "
                         "voxels are forgotten beyond it"),
            max_age_s=p("max_age_s", 0.0, "forget voxels unseen this long (0 = never)"),
            max_distance_m=p("max_distance_m", 0.0, "forget voxels this far from the "
                             "sensor (0 = never)"),
            max_range_m=p("max_range_m", 0.0, "ignore points this far from the sensor "
                          "(0 = all)"),
            device=p("device", "cpu", "torch device of the map"))
        seg_topic = p("segmentation_topic", "segmentation_node/segmentation",
                      "labelled PointCloud2 input")
        feat_topic = p("features_topic", "segmentation_node/point_features",
                       "per-point features PointCloud2 (with use_features)")
        self.use_features = p("use_features", False, "accumulate ~/point_features")
        self.feature_wait_s = p("feature_wait_s", 0.5, "integrate a cloud without features "
                                "when they do not come within this time (s)")
        self.feature_topics = list(p("feature_topics", ["feature_node/features"],
                                     "feature images (+ latched TOPIC/info) for pixel "
                                     "queries: feature_node's ~/features"))
        rate = p("map_rate_hz", 1.0, "~/map publishing rate (Hz)")
        self.min_points = p("min_instance_points", 5, "smallest instance (points)")
        self.gap = p("cluster_gap", 1, "clustering: voxels within this many cells are "
                     "neighbours")
        classes_spec = p("classes", "", "class map: builtin name or JSON (default: the "
                         "checkpoint's)")
        checkpoint = p("checkpoint", "", "segmentation checkpoint (for its class names)")
        qos_name = p("qos", "auto", QOS_HELP)
        qos = qos_from_name(qos_name)
        throttle = p("throttle_s", 5.0, "warning period (s)")
        if not rate > 0:
            raise ValueError(f"parameter map_rate_hz must be positive, got {rate}")
        if class_names is None:
            class_names, palette = _classes(classes_spec, checkpoint)
        self.map = VoxelMap(class_names, cfg, palette)
        self.health = NodeHealth(self, throttle)
        self.health.extra_stats = lambda: {"voxels": len(self.map), "map_bytes": self.map.nbytes(),
                                           "feature_dim": self.map.feature_dim or 0}
        self.extrinsics = Extrinsics.from_params(self)
        self.types = rclpy_types()
        self._lock = threading.Lock()  # composed process: other nodes' threads
        self._pending: dict[tuple[str, int], tuple[float, PointCloud | None, Any]] = {}
        self._features: dict[str, Any] = {}
        self._feature_info: dict[str, str] = {}  # topic -> latched ~/features/info JSON
        self.pub_map = self.create_publisher(PointCloud2, "~/map", 1)
        self.pub_result = self.create_publisher(String, "~/locate_result", 10)
        self.pub_markers = _marker_publisher(self)
        subs = [subscribe(self, PointCloud2, seg_topic, self._on_segmentation, qos)]
        if self.use_features:
            subs.append(subscribe(self, PointCloud2, feat_topic, self._on_features, qos))
            self.create_timer(max(0.05, self.feature_wait_s / 2), self._flush_pending)
        for topic in self.feature_topics:
            subs.append(subscribe(self, Image, topic, lambda m, t=topic:
                                  self._features.__setitem__(t, m), qos))
            self.create_subscription(String, f"{topic}/info", lambda m, t=topic:
                                     self._feature_info.__setitem__(t, m.data),
                                     qos_from_name("transient_local", 1))
        # our own outputs are published reliable: auto follows them (multi-MB clouds)
        self._qos_match = match_if_auto(self, qos_name, subs, qos)
        self.create_subscription(String, "~/locate", self._on_locate, 10)
        self.create_timer(1.0 / rate, self._publish_map)
        self.get_logger().info(f"semantic_map_node ready: frame {cfg.frame}, voxel "
                               f"{cfg.voxel_size} m, {len(class_names)} classes")

    # ------------------------------------------------------------------ integration
    def _decode(self, msg) -> PointCloud | None:
        try:
            return pointcloud2_to_cloud(msg)
        except (ConversionError, ValueError) as exc:
            self.health.warn("bad_cloud", f"dropping cloud: {exc}")
            return None

    def _on_segmentation(self, msg) -> None:
        self.health.count("clouds_in")
        cloud = self._decode(msg)
        if cloud is None:
            return
        if cloud.label is None:
            self.health.warn("bad_cloud", f"cloud on {cloud.frame_id!r} has no label field")
            return
        if not self.use_features:
            self._integrate(cloud, None)
            return
        key = (cloud.frame_id, cloud.stamp)
        with self._lock:
            waiting = self._pending.pop(key, None)
            if waiting is None or waiting[1] is not None:  # no features yet: wait for them
                self._pending[key] = (time.monotonic(), cloud, None)
                return
        self._integrate(cloud, waiting[2])

    def _on_features(self, msg) -> None:
        cloud = self._decode(msg)
        if cloud is None or cloud.feature is None:
            if cloud is not None:
                self.health.warn("bad_features", "point features cloud without features")
            return
        feature = cloud.feature
        if "visible" in cloud.extra:  # unseen points: zeros, kept out of the feature mean
            feature = np.where(cloud.extra["visible"][:, None] != 0, feature, 0).astype(
                np.float32)
        key = (cloud.frame_id, cloud.stamp)
        with self._lock:
            waiting = self._pending.pop(key, None)
            if waiting is None or waiting[1] is None:
                self._pending[key] = (time.monotonic(), None, feature)
                return
        self._integrate(waiting[1], feature)

    def _flush_pending(self) -> None:
        now = time.monotonic()
        with self._lock:
            old = [k for k, (t, _, _) in self._pending.items() if now - t > self.feature_wait_s]
            late = [self._pending.pop(k) for k in old]
        for _, cloud, _ in late:
            if cloud is not None:
                self.health.count("integrated_without_features")
                self._integrate(cloud, None)

    def _integrate(self, cloud: PointCloud, features) -> None:
        frame = self.map.cfg.frame
        try:
            tf = self.extrinsics.lookup(frame, cloud.frame_id, cloud.stamp)
        except TransformError as exc:
            self.health.warn("missing_transform", f"skipping cloud: no transform {frame} <- "
                             f"{cloud.frame_id} at {cloud.stamp}: {exc}", error=True)
            return
        if features is not None and len(features) != len(cloud):
            self.health.warn("bad_features", f"{len(features)} features for {len(cloud)} "
                             "points: integrating without them")
            features = None
        try:
            with self.health.latency.time("integrate"), self._lock:
                st = self.map.integrate_cloud(cloud, tf, features=features)
        except ValueError as exc:
            self.health.warn("bad_cloud", f"dropping cloud: {exc}")
            return
        self.health.count("clouds_integrated")
        self.health.count("points_integrated", st.points)
        for key in ("skipped_label", "skipped_range", "dropped_overflow", "forgotten"):
            if getattr(st, key):
                self.health.count(key, getattr(st, key))
        self.health.publish_latency(self.health.latency.last())

    # ------------------------------------------------------------------ outputs
    def _publish_map(self) -> None:
        if not has_subscribers(self.pub_map) or len(self.map) == 0:
            return
        with self.health.latency.time("map_publish"), self._lock:
            cloud = self.map.cloud()
            cloud.extra.pop("hits")
            self.pub_map.publish(cloud_to_pointcloud2(cloud, self.types))
        self.health.count("maps_out")

    def _on_locate(self, msg) -> None:
        self.health.count("locate_requests")
        try:
            req = json.loads(msg.data)
            if not isinstance(req, dict):
                raise ValueError("a request is a JSON object")
            result = self._answer(req)
        except (ValueError, KeyError, TypeError) as exc:  # json errors are ValueErrors
            text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            self.health.warn("locate_errors", f"locate request {msg.data[:200]!r}: {text}")
            result = {"request": msg.data, "error": str(text)}
        self.pub_result.publish(String(data=json.dumps(result)))

    def _answer(self, req: dict) -> dict:
        near, min_points = req.get("near"), int(req.get("min_points", self.min_points))
        if "class" in req:
            with self._lock:
                found = locate(self.map, str(req["class"]), self.gap, min_points, near)
            self._markers(found)
            return {"request": req, "frame": self.map.cfg.frame,
                    "instances": [i.to_dict() for i in found]}
        if "image_topic" in req:
            feature = self._pixel_feature(req)
            with self._lock:
                top, found = locate_feature(self.map, feature, int(req.get("top_k", 10)),
                                            float(req.get("min_similarity", 0.5)), self.gap,
                                            min_points, near)
            self._markers(found)
            return {"request": req, "frame": self.map.cfg.frame, "voxels": top,
                    "instances": [i.to_dict() for i in found]}
        raise ValueError('a request needs "class" or "image_topic" + "u" + "v"')

    def _pixel_feature(self, req: dict) -> np.ndarray:
        topic = str(req["image_topic"])
        msg = next((m for t, m in self._features.items() if t.strip("/") == topic.strip("/")),
                   None)
        if msg is None:
            raise ValueError(f"no feature image received on {topic!r} (feature_topics: "
                             f"{self.feature_topics})")
        info = next((i for t, i in self._feature_info.items()
                     if t.strip("/") == topic.strip("/")), None)
        if info is None and msg.encoding == "32FC1":
            raise ValueError(f"no {topic}/info received: the channel-major 32FC1 feature "
                             "image cannot be decoded without its channel count")
        try:
            feats = features_from_msg(msg, info)
        except ConversionError as exc:
            raise ValueError(f"feature image on {topic!r}: {exc}") from exc
        h, w = feats.shape[:2]
        meta = json.loads(info) if info else {}
        sx = w / float(req.get("width", meta.get("image_width", w)))
        sy = h / float(req.get("height", meta.get("image_height", h)))
        col, row = int(float(req["u"]) * sx), int(float(req["v"]) * sy)
        if not (0 <= col < w and 0 <= row < h):
            raise ValueError(f"pixel ({req['u']}, {req['v']}) is outside the image")
        return feats[row, col]

    def _markers(self, found: list[Instance]) -> None:
        if self.pub_markers is None:
            return
        # optional: only reached when visualization_msgs imported in _marker_publisher
        from visualization_msgs.msg import Marker, MarkerArray

        stamp = self.get_clock().now().to_msg()
        markers = [Marker(action=Marker.DELETEALL)]
        for i, inst in enumerate(found):
            m = Marker(ns="fit3d_ros_locate", id=i, type=Marker.CUBE, action=Marker.ADD)
            m.header.frame_id, m.header.stamp = self.map.cfg.frame, stamp
            m.pose.position.x, m.pose.position.y, m.pose.position.z = inst.obb_center
            m.pose.orientation.z = float(np.sin(inst.obb_yaw / 2))
            m.pose.orientation.w = float(np.cos(inst.obb_yaw / 2))
            m.scale.x, m.scale.y, m.scale.z = (max(v, 1e-3) for v in inst.obb_size)
            rgb = self.map.palette[self.map.class_index(inst.class_name)] / 255.0
            m.color.r, m.color.g, m.color.b, m.color.a = (*map(float, rgb), 0.5)
            markers.append(m)
        self.pub_markers.publish(MarkerArray(markers=markers))


def _marker_publisher(node: Node):
    try:  # optional: visualization_msgs (ros-visualization-msgs) may be missing
        from visualization_msgs.msg import MarkerArray
    except ImportError:  # no boxes for RViz; ~/locate_result still answers
        node.get_logger().info("visualization_msgs not importable: no ~/markers")
        return None
    return node.create_publisher(MarkerArray, "~/markers", 10)


def _classes(spec: str, checkpoint: str) -> tuple[list[str], np.ndarray | None]:
    """Class names and palette from the `classes` parameter or the checkpoint."""
    if spec:
        cm = load_classes(spec)
        return list(cm.names), np.asarray(cm.palette, np.uint8)
    if checkpoint:
        ck = load_checkpoint(checkpoint)
        return list(ck.class_names), np.asarray(ck.palette, np.uint8).reshape(-1, 3)
    raise ValueError("parameter classes (builtin name or JSON class map) or checkpoint is "
                     "required to name the labels")


def main(args: list[str] | None = None) -> int:
    return run_node(SemanticMapNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

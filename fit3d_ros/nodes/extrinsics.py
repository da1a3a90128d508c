"""Sensor extrinsics for the nodes: tf2 where it exists, our buffer otherwise.

Design note: on a robot `tf2_ros` is importable and lookups go through its Buffer and
TransformListener at the cloud's stamp. With the PyPI wheels (no tf2_ros) the node uses
`fit3d_ros.sensors.TransformBuffer`, fed from ``/tf`` and ``/tf_static`` when
``tf2_msgs`` is importable and always from the static-extrinsics YAML parameter file, so
both give the same `Transform` and the same `TransformError` family to the caller.
"""
from __future__ import annotations

import threading

import rclpy.duration
import rclpy.time
from rclpy.node import Node

from fit3d_ros.msgs import (rclpy_types, tf_message_to_transforms,
                            transform_stamped_to_transform, transform_to_transform_stamped)
from fit3d_ros.sensors import Transform
from fit3d_ros.sensors.tf_buffer import TransformBuffer, TransformError

from .common import declare, qos_from_name

EXTRINSICS_FILE_HELP = ("YAML file of static transforms: the extrinsics without tf2_ros, "
                        "added to tf2's tree with it; entries {parent, child, translation, "
                        "rotation | rpy} or static_transform_publisher argument strings "
                        "(fit3d-ros bag extrinsics dumps a bag's)")


class Extrinsics:
    """`lookup(target, source, stamp_ns)` → Transform mapping source-frame points to target."""

    @classmethod
    def from_params(cls, node: Node) -> "Extrinsics":
        """Declare the node's ``extrinsics_file`` and ``tf_timeout_s`` and build from them."""
        return cls(node, declare(node, "extrinsics_file", "", EXTRINSICS_FILE_HELP),
                   declare(node, "tf_timeout_s", 0.05, "tf2 lookup timeout (s)",
                           bounds=(0.0, 60.0)))

    def __init__(self, node: Node, extrinsics_file: str = "", timeout_s: float = 0.05,
                 prefer_tf2: bool = True) -> None:
        self.timeout_s = timeout_s
        self.backend = "buffer"
        self._node = node
        self._lock = threading.Lock()  # /tf callbacks write while the worker looks up
        self._tf2 = None
        self.buffer: TransformBuffer | None = None
        if prefer_tf2:
            try:
                import tf2_ros  # optional: tf2_ros only in a sourced ROS 2 install
                self._tf2 = tf2_ros.Buffer()
                self._listener = tf2_ros.TransformListener(self._tf2, node)
                self.backend = "tf2_ros"
            except ImportError:
                self._tf2 = None
        if self._tf2 is None:
            self.buffer = (TransformBuffer.from_yaml(extrinsics_file) if extrinsics_file
                           else TransformBuffer())
            self._subscribe_tf(node)
        elif extrinsics_file:  # static extrinsics on top of the live tree
            for tf in TransformBuffer.from_yaml(extrinsics_file).static_transforms():
                self._tf2.set_transform_static(_to_stamped(tf), "extrinsics_file")

    def _subscribe_tf(self, node: Node) -> None:
        try:  # optional: no PyPI wheel ships tf2_msgs
            from tf2_msgs.msg import TFMessage
        except ImportError:  # PyPI wheels: no tf2_msgs, static YAML extrinsics only
            node.get_logger().info("tf2_ros/tf2_msgs not importable: extrinsics come from "
                                   "the extrinsics_file parameter only")
            return
        self.backend = "buffer+/tf"
        node.create_subscription(TFMessage, "/tf", lambda m: self._feed(m, False), 100)
        node.create_subscription(TFMessage, "/tf_static", lambda m: self._feed(m, True),
                                 qos_from_name("transient_local", depth=100))

    def _feed(self, msg, static: bool) -> None:
        try:
            tfs = tf_message_to_transforms(msg)
            with self._lock:
                self.buffer.set_transforms(tfs, static=static)
        except ValueError as exc:  # a bad /tf message must not stop the node
            self._node.get_logger().warning(f"ignoring bad TF message: {exc}",
                                            throttle_duration_sec=5.0)

    def lookup(self, target: str, source: str, stamp_ns: int) -> Transform:
        """Raises `TransformError` (tf2 failures are re-raised as such) when unavailable."""
        if target == source:
            return Transform.identity(parent_frame=target, child_frame=source, stamp=stamp_ns)
        if self._tf2 is None:
            with self._lock:
                return self.buffer.lookup(target, source, stamp_ns)
        try:
            msg = self._tf2.lookup_transform(
                target, source, rclpy.time.Time(nanoseconds=stamp_ns),
                timeout=rclpy.duration.Duration(seconds=self.timeout_s))
        except Exception as exc:  # tf2's LookupException / ExtrapolationException / ...
            raise TransformError(f"{target} <- {source} at {stamp_ns}: {exc}") from exc
        return transform_stamped_to_transform(msg)


def _to_stamped(tf: Transform):
    return transform_to_transform_stamped(tf, rclpy_types())

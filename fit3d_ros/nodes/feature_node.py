"""`feature_node`: RGB Image → ``~/features`` (+ ``~/features/info``) and ``~/features_pca``.

Design note: the callback only decodes and hands the newest frame to a latest-wins
worker (sensor callbacks never wait on the ViT); nothing runs while nobody subscribes;
the feature image has one pixel per ViT patch and the input header, channel-major
``32FC1`` (`fit3d_ros.msgs.features`: cv_bridge misreads 32FC<C> above 512 channels),
with the channel count on the latched ``~/features/info``. Every knob is a
declared parameter; the model is built at start-up, and a missing or corrupt weights
file ends the process with a clear error instead of a half-working node.
"""
from __future__ import annotations

import sys
from dataclasses import fields

from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from fit3d_ros.msgs import ConversionError, image_to_rgb, numpy_to_image, rclpy_types, stamp_to_ns
from fit3d_ros.pipeline import LatestWinsWorker
from fit3d_ros.pipeline.features import FeatureConfig, FeatureExtractor, PCAPreview
from fit3d_ros.pipeline.shared import SharedResults

from .common import (NodeHealth, RuntimeParams, Throttle, declare, has_subscribers,
                     qos_from_name, rate_period, run_node)
from .qos_match import QOS_HELP, match_if_auto, subscribe

_DESCRIPTIONS = {
    "backbone": "ViT short name (dinov2_small, ...) or timm model name",
    "feature_mode": "original | finetuned | concat (FiT3D: original ‖ fine-tuned)",
    "weights": "local weights file of the original ViT ('' = hub / released)",
    "finetuned_weights": "local weights of the fine-tuned ViT ('' = FiT3D release)",
    "random_init": "seeded random ViT (no weights; demos and tests only)",
    "seed": "seed of the random init",
    "token_budget": "about this many ViT patches per image (0 = native size)",
    "dtype": "float32 | bfloat16 | float16",
    "device": "torch device (cpu, cuda, cuda:1)",
}


_BOUNDS = {"seed": (0, 2 ** 31 - 1), "token_budget": (0, 1_000_000)}


def feature_config_from_params(node: Node) -> FeatureConfig:
    """Declare one parameter per FeatureConfig field (`mode` as `feature_mode`)."""
    values = {}
    for f in fields(FeatureConfig):
        default = f.default
        if f.name == "token_budget":
            default = 37 * 37
        if default is None:
            default = ""
        param = "feature_mode" if f.name == "mode" else f.name
        values[f.name] = declare(node, param, default, _DESCRIPTIONS.get(param, ""),
                                 bounds=_BOUNDS.get(param))
    values = {k: (None if v == "" and k in ("weights", "finetuned_weights") else v)
              for k, v in values.items()}
    values["token_budget"] = int(values["token_budget"]) or None
    return FeatureConfig(**values)


class FeatureNode(Node):
    """Publishes dense ViT features for each incoming image."""

    def __init__(self, extractor: FeatureExtractor | None = None,
                 shared: SharedResults | None = None, **kwargs) -> None:
        super().__init__("feature_node", **kwargs)
        self.cfg = feature_config_from_params(self)
        self.shared = shared  # composed executable: one backbone pass per image
        qos_name = declare(self, "qos", "auto", QOS_HELP)
        qos = qos_from_name(qos_name)
        image_topic = declare(self, "image_topic", "image", "input RGB Image topic")
        self._rate = Throttle(0.0)  # output rate limit
        self.types = rclpy_types()
        self.extractor = extractor or FeatureExtractor(self.cfg)
        self.pca = PCAPreview()
        self.health = NodeHealth(self)
        runtime = RuntimeParams(self)
        runtime.declare("publish_pca", True, "publish ~/features_pca",
                        lambda v: setattr(self, "publish_pca", v))
        runtime.declare("rate_limit_hz", 0.0, "max output rate (0 = no limit)",
                        lambda v: setattr(self._rate, "period_s", rate_period(v)),
                        bounds=(0.0, 1000.0))
        runtime.declare("throttle_s", 5.0, "warning period (s)",
                        lambda v: setattr(self.health.throttle, "period_s", v),
                        bounds=(0.0, 3600.0))
        self.pub_features = self.create_publisher(Image, "~/features", 5)
        # channel count and grid of ~/features (channel-major 32FC1), latched
        self.pub_info = self.create_publisher(String, "~/features/info",
                                              qos_from_name("transient_local", 1))
        self._info = ""
        self.pub_pca = self.create_publisher(Image, "~/features_pca", 5)
        self.worker = LatestWinsWorker(self._process, on_error=self._on_error)
        self.health.watch_worker("features", self.worker.counters)
        self._qos_match = match_if_auto(
            self, qos_name, [subscribe(self, Image, image_topic, self._on_image, qos)], qos)
        self.get_logger().info(f"feature_node ready: {self.cfg.backbone} ({self.cfg.mode}, "
                               f"{'random init' if self.cfg.random_init else 'pretrained'})")

    def _on_image(self, msg) -> None:
        self.health.count("images_in")
        watched = (self.pub_features, self.pub_pca) if self.publish_pca else (self.pub_features,)
        if not has_subscribers(*watched):
            self.health.count("skipped_no_subscribers")
            return
        if not self._rate.ready("out"):
            self.health.count("skipped_rate_limit")
            return
        try:
            with self.health.latency.time("decode"):
                rgb = image_to_rgb(msg)
        except ConversionError as exc:
            self.health.warn("bad_image", f"dropping image: {exc}")
            return
        self.worker.submit((msg.header, rgb))

    def destroy_node(self) -> None:
        self.worker.stop()
        super().destroy_node()

    def _on_error(self, exc: BaseException) -> None:
        self.health.warn("processing_error", f"feature extraction failed: {exc}")

    def _process(self, item) -> None:
        header, rgb = item
        stamp, frame = stamp_to_ns(header.stamp), header.frame_id
        with self.health.latency.time("backbone"):
            if self.shared is None:
                result = self.extractor(rgb)
            else:
                result = self.shared.get((frame, stamp), lambda: self.extractor(rgb))
        with self.health.latency.time("publish"):
            info = result.info(backbone=self.extractor.cfg.backbone,
                               mode=self.extractor.cfg.mode, image_width=rgb.shape[1],
                               image_height=rgb.shape[0])  # pixel queries' coordinates
            if info != self._info:  # latched: sent once per change of channels / grid
                self.pub_info.publish(String(data=info))
                self._info = info
            if self.pub_features.get_subscription_count():
                self.pub_features.publish(result.to_image(stamp, frame, self.types))
            if self.publish_pca and self.pub_pca.get_subscription_count():
                self.pub_pca.publish(numpy_to_image(self.pca(result.patch), "rgb8", stamp,
                                                    frame, self.types))
        self.health.count("features_out")
        self.health.publish_latency(self.health.latency.last())


def main(args: list[str] | None = None) -> int:
    return run_node(FeatureNode, args if args is not None else sys.argv)


if __name__ == "__main__":
    sys.exit(main())

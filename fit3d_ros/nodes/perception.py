"""`perception`: feature_node and segmentation_node in one process, one ViT pass per image.

Design note: both nodes keep their names, parameters and topics (so one YAML serves the
composed and the separate launch); they share one `FeatureExtractor` and a
`SharedResults` cache keyed by (frame_id, stamp): whichever node needs an image's
features first computes them, the other reuses them. With a DITR checkpoint the shared
backbone is the checkpoint's (the feature node's backbone parameters are then unused);
with an image-free checkpoint the feature node keeps its own. A multi-threaded executor
serves both nodes; the heavy work stays on each node's latest-wins worker. With ``--map``
(launch argument ``map:=true``) the process also hosts `semantic_map_node`, named with
the checkpoint's classes, fed by the segmentation output over intra-process DDS.
"""
from __future__ import annotations

import sys

from fit3d_ros.pipeline.shared import SharedResults

from .common import run_node
from .feature_node import FeatureNode
from .segmentation_node import SegmentationNode
from .semantic_map_node import SemanticMapNode


def build(with_map: bool = False) -> tuple:
    """Both nodes wired to one extractor and one cache (rclpy must be initialised), and
    the semantic map node when `with_map`."""
    shared = SharedResults()
    seg = SegmentationNode()
    extractor = seg.segmenter.extractor
    feat = FeatureNode(extractor=extractor, shared=shared)  # None: the node builds its own
    if extractor is not None:
        seg.segmenter.share_features(lambda view: shared.get(
            view.key, lambda: extractor(view.rgb)))
        feat.get_logger().info(f"composed: features from the checkpoint's backbone "
                               f"({seg.segmenter.pre.backbone.name}), computed once per image")
    for node in (feat, seg):
        node.health.extra_stats = lambda: {"backbone_calls": feat.extractor.calls,
                                           "shared.computed": shared.computed,
                                           "shared.reused": shared.shared}
    if not with_map:
        return feat, seg
    return feat, seg, SemanticMapNode(class_names=seg.segmenter.class_names,
                                      palette=seg.segmenter.palette)


def main(args: list[str] | None = None) -> int:
    argv = list(args if args is not None else sys.argv)
    with_map = "--map" in argv
    return run_node(lambda: build(with_map), [a for a in argv if a != "--map"])


if __name__ == "__main__":
    sys.exit(main())

"""Maps from recorded logs: labelled clouds with their TF, or clouds run through a checkpoint.

Design note: a log is walked in order with its TF (`logs.scene_io.replay`), each cloud's
transform map <- cloud frame is looked up at the cloud's stamp, and a cloud without one
is skipped and counted, never guessed. Labels come either from the clouds' own integer
``label`` field (mapped to class indices by the bag's class sidecar or a given class
map; any integer datatype) or from a segmentation checkpoint run through the replay
pipeline (`pipeline.replay`, the nodes' code path), which hands each labelled cloud and
the TF buffer to the map.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from fit3d_ros.logs.bag import BagReader
from fit3d_ros.logs.convert import POINTCLOUD2
from fit3d_ros.logs.scene_io import decode, replay
from fit3d_ros.models.classes import ClassMap, load_classes
from fit3d_ros.msgs import pointcloud2_to_cloud
from fit3d_ros.pipeline.replay import ReplayConfig, replay_bag
from fit3d_ros.sensors import PointCloud, Transform, TransformBuffer
from fit3d_ros.sensors.tf_buffer import TransformError

from .voxel_map import IntegrateStats, MapConfig, VoxelMap


@dataclass
class MapBuildReport:
    """Counts of a map build over logs."""

    clouds: int = 0
    integrated: int = 0
    missing_transform: int = 0
    points: int = 0
    skipped_label: int = 0
    forgotten: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, st: IntegrateStats) -> None:
        self.integrated += 1
        self.points += st.points
        self.skipped_label += st.skipped_label
        self.forgotten += st.forgotten

    def note(self, text: str) -> None:
        if len(self.notes) < 20:
            self.notes.append(text)


def cloud_topic(bag: str | Path, topic: str | None) -> str:
    """`topic`, or the bag's first PointCloud2 topic."""
    with BagReader(bag) as reader:
        clouds = sorted(t for t, i in reader.topics.items() if i.msgtype == POINTCLOUD2)
        if topic is not None:
            if topic not in reader.topics:
                raise ValueError(f"{bag}: no topic {topic} (PointCloud2 topics: {clouds})")
            return topic
    if not clouds:
        raise ValueError(f"{bag}: no {POINTCLOUD2} topic")
    return clouds[0]


def bag_classes(bags: list[str | Path], spec: str | None) -> ClassMap:
    """The class map `spec` (builtin / JSON) or the first bag's sidecar."""
    classes = load_classes(spec, bags[0])
    if classes is None:
        raise ValueError(f"{bags[0]}: no class sidecar (<bag>.classes.json); give --classes")
    return classes


def labelled_clouds(bag: str | Path, frame: str, classes: ClassMap, topic: str | None = None
                    ) -> Iterator[tuple[PointCloud, Transform | None, str]]:
    """(cloud with class-index labels, transform frame <- cloud or None, why-not) per
    labelled cloud of the bag."""
    topic = cloud_topic(bag, topic)
    for m, buffer in replay(bag, [topic]):
        cloud = decode(m, pointcloud2_to_cloud, bag)
        if cloud.label is None:
            raise ValueError(f"{bag}: {topic} message {m.index} has no label field "
                             "(use --checkpoint to segment unlabelled clouds)")
        cloud.label = classes.to_train(cloud.label).astype(np.int32)
        yield (cloud, *_lookup(buffer, frame, cloud))


def _lookup(buffer: TransformBuffer, frame: str, cloud: PointCloud
            ) -> tuple[Transform | None, str]:
    try:
        return buffer.lookup(frame, cloud.frame_id, cloud.stamp), ""
    except TransformError as exc:
        return None, f"cloud on {cloud.frame_id!r} at {cloud.stamp}: no transform: {exc}"


def _integrate(vmap: VoxelMap, report: MapBuildReport, cloud: PointCloud,
               tf: Transform | None, why: str) -> None:
    report.clouds += 1
    if tf is None:
        report.missing_transform += 1
        report.note(why)
        return
    report.add(vmap.integrate_cloud(cloud, tf))


def map_from_labels(bags: list[str | Path], cfg: MapConfig, classes: ClassMap,
                    topic: str | None = None) -> tuple[VoxelMap, MapBuildReport]:
    """A map from the clouds' own labels (``--labels-from-bag``)."""
    vmap = VoxelMap(classes.names, cfg, np.asarray(classes.palette, np.uint8))
    report = MapBuildReport()
    for bag in bags:
        for cloud, tf, why in labelled_clouds(bag, cfg.frame, classes, topic):
            _integrate(vmap, report, cloud, tf, why)
    return vmap, report


def map_from_checkpoint(bags: list[str | Path], cfg: MapConfig, checkpoint: str | Path,
                        out_dir: str | Path, topic: str | None = None,
                        device: str = "cpu") -> tuple[VoxelMap, MapBuildReport]:
    """A map from clouds segmented by `checkpoint` through the replay pipeline (each
    bag's replay outputs go to ``out_dir/replay_<i>``)."""
    state: dict[str, VoxelMap] = {}
    report = MapBuildReport()

    def on_labelled(cloud: PointCloud, buffer: TransformBuffer, segmenter) -> None:
        if "map" not in state:
            state["map"] = VoxelMap(segmenter.class_names, cfg, segmenter.palette)
        _integrate(state["map"], report, cloud, *_lookup(buffer, cfg.frame, cloud))

    for i, bag in enumerate(bags):
        replay_bag(bag, Path(out_dir) / f"replay_{i}", ReplayConfig(
            checkpoint=str(checkpoint), cloud_topic=topic, device=device,
            on_labelled=on_labelled))
    if "map" not in state:
        raise ValueError(f"no cloud of {[str(b) for b in bags]} was segmented")
    return state["map"], report


def ground_truth(bag: str | Path, frame: str, classes: ClassMap, topic: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """(xyz in `frame`, class indices, clouds skipped without transform) of a bag's
    labelled clouds."""
    xyz, lab, skipped = [], [], 0
    for cloud, tf, _ in labelled_clouds(bag, frame, classes, topic):
        if tf is None:
            skipped += 1
            continue
        xyz.append(tf.apply(cloud.xyz).astype(np.float32))
        lab.append(cloud.label)
    if not xyz:
        raise ValueError(f"{bag}: no labelled cloud with a transform into {frame!r}")
    return np.concatenate(xyz), np.concatenate(lab), skipped

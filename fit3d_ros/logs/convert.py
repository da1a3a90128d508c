"""Dataset folders -> rosbag2 logs with ROS topics, CameraInfo, TF and stamps.

Design note: each converter reads a dataset with `datasets` (typed frames, no ROS),
builds rosbags messages with `fit3d_ros.msgs` and writes them through the atomic
`BagWriter`, in stamp order, TF before CameraInfo before images at equal stamps, with
log time = header stamp. Frames follow REP-103/105: ``map`` -> sensor poses on ``/tf``,
sensor extrinsics on latched ``/tf_static``, images in ``*_optical_frame`` frames,
clouds in the LiDAR frame. KITTI object frames come from different drives, so its
``/tf_static`` is re-published whenever the calibration changes (tf2 semantics: the newest
static transform wins), and `scene_io.replay` sees each frame's own extrinsics. Any
failure (bad source file, conversion error) propagates and the writer removes its
temporary output: no partial bag is left behind.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..msgs import (MsgTypes, cloud_to_pointcloud2, depth_to_image, model_to_camera_info,
                    numpy_to_image, rosbags_types, transforms_to_tf_message)
from ..sensors.camera import CameraModel
from ..sensors.transforms import Transform
from .bag import BagWriter
from .datasets import KittiFrame, load_rgbd_file, open_rgbd_dir, read_kitti_object
from .lidar_datasets import read_nuscenes, read_semantickitti

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
POINTCLOUD2 = "sensor_msgs/msg/PointCloud2"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
TF, TF_STATIC = "/tf", "/tf_static"

RGBD_TOPICS = {"color": "/camera/color/image_raw", "color_info": "/camera/color/camera_info",
               "depth": "/camera/depth/image_raw", "depth_info": "/camera/depth/camera_info"}
KITTI_TOPICS = {"cloud": "/velodyne_points", "image": "/camera/color/image_raw",
                "info": "/camera/color/camera_info"}
NUSCENES_LIDAR_TOPIC = "/lidar_top/points"
SEMANTICKITTI_TOPIC = "/velodyne_points"

def nuscenes_topics(camera: str) -> tuple[str, str]:
    """(image, camera_info) topics of a nuScenes camera (``CAM_FRONT`` -> /cam_front/...)."""
    base = f"/{camera.lower()}"
    return f"{base}/image_raw", f"{base}/camera_info"


class BagOut:
    """A BagWriter plus the message flavour and the helpers the converters share."""

    def __init__(self, writer: BagWriter, types: MsgTypes) -> None:
        self.w, self.types = writer, types
        self.stamps: list[int] = []

    def tf(self, tfs: Sequence[Transform], stamp: int, static: bool = False) -> None:
        self.w.write(TF_STATIC if static else TF, TF_MESSAGE, stamp,
                     transforms_to_tf_message(list(tfs), self.types))

    def camera(self, image_topic: str, info_topic: str, cam: CameraModel, rgb: np.ndarray,
               stamp: int) -> None:
        self.w.write(info_topic, CAMERA_INFO, stamp,
                     model_to_camera_info(cam, stamp, cam.frame_id, self.types))
        self.w.write(image_topic, IMAGE, stamp,
                     numpy_to_image(rgb, "rgb8", stamp, cam.frame_id, self.types))
        self.stamps.append(stamp)

    def summary(self, frames: int, **extra: Any) -> dict[str, Any]:
        start, end = (min(self.stamps), max(self.stamps)) if self.stamps else (0, 0)
        return {"output": str(self.w.path), "storage": self.w.storage, "frames": frames,
                "topics": dict(sorted(self.w.counts.items())), "start_ns": start,
                "end_ns": end, "duration_s": (end - start) / 1e9, **extra}


def _stamped(tf: Transform, stamp: int) -> Transform:
    return Transform(tf.matrix, tf.parent_frame, tf.child_frame, stamp)


def rgbd_to_bag(root: str | Path, out: str | Path, fmt: str = "7scenes", every: int = 1,
                storage: str | None = None, overwrite: bool = False,
                compress: bool = False) -> dict[str, Any]:
    """7-Scenes / Redwood folder -> bag: rgb8 colour, 16UC1 depth (mm), both CameraInfos,
    ``map -> camera_depth_optical_frame`` poses on /tf, depth -> colour extrinsics on
    /tf_static. Frames without a valid pose get no /tf entry."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    src = open_rgbd_dir(root, fmt)
    files = src.files[::every]
    types = rosbags_types()
    with BagWriter(out, storage=storage, overwrite=overwrite, compress=compress) as w:
        o = BagOut(w, types)
        for i, f in enumerate(files):
            frame = load_rgbd_file(src, f, reference="depth")
            stamp = frame.stamp
            if i == 0:
                o.tf([_stamped(src.T_depth_color, stamp)], stamp, static=True)
            if frame.pose is not None:
                o.tf([frame.pose], stamp)
            o.camera(RGBD_TOPICS["color"], RGBD_TOPICS["color_info"], src.color_camera,
                     frame.rgb, stamp)
            dcam = src.depth_camera
            w.write(RGBD_TOPICS["depth_info"], CAMERA_INFO, stamp,
                    model_to_camera_info(dcam, stamp, dcam.frame_id, types))
            w.write(RGBD_TOPICS["depth"], IMAGE, stamp,
                    depth_to_image(frame.depth, stamp, dcam.frame_id, types, "16UC1"))
        return o.summary(len(files), format=fmt)


def kitti_to_bag(root: str | Path, out: str | Path, frames: Iterable[str | int] | None = None,
                 storage: str | None = None, overwrite: bool = False, compress: bool = False,
                 label_fn: Callable[[KittiFrame], np.ndarray] | None = None) -> dict[str, Any]:
    """KITTI object folder -> bag: PointCloud2 (x, y, z, intensity) on /velodyne_points,
    rgb8 image 2 + CameraInfo (K = P2[:, :3]), static TF base_link -> velodyne ->
    camera_color_left_optical_frame. ``label_fn(frame)`` adds a per-point ``label`` field
    (e.g. `fit3d_ros.training.ditr.box_labels`)."""
    types = rosbags_types()
    n = 0
    with BagWriter(out, storage=storage, overwrite=overwrite, compress=compress) as w:
        o = BagOut(w, types)
        last_calib: list[np.ndarray] | None = None
        for frame in read_kitti_object(root, frames):
            # tree: base_link -> velodyne -> camera (one parent per frame, as in tf2)
            statics = [t for t in (frame.T_base_velo, frame.T_cam_velo.inverse())
                       if t is not None]
            calib = [t.matrix for t in statics]
            if last_calib is None or len(calib) != len(last_calib) or not all(
                    np.array_equal(a, b) for a, b in zip(calib, last_calib)):
                o.tf(statics, frame.stamp, static=True)
                last_calib = calib
            cloud = frame.cloud if label_fn is None else replace(frame.cloud,
                                                                 label=label_fn(frame))
            w.write(KITTI_TOPICS["cloud"], POINTCLOUD2, frame.stamp,
                    cloud_to_pointcloud2(cloud, types))
            o.camera(KITTI_TOPICS["image"], KITTI_TOPICS["info"], frame.camera,
                     frame.image.rgb, frame.stamp)
            n += 1
        return o.summary(n)


def nuscenes_to_bag(root: str | Path, out: str | Path, storage: str | None = None,
                    overwrite: bool = False, compress: bool = False) -> dict[str, Any]:
    """nuScenes sample -> bag: six rgb8 cameras + CameraInfo (/cam_*/...), LIDAR_TOP
    PointCloud2 (x, y, z, intensity, ring) on /lidar_top/points, static TF base_link ->
    sensors, ``map -> base_link`` on /tf at the lidar and every camera stamp."""
    sample = read_nuscenes(root)
    types = rosbags_types()
    events: list[tuple[int, int, str]] = [(sample.stamp, 1, "LIDAR")]
    events += [(f.stamp, 1, name) for name, f in sample.cameras.items()]
    ego = {sample.stamp: sample.T_map_base}
    ego.update({sample.cameras[n].stamp: t for n, t in sample.T_map_base_cams.items()})
    events += [(stamp, 0, "TF") for stamp in ego]
    events.sort()
    with BagWriter(out, storage=storage, overwrite=overwrite, compress=compress) as w:
        o = BagOut(w, types)
        first = events[0][0]
        o.tf([_stamped(sample.T_base_lidar, first)] +
             [_stamped(t, first) for t in sample.T_base_cams.values()], first, static=True)
        for stamp, _, what in events:
            if what == "TF":
                o.tf([_stamped(ego[stamp], stamp)], stamp)
            elif what == "LIDAR":
                w.write(NUSCENES_LIDAR_TOPIC, POINTCLOUD2, stamp,
                        cloud_to_pointcloud2(sample.lidar, types))
                o.stamps.append(stamp)
            else:
                f = sample.cameras[what]
                image_topic, info_topic = nuscenes_topics(what)
                o.camera(image_topic, info_topic, f.camera, f.rgb, stamp)
        return o.summary(1, cameras=len(sample.cameras))


def semantickitti_to_bag(root: str | Path, out: str | Path, storage: str | None = None,
                         overwrite: bool = False, compress: bool = False) -> dict[str, Any]:
    """SemanticKITTI scans -> bag: PointCloud2 (x, y, z, label int32) on /velodyne_points."""
    types = rosbags_types()
    n = 0
    with BagWriter(out, storage=storage, overwrite=overwrite, compress=compress) as w:
        o = BagOut(w, types)
        for cloud in read_semantickitti(root):
            w.write(SEMANTICKITTI_TOPIC, POINTCLOUD2, cloud.stamp,
                    cloud_to_pointcloud2(cloud, types))
            o.stamps.append(cloud.stamp)
            n += 1
        return o.summary(n)

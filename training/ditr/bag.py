"""rosbag2 logs -> segmentation samples: clouds paired with the camera images that see them.

Design note: a bag is replayed in log order (`fit3d_ros.logs.scene_io.replay`), so every
message sees the TF tree as it was when it was recorded (KITTI bags re-publish their
static calibration per frame). On arrival, each cloud and each colour image records its
pose in every candidate fixed frame it can reach (``map``, ``odom``, ``base_link`` and the
clouds' own frames); a cloud is then paired, per image topic, with the image nearest in
time (within ``max_dt_s``), and ``T_cam_points = T_fixed_cam(t_img)⁻¹ · T_fixed_cloud(t_cloud)``
through the first fixed frame both reach — ``map`` first, so motion between the LiDAR and
camera stamps is compensated where the bag has odometry. Image topics pair with the
``camera_info`` topic of the same namespace; topics with ``depth`` in their namespace are
not colour cameras. Bags without clouds but with the RGB-D topics of
`fit3d_ros.logs.convert` become back-projected depth clouds seen by the colour camera.
Per-point ``label`` fields need a class map: the bag's ``<bag>.classes.json`` sidecar
or ``LoadOptions.classes``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fit3d_ros.logs.bag import BagError, BagReader
from fit3d_ros.logs.convert import CAMERA_INFO, IMAGE, POINTCLOUD2, RGBD_TOPICS
from fit3d_ros.logs.scene_io import decode, read_rgbd_frames, read_transform_buffer, replay
from fit3d_ros.models.classes import load_classes
from fit3d_ros.msgs import camera_info_to_model, image_to_rgb, pointcloud2_to_cloud, stamp_to_ns
from fit3d_ros.sensors import CameraModel, TransformError
from fit3d_ros.training.ditr.data import CameraView, LoadOptions, Sample, SegDataset

FIXED_FRAMES = ("map", "odom", "base_link")


def _camera_topics(bag: BagReader) -> dict[str, str]:
    """Colour image topic -> camera_info topic of the same namespace."""
    infos = {t.rsplit("/", 1)[0]: t for t, i in bag.topics.items() if i.msgtype == CAMERA_INFO}
    out = {}
    for topic, info in bag.topics.items():
        ns = topic.rsplit("/", 1)[0]
        if info.msgtype == IMAGE and ns in infos and "depth" not in ns.lower():
            out[topic] = infos[ns]
    return out


def _poses(buffer, frame: str, stamp: int, fixed: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for f in fixed:
        try:
            out[f] = buffer.lookup(f, frame, stamp).matrix
        except TransformError:
            continue
    return out


def _lidar_samples(path: Path, options: LoadOptions, clouds: list[str],
                   cams: dict[str, str]) -> SegDataset:
    with BagReader(path) as bag:
        frames: list[str] = []
        seen: set[str] = set()      # cloud topics whose frame id is known
        for m in bag.messages(clouds):
            frame = decode(m, lambda msg: str(msg.header.frame_id), path)
            if frame not in frames:
                frames.append(frame)
            seen.add(m.topic)
            if len(seen) >= len(set(clouds)):
                break
    fixed = list(FIXED_FRAMES) + [f for f in frames if f not in FIXED_FRAMES]
    infos: dict[str, CameraModel] = {}
    images: dict[str, list] = {t: [] for t in cams}
    scans: list = []
    for m, buffer in replay(path, clouds + list(cams) + sorted(set(cams.values()))):
        if m.topic in clouds:
            cloud = decode(m, pointcloud2_to_cloud, path)
            scans.append((m, cloud, _poses(buffer, cloud.frame_id, cloud.stamp, fixed)))
        elif m.topic in cams:
            info = infos.get(cams[m.topic])
            if info is None:
                raise BagError(f"{path}: topic {m.topic} message {m.index}: no CameraInfo on "
                               f"{cams[m.topic]} before it")
            rgb = decode(m, image_to_rgb, path)
            stamp, frame = decode(m, lambda msg: (stamp_to_ns(msg.header.stamp),
                                                  str(msg.header.frame_id) or info.frame_id),
                                  path)
            images[m.topic].append((stamp, rgb, info, _poses(buffer, frame, stamp, fixed)))
        else:
            infos[m.topic] = decode(m, camera_info_to_model, path)
    scans = options.take(scans)
    classes = load_classes(options.classes, data=path)
    max_dt = int(options.max_dt_s * 1e9)
    stamps = {t: np.array([i[0] for i in imgs], dtype=np.int64)
              for t, imgs in images.items() if imgs}
    samples = []
    for m, cloud, cloud_poses in scans:
        views = []
        for topic, imgs in images.items():
            if not imgs:
                continue
            j = int(np.argmin(np.abs(stamps[topic] - cloud.stamp)))
            stamp, rgb, cam, cam_poses = imgs[j]
            if abs(stamp - cloud.stamp) > max_dt:
                continue
            common = [f for f in fixed if f in cam_poses and f in cloud_poses]
            if not common:
                raise BagError(f"{path}: topic {m.topic} message {m.index}: no TF path between "
                               f"cloud frame {cloud.frame_id!r} and camera {topic} "
                               f"({cam.frame_id!r})")
            f = common[0]
            T = np.linalg.inv(cam_poses[f]) @ cloud_poses[f]
            if rgb.shape[:2] != (cam.height, cam.width):
                raise BagError(f"{path}: {topic}: image {rgb.shape[1]}x{rgb.shape[0]} does not "
                               f"match its CameraInfo {cam.width}x{cam.height}")
            views.append(CameraView(cam, rgb, T, topic))
        labels = None
        if cloud.label is not None:
            if classes is None:
                raise BagError(f"{path}: topic {m.topic} has per-point labels but the bag has "
                               "no class map: pass --classes (semantickitti, kitti_boxes or "
                               "a JSON file)")
            labels = classes.to_train(cloud.label)
        samples.append(Sample(f"{path}#{m.topic}#{m.index}", cloud.xyz, cloud.intensity,
                              cloud.rgb, labels, views))
    return SegDataset(str(path), samples, classes)


def _rgbd_samples(path: Path, options: LoadOptions) -> SegDataset:
    frames = read_rgbd_frames(path, reference="depth", every=options.every)
    if options.max_frames is not None:
        frames = frames[:options.max_frames]
    with BagReader(path) as bag:
        color = next((decode(m, camera_info_to_model, path)
                      for m in bag.messages([RGBD_TOPICS["color_info"]])), None)
    if color is None or not frames:
        raise BagError(f"{path}: no colour CameraInfo or no RGB-D frames")
    T = read_transform_buffer(path).lookup(color.frame_id, frames[0].camera.frame_id).matrix
    samples = []
    for i, f in enumerate(frames):
        xyz, _ = f.camera.backproject(f.depth, options.rgbd_stride)
        if len(xyz):
            samples.append(Sample(f"{path}#{i}", xyz,
                                  views=[CameraView(color, f.rgb, T, RGBD_TOPICS["color"])]))
    return SegDataset(str(path), samples, load_classes(options.classes, data=path))


def load_bag(path: str | Path, options: LoadOptions | None = None) -> SegDataset:
    """Samples of a bag: every PointCloud2 with its cameras, or back-projected RGB-D."""
    options = options or LoadOptions()
    path = Path(path)
    with BagReader(path) as bag:
        clouds = sorted(t for t, i in bag.topics.items() if i.msgtype == POINTCLOUD2)
        cams = _camera_topics(bag)
        has_rgbd = all(t in bag.topics for t in RGBD_TOPICS.values())
    if clouds:
        return _lidar_samples(path, options, clouds, cams)
    if has_rgbd:
        return _rgbd_samples(path, options)
    raise BagError(f"{path}: neither PointCloud2 topics nor the RGB-D topics "
                   f"{sorted(RGBD_TOPICS.values())}")

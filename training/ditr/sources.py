"""Dataset folders and rosbag2 logs -> :class:`~.data.SegDataset`.

Design note: :func:`load_dataset` recognises a source by its layout — a bag (``.mcap``,
``.db3`` or a rosbag2 directory, read by `bag`), a nuScenes sample (``sample.json``),
a KITTI object folder (``velodyne/`` + ``calib/``; labels derived from ``label_2`` boxes
by `box_labels`), SemanticKITTI (``points/*.npy`` + ``labels/*.npy`` with training ids,
or the original ``velodyne/*.bin`` + ``labels/*.label`` mapped with the
semantic-kitti-api learning map) and RGB-D folders (7-Scenes, Redwood: the depth image
back-projected, every ``rgbd_stride``-th pixel, to a cloud in the depth camera's frame,
seen by the colour camera). Reading goes through `fit3d_ros.logs`, so the extrinsics are
exactly those the bag converters write. Labels are mapped to training ids with the
source's class map (``classes`` overrides it: a builtin name or a JSON file).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from fit3d_ros.logs.datasets import load_rgbd_file, open_rgbd_dir
from fit3d_ros.logs.lidar_datasets import (
    load_kitti_scan,
    read_kitti_object,
    read_nuscenes,
    read_semantickitti,
)
from fit3d_ros.models.classes import (
    ClassMap,
    kitti_box_classes,
    load_classes,
    semantickitti_classes,
    semantickitti_learning_map,
)
from fit3d_ros.training.ditr.bag import load_bag
from fit3d_ros.training.ditr.box_labels import kitti_frame_box_labels
from fit3d_ros.training.ditr.data import CameraView, LoadOptions, Sample, SegDataset


def detect_kind(path: str | Path) -> str:
    """Which loader reads `path`: bag, nuscenes, kitti, semantickitti, 7scenes or redwood;
    ValueError when none fits."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data source {p} does not exist")
    if p.is_file():
        if p.suffix in (".mcap", ".db3"):
            return "bag"
        raise ValueError(f"{p}: a file that is not a bag (.mcap/.db3)")
    if (p / "metadata.yaml").is_file():
        return "bag"
    if (p / "sample.json").is_file():
        return "nuscenes"
    if (p / "velodyne").is_dir() and (p / "calib").is_dir():
        return "kitti"
    if (p / "points").is_dir() or ((p / "velodyne").is_dir() and (p / "labels").is_dir()):
        return "semantickitti"
    if any(p.glob("frame-*.color.*")):
        return "7scenes"
    if (p / "color").is_dir() and (p / "depth").is_dir():
        return "redwood"
    raise ValueError(f"{p}: unknown data layout (expected a bag, a nuScenes sample, a KITTI "
                     "object folder, SemanticKITTI points/+labels/ or velodyne/+labels/, or a "
                     "7-Scenes/Redwood RGB-D folder)")


def _classes(options: LoadOptions, default: ClassMap | None) -> ClassMap | None:
    """The override of `options.classes` if given, else the source's own class map."""
    return load_classes(options.classes) if options.classes else default


def _semantickitti(path: Path, options: LoadOptions) -> SegDataset:
    classes = _classes(options, semantickitti_classes())
    samples = []
    if (path / "points").is_dir():
        clouds = options.take(list(read_semantickitti(path)))
        for i, cloud in enumerate(clouds):
            samples.append(Sample(f"{path}#{i}", cloud.xyz, labels=classes.to_train(cloud.label)))
    else:
        scans = options.take(sorted((path / "velodyne").glob("*.bin")))
        for scan in scans:
            pts = load_kitti_scan(scan)
            lp = path / "labels" / f"{scan.stem}.label"
            if not lp.is_file():
                raise ValueError(f"{scan}: missing labels file {lp}")
            raw = np.fromfile(lp, dtype="<u4")
            if len(raw) != len(pts):
                raise ValueError(f"{lp}: {len(raw)} labels for {len(pts)} points")
            train_ids = semantickitti_learning_map(raw)
            samples.append(Sample(f"{scan}", pts[:, :3], intensity=pts[:, 3],
                                  labels=classes.to_train(train_ids)))
    return SegDataset(str(path), samples, classes)


def _kitti(path: Path, options: LoadOptions) -> SegDataset:
    classes = _classes(options, kitti_box_classes()) if options.box_labels else None
    names = options.take([p.stem for p in sorted((path / "velodyne").glob("*.bin"))])
    samples = []
    for frame in read_kitti_object(path, names):
        labels = None
        if classes is not None:
            labels = classes.to_train(kitti_frame_box_labels(frame))
        view = CameraView(frame.camera, frame.image.rgb, frame.T_cam_velo.matrix, "image_2")
        samples.append(Sample(f"{path}#{frame.name}", frame.cloud.xyz, frame.cloud.intensity,
                              labels=labels, views=[view]))
    return SegDataset(str(path), samples, classes)


def _nuscenes(path: Path, options: LoadOptions) -> SegDataset:
    sample = read_nuscenes(path)
    views = [CameraView(f.camera, f.rgb, sample.T_cam_lidar[name].matrix, name)
             for name, f in sample.cameras.items()]
    lidar = sample.lidar
    return SegDataset(str(path), [Sample(f"{path}#0", lidar.xyz, lidar.intensity, views=views)],
                      _classes(options, None))


def _rgbd(path: Path, fmt: str, options: LoadOptions) -> SegDataset:
    src = open_rgbd_dir(path, fmt)
    T_color_depth = src.T_depth_color.inverse().matrix
    samples = []
    for f in options.take(list(src.files)):
        frame = load_rgbd_file(src, f, reference="depth")
        xyz, _ = frame.camera.backproject(frame.depth, options.rgbd_stride)
        if len(xyz) == 0:
            continue
        view = CameraView(src.color_camera, frame.rgb, T_color_depth, "color")
        samples.append(Sample(f"{path}#{f.number}", xyz, views=[view]))
    return SegDataset(str(path), samples, _classes(options, None))


def load_dataset(path: str | Path, options: LoadOptions | None = None) -> SegDataset:
    """Read one data source (folder or bag) into a :class:`SegDataset`."""
    options = options or LoadOptions()
    p = Path(path)
    kind = detect_kind(p)
    if kind == "bag":
        return load_bag(p, options)
    if kind == "nuscenes":
        return _nuscenes(p, options)
    if kind == "kitti":
        return _kitti(p, options)
    if kind == "semantickitti":
        return _semantickitti(p, options)
    return _rgbd(p, kind, options)

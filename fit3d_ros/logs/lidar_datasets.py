"""Readers of the LiDAR dataset layouts (KITTI object, nuScenes sample, SemanticKITTI).

Design note: KITTI's projection is ``x_img = P2 · R0_rect · Tr_velo_to_cam · x_velo``
with image 2 already rectified. We express it the ROS way: the camera frame is the
rectified left colour camera itself, ``K = P2[:, :3]`` (R = I, P = [K | 0]), and the
extrinsics ``T_cam_velo = [I | K⁻¹ P2[:, 3]] · R0_rect · Tr_velo_to_cam`` (projected to
the nearest rigid transform), so ``K · (T_cam_velo · x)`` reproduces KITTI's pixels and
any tf2 + pinhole consumer works unchanged. ``base_link`` is KITTI's IMU (x forward,
z up), from ``Tr_imu_to_velo``. nuScenes: ``base_link`` is the ego vehicle,
``cam2ego``/``lidar2ego`` become static sensor extrinsics and ``ego2global`` the
map->base_link pose at the lidar stamp; the sample's ``lidar2cam`` is motion compensated
(it differs from the static chain by up to 0.33 m here), so it yields the ego pose at
each camera's stamp: ``map<-base(t_cam) = ego2global · lidar2ego · lidar2cam⁻¹ ·
cam2ego⁻¹``. Stamps come from the microsecond timestamps. SemanticKITTI uses the
shared ``points/*.npy`` + ``labels/*.npy`` layout (labels 0-19, 0 = ignored). Stamps of
datasets without clocks are synthetic (``sources.T0_NS`` + frame number x 100 ms).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..sensors.camera import CameraModel
from ..sensors.frames import PointCloud, RGBDFrame
from ..sensors.transforms import Transform
from .sources import (BASE_LINK, KITTI_CAM2_OPTICAL, LIDAR_PERIOD_NS, MAP, VELODYNE,
                      frame_number, load_rgb, nearest_rigid, parse_kitti_calib,
                      synthetic_stamp)

NUSCENES_CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK",
                    "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
NUSCENES_LIDAR_FRAME = "lidar_top"


@dataclass
class KittiObject:
    """One line of a KITTI ``label_2`` file (camera-0 rectified coordinates, metres)."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: np.ndarray        # (4,) left, top, right, bottom pixels
    dimensions: np.ndarray  # (3,) height, width, length
    location: np.ndarray    # (3,) x, y, z of the bottom centre
    rotation_y: float
    score: float | None = None


@dataclass
class KittiFrame:
    """One KITTI object frame: Velodyne cloud, left colour image, calibration, labels."""

    name: str                # "000000"
    stamp: int
    cloud: PointCloud        # frame "velodyne": xyz + intensity (reflectance)
    image: RGBDFrame         # rgb only, camera = `camera`
    camera: CameraModel      # rectified cam 2: K = P2[:, :3]
    T_cam_velo: Transform    # parent = camera optical frame, child = velodyne
    T_base_velo: Transform | None  # parent = base_link (IMU), child = velodyne
    labels: list[KittiObject] = field(default_factory=list)
    calib: dict[str, np.ndarray] = field(default_factory=dict)  # raw calib file values


def _calib_matrix(calib: dict[str, np.ndarray], key: str, shape: tuple[int, int],
                  path: Path) -> np.ndarray:
    if key not in calib:
        raise ValueError(f"{path}: calibration key {key} is missing")
    if calib[key].size != shape[0] * shape[1]:
        raise ValueError(f"{path}: {key} has {calib[key].size} values, expected "
                         f"{shape[0] * shape[1]}")
    return calib[key].reshape(shape)


def kitti_camera_extrinsics(calib: dict[str, np.ndarray], width: int, height: int,
                            path: Path) -> tuple[CameraModel, Transform, Transform | None]:
    """(camera of image 2, T_cam_velo, T_base_velo) from a parsed KITTI calib file."""
    P2 = _calib_matrix(calib, "P2", (3, 4), path)
    R0 = np.eye(4)
    R0[:3, :3] = _calib_matrix(calib, "R0_rect", (3, 3), path)
    Tr = nearest_rigid(_calib_matrix(calib, "Tr_velo_to_cam", (3, 4), path),
                       f"{path}: Tr_velo_to_cam")
    K = P2[:, :3]
    offset = np.eye(4)
    offset[:3, 3] = np.linalg.solve(K, P2[:, 3])  # cam-0 rectified -> cam-2 optical centre
    T_cam = nearest_rigid(offset @ nearest_rigid(R0, f"{path}: R0_rect") @ Tr,
                          f"{path}: velodyne->camera")
    camera = CameraModel(K=K, width=width, height=height, frame_id=KITTI_CAM2_OPTICAL)
    T_cam_velo = Transform(T_cam, parent_frame=KITTI_CAM2_OPTICAL, child_frame=VELODYNE)
    T_base_velo = None
    if "Tr_imu_to_velo" in calib:
        imu = nearest_rigid(_calib_matrix(calib, "Tr_imu_to_velo", (3, 4), path),
                            f"{path}: Tr_imu_to_velo")
        T_base_velo = Transform(imu, parent_frame=VELODYNE, child_frame=BASE_LINK).inverse()
    return camera, T_cam_velo, T_base_velo


def read_kitti_labels(path: Path) -> list[KittiObject]:
    """Objects of a KITTI ``label_2`` file ([] if the file does not exist)."""
    if not path.exists():
        return []
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise ValueError(f"{path}:{n}: expected 15 or 16 fields, got {len(parts)}")
        try:
            v = [float(x) for x in parts[1:]]
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: {exc}") from exc
        out.append(KittiObject(parts[0], v[0], int(v[1]), v[2], np.array(v[3:7]),
                               np.array(v[7:10]), np.array(v[10:13]), v[13],
                               v[14] if len(v) == 15 else None))
    return out


def load_kitti_scan(path: Path, columns: int = 4) -> np.ndarray:
    """(N, columns) float32 of a raw LiDAR ``.bin`` file."""
    try:
        raw = np.fromfile(path, dtype="<f4")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read point file: {exc}") from exc
    if raw.size % columns:
        raise ValueError(f"{path}: {raw.size} floats is not a multiple of {columns} "
                         "(truncated or wrong layout)")
    return raw.reshape(-1, columns)


def read_kitti_object(root: str | Path, frames: Iterable[str | int] | None = None
                      ) -> Iterator[KittiFrame]:
    """Frames of a KITTI object folder (``velodyne/``, ``image_2/``, ``calib/``, ``label_2/``)."""
    root = Path(root)
    if not (root / "velodyne").is_dir():
        raise ValueError(f"{root}: not a KITTI object folder (no velodyne/)")
    if frames is None:
        names = [p.stem for p in sorted((root / "velodyne").glob("*.bin"))]
    else:
        names = [f"{int(f):06d}" if str(f).isdigit() else str(f) for f in frames]
    if not names:
        raise ValueError(f"{root}: no frames")
    for name in names:
        paths = {d: root / d / f"{name}.{ext}" for d, ext in
                 (("velodyne", "bin"), ("image_2", "png"), ("calib", "txt"))}
        for p in paths.values():
            if not p.exists():
                raise ValueError(f"KITTI frame {name}: missing {p}")
        stamp = synthetic_stamp(frame_number(paths["velodyne"]), LIDAR_PERIOD_NS)
        scan = load_kitti_scan(paths["velodyne"])
        cloud = PointCloud(stamp, VELODYNE, scan[:, :3], intensity=scan[:, 3])
        rgb = load_rgb(paths["image_2"])
        calib = parse_kitti_calib(paths["calib"])
        camera, T_cam_velo, T_base_velo = kitti_camera_extrinsics(
            calib, rgb.shape[1], rgb.shape[0], paths["calib"])
        for tf in (T_cam_velo, T_base_velo):
            if tf is not None:
                tf.stamp = stamp
        image = RGBDFrame(stamp, camera.frame_id, rgb, None, camera)
        labels = read_kitti_labels(root / "label_2" / f"{name}.txt")
        yield KittiFrame(name, stamp, cloud, image, camera, T_cam_velo, T_base_velo,
                         labels, calib)


@dataclass
class NuScenesSample:
    """One nuScenes sample: LIDAR_TOP sweep, six cameras and their extrinsics."""

    stamp: int                       # lidar stamp (ns)
    lidar: PointCloud                # frame lidar_top: xyz, intensity, extra["ring"]
    cameras: dict[str, RGBDFrame]    # CAM_* -> rgb frame (pose = camera -> map at its stamp)
    T_base_lidar: Transform          # base_link <- lidar_top
    T_base_cams: dict[str, Transform]  # base_link <- cam_*_optical_frame
    T_map_base: Transform            # map <- base_link (ego pose at the lidar stamp)
    T_map_base_cams: dict[str, Transform]  # map <- base_link at each camera's stamp
    T_cam_lidar: dict[str, Transform]  # cam(t_cam) <- lidar(t_lidar), motion compensated


def nuscenes_frame(camera: str) -> str:
    """ROS frame id of a nuScenes camera (``CAM_FRONT`` -> ``cam_front_optical_frame``)."""
    return f"{camera.lower()}_optical_frame"


def _us_to_ns(seconds: float) -> int:
    """Exact ns of a nuScenes timestamp stored as float seconds with microsecond digits."""
    return int(round(float(seconds) * 1e6)) * 1000


def read_nuscenes(root: str | Path) -> NuScenesSample:
    """The sample described by ``sample.json`` in a nuScenes folder."""
    root = Path(root)
    meta_path = root / "sample.json"
    try:
        meta = json.loads(meta_path.read_text())
        lidar_meta, cams_meta = meta["lidar"], meta["cameras"]
        stamp = _us_to_ns(meta["timestamp"])
        T_map_base = Transform(nearest_rigid(meta["ego2global"], f"{meta_path}: ego2global"),
                               MAP, BASE_LINK, stamp)
        T_base_lidar = Transform(nearest_rigid(lidar_meta["lidar2ego"],
                                               f"{meta_path}: lidar2ego"),
                                 BASE_LINK, NUSCENES_LIDAR_FRAME, stamp)
        n_feats = int(lidar_meta.get("num_pts_feats", 5))
        lidar_file = root / lidar_meta["file"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{meta_path}: not a usable nuScenes sample: {exc!r}") from exc
    if n_feats < 4:
        raise ValueError(f"{meta_path}: num_pts_feats={n_feats} < 4 (x, y, z, intensity)")
    scan = load_kitti_scan(lidar_file, n_feats)
    extra = {"ring": np.ascontiguousarray(scan[:, 4])} if n_feats >= 5 else {}
    lidar = PointCloud(stamp, NUSCENES_LIDAR_FRAME, scan[:, :3], intensity=scan[:, 3],
                       extra=extra)
    cameras: dict[str, RGBDFrame] = {}
    T_base_cams: dict[str, Transform] = {}
    cameras: dict[str, RGBDFrame] = {}
    T_base_cams: dict[str, Transform] = {}
    T_map_base_cams: dict[str, Transform] = {}
    T_cam_lidar: dict[str, Transform] = {}
    for name in sorted(cams_meta, key=lambda n: (n not in NUSCENES_CAMERAS, n)):
        c = cams_meta[name]
        what = f"{meta_path}: {name}"
        try:
            K, img_path = np.asarray(c["cam2img"], dtype=np.float64), c["img_path"]
            cam_stamp = _us_to_ns(c["timestamp"])
            cam2ego, lidar2cam = c["cam2ego"], c["lidar2cam"]
        except KeyError as exc:
            raise ValueError(f"{what}: missing key {exc}") from exc
        frame = nuscenes_frame(name)
        rgb = load_rgb(root / img_path)
        camera = CameraModel(K=K, width=rgb.shape[1], height=rgb.shape[0], frame_id=frame)
        T_base_cam = Transform(nearest_rigid(cam2ego, f"{what}: cam2ego"), BASE_LINK, frame,
                               cam_stamp)
        T_cl = Transform(nearest_rigid(lidar2cam, f"{what}: lidar2cam"), frame,
                         NUSCENES_LIDAR_FRAME, cam_stamp)
        m = T_map_base.matrix @ T_base_lidar.matrix @ T_cl.inverse().matrix \
            @ T_base_cam.inverse().matrix
        T_mb = Transform(nearest_rigid(m, f"{what}: ego pose at camera stamp"), MAP,
                         BASE_LINK, cam_stamp)
        pose = T_mb @ T_base_cam
        cameras[name] = RGBDFrame(cam_stamp, frame, rgb, None, camera, pose)
        T_base_cams[name], T_map_base_cams[name], T_cam_lidar[name] = T_base_cam, T_mb, T_cl
    return NuScenesSample(stamp, lidar, cameras, T_base_lidar, T_base_cams, T_map_base,
                          T_map_base_cams, T_cam_lidar)


def read_semantickitti(root: str | Path, frame_id: str = VELODYNE) -> Iterator[PointCloud]:
    """Labelled scans of ``points/*.npy`` ((N,3) float32) + ``labels/*.npy`` ((N,) or (N,1)).

    Stamps are synthetic (scan number x 100 ms). Scans are returned as stored (the
    shared sample is shifted ~-100 m in y, i.e. not in the sensor frame).
    """
    root = Path(root)
    scans = sorted((root / "points").glob("*.npy"))
    if not scans:
        raise ValueError(f"{root}: no SemanticKITTI scans (points/*.npy)")
    for p in scans:
        lp = root / "labels" / p.name
        if not lp.exists():
            raise ValueError(f"{p}: missing labels file {lp}")
        try:
            pts, lab = np.load(p, allow_pickle=False), np.load(lp, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{p}: cannot load scan/labels: {exc}") from exc
        if pts.ndim != 2 or pts.shape[1] < 3 or pts.dtype.kind != "f":
            raise ValueError(f"{p}: points must be (N,3+) float, got {pts.dtype} {pts.shape}")
        lab = lab.reshape(len(lab), -1) if lab.ndim > 1 else lab[:, None]
        if lab.shape != (len(pts), 1) or lab.dtype.kind not in "iu":
            raise ValueError(f"{lp}: labels must be (N,) ints for {len(pts)} points, got "
                             f"{lab.dtype} {lab.shape}")
        stamp = synthetic_stamp(frame_number(p), LIDAR_PERIOD_NS)
        yield PointCloud(stamp, frame_id, pts[:, :3], label=lab[:, 0])

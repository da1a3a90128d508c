"""A procedural indoor scene rendered by ray casting: RGB-D frames and labelled LiDAR scans.

Design note: written by hand because the demo must run with no data and no downloads.
A room (floor, walls, ceiling) holds a table, a cabinet and a ball; textured colours
(per-class base colour, world-space stripes, Lambert shading) give the ViT something to
see. A robot drives a circle; its camera (REP-103 optical frame) and a 16-ring LiDAR
are rigidly mounted on `base_link`, so images, depth, scans, labels and TF are exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fit3d_ros.sensors import CameraModel, PointCloud, Transform

CLASSES = ("floor", "wall", "ceiling", "table", "cabinet", "ball")
PALETTE = ((120, 120, 120), (200, 180, 140), (240, 240, 240), (160, 82, 45),
           (70, 130, 180), (220, 40, 40))
_BASE = np.array(PALETTE, dtype=np.float64) / 255.0
ROOM = (4.0, 3.0, 2.6)                    # half-length x, half-width y, height z
BOXES = {3: ((0.6, -0.8, 0.70), (1.6, 0.4, 0.78)),   # table top (min, max)
         4: ((-2.9, 1.6, 0.0), (-2.1, 2.8, 1.6))}   # cabinet
BALL = ((-0.5, -1.6, 0.35), 0.35)          # centre, radius (class 5)
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass
class SceneConfig:
    frames: int = 10
    width: int = 320
    height: int = 240
    fov_deg: float = 70.0
    rings: int = 16
    azimuths: int = 720
    radius_m: float = 1.8           # robot path radius
    seed: int = 0


def _hits(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit distance t, class index and unit normal of each ray (vectorised)."""
    n = len(o)
    t = np.full(n, np.inf)
    cls = np.full(n, -1, np.int64)
    nrm = np.zeros((n, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        # room: six planes seen from inside
        for axis, half in ((0, ROOM[0]), (1, ROOM[1])):  # walls (class 1)
            for sign in (-1.0, 1.0):
                tt = (sign * half - o[:, axis]) / d[:, axis]
                _take(tt, t, cls, nrm, 1, -sign * np.eye(3)[axis])
        for z, c, s in ((0.0, 0, 1.0), (ROOM[2], 2, -1.0)):
            _take((z - o[:, 2]) / d[:, 2], t, cls, nrm, c, s * np.eye(3)[2])
        for c, (lo, hi) in BOXES.items():  # slab method
            lo, hi = np.array(lo), np.array(hi)
            t1, t2 = (lo - o) / d, (hi - o) / d
            tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
            tin, tout = tmin.max(axis=1), tmax.min(axis=1)
            hit = (tout >= tin) & (tin > 1e-6)
            face = tmin.argmax(axis=1)
            normal = -np.sign(d[np.arange(n), face])[:, None] * np.eye(3)[face]
            tt = np.where(hit, tin, np.inf)
            better = tt < t
            t[better], cls[better], nrm[better] = tt[better], c, normal[better]
        centre, r = np.array(BALL[0]), BALL[1]
        oc = o - centre
        b = (oc * d).sum(1)
        disc = b * b - ((oc * oc).sum(1) - r * r)
        tt = np.where(disc > 0, -b - np.sqrt(np.maximum(disc, 0)), np.inf)
        tt = np.where(tt > 1e-6, tt, np.inf)
        better = tt < t
        t[better], cls[better] = tt[better], 5
        p = o + d * tt[:, None]
        nrm[better] = (p[better] - centre) / r
    return t, cls, nrm


def _take(tt, t, cls, nrm, c, normal) -> None:
    tt = np.where(tt > 1e-6, tt, np.inf)
    better = tt < t
    t[better], cls[better], nrm[better] = tt[better], c, normal


def _shade(p: np.ndarray, cls: np.ndarray, nrm: np.ndarray) -> np.ndarray:
    base = _BASE[np.clip(cls, 0, len(_BASE) - 1)]
    stripes = 0.5 + 0.5 * np.sin(7.0 * (p[:, 0] + 0.7 * p[:, 1] + 0.4 * p[:, 2]) + cls)
    checker = ((np.floor(p[:, 0] * 2) + np.floor(p[:, 1] * 2)) % 2)[:, None]
    tex = base * (0.75 + 0.25 * stripes[:, None]) * np.where(cls[:, None] == 0,
                                                              0.8 + 0.2 * checker, 1.0)
    light = np.array([0.3, 0.2, 0.93])
    lambert = 0.55 + 0.45 * np.abs(nrm @ (light / np.linalg.norm(light)))
    return np.clip(tex * lambert[:, None], 0, 1)


def base_pose(i: int, cfg: SceneConfig) -> Transform:
    """map <- base_link at frame i: circling the room, looking roughly at its centre."""
    a = 2 * np.pi * i / max(cfg.frames, 1)
    yaw = a + np.pi + 0.35
    m = np.eye(4)
    m[:3, :3] = [[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]]
    m[:3, 3] = [cfg.radius_m * np.cos(a) * 1.3, cfg.radius_m * np.sin(a), 0.0]
    return Transform(m, parent_frame="map", child_frame="base_link")


def camera_mount(tilt_deg: float = 20.0) -> Transform:
    """base_link <- optical frame: 1.2 m up, pitched down by `tilt_deg`."""
    c, s = np.cos(np.radians(tilt_deg)), np.sin(np.radians(tilt_deg))
    pitch = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # about base y: nose down
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = pitch @ R_BASE_OPTICAL, [0.2, 0.0, 1.2]
    return Transform(m, parent_frame="base_link", child_frame="camera_color_optical_frame")


def lidar_mount() -> Transform:
    m = np.eye(4)
    m[:3, 3] = [0.0, 0.0, 1.0]
    return Transform(m, parent_frame="base_link", child_frame="lidar")


def camera_model(cfg: SceneConfig) -> CameraModel:
    f = cfg.width / 2 / np.tan(np.radians(cfg.fov_deg) / 2)
    K = [[f, 0, cfg.width / 2 - 0.5], [0, f, cfg.height / 2 - 0.5], [0, 0, 1]]
    return CameraModel(K, cfg.width, cfg.height, frame_id="camera_color_optical_frame")


def render_camera(pose: Transform, cam: CameraModel, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
    """rgb (H,W,3) uint8 and depth (H,W) float32 metres (z in the optical frame)."""
    world_cam = pose @ camera_mount()
    v, u = np.mgrid[0:cam.height, 0:cam.width]
    rays = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u, float)],
                    -1).reshape(-1, 3)
    d = rays @ world_cam.rotation.T
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    o = np.broadcast_to(world_cam.translation, d.shape)
    t, cls, nrm = _hits(o, d)
    p = o + d * t[:, None]
    rgb = _shade(p, cls, nrm) + rng.normal(0, 0.01, (len(p), 3))
    z = (t[:, None] * (d @ world_cam.rotation))[:, 2]
    return ((np.clip(rgb, 0, 1) * 255).round().astype(np.uint8).reshape(cam.height, cam.width, 3),
            z.reshape(cam.height, cam.width).astype(np.float32))


def render_lidar(pose: Transform, cfg: SceneConfig, stamp: int, rng: np.random.Generator
                 ) -> PointCloud:
    """A 16-ring scan in the `lidar` frame with per-point labels and intensity."""
    world_lidar = pose @ lidar_mount()
    el = np.radians(np.linspace(-30, 15, cfg.rings))
    az = np.linspace(-np.pi, np.pi, cfg.azimuths, endpoint=False)
    E, A = np.meshgrid(el, az, indexing="ij")
    local = np.stack([np.cos(E) * np.cos(A), np.cos(E) * np.sin(A), np.sin(E)], -1).reshape(-1, 3)
    d = local @ world_lidar.rotation.T
    o = np.broadcast_to(world_lidar.translation, d.shape)
    t, cls, nrm = _hits(o, d)
    ok = np.isfinite(t) & (cls >= 0)
    r = t[ok] + rng.normal(0, 0.005, ok.sum())
    xyz = (local[ok] * r[:, None]).astype(np.float32)
    intensity = (100 * np.abs((nrm[ok] * d[ok]).sum(1)) + 10 * cls[ok]).astype(np.float32)
    return PointCloud(stamp, "lidar", xyz, intensity=intensity, label=cls[ok])

"""Map files: ``map.npz`` (the whole voxel state, reloadable) and ``map.ply`` (viewers).

Design note: ``map.npz`` holds every per-voxel tensor (keys, histogram, means, boxes,
confidence sums, hits, last-seen stamps, features) plus the config, class names and
palette as JSON, so `load_map` restores a map that answers the same queries and can keep
integrating. ``map.ply`` is one coloured point per voxel (x, y, z, rgb, label,
confidence), written with open3d when it is importable (the ``viz`` extra) and otherwise
by `write_ply`, a small binary PLY writer (no dependency writes PLY with extra scalar
properties; open3d drops label/confidence, so only the own writer keeps them).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .voxel_map import _FIELDS, MapConfig, VoxelMap

FORMAT = "fit3d_ros.map/1"


def save_map(vmap: VoxelMap, path: str | Path) -> Path:
    """Write ``path`` (.npz) atomically-enough (temp file + rename)."""
    path = Path(path)
    m = len(vmap)
    arrays = {name: getattr(vmap.s, name)[:m].cpu().numpy() for name in _FIELDS}
    if vmap.s.feat is not None:
        arrays["feat"] = vmap.s.feat[:m].cpu().numpy()
        arrays["feat_hits"] = vmap.s.feat_hits[:m].cpu().numpy()
    meta = {"format": FORMAT, "config": asdict(vmap.cfg), "class_names": vmap.class_names,
            "palette": vmap.palette.tolist(), "frames": vmap.frames,
            "latest_stamp": vmap.latest_stamp}
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, keys=vmap.index.keys.cpu().numpy(), meta=np.array(json.dumps(meta)),
                        **arrays)
    tmp.replace(path)
    return path


def load_map(path: str | Path, device: str | None = None) -> VoxelMap:
    """A `VoxelMap` from ``map.npz`` (on `device`, default the saved one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "map.npz"
    if not path.is_file():
        raise FileNotFoundError(f"no map at {path} (make one with `fit3d-ros map`)")
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
        cfg = MapConfig(**meta["config"])
        if device is not None:
            cfg.device = device
        vmap = VoxelMap(meta["class_names"], cfg, np.asarray(meta["palette"], np.uint8))
        d = vmap.device
        vmap.index.rebuild(torch.as_tensor(z["keys"], device=d))
        for name in _FIELDS + ("feat", "feat_hits"):
            if name in z:
                setattr(vmap.s, name, torch.as_tensor(z[name], device=d))
    vmap.frames, vmap.latest_stamp = meta["frames"], meta["latest_stamp"]
    return vmap


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray,
              scalars: dict[str, np.ndarray] | None = None) -> Path:
    """Binary little-endian PLY: float x, y, z, uchar red, green, blue, then `scalars`
    (int32 → ``int``, anything else → ``float``)."""
    n = len(xyz)
    cols = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
            ("blue", "u1")]
    scalars = scalars or {}
    cols += [(k, "<i4" if np.asarray(v).dtype.kind in "iu" else "<f4") for k, v in scalars.items()]
    arr = np.empty(n, dtype=np.dtype(cols))
    for i, a in enumerate("xyz"):
        arr[a] = xyz[:, i]
    for i, c in enumerate(("red", "green", "blue")):
        arr[c] = rgb[:, i]
    for k, v in scalars.items():
        arr[k] = v
    ply_type = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property {ply_type[t]} {name}" for name, t in cols] + ["end_header"]
    path = Path(path)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(arr.tobytes())
    return path


def export_ply(vmap: VoxelMap, path: str | Path, prefer_open3d: bool = True) -> tuple[Path, str]:
    """``map.ply`` of the voxel means; (path, writer used: "open3d" or "fit3d_ros")."""
    cloud = vmap.cloud()
    if prefer_open3d:
        try:
            import open3d as o3d  # optional: the `viz` extra
        except ImportError:  # no open3d: the own writer below
            o3d = None
        if o3d is not None:
            pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud.xyz.astype(np.float64)))
            pc.colors = o3d.utility.Vector3dVector(cloud.rgb.astype(np.float64) / 255.0)
            o3d.io.write_point_cloud(str(path), pc)
            return Path(path), "open3d"
    return write_ply(path, cloud.xyz, cloud.rgb, {"label": cloud.label,
                                                  "confidence": cloud.extra["confidence"]}), \
        "fit3d_ros"


def read_ply(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a binary little-endian PLY vertex element (for tests and tools)."""
    raw = Path(path).read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    lines = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary little-endian PLY is read here")
    n = next(int(ln.split()[2]) for ln in lines if ln.startswith("element vertex"))
    types = {"float": "<f4", "double": "<f8", "uchar": "u1", "int": "<i4", "uint": "<u4"}
    cols = [(ln.split()[2], types[ln.split()[1]]) for ln in lines if ln.startswith("property")]
    arr = np.frombuffer(raw, dtype=np.dtype(cols), count=n, offset=end)
    return {name: arr[name] for name, _ in cols}

"""``sensor_msgs/PointCloud2`` ⇄ numpy structured arrays and `PointCloud`.

Design note: the field list becomes one numpy structured dtype (names, byte offsets,
``itemsize = point_step``, the message's byte order), laid over the byte buffer as a
zero-copy view — rows of ``row_step`` bytes with their padding cut off — so any layout
(reordered or padded fields, float64 xyz, big-endian, organised ``height > 1`` clouds)
decodes with one vectorised copy per field and no per-point loop. Column mapping to
`PointCloud`: x,y,z -> xyz (float32); intensity; rgb/rgba (PCL's packed float or uint32
0x00RRGGBB, or 3 x uint8) -> rgb (alpha is dropped); label -> int32; feature_0 ..
feature_{C-1} (or one ``feature`` field with count C) -> feature, the per-point ViT
features F_3D; anything else -> ``extra``. Written clouds are little-endian, packed,
dense-flagged from the xyz values, with rgb as PCL's packed float32 and label as PCL's
uint32 (``PointXYZL``/``PointXYZRGBL``; negative labels are refused). Layouts whose
fields overlap (x, y, z at one offset) or overrun ``point_step`` are rejected: they
decode, but into wrong points.
"""
from __future__ import annotations

import re

import numpy as np

from ..sensors.frames import PointCloud
from .types import ConversionError, MsgTypes, header, header_of, message_bytes

# PointField datatype constants (sensor_msgs/PointField)
DATATYPES: dict[int, str] = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4",
                             7: "f4", 8: "f8"}
_TO_DATATYPE = {np.dtype(code).str[1:]: dt for dt, code in DATATYPES.items()}
_FEATURE_RE = re.compile(r"^feature_(\d+)$")
_STANDARD = ("x", "y", "z", "intensity", "rgb", "rgba", "label", "feature")


def _field_specs(msg) -> list[tuple[str, int, np.dtype, int]]:
    """Validated (name, offset, element dtype in message byte order, count) per field."""
    order = ">" if msg.is_bigendian else "<"
    point_step = int(msg.point_step)
    specs, seen = [], set()
    for i, f in enumerate(msg.fields):
        name, offset, datatype, count = str(f.name), int(f.offset), int(f.datatype), int(f.count)
        if not name:
            raise ConversionError(f"PointCloud2 field #{i} has an empty name")
        if name in seen:
            raise ConversionError(f"PointCloud2 field {name!r} appears twice")
        if datatype not in DATATYPES:
            raise ConversionError(f"PointCloud2 field {name!r} has unknown datatype {datatype}")
        if count < 1:
            raise ConversionError(f"PointCloud2 field {name!r} has count {count}")
        dtype = np.dtype(DATATYPES[datatype]).newbyteorder(order)
        if offset < 0 or offset + dtype.itemsize * count > point_step:
            raise ConversionError(f"PointCloud2 field {name!r} (offset {offset}, "
                                  f"{count} x {dtype.itemsize} B) overruns point_step "
                                  f"{point_step}")
        seen.add(name)
        specs.append((name, offset, dtype, count))
    ranges = sorted((s[1], s[1] + s[2].itemsize * s[3], s[0]) for s in specs)
    for (_, end, first), (start, _, second) in zip(ranges, ranges[1:]):
        if start < end:  # e.g. x, y, z at one offset: decodes, but as wrong points
            raise ConversionError(f"PointCloud2 fields {first!r} and {second!r} overlap "
                                  f"(bytes {start}..{end - 1} of each point)")
    return specs


def _view(msg, specs) -> np.ndarray:
    """(H, W) structured zero-copy view of the message bytes for the given field specs."""
    h, w = int(msg.height), int(msg.width)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    if h < 0 or w < 0:
        raise ConversionError(f"PointCloud2 size {w}x{h} is negative")
    if h * w and point_step <= 0:
        raise ConversionError(f"PointCloud2 point_step {point_step} must be positive")
    if row_step < w * point_step:
        raise ConversionError(f"PointCloud2 row_step {row_step} < width*point_step = "
                              f"{w}*{point_step}")
    data = message_bytes(msg.data)
    if data.size != row_step * h:
        raise ConversionError(f"PointCloud2 data has {data.size} bytes, expected "
                              f"row_step*height = {row_step}*{h} = {row_step * h}")
    dtype = np.dtype({"names": [s[0] for s in specs],
                      "formats": [s[2] if s[3] == 1 else (s[2], (s[3],)) for s in specs],
                      "offsets": [s[1] for s in specs], "itemsize": max(point_step, 1)})
    if h * w == 0:
        return np.zeros((h, w), dtype=dtype)
    return data.reshape(h, row_step)[:, :w * point_step].view(dtype)


def _native(a: np.ndarray) -> np.ndarray:
    """A contiguous native-byte-order copy, flattened over the point axes (H,W)->(N,)."""
    out = a.astype(a.dtype.base.newbyteorder("="), copy=True)
    return out.reshape((-1,) + a.shape[2:])


def pointcloud2_to_numpy(msg, organized: bool = False) -> np.ndarray:
    """All fields as a packed native-order structured array: (H*W,) or (H,W) if organized."""
    specs = _field_specs(msg)
    view = _view(msg, specs)
    out_dtype = np.dtype([(n, d.newbyteorder("="), (c,)) if c > 1 else (n, d.newbyteorder("="))
                          for n, _, d, c in specs])
    out = np.empty(view.shape, dtype=out_dtype)
    for name in out_dtype.names:
        out[name] = view[name]
    return out if organized else out.reshape(-1)


def _feature_run(specs) -> list[str] | None:
    """Names feature_0..feature_{C-1} when exactly that run is present, else None."""
    idx = {int(m.group(1)): s[0] for s in specs if (m := _FEATURE_RE.match(s[0]))}
    if not idx or set(idx) != set(range(len(idx))):
        return None
    return [idx[i] for i in range(len(idx))]


def _decode_rgb(column: np.ndarray, name: str) -> np.ndarray:
    """(N,3) uint8 from a packed uint32 0x??RRGGBB column or a (N,3|4) uint8 column."""
    if column.dtype == np.uint32 and column.ndim == 1:
        return np.stack([(column >> 16) & 255, (column >> 8) & 255, column & 255],
                        axis=1).astype(np.uint8)
    if column.dtype == np.uint8 and column.ndim == 2 and column.shape[1] in (3, 4):
        return np.ascontiguousarray(column[:, :3])
    raise ConversionError(f"PointCloud2 field {name!r} ({column.dtype}, shape "
                          f"{column.shape[1:]}) is not a packed rgb/rgba colour")


def _decode_label(column: np.ndarray) -> np.ndarray:
    if column.dtype.kind == "f":
        if not np.all(np.isfinite(column) & (column == np.round(column))):
            raise ConversionError("PointCloud2 field 'label' holds non-integer values")
    info = np.iinfo(np.int32)
    if column.size and (column.max() > info.max or column.min() < info.min):
        raise ConversionError(f"PointCloud2 field 'label' values exceed int32 "
                              f"(max {column.max()})")
    return column.astype(np.int32)


def pointcloud2_to_cloud(msg, *, drop_nan: bool = True) -> PointCloud:
    """A `PointCloud` of the message (row-major for organised clouds).

    ``drop_nan`` drops points with a non-finite coordinate (``is_dense=false`` clouds);
    with False the point count is exactly ``height * width``.
    """
    stamp, frame_id = header_of(msg)
    specs = _field_specs(msg)
    by_name = {s[0]: s for s in specs}
    for axis in "xyz":
        if axis not in by_name:
            raise ConversionError(f"PointCloud2 has no {axis!r} field (fields: "
                                  f"{', '.join(by_name) or 'none'})")
        if by_name[axis][3] != 1:
            raise ConversionError(f"PointCloud2 field {axis!r} has count {by_name[axis][3]}")
    run = _feature_run(specs)
    if run is not None and "feature" in by_name:
        raise ConversionError("PointCloud2 has both a 'feature' field and feature_<i> fields")
    view_specs = list(specs)
    if run is not None:  # same dtype at consecutive offsets: read the run as one block
        first = by_name[run[0]]
        contiguous = all(by_name[fn][2] == first[2] and by_name[fn][3] == 1 and
                         by_name[fn][1] == first[1] + i * first[2].itemsize
                         for i, fn in enumerate(run))
        if contiguous:
            view_specs = [s for s in specs if s[0] not in set(run)]
            view_specs.append(("feature", first[1], first[2], len(run)))
    colour = "rgb" if "rgb" in by_name else "rgba" if "rgba" in by_name else None
    if colour and by_name[colour][2].itemsize == 4 and by_name[colour][3] == 1:
        # PCL packs colour in a float32's bits: reinterpret them as uint32, never cast
        _, off, dt, _ = by_name[colour]
        view_specs = [(colour, off, np.dtype("u4").newbyteorder(dt.byteorder), 1)
                      if s[0] == colour else s for s in view_specs]
    view = _view(msg, view_specs)
    xyz = np.stack([_native(view[a]) for a in "xyz"], axis=1).astype(np.float32, copy=False)
    n = len(xyz)
    counts = {s[0]: s[3] for s in view_specs}
    cols: dict[str, np.ndarray | None] = {"intensity": None, "rgb": None, "label": None,
                                          "feature": None}
    used = {"x", "y", "z"}
    if counts.get("intensity") == 1:
        cols["intensity"] = _native(view["intensity"]).astype(np.float32, copy=False)
        used.add("intensity")
    if colour:
        cols["rgb"] = _decode_rgb(_native(view[colour]), colour)
        used.add(colour)
    if "label" in counts:
        if counts["label"] != 1:
            raise ConversionError(f"PointCloud2 field 'label' has count {counts['label']}")
        cols["label"] = _decode_label(_native(view["label"]))
        used.add("label")
    if "feature" in counts:
        cols["feature"] = _native(view["feature"]).astype(np.float32, copy=False).reshape(
            n, counts["feature"])
        used.add("feature")
    elif run is not None:
        cols["feature"] = np.stack([_native(view[r]) for r in run], axis=1).astype(np.float32)
        used.update(run)
    extra = {name: _native(view[name]) for name in counts if name not in used}
    cloud = PointCloud(stamp=stamp, frame_id=frame_id, xyz=xyz, extra=extra, **cols)
    return cloud.finite() if drop_nan else cloud


def _datatype_of(name: str, dtype: np.dtype) -> int:
    key = dtype.newbyteorder("<").str[1:]
    if key not in _TO_DATATYPE:
        raise ConversionError(f"cloud column {name!r} has dtype {dtype}, which PointCloud2 "
                              "cannot carry (int8..uint32, float32, float64)")
    return _TO_DATATYPE[key]


def cloud_to_pointcloud2(cloud: PointCloud, types: MsgTypes, *, stamp_ns: int | None = None,
                         frame_id: str | None = None):
    """A packed little-endian, unorganised (height 1) PointCloud2 of `cloud`."""
    n = len(cloud)
    # (field name, dtype, count, values (N,) or (N,count), PointField names)
    columns: list[tuple[str, np.dtype, int, np.ndarray, list[str]]] = [
        ("xyz", np.dtype("<f4"), 3, cloud.xyz, ["x", "y", "z"])]
    if cloud.intensity is not None:
        columns.append(("intensity", np.dtype("<f4"), 1, cloud.intensity, ["intensity"]))
    if cloud.rgb is not None:
        rgb = cloud.rgb.astype(np.uint32)
        packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
        columns.append(("rgb", np.dtype("<f4"), 1, packed.view(np.float32), ["rgb"]))
    if cloud.label is not None:  # PCL's PointXYZL: uint32 label (pcl::fromROSMsg matches types)
        if len(cloud.label) and int(cloud.label.min()) < 0:
            raise ConversionError(f"cloud label {int(cloud.label.min())} < 0 cannot be written "
                                  "as PCL's uint32 label field")
        columns.append(("label", np.dtype("<u4"), 1, cloud.label, ["label"]))
    if cloud.feature is not None:
        c = cloud.feature.shape[1]
        columns.append(("feature", np.dtype("<f4"), c, cloud.feature,
                        [f"feature_{i}" for i in range(c)]))
    for name, values in cloud.extra.items():
        if name in _STANDARD or name in ("xyz",) or _FEATURE_RE.match(name):
            raise ConversionError(f"cloud extra column {name!r} collides with a standard field")
        v = np.asarray(values)
        count = 1 if v.ndim == 1 else int(np.prod(v.shape[1:]))
        _datatype_of(name, v.dtype)
        columns.append((name, v.dtype.newbyteorder("<"), count, v.reshape(n, count) if count > 1
                        else v.reshape(n), [name]))
    dtype = np.dtype([(name, dt, (count,)) if count > 1 else (name, dt)
                      for name, dt, count, _, _ in columns])
    arr = np.empty(n, dtype=dtype)
    fields = []
    for name, dt, count, values, field_names in columns:
        arr[name] = values
        base = dtype.fields[name][1]
        datatype = _datatype_of(name, dt)
        if len(field_names) == 1:
            fields.append(types.PointField(name=field_names[0], offset=base,
                                           datatype=datatype, count=count))
        else:
            fields.extend(types.PointField(name=fn, offset=base + i * dt.itemsize,
                                           datatype=datatype, count=1)
                          for i, fn in enumerate(field_names))
    stamp = cloud.stamp if stamp_ns is None else stamp_ns
    frame = cloud.frame_id if frame_id is None else frame_id
    return types.PointCloud2(
        header=header(stamp, frame, types), height=1, width=n, fields=fields,
        is_bigendian=False, point_step=dtype.itemsize, row_step=dtype.itemsize * n,
        data=types.uint8_array(arr.view(np.uint8)),
        is_dense=bool(np.all(np.isfinite(cloud.xyz))))

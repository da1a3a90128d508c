"""The static-extrinsics YAML (the nodes' ``extrinsics_file``): entries ⇄ `Transform`.

Design note: ``transforms:`` is a list whose entries are either our mapping
``{parent, child, translation: [x, y, z], rotation: [x, y, z, w] | rpy: [roll, pitch,
yaw]}`` or the arguments of ROS 2's ``static_transform_publisher`` as one string (or a
list), in any of its three forms: ``x y z qx qy qz qw parent child``, ``x y z yaw pitch
roll parent child`` (note the order: yaw first) and the flag form ``--x --y --z --qx --qy
--qz --qw | --roll --pitch --yaw --frame-id --child-frame-id``, with its defaults (zero
translation, identity rotation). Euler angles follow tf2's ``setRPY``: fixed axes X, Y,
Z, i.e. R = Rz(yaw)·Ry(pitch)·Rx(roll). `extrinsics_doc` writes the mapping form (what
``fit3d-ros bag extrinsics`` dumps from a bag's ``/tf_static``). The argument parser is
written by hand: tf2_ros's is C++ and not on PyPI.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import yaml

from .transforms import Transform, quat_to_matrix

FLAGS = ("x", "y", "z", "qx", "qy", "qz", "qw", "roll", "pitch", "yaw", "frame-id",
         "child-frame-id")


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (fixed-axis roll, pitch, yaw)."""
    cr, sr, cp, sp, cy, sy = (np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch),
                              np.cos(yaw), np.sin(yaw))
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _vector(value, n: int, what: str) -> np.ndarray:
    try:
        v = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be {n} numbers, got {value!r}") from exc
    if v.size != n or not np.all(np.isfinite(v)):
        raise ValueError(f"{what} must be {n} finite numbers, got {value!r}")
    return v


def _transform(parent: str, child: str, translation, rotation: np.ndarray, where: str
               ) -> Transform:
    for key, name in (("parent", parent), ("child", child)):
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: missing frame name '{key}'")
    m = np.eye(4)
    m[:3, 3] = _vector(translation, 3, f"{where}.translation")
    m[:3, :3] = rotation
    return Transform(m, parent_frame=parent, child_frame=child)


def _quat(q, where: str) -> np.ndarray:
    q = _vector(q, 4, where)
    if np.linalg.norm(q) < 1e-9:
        raise ValueError(f"{where} is a zero quaternion")
    return quat_to_matrix(q)


def _flag_values(tokens: Sequence[str], where: str) -> dict[str, str]:
    values: dict[str, str] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        name, eq, value = tok[2:].partition("=")
        if not tok.startswith("--") or name not in FLAGS:
            raise ValueError(f"{where}: unknown static_transform_publisher argument {tok!r} "
                             f"(flags: {', '.join('--' + f for f in FLAGS)})")
        if not eq:
            if i + 1 >= len(tokens):
                raise ValueError(f"{where}: {tok} needs a value")
            i, value = i + 1, tokens[i + 1]
        values[name] = value
        i += 1
    return values


def from_static_transform_args(args: str | Sequence[Any], where: str = "arguments"
                               ) -> Transform:
    """The transform ``static_transform_publisher ARGS`` would publish (parent ← child)."""
    tokens = shlex.split(args) if isinstance(args, str) else [str(a) for a in args]
    if any(t.startswith("--") for t in tokens):
        v = _flag_values(tokens, where)
        quat = [k for k in ("qx", "qy", "qz", "qw") if k in v]
        euler = [k for k in ("roll", "pitch", "yaw") if k in v]
        if quat and euler:
            raise ValueError(f"{where}: give a quaternion (--qx …) or Euler angles "
                             "(--roll …), not both")
        num = {k: v.get(k, "1" if k == "qw" else "0") for k in FLAGS[:10]}
        t = [num[k] for k in ("x", "y", "z")]
        rot = (rpy_to_matrix(*_vector([num[k] for k in ("roll", "pitch", "yaw")], 3,
                                      f"{where}.rpy")) if euler
               else _quat([num[k] for k in ("qx", "qy", "qz", "qw")], f"{where}.rotation"))
        return _transform(v.get("frame-id", ""), v.get("child-frame-id", ""), t, rot, where)
    if len(tokens) == 9:   # x y z qx qy qz qw parent child
        return _transform(tokens[7], tokens[8], tokens[:3], _quat(tokens[3:7], where), where)
    if len(tokens) == 8:   # x y z yaw pitch roll parent child
        yaw, pitch, roll = _vector(tokens[3:6], 3, f"{where}.ypr")
        return _transform(tokens[6], tokens[7], tokens[:3], rpy_to_matrix(roll, pitch, yaw),
                          where)
    raise ValueError(f"{where}: static_transform_publisher takes 'x y z qx qy qz qw parent "
                     f"child', 'x y z yaw pitch roll parent child' or --flags; got "
                     f"{len(tokens)} arguments {tokens!r}")


def static_from_entry(item, where: str) -> Transform:
    """One ``transforms`` entry: our mapping, or static_transform_publisher arguments."""
    if isinstance(item, (str, list, tuple)):
        return from_static_transform_args(item, where)
    if not isinstance(item, dict):
        raise ValueError(f"{where}: expected a mapping or static_transform_publisher "
                         f"arguments, got {item!r}")
    if ("rotation" in item) == ("rpy" in item):
        raise ValueError(f"{where}: give exactly one of 'rotation' [x,y,z,w] or 'rpy'")
    rot = (_quat(item["rotation"], f"{where}.rotation") if "rotation" in item
           else rpy_to_matrix(*_vector(item["rpy"], 3, f"{where}.rpy")))
    return _transform(item.get("parent"), item.get("child"),
                      item.get("translation", [0, 0, 0]), rot, where)


def extrinsics_doc(transforms: Iterable[Transform]) -> dict[str, list[dict[str, Any]]]:
    """The YAML document (mapping form, quaternions) of `transforms`."""
    return {"transforms": [{"parent": t.parent_frame, "child": t.child_frame,
                            "translation": [float(v) for v in t.translation],
                            "rotation": [float(v) for v in t.quat]} for t in transforms]}


def write_extrinsics(path: str | Path, transforms: Iterable[Transform], comment: str = ""
                     ) -> Path:
    """Write `transforms` as an ``extrinsics_file`` (optional leading ``# comment``)."""
    path = Path(path)
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.write_text(head + yaml.safe_dump(extrinsics_doc(transforms), sort_keys=False),
                    encoding="utf-8")
    return path

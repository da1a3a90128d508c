"""Class maps for point-cloud segmentation: names, colours, raw label ids, ignore ids.

Design note: labels arrive in many encodings (SemanticKITTI's 19 training ids 1-19 with 0
ignored, raw SemanticKITTI ``.label`` ids 0-259 with instance bits, our KITTI box labels
0-7). A :class:`ClassMap` lists, per training class, the raw value that encodes it, its
name and its colour, plus raw values that mean "ignore"; :meth:`ClassMap.to_train` maps
raw labels to training indices 0..K-1 and ignored points to ``IGNORE_INDEX`` (-1, the
``ignore_index`` of the cross-entropy). A raw value that is neither a class nor ignored
is an error (a wrong class map must not train silently). Class maps travel as plain
dicts (checkpoints) or as a JSON sidecar next to a bag (``<bag>.classes.json``).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IGNORE_INDEX = -1
SIDECAR_SUFFIX = ".classes.json"
SIDECAR_FORMAT = "fit3d_ros.classes/1"

# SemanticKITTI's 19 training classes (semantic-kitti-api config, training ids 1..19).
SEMANTICKITTI_NAMES = (
    "car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist",
    "motorcyclist", "road", "parking", "sidewalk", "other-ground", "building", "fence",
    "vegetation", "trunk", "terrain", "pole", "traffic-sign")
# The RGB palette commonly used with SemanticKITTI (its config's colours, as RGB).
SEMANTICKITTI_PALETTE = (
    (100, 150, 245), (100, 230, 245), (30, 60, 150), (80, 30, 180), (100, 80, 250),
    (255, 30, 30), (255, 40, 200), (150, 30, 90), (255, 0, 255), (255, 150, 255),
    (75, 0, 75), (175, 0, 75), (255, 200, 0), (255, 120, 50), (0, 175, 0), (135, 60, 0),
    (150, 240, 80), (255, 240, 150), (255, 0, 0))
# semantic-kitti-api `learning_map`: raw .label semantic id -> training id (0 = ignored).
SEMANTICKITTI_LEARNING_MAP = {
    0: 0, 1: 0, 10: 1, 11: 2, 13: 5, 15: 3, 16: 5, 18: 4, 20: 5, 30: 6, 31: 7, 32: 8,
    40: 9, 44: 10, 48: 11, 49: 12, 50: 13, 51: 14, 52: 0, 60: 9, 70: 15, 71: 16, 72: 17,
    80: 18, 81: 19, 99: 0, 252: 1, 253: 7, 254: 6, 255: 8, 256: 5, 257: 5, 258: 4, 259: 5}

# KITTI object box classes (labels written by `fit3d-ros bag from-kitti --box-labels`).
KITTI_BOX_NAMES = ("background", "car", "van", "truck", "pedestrian", "person_sitting",
                   "cyclist", "tram")
KITTI_BOX_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram")
KITTI_BOX_PALETTE = ((128, 128, 128), (100, 150, 245), (100, 80, 250), (80, 30, 180),
                     (255, 30, 30), (255, 120, 120), (255, 40, 200), (150, 240, 80))


class ClassMapError(ValueError):
    """Labels or a class-map description do not fit together."""


@dataclass
class ClassMap:
    """Training classes: ``names[i]`` is encoded as ``raw_ids[i]`` and drawn ``palette[i]``."""

    names: tuple[str, ...]
    raw_ids: tuple[int, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_ids: tuple[int, ...] = ()
    name: str = "custom"
    label_field: str = "label"
    _lut: dict[int, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.names = tuple(str(n) for n in self.names)
        self.raw_ids = tuple(int(i) for i in self.raw_ids)
        self.ignore_ids = tuple(int(i) for i in self.ignore_ids)
        self.palette = tuple(tuple(int(c) for c in rgb) for rgb in self.palette)
        k = len(self.names)
        if k == 0:
            raise ClassMapError("a class map needs at least one class")
        if len(self.raw_ids) != k or len(self.palette) != k:
            raise ClassMapError(f"{k} names but {len(self.raw_ids)} raw ids and "
                                f"{len(self.palette)} colours")
        if len(set(self.raw_ids)) != k or set(self.raw_ids) & set(self.ignore_ids):
            raise ClassMapError(f"raw ids {self.raw_ids} must be unique and disjoint from "
                                f"ignore ids {self.ignore_ids}")
        if any(len(c) != 3 or min(c) < 0 or max(c) > 255 for c in self.palette):
            raise ClassMapError("palette entries must be (r, g, b) in 0..255")
        self._lut = {raw: i for i, raw in enumerate(self.raw_ids)}
        self._lut.update({raw: IGNORE_INDEX for raw in self.ignore_ids})

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_train(self, raw: np.ndarray) -> np.ndarray:
        """Training indices (int64, ``IGNORE_INDEX`` for ignored) of raw labels."""
        raw = np.asarray(raw).reshape(-1)
        if raw.dtype.kind not in "iu":
            raise ClassMapError(f"labels must be integers, got {raw.dtype}")
        values, inverse = np.unique(raw, return_inverse=True)
        unknown = [int(v) for v in values if int(v) not in self._lut]
        if unknown:
            raise ClassMapError(f"label values {unknown[:10]} are neither classes nor ignored in "
                                f"class map {self.name!r} (raw ids {list(self.raw_ids)}, "
                                f"ignore {list(self.ignore_ids)})")
        return np.array([self._lut[int(v)] for v in values], dtype=np.int64)[inverse]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON and ``torch.load(weights_only=True)`` safe)."""
        return {"format": SIDECAR_FORMAT, "name": self.name, "label_field": self.label_field,
                "ignore_ids": list(self.ignore_ids),
                "classes": [{"id": i, "name": n, "color": list(c)} for i, n, c in
                            zip(self.raw_ids, self.names, self.palette)]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClassMap":
        try:
            classes = d["classes"]
            return cls(names=[c["name"] for c in classes], raw_ids=[c["id"] for c in classes],
                       palette=[c["color"] for c in classes],
                       ignore_ids=d.get("ignore_ids", ()), name=d.get("name", "custom"),
                       label_field=d.get("label_field", "label"))
        except (KeyError, TypeError) as exc:
            raise ClassMapError(f"not a class-map description ({exc!r}): expected "
                                "{'classes': [{'id', 'name', 'color'}, ...], "
                                "'ignore_ids': [...]}") from exc


def semantickitti_classes() -> ClassMap:
    """SemanticKITTI's 19 classes as training ids 1..19, 0 ignored."""
    return ClassMap(SEMANTICKITTI_NAMES, range(1, 20), SEMANTICKITTI_PALETTE, ignore_ids=(0,),
                    name="semantickitti")


def kitti_box_classes() -> ClassMap:
    """KITTI box labels: 0 background, 1..7 Car, Van, Truck, Pedestrian, Person_sitting,
    Cyclist, Tram."""
    return ClassMap(KITTI_BOX_NAMES, range(len(KITTI_BOX_NAMES)), KITTI_BOX_PALETTE,
                    name="kitti_boxes")


BUILTIN = {"semantickitti": semantickitti_classes, "kitti_boxes": kitti_box_classes}


def semantickitti_learning_map(raw: np.ndarray) -> np.ndarray:
    """Training ids 0..19 of raw SemanticKITTI ``.label`` values (instance bits dropped)."""
    sem = np.asarray(raw).astype(np.uint32) & 0xFFFF
    lut = np.zeros(max(SEMANTICKITTI_LEARNING_MAP) + 1, dtype=np.int32)
    for k, v in SEMANTICKITTI_LEARNING_MAP.items():
        lut[k] = v
    bad = sem >= len(lut)
    if bad.any():
        raise ClassMapError(f"SemanticKITTI semantic ids {np.unique(sem[bad])[:10].tolist()} "
                            "are outside the learning map (0..259)")
    return lut[sem]


def sidecar_path(bag: str | Path) -> Path:
    """``<bag>.classes.json`` next to a bag file or directory."""
    p = Path(bag)
    return p.with_name(p.name.rstrip("/") + SIDECAR_SUFFIX)


def write_sidecar(bag: str | Path, classes: ClassMap) -> Path:
    """Write the class map next to `bag` atomically; returns its path."""
    out = sidecar_path(bag)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(classes.to_dict(), f, indent=1)
    os.replace(tmp, out)
    return out


def load_classes(spec: str | Path | None, data: str | Path | None = None) -> ClassMap | None:
    """A class map from a builtin name, a JSON file, or (spec None) `data`'s sidecar.

    Returns None when `spec` is None and no sidecar exists.
    """
    if spec is None:
        if data is None or not sidecar_path(data).is_file():
            return None
        spec = sidecar_path(data)
    if str(spec) in BUILTIN:
        return BUILTIN[str(spec)]()
    path = Path(spec)
    if not path.is_file():
        raise ClassMapError(f"class map {spec!r} is neither a builtin ({sorted(BUILTIN)}) nor "
                            "a JSON file")
    try:
        return ClassMap.from_dict(json.loads(path.read_text()))
    except json.JSONDecodeError as exc:
        raise ClassMapError(f"{path}: not JSON: {exc}") from exc

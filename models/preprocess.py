"""Network inputs of the sparse U-Net from named per-point columns.

Design note: one function builds the U-Net's input for training samples and for the
runtime's clouds alike (anything with ``xyz`` and optional ``intensity`` / ``rgb``
arrays): ``xyz`` (coordinates centred on the scan's mean, so absolute offsets such as
the shared SemanticKITTI scan's −100 m shift do not matter), ``intensity`` (values > 1
are taken as 8-bit and scaled by 1/255), ``rgb`` (/255); asking for a column the data
lacks is an error. The column names are stored in every checkpoint's preprocessing.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

FEATURE_WIDTHS = {"xyz": 3, "intensity": 1, "rgb": 3}


def centered(xyz: np.ndarray) -> np.ndarray:
    """Coordinates minus their mean (float32)."""
    xyz = np.asarray(xyz, dtype=np.float64)
    return (xyz - xyz.mean(axis=0)).astype(np.float32)


def input_features(sample: Any, names: Sequence[str], xyz: np.ndarray | None = None
                   ) -> np.ndarray:
    """(N, C) float32 network input from named columns (see the module note).

    `xyz` replaces the sample's (centred) coordinates, e.g. after augmentation.
    """
    cols = []
    for name in names:
        if name == "xyz":
            cols.append(centered(sample.xyz) if xyz is None else np.asarray(xyz, np.float32))
        elif name == "intensity":
            if sample.intensity is None:
                raise ValueError(f"{_name(sample)} has no intensity; drop 'intensity' "
                                 "from the input features (e.g. --features xyz)")
            v = np.asarray(sample.intensity, dtype=np.float32)
            cols.append((v / 255.0 if v.size and v.max() > 1.0 else v)[:, None])
        elif name == "rgb":
            if sample.rgb is None:
                raise ValueError(f"{_name(sample)} has no per-point colour")
            cols.append(np.asarray(sample.rgb, dtype=np.float32) / 255.0)
        else:
            raise ValueError(f"unknown input feature {name!r} (one of {sorted(FEATURE_WIDTHS)})")
    return np.concatenate(cols, axis=1).astype(np.float32)


def feature_width(names: Sequence[str]) -> int:
    """Number of input channels of the named features."""
    bad = [n for n in names if n not in FEATURE_WIDTHS]
    if bad or not names:
        raise ValueError(f"input features {list(names)} invalid (choose from "
                         f"{sorted(FEATURE_WIDTHS)})")
    return sum(FEATURE_WIDTHS[n] for n in names)


def _name(sample: Any) -> str:
    key = getattr(sample, "key", None)
    return "the point cloud" if key is None else f"sample {key}"

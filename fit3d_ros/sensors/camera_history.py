"""Recent CameraInfo models of one camera, so each image gets the calibration it was taken with.

Design note: a log that mixes image sizes (KITTI object frames: 1242x375, 1224x370, …)
or a camera that changes resolution makes "the latest CameraInfo" wrong for every other
image. The history keeps the last `capacity` models by stamp and answers an image with
the model of the same stamp when it has the image's size, else the newest model of the
image's size, else nothing: the caller skips that camera and says so (never a silent
fall-back to a model of another size).
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from .camera import CameraModel


class CameraInfoHistory:
    """The last `capacity` camera models of one camera, by stamp (ns)."""

    def __init__(self, capacity: int = 32) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._models: OrderedDict[int, CameraModel] = OrderedDict()
        self._lock = threading.Lock()  # subscription callbacks vs the worker thread

    def __len__(self) -> int:
        return len(self._models)

    def add(self, stamp_ns: int, model: CameraModel) -> None:
        with self._lock:
            self._models.pop(stamp_ns, None)
            self._models[stamp_ns] = model
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)

    @property
    def latest(self) -> CameraModel | None:
        with self._lock:
            return next(reversed(self._models.values()), None)

    def sizes(self) -> list[tuple[int, int]]:
        """Distinct (width, height) held, newest first (for error messages)."""
        with self._lock:
            return list(dict.fromkeys((m.width, m.height) for m in reversed(self._models.values())))

    def for_image(self, stamp_ns: int | None, width: int, height: int) -> CameraModel | None:
        """The model for an image of this stamp and size (see the module note)."""
        with self._lock:
            same = self._models.get(stamp_ns) if stamp_ns is not None else None
            if same is not None and (same.width, same.height) == (width, height):
                return same
            for model in reversed(self._models.values()):
                if (model.width, model.height) == (width, height):
                    return model
        return None

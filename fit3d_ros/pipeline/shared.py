"""Compute-once cache of per-image results shared by the nodes of one process.

Design note: in the composed `perception` executable the feature node and the
segmentation node both need the ViT features of the same image; whichever asks first
computes them and the other waits for that result (a per-key future), so the backbone
runs once per image. Keys are (frame_id, stamp_ns); only the newest `capacity` are kept.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Hashable, TypeVar

T = TypeVar("T")


class SharedResults:
    """get(key, compute) → compute() at most once per key while the key is cached."""

    def __init__(self, capacity: int = 8) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, Future] = OrderedDict()
        self.computed = 0
        self.shared = 0

    def get(self, key: Hashable, compute: Callable[[], T], timeout: float | None = 60.0) -> T:
        with self._lock:
            fut = self._items.get(key)
            owner = fut is None
            if owner:
                fut = Future()
                self._items[key] = fut
                while len(self._items) > self.capacity:
                    self._items.popitem(last=False)
            else:
                self.shared += 1
        if owner:
            try:
                fut.set_result(compute())
                self.computed += 1
            except BaseException as exc:
                fut.set_exception(exc)
                with self._lock:  # let a later caller retry
                    if self._items.get(key) is fut:
                        del self._items[key]
        return fut.result(timeout)

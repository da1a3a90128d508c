"""Per-stage latency accounting shared by the nodes and replay.

Design note: each stage keeps a bounded ring of recent durations (ms) so long runs use
constant memory; percentiles come from numpy over that window. GPU work is
asynchronous, so with a `sync` callable (``device_sync(device)``: CUDA synchronise) a
stage synchronises the device when it starts and ends and times what the device did,
not just the kernel launches; on the CPU nothing is synchronised.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch


def device_sync(device: str | torch.device) -> Callable[[], None] | None:
    """A synchronise callable for a CUDA `device`; None where work is synchronous (CPU)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return None
    return lambda: torch.cuda.synchronize(dev)


@dataclass
class LatencyStats:
    """Recent durations per stage name, in milliseconds."""

    window: int = 1000
    stages: dict[str, deque] = field(default_factory=dict)
    sync: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    def add(self, stage: str, ms: float) -> None:
        with self._lock:  # the worker adds while a diagnostics timer reads
            self.stages.setdefault(stage, deque(maxlen=self.window)).append(float(ms))

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Context manager timing one stage with a monotonic clock (device synchronised)."""
        if self.sync is not None:
            self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self.sync is not None:
                self.sync()
            self.add(stage, (time.perf_counter() - t0) * 1e3)

    def last(self) -> dict[str, float]:
        with self._lock:
            return {k: v[-1] for k, v in self.stages.items() if v}

    def summary(self) -> dict[str, dict[str, float]]:
        """{stage: {"p50", "p90", "p99", "mean", "count"}} over the window."""
        out: dict[str, dict[str, float]] = {}
        with self._lock:
            copies = {name: np.asarray(values) for name, values in self.stages.items() if values}
        for name, a in copies.items():
            p50, p90, p99 = np.percentile(a, [50, 90, 99])
            out[name] = {"p50": float(p50), "p90": float(p90), "p99": float(p99),
                         "mean": float(a.mean()), "count": int(a.size)}
        return out

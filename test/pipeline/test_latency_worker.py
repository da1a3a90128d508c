"""LatencyStats percentiles and the latest-wins worker."""
from __future__ import annotations

import threading

import numpy as np

from fit3d_ros.pipeline import LatencyStats, LatestWinsWorker
from fit3d_ros.pipeline.latency import device_sync


def test_latency_percentiles_match_numpy_definition():
    stats = LatencyStats(window=100)
    values = np.arange(1, 201, dtype=float)  # only the last 100 stay in the window
    for v in values:
        stats.add("stage", v)
    s = stats.summary()["stage"]
    assert s["count"] == 100
    assert s["p50"] == np.percentile(values[100:], 50) == 150.5
    assert s["mean"] == values[100:].mean()


def test_latency_context_manager_records_positive_time():
    stats = LatencyStats()
    with stats.time("x"):
        sum(range(1000))
    assert stats.last()["x"] > 0


def test_worker_keeps_only_latest_and_counts_drops():
    gate = threading.Event()
    seen: list[int] = []

    def handler(item: int) -> None:
        gate.wait(5)
        seen.append(item)

    worker = LatestWinsWorker(handler)
    worker.submit(0)          # picked up at once, blocks on the gate
    while not worker._busy:   # wait until item 0 is running
        pass
    for i in range(1, 6):     # 1..4 are replaced by their successor
        worker.submit(i)
    gate.set()
    assert worker.wait_idle(5)
    worker.stop()
    assert seen == [0, 5]
    assert worker.counters.dropped == 4
    assert worker.counters.processed == 2


def test_worker_survives_handler_errors():
    errors: list[BaseException] = []

    def handler(item: int) -> None:
        if item == 1:
            raise ValueError("bad frame")

    worker = LatestWinsWorker(handler, on_error=errors.append)
    worker.submit(1)
    assert worker.wait_idle(5)
    worker.submit(2)
    assert worker.wait_idle(5)
    worker.stop()
    assert worker.counters.errors == 1 and worker.counters.processed == 1
    assert "bad frame" in worker.counters.last_error and len(errors) == 1


def test_latency_synchronises_the_device_around_each_stage():
    calls: list[str] = []
    stats = LatencyStats(sync=lambda: calls.append("sync"))
    with stats.time("unet"):
        calls.append("work")
    assert calls == ["sync", "work", "sync"]  # the stage ends after the device finished
    assert device_sync("cpu") is None and callable(device_sync("cuda:0"))

"""SharedResults computes once per key across threads, and retries after a failure."""
from __future__ import annotations

import threading
import time

import pytest

from fit3d_ros.pipeline.shared import SharedResults


def test_concurrent_callers_share_one_computation():
    cache = SharedResults()
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 42

    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(("cam", 1), compute)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [42] * 4 and len(calls) == 1
    assert cache.computed == 1 and cache.shared == 3


def test_failure_propagates_then_retries_and_capacity_evicts():
    cache = SharedResults(capacity=2)
    with pytest.raises(RuntimeError):
        cache.get("k", lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert cache.get("k", lambda: 1) == 1           # retried, not a cached failure
    cache.get("a", lambda: 2)
    cache.get("b", lambda: 3)                        # evicts "k"
    assert cache.get("k", lambda: 4) == 4

"""A single worker thread where the newest input wins (no unbounded queueing).

Design note: sensor callbacks must never block on inference; `submit` replaces any
pending item (counting it as a drop) and one thread processes the latest. Errors in the
handler are caught, counted and passed to `on_error`, so the worker keeps running.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class WorkerCounters:
    submitted: int = 0
    processed: int = 0
    dropped: int = 0
    errors: int = 0
    last_error: str = ""


class LatestWinsWorker:
    """Runs `handler(item)` on a background thread for the most recent item only."""

    def __init__(self, handler: Callable[[Any], None],
                 on_error: Callable[[BaseException], None] | None = None,
                 name: str = "fit3d-worker") -> None:
        self._handler = handler
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Any = None
        self._has_pending = False
        self._busy = False
        self._stop = False
        self.counters = WorkerCounters()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        with self._cond:
            self.counters.submitted += 1
            if self._has_pending:
                self.counters.dropped += 1
            self._pending, self._has_pending = item, True
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._has_pending and not self._stop:
                    self._cond.wait()
                if self._stop and not self._has_pending:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                self._handler(item)
                self.counters.processed += 1
            except Exception as exc:  # keep the worker alive; the node reports it
                self.counters.errors += 1
                self.counters.last_error = f"{type(exc).__name__}: {exc}"
                if self._on_error is not None:
                    self._on_error(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or running; True if idle."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._has_pending and not self._busy,
                                       timeout)

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout)

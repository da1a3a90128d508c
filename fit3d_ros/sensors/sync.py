"""Approximate-time synchronisation of several message streams (message_filters' policy).

Design note: this mirrors the Python ``message_filters.ApproximateTimeSynchronizer``
(ros2/message_filters) exactly, so nodes behave the same with or without it: each input
keeps a dict ``{stamp_ns: msg}`` of at most ``queue_size`` entries (overflow drops the
*oldest stamp*, which may be the message just added); on every arrival the other
queues' stamps within ``slop`` of the new stamp are ranked nearest first, their
combinations are tried in that order, and the first set whose spread (max - min) is
strictly below ``slop`` is emitted in input order and removed. Consequences worth
knowing: two stamps exactly ``slop`` apart never match, ``slop = 0`` never matches, and
a new message only matches messages already queued (no later re-matching of the
remaining queue). ``slop`` is truncated to integer nanoseconds like rclpy's
``Duration(seconds=slop)``. Headerless messages (with ``allow_headerless``) get the
wall-clock time, standing in for ``ROSClock().now()``. Written by hand because
message_filters has no PyPI wheel; `make_ros_synchronizer` uses the real one when it
can be imported.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Callable, Sequence

_log = logging.getLogger(__name__)


class ApproximateTimeSynchronizer:
    """Groups one message per input whose stamps lie within ``slop_s`` of each other."""

    def __init__(self, num_inputs: int, queue_size: int, slop_s: float,
                 callback: Callable[..., Any], allow_headerless: bool = False):
        if int(num_inputs) < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not slop_s >= 0:
            raise ValueError(f"slop_s must be >= 0, got {slop_s}")
        if not callable(callback):
            raise ValueError("callback must be callable")
        self.num_inputs = int(num_inputs)
        self.queue_size = int(queue_size)
        self.slop_ns = int(slop_s * 1e9)  # as rclpy Duration(seconds=slop_s)
        self.callback = callback
        self.allow_headerless = allow_headerless
        self.queues: list[dict[int, Any]] = [{} for _ in range(self.num_inputs)]
        self._lock = threading.Lock()

    def _stamp(self, input_index: int, msg) -> int:
        header = getattr(msg, "header", None)
        if header is not None and hasattr(header, "stamp"):
            st = header.stamp
            if hasattr(st, "sec") and hasattr(st, "nanosec"):
                return int(st.sec) * 1_000_000_000 + int(st.nanosec)
            return int(st.nanoseconds)  # rclpy.time.Time
        if not self.allow_headerless:
            raise ValueError(f"input {input_index}: {type(msg).__name__} has no header.stamp "
                             "(pass stamp_ns, or allow_headerless=True)")
        return time.time_ns()

    def add(self, input_index: int, msg, stamp_ns: int | None = None) -> None:
        """Queue `msg` on input `input_index`; calls ``callback(*msgs)`` on a match."""
        if not 0 <= input_index < self.num_inputs:
            raise ValueError(f"input_index {input_index} outside [0, {self.num_inputs})")
        stamp = self._stamp(input_index, msg) if stamp_ns is None else int(stamp_ns)
        matched = None
        with self._lock:
            mine = self.queues[input_index]
            mine[stamp] = msg
            while len(mine) > self.queue_size:
                del mine[min(mine)]
            ranked = []
            for j, queue in enumerate(self.queues):
                if j == input_index:
                    continue
                near = [s for s in queue if abs(s - stamp) <= self.slop_ns]
                if not near:
                    return
                ranked.append(sorted(near, key=lambda s: abs(s - stamp)))
            for combo in itertools.product(*ranked):
                stamps = list(combo)
                stamps.insert(input_index, stamp)
                if max(stamps) - min(stamps) < self.slop_ns and all(
                        t in q for q, t in zip(self.queues, stamps)):
                    matched = [q.pop(t) for q, t in zip(self.queues, stamps)]
                    break
        if matched is not None:
            self.callback(*matched)

    def feed(self, msg, input_index: int) -> None:
        """Subscriber-callback adapter: like `add`, but headerless messages are logged
        and dropped (message_filters' behaviour) instead of raising."""
        try:
            stamp = self._stamp(input_index, msg)
        except ValueError as exc:
            _log.warning("dropping message: %s", exc)
            return
        self.add(input_index, msg, stamp)  # callback errors propagate to the caller

    def registerCallback(self, cb: Callable[..., Any]) -> None:  # noqa: N802 - ROS API name
        """message_filters-compatible: replace the output callback."""
        self.callback = cb


class SubscriberFilter:
    """A stand-in for ``message_filters.Subscriber``: an rclpy subscription that fans
    each message out to registered callbacks (the node object is duck-typed)."""

    def __init__(self, node, msg_type, topic: str, qos_profile: Any = 10, **kwargs):
        self.topic = topic
        self._callbacks: list[tuple[Callable[..., Any], tuple]] = []
        self.sub = node.create_subscription(msg_type, topic, self.signalMessage,
                                            qos_profile, **kwargs)

    def registerCallback(self, cb: Callable[..., Any], *args) -> int:  # noqa: N802
        self._callbacks.append((cb, args))
        return len(self._callbacks) - 1

    def signalMessage(self, msg) -> None:  # noqa: N802
        for cb, args in self._callbacks:
            cb(msg, *args)


def _message_filters():
    try:  # optional: message_filters has no PyPI wheel
        import message_filters
    except ImportError:
        return None
    return message_filters


def make_subscriber(node, msg_type, topic: str, qos_profile: Any = 10, **kwargs):
    """``message_filters.Subscriber`` where importable, else a `SubscriberFilter`."""
    mf = _message_filters()
    if mf is not None:
        return mf.Subscriber(node, msg_type, topic, qos_profile=qos_profile, **kwargs)
    return SubscriberFilter(node, msg_type, topic, qos_profile, **kwargs)


def make_ros_synchronizer(subscribers: Sequence[Any], queue_size: int, slop_s: float,
                          callback: Callable[..., Any], allow_headerless: bool = False):
    """An approximate-time synchroniser over `subscribers` calling ``callback(*msgs)``.

    Uses ``message_filters.ApproximateTimeSynchronizer`` when message_filters imports
    and every subscriber is one of its filters; otherwise ours, fed through each
    subscriber's ``registerCallback`` (message_filters' filter interface).
    """
    subs = list(subscribers)
    if not subs:
        raise ValueError("make_ros_synchronizer needs at least one subscriber")
    mf = _message_filters()
    if mf is not None and all(isinstance(s, mf.SimpleFilter) for s in subs):
        sync = mf.ApproximateTimeSynchronizer(subs, queue_size, slop_s,
                                              allow_headerless=allow_headerless)
        sync.registerCallback(callback)
        return sync
    sync = ApproximateTimeSynchronizer(len(subs), queue_size, slop_s, callback,
                                       allow_headerless=allow_headerless)
    for i, sub in enumerate(subs):
        if not hasattr(sub, "registerCallback"):
            raise TypeError(f"subscriber #{i} ({type(sub).__name__}) has no registerCallback")
        sub.registerCallback(sync.feed, i)
    return sync

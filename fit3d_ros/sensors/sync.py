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

Recovery (not in message_filters, so it sits in front of either synchroniser): overflow
drops the oldest stamp, so ``queue_size`` messages stamped far in the future would make
every later good message the oldest and drop it on arrival, forever. A `StampGate`
rejects (and reports) stamps beyond a tolerance ahead of the node clock, and flushes
the queues when an input's stamps jump back by more than that tolerance (a restarted
log or clock), since nothing queued can match the new stamps. `SyncMonitor` tells a
camera that is really down or clock-shifted (a match impossible) from one that is
merely late.
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

    def flush(self) -> int:
        """Empty every queue; returns how many messages were dropped."""
        return flush_queues(self)

    def _stamp(self, input_index: int, msg) -> int:
        stamp = header_stamp_ns(msg)
        if stamp is not None:
            return stamp
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


def header_stamp_ns(msg) -> int | None:
    """``header.stamp`` in integer ns as message_filters reads it (sec * 1e9 + nanosec,
    unnormalised), or None for a headerless message."""
    header = getattr(msg, "header", None)
    if header is None or not hasattr(header, "stamp"):
        return None
    st = header.stamp
    if hasattr(st, "sec") and hasattr(st, "nanosec"):
        return int(st.sec) * 1_000_000_000 + int(st.nanosec)
    return int(st.nanoseconds)  # rclpy.time.Time


def flush_queues(sync) -> int:
    """Empty the queues of our or message_filters' ApproximateTimeSynchronizer (both
    keep ``queues``: a list of {stamp: msg} dicts, guarded by ``_lock`` / ``lock``)."""
    lock = getattr(sync, "_lock", None) or getattr(sync, "lock", None) or threading.Lock()
    with lock:
        n = sum(len(q) for q in sync.queues)
        for q in sync.queues:
            q.clear()
    return n


class StampGate:
    """Admits messages to a synchroniser (see the module note).

    ``admit(index, stamp_ns)`` is False for a stamp more than `tolerance_s` ahead of
    ``now_ns()`` (reported through ``on_reject(index, stamp_ns, ahead_s)``); a stamp more
    than `tolerance_s` behind the newest admitted one of its input empties the
    synchroniser's queues (`flush`, set by `make_ros_synchronizer`), reports
    ``on_flush(dropped)`` and starts over. A clock reading of 0
    (sim time before the first /clock) or ``tolerance_s <= 0`` disables the future check.
    """

    def __init__(self, num_inputs: int, now_ns: Callable[[], int], tolerance_s: float,
                 on_reject: Callable[[int, int, float], Any] | None = None,
                 on_flush: Callable[[int], Any] | None = None) -> None:
        self.now_ns, self.tolerance_ns = now_ns, int(tolerance_s * 1e9)
        self.on_reject, self.on_flush = on_reject, on_flush
        self.flush: Callable[[], int] | None = None  # empties the synchroniser's queues
        self.newest: list[int | None] = [None] * int(num_inputs)
        self._lock = threading.Lock()

    def admit(self, index: int, stamp_ns: int) -> bool:
        if self.tolerance_ns <= 0:
            return True
        now = int(self.now_ns())
        if now > 0 and stamp_ns > now + self.tolerance_ns:
            if self.on_reject is not None:
                self.on_reject(index, stamp_ns, (stamp_ns - now) / 1e9)
            return False
        with self._lock:
            newest = self.newest[index]
            jumped = newest is not None and stamp_ns < newest - self.tolerance_ns
            if jumped:
                self.newest = [None] * len(self.newest)
            self.newest[index] = stamp_ns if newest is None or jumped else max(newest, stamp_ns)
        if jumped:
            dropped = self.flush() if self.flush is not None else 0
            if self.on_flush is not None:
                self.on_flush(dropped)
        return True


class SyncMonitor:
    """Says when clouds (input 0) cannot match a camera (inputs 1..), not when the
    camera's image merely arrives after its cloud.

    A cloud is lost for camera j once j's images have moved past ``stamp + slop`` and
    none came within ``slop`` of it (j's clock is off); a camera is down when it sent
    nothing for `down_s` while unmatched clouds waited. `seen` / `matched` feed it,
    `problems` reports (and forgets) what happened since its last call.
    """

    def __init__(self, num_inputs: int, slop_s: float, down_s: float = 2.0,
                 history: int = 256) -> None:
        self.slop_ns, self.down_s, self.history = int(slop_s * 1e9), down_s, history
        self.stamps: list[list[int]] = [[] for _ in range(num_inputs)]
        self.last_arrival = [time.monotonic()] * num_inputs
        self.pending: dict[int, float] = {}  # unmatched cloud stamp -> arrival time
        self._lock = threading.Lock()

    def seen(self, index: int, stamp_ns: int | None) -> None:
        if stamp_ns is None:
            return
        with self._lock:
            self.last_arrival[index] = time.monotonic()
            stamps = self.stamps[index]
            stamps.append(stamp_ns)
            del stamps[:-self.history]
            if index == 0:
                self.pending[stamp_ns] = time.monotonic()
                while len(self.pending) > self.history:
                    self.pending.pop(next(iter(self.pending)))

    def matched(self, cloud_stamp_ns: int | None) -> None:
        with self._lock:
            self.pending.pop(cloud_stamp_ns, None)

    def problems(self) -> list[str]:
        """One line per camera (index >= 1) that lost clouds since the last call."""
        return [f"input {j}: {text}" for j, text in self.problems_by_input()]

    def problems_by_input(self) -> list[tuple[int, str]]:
        """`problems` as (camera input index, what happened) pairs."""
        now, out = time.monotonic(), []
        with self._lock:
            lost: dict[int, list[float]] = {}
            for c in list(self.pending):
                for j in range(1, len(self.stamps)):
                    imgs = self.stamps[j]
                    if imgs and max(imgs) > c + self.slop_ns and not any(
                            abs(s - c) <= self.slop_ns for s in imgs):
                        gap = min(abs(s - c) for s in imgs) / 1e9
                        lost.setdefault(j, []).append(gap)
                        self.pending.pop(c, None)
                        break
            for j, gaps in lost.items():
                out.append((j, f"{len(gaps)} clouds can never match (nearest image "
                               f"{min(gaps):.3f} s away, slop {self.slop_ns / 1e9:g} s): "
                               "clock off?"))
            waiting = [t for t in self.pending.values() if now - t > self.down_s]
            for j in range(1, len(self.stamps)):
                silent = now - self.last_arrival[j]
                if waiting and silent > self.down_s:
                    out.append((j, f"no message for {silent:.1f} s while "
                                   f"{len(waiting)} clouds wait: stream down?"))
        return out


class SubscriberFilter:
    """A stand-in for ``message_filters.Subscriber``: an rclpy subscription that fans
    each message out to registered callbacks (the node object is duck-typed)."""

    def __init__(self, node, msg_type, topic: str, qos_profile: Any = 10, **kwargs):
        self.topic = topic
        self._callbacks: list[tuple[Callable[..., Any], tuple]] = []
        self._node, self._type, self._kwargs = node, msg_type, kwargs
        self.sub = node.create_subscription(msg_type, topic, self.signalMessage,
                                            qos_profile, **kwargs)

    def resubscribe(self, qos_profile: Any) -> None:
        """Re-create the subscription with another QoS (callbacks stay registered)."""
        self._node.destroy_subscription(self.sub)
        self.sub = self._node.create_subscription(self._type, self.topic, self.signalMessage,
                                                  qos_profile, **self._kwargs)

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


def make_subscriber(node, msg_type, topic: str, qos_profile: Any = 10,
                    resubscribable: bool = False, **kwargs):
    """``message_filters.Subscriber`` where importable, else a `SubscriberFilter`;
    always the latter when `resubscribable` (QoS ``auto`` re-creates subscriptions, which
    message_filters cannot; `make_ros_synchronizer` then uses our synchroniser, same
    policy)."""
    mf = _message_filters()
    if mf is not None and not resubscribable:
        return mf.Subscriber(node, msg_type, topic, qos_profile=qos_profile, **kwargs)
    return SubscriberFilter(node, msg_type, topic, qos_profile, **kwargs)


def _gated(mf, sub, index: int, gate: StampGate):
    """A message_filters filter passing on `sub`'s messages that `gate` admits."""

    class Gate(mf.SimpleFilter):
        def __init__(self) -> None:
            super().__init__()
            sub.registerCallback(self.add)

        def add(self, msg) -> None:
            stamp = header_stamp_ns(msg)
            if stamp is None or gate.admit(index, stamp):
                self.signalMessage(msg)

    return Gate()


def make_ros_synchronizer(subscribers: Sequence[Any], queue_size: int, slop_s: float,
                          callback: Callable[..., Any], allow_headerless: bool = False,
                          gate: StampGate | None = None):
    """An approximate-time synchroniser over `subscribers` calling ``callback(*msgs)``.

    Uses ``message_filters.ApproximateTimeSynchronizer`` when message_filters imports
    and every subscriber is one of its filters; otherwise ours, fed through each
    subscriber's ``registerCallback`` (message_filters' filter interface). With a
    `gate`, every message passes ``gate.admit`` first (either synchroniser) and the
    gate's flush empties this synchroniser's queues.
    """
    subs = list(subscribers)
    if not subs:
        raise ValueError("make_ros_synchronizer needs at least one subscriber")
    mf = _message_filters()
    if mf is not None and all(isinstance(s, mf.SimpleFilter) for s in subs):
        if gate is not None:
            subs = [_gated(mf, s, i, gate) for i, s in enumerate(subs)]
        sync = mf.ApproximateTimeSynchronizer(subs, queue_size, slop_s,
                                              allow_headerless=allow_headerless)
        sync.registerCallback(callback)
    else:
        sync = ApproximateTimeSynchronizer(len(subs), queue_size, slop_s, callback,
                                           allow_headerless=allow_headerless)
        for i, sub in enumerate(subs):
            if not hasattr(sub, "registerCallback"):
                raise TypeError(f"subscriber #{i} ({type(sub).__name__}) has no "
                                "registerCallback")
            sub.registerCallback(_admitted(sync, gate) if gate is not None else sync.feed, i)
    if gate is not None:
        gate.flush = lambda: flush_queues(sync)
    return sync


def _admitted(sync: ApproximateTimeSynchronizer, gate: StampGate) -> Callable[[Any, int], None]:
    def feed(msg, index: int) -> None:
        stamp = header_stamp_ns(msg)
        if stamp is None or gate.admit(index, stamp):
            sync.feed(msg, index)
    return feed

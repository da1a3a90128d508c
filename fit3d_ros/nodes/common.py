"""Shared node plumbing: QoS by name, throttled warnings, diagnostics and latency topics.

Design note: follows image_pipeline/Autoware habits: sensor-data QoS by default (keep
last 5, best effort, volatile), overridable per node by a declared parameter; every
stage timed and published on ``~/latency_ms`` (std_msgs/String JSON, readable with
``ros2 topic echo``); health on ``/diagnostics`` (rates, drops, last error).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

import rclpy
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.clock import Clock, ClockType
from rclpy.executors import (ExternalShutdownException, MultiThreadedExecutor,
                             SingleThreadedExecutor)
from rclpy.signals import SignalHandlerOptions
from rclpy.node import Node
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)
from std_msgs.msg import String

from fit3d_ros.pipeline import LatencyStats, WorkerCounters

QOS_CHOICES = ("auto", "sensor_data", "reliable", "transient_local")


def prefer_large_data_transport() -> None:
    """Fast DDS's LARGE_DATA builtin transports (shared memory + TCP) unless the user
    chose otherwise: clouds and images are megabytes, and the default UDP path cost
    1.5 s per frame here (benchmarks/bench_pipeline.py). Call before rclpy.init."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")


def qos_from_name(name: str, depth: int = 5) -> QoSProfile:
    """QoS profile by name: sensor_data (best effort), reliable, transient_local (latched);
    auto starts as sensor_data (the node then matches its publishers: nodes.qos_match)."""
    if name in ("sensor_data", "auto"):
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)
    if name == "reliable":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    if name == "transient_local":
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(depth, 1),
                          reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
    raise ValueError(f"unknown QoS profile {name!r}; choose one of {QOS_CHOICES}")


class Throttle:
    """Allows one event per key every `period_s` seconds (throttled logging)."""

    def __init__(self, period_s: float = 5.0) -> None:
        self.period_s = period_s
        self._last: dict[str, float] = {}

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -1e18) >= self.period_s:
            self._last[key] = now
            return True
        return False


MAX_TEXT = 300  # characters of one warning in logs and /diagnostics


def clip_text(text: str, limit: int = MAX_TEXT) -> str:
    """`text` cut to `limit` characters (a 100 kB frame_id must not flood logs)."""
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} chars cut]"


class NodeHealth:
    """Counters, throttled warnings, latency and /diagnostics publishing for one node."""

    def __init__(self, node: Node, throttle_s: float = 5.0,
                 diagnostics_period_s: float = 1.0) -> None:
        self.node = node
        self.latency = LatencyStats()
        self.counts: dict[str, int] = {}
        self.last_error = ""
        self._last_error_t = -1e18
        self.error_hold_s = 10.0  # diagnostics stay WARN this long after the last problem
        self._lock = threading.Lock()  # callbacks, timers and workers run on other threads
        self.throttle = Throttle(throttle_s)  # period_s may change at run time
        self._string = String
        self._latency_pub = node.create_publisher(String, "~/latency_ms", 10)
        self._workers: dict[str, WorkerCounters] = {}
        self._started = time.monotonic()
        self._diag_pub = None
        try:  # optional: diagnostic_msgs may be missing (then no /diagnostics)
            from diagnostic_msgs.msg import DiagnosticArray  # noqa: F401
            self._diag_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        except ImportError:  # diagnostic_msgs absent: counters stay on ~/latency_ms only
            node.get_logger().info("diagnostic_msgs not importable; /diagnostics disabled")
        # steady (wall-clock) timer: under use_sim_time a ROS-time timer stops with /clock
        self._timer = node.create_timer(diagnostics_period_s, self.publish_diagnostics,
                                        clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.extra_stats: Callable[[], dict[str, Any]] | None = None  # more diagnostics

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def watch_worker(self, name: str, counters: WorkerCounters) -> None:
        self._workers[name] = counters

    def warn(self, key: str, message: str, throttle_key: str | None = None,
             error: bool = False) -> None:
        """Count a problem under `key`, remember it and log it at most every throttle_s
        per `throttle_key` (default `key`), as an error when `error`; the message is cut
        to `MAX_TEXT` characters."""
        message = clip_text(message)
        with self._lock:
            self.counts[key] = seen = self.counts.get(key, 0) + 1
            self.last_error, self._last_error_t = message, time.monotonic()
            ready = self.throttle.ready(throttle_key or key)
        if ready:  # rclpy wants one severity per logging call site: two call sites
            if error:
                self.node.get_logger().error(f"{message} (seen {seen}x)")
            else:
                self.node.get_logger().warning(f"{message} (seen {seen}x)")

    def publish_latency(self, stages: dict[str, float]) -> None:
        self._latency_pub.publish(self._string(data=json.dumps(
            {k: round(v, 3) for k, v in stages.items()})))

    @property
    def recent_error(self) -> bool:
        return time.monotonic() - self._last_error_t < self.error_hold_s

    def snapshot(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        with self._lock:
            snap: dict[str, Any] = dict(self.counts)
        for name, c in list(self._workers.items()):
            snap[f"{name}.processed"] = c.processed
            snap[f"{name}.dropped"] = c.dropped
            snap[f"{name}.errors"] = c.errors
            snap[f"{name}.rate_hz"] = round(c.processed / elapsed, 3)
        for stage, s in self.latency.summary().items():
            snap[f"latency_ms.{stage}.p50"] = round(s["p50"], 3)
        if self.extra_stats is not None:
            snap.update(self.extra_stats())
        snap["last_error"] = self.last_error
        return snap

    def publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        # optional: diagnostic_msgs may be missing; only reached when it imported above
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        snap = self.snapshot()
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if self.recent_error else DiagnosticStatus.OK,
            name=f"fit3d_ros: {self.node.get_fully_qualified_name()}",
            message=self.last_error if self.recent_error else "ok", hardware_id="fit3d_ros",
            values=[KeyValue(key=k, value=str(v)) for k, v in snap.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._diag_pub.publish(msg)


def declare(node: Node, name: str, default: Any, description: str = "", *,
            read_only: bool = True, bounds: tuple[float, float] | None = None) -> Any:
    """Declare a parameter and return its value. Start-up parameters are read-only (a
    ``ros2 param set`` is refused instead of silently doing nothing); `bounds` (lo, hi)
    becomes the descriptor's integer / floating-point range, enforced by rclpy."""
    desc = ParameterDescriptor(description=description, read_only=read_only)
    if bounds is not None:
        lo, hi = bounds
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise TypeError(f"parameter {name}: bounds need a numeric default")
        if isinstance(default, int):
            desc.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                            to_value=float(hi), step=0.0)]
        desc.description += f" [{lo}, {hi}]"
    return node.declare_parameter(name, default, desc).value


class RuntimeParams:
    """The parameters that may change while a node runs: each takes effect through
    `apply(value)`, called at declaration and from one on-set callback (a ValueError
    from `apply` refuses the set with its message)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._apply: dict[str, Callable[[Any], None]] = {}
        node.add_on_set_parameters_callback(self._on_set)

    def declare(self, name: str, default: Any, description: str,
                apply: Callable[[Any], None], bounds: tuple[float, float] | None = None
                ) -> Any:
        value = declare(self.node, name, default, description + " (run time)",
                        read_only=False, bounds=bounds)
        apply(value)
        self._apply[name] = apply
        return value

    def _on_set(self, params) -> SetParametersResult:
        for param in params:  # rclpy checked read_only, type and range already
            fn = self._apply.get(param.name)
            if fn is None:
                continue
            try:
                fn(param.value)
            except (ValueError, TypeError) as exc:
                return SetParametersResult(successful=False, reason=str(exc))
            self.node.get_logger().info(f"parameter {param.name} = {param.value!r}")
        return SetParametersResult(successful=True)


def rate_period(rate_hz: float) -> float:
    """Throttle period of an output rate limit (0 Hz = no limit)."""
    return 1.0 / rate_hz if rate_hz > 0 else 0.0


def has_subscribers(*publishers: Any) -> bool:
    """True if any publisher has a subscriber (lazy processing: no work while unobserved)."""
    return any(p.get_subscription_count() > 0 for p in publishers)


def run_node(factory, args: list[str] | None = None) -> int:
    """Init rclpy, build the node(s) (start-up errors → message + exit 1), spin until
    shutdown. `factory` returns one node, or a tuple of nodes served together by a
    multi-threaded executor (the composed executable). SIGINT / SIGTERM (Ctrl-C, `ros2
    launch` stopping) only set a flag: the spin loop ends, workers stop, exit 0, no
    KeyboardInterrupt traceback from inside the teardown."""
    prefer_large_data_transport()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    try:
        try:
            made = factory()
        except Exception as exc:  # noqa: BLE001 - start-up failure: say why, exit non-zero
            print(f"[fit3d_ros] start-up failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        nodes = list(made) if isinstance(made, tuple) else [made]
        executor = (MultiThreadedExecutor(num_threads=4) if len(nodes) > 1
                    else SingleThreadedExecutor())
        for node in nodes:
            executor.add_node(node)
        try:
            while not stop.is_set() and rclpy.ok():  # short waits: the flag is seen soon
                executor.spin_once(timeout_sec=0.1)
        except ExternalShutdownException:
            pass
        finally:
            for node in nodes:  # out of the executor first: rclpy crashes otherwise
                executor.remove_node(node)
                node.destroy_node()
            executor.shutdown()
    finally:
        if rclpy.ok():
            rclpy.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0

"""`fit3d-ros play`: publish a rosbag2 log with rclpy at its recorded timing (+ /clock).

Design note: a stand-in for ``ros2 bag play`` where the rosbag2 C++ stack is absent (the
PyPI wheels): messages are published as raw CDR bytes (``Publisher.publish(bytes)``),
so nothing is deserialised; ``/tf_static`` is latched (transient local); topics whose
message package is not importable here (e.g. ``tf2_msgs`` without its wheel) are
skipped with one warning each; ``/clock`` carries the log time for ``use_sim_time``.
"""
from __future__ import annotations

import importlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.node import Node
from rosgraph_msgs.msg import Clock

from fit3d_ros.cli.main import main as cli_main
from fit3d_ros.logs.bag import BagReader

from .common import qos_from_name


@dataclass
class PlayConfig:
    rate: float = 1.0
    loop: bool = False
    topics: list[str] | None = None
    clock: bool = True
    delay_s: float = 0.5          # discovery time before the first message
    max_loops: int | None = None  # with loop: stop after this many passes (None: forever)
    duration_s: float | None = None  # stop after this much wall time
    loop_gap_s: float = 0.1       # with loop: log time between passes (one 10 Hz frame)


@dataclass
class PlayStats:
    published: int = 0
    loops: int = 0
    skipped_topics: dict[str, str] = field(default_factory=dict)


def message_class(msgtype: str) -> Any:
    """The rclpy class of ``pkg/msg/Type``; ImportError where the package is missing."""
    pkg, kind, name = msgtype.split("/")
    module = importlib.import_module(f"{pkg}.{kind}")
    return getattr(module, name)


def play(path: str | Path, config: PlayConfig | None = None, node: Node | None = None
         ) -> PlayStats:
    """Publish the bag's messages; returns counts. Creates (and destroys) its own node
    unless one is given; rclpy must be initialised by the caller."""
    cfg = config or PlayConfig()
    if cfg.rate <= 0:
        raise ValueError(f"rate must be > 0, got {cfg.rate}")
    if cfg.loop_gap_s < 0:
        raise ValueError(f"loop_gap_s must be >= 0, got {cfg.loop_gap_s}")
    own = node is None
    node = node or rclpy.create_node("fit3d_player")
    stats = PlayStats()
    try:
        with BagReader(path) as bag:
            pubs = _publishers(node, bag, cfg, stats)
            clock_pub = None
            if cfg.clock:
                clock_pub = node.create_publisher(Clock, "/clock", 10)
            time.sleep(cfg.delay_s)
            t_end = None if cfg.duration_s is None else time.monotonic() + cfg.duration_s
            while node.context.ok():
                if _one_pass(node, bag, pubs, clock_pub, cfg, stats, t_end):
                    break
                stats.loops += 1
                if not cfg.loop or (cfg.max_loops is not None and stats.loops >= cfg.max_loops):
                    break
                # a bag whose messages share one stamp (a one-frame log) would otherwise be
                # re-published in a tight loop, starving the nodes it feeds
                if _sleep_until(time.monotonic() + cfg.loop_gap_s / cfg.rate, t_end, node):
                    break
    finally:
        if own:
            node.destroy_node()
    return stats


def _publishers(node: Node, bag: BagReader, cfg: PlayConfig, stats: PlayStats) -> dict:
    pubs = {}
    wanted = bag.topics if cfg.topics is None else {t: bag.topics[t] for t in cfg.topics
                                                     if t in bag.topics}
    for topic, info in wanted.items():
        try:
            cls = message_class(info.msgtype)
        except (ImportError, AttributeError, ValueError) as exc:
            stats.skipped_topics[topic] = f"{info.msgtype}: {exc}"
            node.get_logger().warning(f"skipping {topic}: message type {info.msgtype} is "
                                      f"not importable here ({exc})")
            continue
        qos = qos_from_name("transient_local" if topic == "/tf_static" else "reliable",
                            depth=100)
        pubs[topic] = node.create_publisher(cls, topic, qos)
    return pubs


def _one_pass(node: Node, bag: BagReader, pubs: dict, clock_pub: Any, cfg: PlayConfig,
              stats: PlayStats, t_end: float | None) -> bool:
    """Publish every message once at recorded timing; True if stopped early."""
    if not pubs:
        return True

    t0_wall = time.monotonic()
    t0_log = bag.start_ns
    for topic, _type, log_ns, _idx, data in bag.raw_messages(list(pubs)):
        if _sleep_until(t0_wall + (log_ns - t0_log) / 1e9 / cfg.rate, t_end, node):
            return True
        if clock_pub is not None:
            msg = Clock()
            msg.clock.sec, msg.clock.nanosec = divmod(int(log_ns), 1_000_000_000)
            clock_pub.publish(msg)
        pubs[topic].publish(bytes(data))
        stats.published += 1
    return False


def _sleep_until(due: float, t_end: float | None, node: Node) -> bool:
    """Sleep until monotonic time `due`; True (stop) if `t_end` comes first or the node's
    context shuts down."""
    while True:
        now = time.monotonic()
        if (t_end is not None and now >= t_end) or not node.context.ok():
            return True
        if now >= due:
            return False
        time.sleep(min(due - now, 0.05))


def main(argv: list[str] | None = None) -> int:
    """Console entry: same arguments as ``fit3d-ros play``."""
    return cli_main(["play", *(sys.argv[1:] if argv is None else argv)])

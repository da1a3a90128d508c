"""``fit3d-ros play BAG``: publish a bag with rclpy at recorded timing (needs the ros extra)."""
from __future__ import annotations

import argparse
import json

from fit3d_ros.cli.main import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("play", help="publish a rosbag2 log with rclpy at its recorded "
                       "timing, with /clock (a stand-in for `ros2 bag play`)")
    p.add_argument("bag", help="rosbag2 bag (.mcap file, .db3 file or bag directory)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    p.add_argument("--loop", action="store_true", help="replay forever (Ctrl-C stops)")
    p.add_argument("--loop-gap", type=float, default=0.1,
                   help="with --loop: log seconds between passes (default one 10 Hz frame)")
    p.add_argument("--topics", nargs="+", help="only these topics")
    p.add_argument("--no-clock", action="store_true", help="do not publish /clock")
    p.add_argument("--delay", type=float, default=0.5,
                   help="seconds to wait for discovery before the first message")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        import rclpy  # optional: rclpy only with the ros extra or a ROS 2 install
    except ImportError as exc:
        raise CommandError(f"rclpy is not importable ({exc}); install the ros extra: "
                           "pip install -c constraints.txt -e '.[ros]'") from exc
    # optional: fit3d_ros.nodes imports rclpy (and costly: ~100 ms on `fit3d-ros --help`)
    from fit3d_ros.nodes.common import prefer_large_data_transport
    from fit3d_ros.nodes.player import PlayConfig, play

    prefer_large_data_transport()
    cfg = PlayConfig(rate=args.rate, loop=args.loop, topics=args.topics,
                     clock=not args.no_clock, delay_s=args.delay, duration_s=args.duration,
                     loop_gap_s=args.loop_gap)
    rclpy.init()
    try:
        stats = play(args.bag, cfg)
    except KeyboardInterrupt:
        return 130
    finally:
        if rclpy.ok():
            rclpy.shutdown()
    print(json.dumps({"published": stats.published, "loops": stats.loops,
                      "skipped_topics": stats.skipped_topics}))
    return 0

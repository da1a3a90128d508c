"""``fit3d-ros bag from-*`` (dataset -> rosbag2), ``bag extrinsics`` (a bag's /tf_static ->
the nodes' extrinsics YAML) and ``fit3d-ros info BAG``.

Design note: thin wrappers over `fit3d_ros.logs` (imported inside the handlers, so
``--help`` stays instant). ``-o OUT.mcap`` writes one self-contained mcap file (``.db3``
one sqlite3 file, any other name a rosbag2 directory); an existing output is refused
unless ``--force``. ``info --json`` prints exactly one JSON object on stdout.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from fit3d_ros.cli.main import CommandError


def _print_summary(summary: dict[str, Any]) -> None:
    print(f"wrote {summary['output']} ({summary['storage']}): {summary['frames']} frame(s), "
          f"{summary['duration_s']:.3f} s")
    for topic, count in summary["topics"].items():
        print(f"  {topic:<32} {count:>6} msgs")


def _out_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output bag: OUT.mcap (one mcap file), OUT.db3, or a directory")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--compress", action="store_true",
                   help="zstd compression (mcap chunks / sqlite3-directory messages)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn an existing output (FileExistsError) into a user error."""
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except FileExistsError as exc:
            raise CommandError(str(exc)) from exc
    return run


def _finish(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    if args.json:
        print(json.dumps(summary))
    else:
        _print_summary(summary)
    return 0


def _from_rgbd(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.logs.convert import rgbd_to_bag

    return _finish(args, rgbd_to_bag(args.dir, args.output, fmt=args.format, every=args.every,
                                     overwrite=args.force, compress=args.compress))


def _from_kitti(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.logs.convert import kitti_to_bag

    label_fn = None
    if args.box_labels:  # per-point classes from label_2 boxes, class list in a sidecar
        # costly (torch, rosbags): imported per command so that --help stays instant
        from fit3d_ros.training.ditr.box_labels import kitti_frame_box_labels as label_fn
    summary = kitti_to_bag(args.dir, args.output, frames=args.frames or None,
                           overwrite=args.force, compress=args.compress, label_fn=label_fn)
    if args.box_labels:
        # costly (torch, rosbags): imported per command so that --help stays instant
        from fit3d_ros.models.classes import kitti_box_classes, write_sidecar
        summary["classes"] = str(write_sidecar(args.output, kitti_box_classes()))
    return _finish(args, summary)


def _from_nuscenes(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.logs.convert import nuscenes_to_bag

    return _finish(args, nuscenes_to_bag(args.dir, args.output, overwrite=args.force,
                                         compress=args.compress))


def _from_semantickitti(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.logs.convert import semantickitti_to_bag

    return _finish(args, semantickitti_to_bag(args.dir, args.output, overwrite=args.force,
                                              compress=args.compress))


def _info(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.logs.bag import bag_info

    try:
        info = bag_info(args.bag, rates=not args.no_rates)
    except FileNotFoundError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"bag:      {info['path']} ({info['storage']})")
    print(f"duration: {info['duration_s']:.3f} s  ({info['start_ns']} .. {info['end_ns']} ns)")
    print(f"messages: {info['message_count']}")
    width = max((len(t) for t in info["topics"]), default=5)
    for topic, t in info["topics"].items():
        rate = "-" if t["rate_hz"] is None else f"{t['rate_hz']:.2f} Hz"
        print(f"  {topic:<{width}}  {t['type']:<30} {t['count']:>7}  {rate}")
    return 0


def _extrinsics(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.logs.scene_io import read_transform_buffer
    from fit3d_ros.sensors.extrinsics_yaml import write_extrinsics

    out = Path(args.output)
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists (pass --force to replace)")
    tfs = read_transform_buffer(args.bag).static_transforms()
    if not tfs:
        raise CommandError(f"{args.bag}: no static transforms (no *tf_static TFMessage topic "
                           "or it is empty)")
    write_extrinsics(out, tfs, f"static transforms of {args.bag} (tf_static), "
                     "for the nodes' extrinsics_file")
    if args.json:
        print(json.dumps({"output": str(out), "transforms": len(tfs)}))
    else:
        print(f"wrote {out}: {len(tfs)} static transform(s)")
        for t in tfs:
            print(f"  {t.parent_frame} <- {t.child_frame}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``bag`` (from-rgbd/from-kitti/from-nuscenes/from-semantickitti, extrinsics) and
    ``info``."""
    bag = subparsers.add_parser("bag", help="convert datasets into rosbag2 logs; dump a "
                                "bag's static extrinsics",
                                description="Convert dataset folders into rosbag2 logs.")
    sub = bag.add_subparsers(dest="bag_command", required=True, metavar="CONVERTER")

    p = sub.add_parser("from-rgbd", help="7-Scenes / Redwood RGB-D folder -> bag")
    p.add_argument("dir")
    p.add_argument("--format", required=True, choices=["7scenes", "redwood"])
    p.add_argument("--every", type=int, default=1, metavar="N", help="keep every N-th frame")
    _out_args(p)
    p.set_defaults(func=_guarded(_from_rgbd))

    p = sub.add_parser("from-kitti", help="KITTI object folder -> bag")
    p.add_argument("dir", metavar="OBJECT_DIR")
    p.add_argument("--frames", nargs="+", metavar="ID", help="frame ids (default: all)")
    p.add_argument("--box-labels", action="store_true", help="per-point `label` field from "
                   "label_2 3D boxes (classes in OUT.classes.json)")
    _out_args(p)
    p.set_defaults(func=_guarded(_from_kitti))

    p = sub.add_parser("from-nuscenes", help="nuScenes sample folder (sample.json) -> bag")
    p.add_argument("dir")
    _out_args(p)
    p.set_defaults(func=_guarded(_from_nuscenes))

    p = sub.add_parser("from-semantickitti", help="SemanticKITTI points/labels -> bag")
    p.add_argument("dir")
    _out_args(p)
    p.set_defaults(func=_guarded(_from_semantickitti))

    p = sub.add_parser("extrinsics", help="a bag's /tf_static -> extrinsics YAML (the "
                       "nodes' extrinsics_file)")
    p.add_argument("bag", help="a .mcap / .db3 file or a rosbag2 directory")
    p.add_argument("-o", "--output", required=True, metavar="YAML", help="output file")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=_guarded(_extrinsics))

    info = subparsers.add_parser("info", help="topics, types, counts, rates and duration "
                                 "of a bag")
    info.add_argument("bag", help="a .mcap / .db3 file or a rosbag2 directory")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--no-rates", action="store_true",
                      help="skip the per-topic rate scan (faster on big bags)")
    info.set_defaults(func=_info)

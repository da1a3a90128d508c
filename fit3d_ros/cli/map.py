"""``fit3d-ros map | locate | eval-map``: semantic maps from logs, instance queries, metrics."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import emit, fmt
from .main import CommandError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("map", help="accumulate labelled clouds of bags into a voxel map: "
                       "DIR/map.npz, map.ply, report.html")
    p.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 bags with clouds and TF")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="segment the clouds with this SEG.ckpt (replay)")
    src.add_argument("--labels-from-bag", action="store_true",
                     help="use the clouds' own label field (class map: the bag's sidecar "
                     "or --classes)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--frame", default="map", help="fixed frame of the map")
    p.add_argument("--voxel", type=float, default=0.1, help="voxel size (m)")
    p.add_argument("--max-voxels", type=int, default=2_000_000)
    p.add_argument("--classes", help="class map (builtin name or JSON) for --labels-from-bag")
    p.add_argument("--cloud-topic", help="PointCloud2 topic (default: the first one)")
    p.add_argument("--min-points", type=int, default=5, help="smallest instance in the report")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_map)

    p = sub.add_parser("locate", help="instances of a class in a map made by `fit3d-ros map`")
    p.add_argument("map_dir", metavar="DIR", help="folder with map.npz")
    p.add_argument("--class", dest="class_name", required=True, metavar="NAME")
    p.add_argument("--near", type=float, nargs=3, metavar=("X", "Y", "Z"),
                   help="sort by distance to this map-frame point (default: largest first)")
    p.add_argument("--min-points", type=int, default=5, help="smallest instance (points)")
    p.add_argument("--gap", type=int, default=1, help="clustering: neighbours within this "
                   "many voxels")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_locate)

    p = sub.add_parser("eval-map", help="SAB3R metrics of a map against a labelled bag: "
                       "mIoU, accuracy, completeness")
    p.add_argument("map_dir", metavar="DIR", help="folder with map.npz")
    p.add_argument("--gt", required=True, metavar="BAG", help="bag with labelled clouds + TF")
    p.add_argument("--classes", help="class map of the ground truth (default: its sidecar)")
    p.add_argument("--cloud-topic", help="PointCloud2 topic (default: the first one)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_eval)


def _map(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.mapping import MapConfig, export_ply, save_map
    from fit3d_ros.mapping.bags import bag_classes, map_from_checkpoint, map_from_labels
    from fit3d_ros.mapping.report import write_map_report

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = MapConfig(voxel_size=args.voxel, frame=args.frame, max_voxels=args.max_voxels,
                    device=args.device)
    if args.labels_from_bag:
        vmap, rep = map_from_labels(args.bags, cfg, bag_classes(args.bags, args.classes),
                                    args.cloud_topic)
    else:
        vmap, rep = map_from_checkpoint(args.bags, cfg, args.checkpoint, out,
                                        args.cloud_topic, args.device)
    if rep.integrated == 0:
        raise CommandError(f"no cloud could be placed in frame {args.frame!r} "
                           f"({rep.missing_transform} without transform): {rep.notes[:3]}")
    save_map(vmap, out / "map.npz")
    _, writer = export_ply(vmap, out / "map.ply")
    summary = {"map": str(out / "map.npz"), "ply": str(out / "map.ply"), "ply_writer": writer,
               "voxels": len(vmap), "frame": args.frame, "voxel": args.voxel,
               "clouds": rep.clouds, "integrated": rep.integrated,
               "missing_transform": rep.missing_transform, "points": rep.points,
               "skipped_label": rep.skipped_label, "notes": rep.notes}
    write_map_report(out, vmap, summary, args.min_points)
    return emit(args, summary, [
        f"wrote {out}/map.npz, map.ply, report.html: {len(vmap)} voxels from "
        f"{rep.integrated}/{rep.clouds} clouds ({rep.missing_transform} without transform)"])


def _locate(args: argparse.Namespace) -> int:
    # costly (torch): imported per command so that --help stays instant
    from fit3d_ros.mapping import load_map, locate

    vmap = load_map(args.map_dir)
    try:
        found = locate(vmap, args.class_name, gap=args.gap, min_points=args.min_points,
                       near=args.near)
    except KeyError as exc:
        raise CommandError(exc.args[0]) from exc
    result = {"instances": [i.to_dict() for i in found]}
    lines = [f"{len(found)} instance(s) of {args.class_name!r} in {args.map_dir}"]
    lines += [f"  centroid ({', '.join(fmt(v, '.2f') for v in i.centroid)})  box "
              f"({', '.join(fmt(v, '.2f') for v in i.box_min)}) .. "
              f"({', '.join(fmt(v, '.2f') for v in i.box_max)})  {i.points} points, "
              f"{i.voxels} voxels, confidence {i.confidence:.3f}" for i in found]
    return emit(args, result, lines)


def _eval(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.mapping import evaluate_map, load_map
    from fit3d_ros.mapping.bags import bag_classes, ground_truth

    vmap = load_map(args.map_dir)
    classes = bag_classes([args.gt], args.classes)
    if list(classes.names) != vmap.class_names:
        raise CommandError(f"ground-truth classes {list(classes.names)} differ from the "
                           f"map's {vmap.class_names}")
    xyz, labels, skipped = ground_truth(args.gt, vmap.cfg.frame, classes, args.cloud_topic)
    result = {**evaluate_map(vmap, xyz, labels), "gt_clouds_without_transform": skipped}
    comp = result["completeness"]
    lines = [f"mIoU {fmt(result['miou'])}  accuracy {fmt(result['accuracy'])}  "
             f"completeness mean {fmt(comp['mean'], '.3f')} m, median "
             f"{fmt(comp['median'], '.3f')} m  ({result['points']} ground-truth points, "
             f"{result['map_voxels']} map voxels)"]
    lines += [f"  {name:>12}: IoU {fmt(result['per_class_iou'][name])}  completeness mean "
              f"{fmt(v['mean'], '.3f')} median {fmt(v['median'], '.3f')}"
              for name, v in result["per_class_completeness"].items()]
    (Path(args.map_dir) / "eval.json").write_text(json.dumps(result, indent=1))
    return emit(args, result, lines)

"""``fit3d-ros replay BAG --out DIR``: the node pipeline over a recorded log, without ROS."""
from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run features / segmentation over a bag offline: "
                       "DIR/outputs.mcap, metrics.json, report.html")
    p.add_argument("bag", help="rosbag2 bag (.mcap / .db3 / directory)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--checkpoint", help="segmentation checkpoint (fit3d-ros train-seg)")
    p.add_argument("--backbone", help="2D backbone for feature outputs (default: the "
                   "checkpoint's, if it injects 2D features)")
    p.add_argument("--feature-mode", default="original", choices=["original", "finetuned", "concat"])
    p.add_argument("--weights", help="local weights of the backbone")
    p.add_argument("--finetuned-weights", help="fine-tuned backbone weights (concat/finetuned)")
    p.add_argument("--random-init", action="store_true", help="seeded random backbone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--token-budget", type=int, default=37 * 37)
    p.add_argument("--cloud-topic", help="PointCloud2 topic (default: the first one)")
    p.add_argument("--camera", action="append", dest="cameras",
                   help="Image topic (repeatable; default: images with a CameraInfo)")
    p.add_argument("--slop", type=float, default=0.1, help="sync slop in seconds")
    p.add_argument("--max-frames", type=int, help="stop after this many clouds")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="ViT precision (CUDA: the U-Net under autocast too)")
    p.add_argument("--json", action="store_true", help="print metrics.json")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # costly: loads torch (~1 s); `fit3d-ros --help` imports this module
    from fit3d_ros.pipeline.features import FeatureConfig
    from fit3d_ros.pipeline.replay import ReplayConfig, replay_bag

    features = None
    if args.backbone:
        features = FeatureConfig(backbone=args.backbone, mode=args.feature_mode,
                                 weights=args.weights, finetuned_weights=args.finetuned_weights,
                                 random_init=args.random_init, seed=args.seed,
                                 token_budget=args.token_budget, dtype=args.dtype,
                                 device=args.device)
    cfg = ReplayConfig(checkpoint=args.checkpoint, features=features,
                       cloud_topic=args.cloud_topic, cameras=args.cameras, slop_s=args.slop,
                       device=args.device, dtype=args.dtype, max_frames=args.max_frames)
    metrics = replay_bag(args.bag, args.out, cfg, progress=not args.json)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"wrote {args.out}/outputs.mcap, metrics.json, report.html "
              f"({metrics['frames_out']} clouds, {metrics['counts']['features_out']} feature "
              f"images; weights: {metrics['weights']})")
    for warning in metrics["counts"]["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return 0 if metrics["frames_out"] or metrics["counts"]["features_out"] else 1

"""``fit3d-ros demo --out DIR``: the main job on a procedural scene (no data, no downloads)."""
from __future__ import annotations

import argparse

from fit3d_ros.cli._common import emit, fmt


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render a procedural indoor scene, train the tiny DITR "
                       "config on part of it, replay the rest, write a report")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--backbone", default="dinov2_small", help="2D backbone short name")
    p.add_argument("--weights", help="local weights file for the backbone")
    p.add_argument("--random-init", action="store_true",
                   help="use a seeded random backbone even if weights are available")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--holdout", type=int, default=4, help="frames kept for the replay")
    p.add_argument("--steps", type=int, default=150, help="training steps")
    p.add_argument("--token-budget", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    # costly: loads torch (~1 s); `fit3d-ros --help` imports this module
    from fit3d_ros.demo.run import run_demo

    result = run_demo(args.out, backbone=args.backbone, weights=args.weights,
                      random_init=args.random_init, frames=args.frames, holdout=args.holdout,
                      steps=args.steps, token_budget=args.token_budget,
                      progress=not args.json)
    return emit(args, result, [
        f"weights: {result['weights']}",
        f"held-out mIoU {fmt(result['heldout_miou'], '.3f')}, accuracy "
        f"{fmt(result['heldout_accuracy'], '.3f')} ({result['eval_frames']} frames, "
        f"{result['seconds']} s)",
        f"report: {result['report']}"])

"""Argument and output helpers shared by the training commands (`fit3d`, `seg`).

Design note: private (the leading underscore keeps `cli.main` from looking for
sub-commands here); light imports only, so ``fit3d-ros --help`` stays instant.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def backbone_args(p: argparse.ArgumentParser, required: bool) -> None:
    """``--backbone NAME`` with an explicit choice of weights, and ``--backbone-seed``."""
    p.add_argument("--backbone", required=required, metavar="NAME",
                   help="ViT short name (dinov2_small, ...) or timm model name")
    g = p.add_mutually_exclusive_group(required=required)
    g.add_argument("--weights", metavar="FILE", help="local .pth/.safetensors weights")
    g.add_argument("--random-init", action="store_true",
                   help="seeded random ViT (no pretrained weights; results say so)")
    g.add_argument("--pretrained", action="store_true", help="pretrained weights (hub)")
    p.add_argument("--backbone-seed", type=int, default=0, help="seed of --random-init")


def backbone_spec(args: argparse.Namespace, token_budget: int | None, **extra: Any):
    """The `BackboneSpec` named by `backbone_args` (plus `extra` fields)."""
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.models.backbone_spec import BackboneSpec

    return BackboneSpec(name=args.backbone, weights=args.weights, random_init=args.random_init,
                        seed=args.backbone_seed, token_budget=token_budget, **extra)


def setup_threads(args: argparse.Namespace) -> None:
    """``--threads N``: torch's CPU thread count for this command."""
    # costly (torch, rosbags): imported per command so that --help stays instant
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def emit(args: argparse.Namespace, result: dict[str, Any], lines: list[str],
         out: str | None = None) -> int:
    """Print one JSON object (``--json``) or the text lines; `out` also gets the JSON.

    Values JSON cannot hold (paths, numpy scalars) are written as their ``str``.
    """
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, default=str) if args.json else "\n".join(lines))
    return 0


def fmt(v: Any, spec: str = ".4f") -> str:
    return "n/a" if v is None else format(v, spec)

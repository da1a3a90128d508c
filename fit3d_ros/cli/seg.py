"""``fit3d-ros distill`` / ``train-seg`` / ``eval-seg``: D-DITR and DITR on logs and datasets.

Design note: thin wrappers over `fit3d_ros.training` (imported inside the handlers so
``--help`` stays instant). DATA arguments are bags or dataset folders (see
`training.ditr.sources.detect_kind`). The 2D backbone is named like everywhere else
(``--backbone dinov2_small``) and its weights must be chosen explicitly: ``--weights
FILE``, ``--pretrained`` (download) or ``--random-init`` (a seeded random ViT — every
result then says so). ``--json`` prints exactly one JSON object on stdout; progress
bars go to stderr.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fit3d_ros.cli._common import backbone_args, backbone_spec, emit, fmt, setup_threads
from fit3d_ros.cli.main import CommandError


def _data_args(p: argparse.ArgumentParser, nargs: str = "+") -> None:
    p.add_argument("data", nargs=nargs, metavar="DATA",
                   help="bags (.mcap/.db3/rosbag2 dir) or dataset folders (SemanticKITTI, "
                        "KITTI object, nuScenes sample, 7-Scenes/Redwood)")
    p.add_argument("--classes", metavar="SPEC", help="class map: semantickitti, kitti_boxes "
                   "or a JSON file (default: the source's own / the bag's sidecar)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th frame")
    p.add_argument("--max-frames", type=int, metavar="N", help="at most N frames per source")
    p.add_argument("--rgbd-stride", type=int, default=4, metavar="N",
                   help="RGB-D: back-project every N-th depth pixel (default 4)")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", choices=["tiny", "default"], default="default",
                   help="tiny: CPU in minutes; default: the reference GPU recipe")
    p.add_argument("--steps", type=int, help="training steps (overrides the config)")
    p.add_argument("--batch-size", type=int, help="scans per step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--max-points", type=int, help="random subset of points per scan")
    p.add_argument("--features", help="input features, comma separated (xyz,intensity,rgb)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--no-augment", action="store_true", help="disable augmentation")
    p.add_argument("--cache", metavar="DIR", help="cache ViT patch maps on disk")
    p.add_argument("--amp", choices=["off", "bf16", "fp16"],
                   help="mixed precision on CUDA (Pointcept AMP; ignored on CPU)")
    p.add_argument("--no-prefetch", action="store_true",
                   help="build each batch in the training thread (no background prefetch)")
    p.add_argument("-o", "--output", required=True, metavar="CKPT", help="output checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing output")


def _backbone_args(p: argparse.ArgumentParser, required: bool) -> None:
    backbone_args(p, required)
    p.add_argument("--fit3d", action="store_true",
                   help="FiT3D assembly: original ‖ fine-tuned features")
    p.add_argument("--token-budget", type=int, default=37 * 37,
                   help="ViT patches per image (DITR: 37x37)")
    p.add_argument("--view", choices=["random", "center", "first"], default="random",
                   help="camera choice for points seen by several cameras")


def _load(args: argparse.Namespace, paths: list[str]) -> list:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.ditr.data import LoadOptions
    from fit3d_ros.training.ditr.sources import load_dataset

    opts = LoadOptions(classes=args.classes, every=args.every, max_frames=args.max_frames,
                       rgbd_stride=args.rgbd_stride)
    return [load_dataset(p, opts) for p in paths]


def _spec(args: argparse.Namespace):
    if args.backbone is None:
        raise CommandError("--backbone is required")
    if not (args.weights or args.random_init or args.pretrained):
        raise CommandError("choose the backbone weights: --weights FILE, --pretrained or "
                           "--random-init")
    return backbone_spec(args, args.token_budget, view=args.view, fit3d=args.fit3d)


def _config(cls, args: argparse.Namespace):
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.ditr.augment import AugmentConfig

    cfg = cls.preset_named(args.config)
    over: dict[str, Any] = {"seed": args.seed}
    for name in ("steps", "batch_size", "max_points"):
        if getattr(args, name) is not None:
            over[name] = getattr(args, name)
    if args.features:
        over["input_features"] = [f.strip() for f in args.features.split(",") if f.strip()]
    if args.no_augment:
        over["augment"] = AugmentConfig.off().__dict__
    if args.amp is not None:
        over["amp"] = args.amp
    if args.no_prefetch:
        over["prefetch"] = False
    d = {**cfg.to_dict(), **over}
    if args.lr is not None:
        d["optim"] = {**d["optim"], "lr": args.lr}
    return cls.from_dict(d)


def _check_output(args: argparse.Namespace, resume: bool = False) -> None:
    if Path(args.output).exists() and not (args.force or resume):
        raise CommandError(f"{args.output} exists (pass --force to replace it, or "
                           "--resume to continue a train-seg run)")


def _distill(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.ditr.config import DistillConfig
    from fit3d_ros.training.ditr.distill import run_distillation

    setup_threads(args)
    _check_output(args)
    spec = _spec(args)
    cfg = _config(DistillConfig, args)
    if args.holdout is not None:
        cfg.holdout = args.holdout
    r = run_distillation(_load(args, args.data), spec, cfg, args.output, args.cache,
                         args.device, not args.no_progress)
    return emit(args, r, [f"wrote {r['output']} (D-DITR, {r['steps']} steps, teacher "
                          f"{r['backbone']}: {r['teacher']})",
                          f"held-out cosine similarity: {fmt(r['heldout_cosine'])} over "
                          f"{r['heldout_points']} visible points"])


def _train_seg(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.ditr.config import SegTrainConfig
    from fit3d_ros.training.ditr.train import train_segmentation

    setup_threads(args)
    _check_output(args, resume=args.resume)
    if args.resume and (args.init or args.inject):
        raise CommandError("--resume takes the run's settings from its checkpoint; drop "
                           "--init/--inject")
    spec = _spec(args) if args.inject else None
    if not args.inject and args.backbone:
        raise CommandError("--backbone is only used with --inject (DITR)")
    cfg = _config(SegTrainConfig, args)
    if args.save_every is not None:
        cfg.save_every = args.save_every
    val = _load(args, args.val) if args.val else ()
    r = train_segmentation(_load(args, args.data), cfg, args.output, init=args.init,
                           init_dataset=args.init_dataset, inject=spec, resume=args.resume,
                           val=val, cache_dir=args.cache, device=args.device,
                           progress=not args.no_progress)
    lines = [f"wrote {r['output']} ({r['steps']} steps, final loss {fmt(r['final_train_loss'])}"
             f"{', DITR injection' if r['inject'] else ''}"
             f"{', init ' + r['init'] if r['init'] else ''})"]
    if r.get("teacher"):
        lines.append(f"2D teacher: {r['teacher']}")
    if "val" in r:
        lines.append(f"val mIoU {fmt(r['val']['miou'])}, accuracy {fmt(r['val']['accuracy'])}")
    return emit(args, r, lines)


def _eval_seg(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.models.checkpoint import build_model_from_checkpoint, load_checkpoint
    from fit3d_ros.pipeline.metrics import write_confusion
    from fit3d_ros.training.ditr.evaluate import evaluate
    from fit3d_ros.training.ditr.point_features import PointFeatureSource

    setup_threads(args)
    ckpt = load_checkpoint(args.checkpoint)
    if ckpt.kind != "segmentation":
        raise CommandError(f"{args.checkpoint} is a {ckpt.kind} checkpoint; eval-seg needs a "
                           "segmentation checkpoint (train-seg --init it first)")
    model = build_model_from_checkpoint(ckpt, args.device)
    prep = ckpt.preprocessing
    source = (PointFeatureSource(prep.backbone, args.cache, args.device)
              if ckpt.model_config.inject_2d else None)
    ev = evaluate(model, _load(args, args.data), ckpt.classes, prep.input_features, source,
                  args.device)
    r = ev.result()
    out = Path(args.out) if args.out else Path(f"{args.checkpoint}.eval")
    jpath, ppath = write_confusion(ev.total, ckpt.class_names, out)
    r.update(checkpoint=str(args.checkpoint), data=list(args.data),
             teacher=ckpt.training.get("teacher"), confusion_json=str(jpath),
             confusion_png=str(ppath))
    (out / "metrics.json").write_text(json.dumps(r, indent=1))
    lines = [f"mIoU {fmt(r['miou'])}  accuracy {fmt(r['accuracy'])}  ({r['points']} points)",
             f"visible mIoU {fmt(r['visible_miou'])}  invisible mIoU "
             f"{fmt(r['invisible_miou'])}"]
    lines += [f"  {n:<16} {fmt(v)}" for n, v in r["per_class_iou"].items()]
    lines.append(f"confusion matrix: {jpath}, {ppath}")
    return emit(args, r, lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``distill``, ``train-seg`` and ``eval-seg``."""
    p = subparsers.add_parser("distill", help="D-DITR: distil a 2D ViT into the 3D U-Net",
                              description="D-DITR pretraining: per-point ViT targets through "
                              "the DITR mapping, cosine loss on visible points.")
    _data_args(p)
    _backbone_args(p, required=True)
    _train_args(p)
    p.add_argument("--holdout", type=float, help="share of each source held out (default 0.2)")
    _run_args(p)
    p.set_defaults(func=_distill)

    p = subparsers.add_parser("train-seg", help="train point-cloud segmentation (DITR)",
                              description="Train the sparse U-Net for segmentation: from "
                              "scratch, from a D-DITR checkpoint (--init) or with DITR "
                              "injection (--inject).")
    _data_args(p)
    p.add_argument("--init", metavar="CKPT", help="D-DITR checkpoint to start from")
    p.add_argument("--init-dataset", type=int, default=0, metavar="I",
                   help="which dataset's BatchNorm of a multi-dataset D-DITR checkpoint")
    p.add_argument("--inject", action="store_true", help="DITR: inject ViT features")
    _backbone_args(p, required=False)
    _train_args(p)
    p.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue the run at -o")
    p.add_argument("--val", nargs="+", metavar="DATA", help="score these sources at the end")
    _run_args(p)
    p.set_defaults(func=_train_seg)

    p = subparsers.add_parser("eval-seg", help="mIoU / accuracy / confusion of a checkpoint",
                              description="Evaluate a segmentation checkpoint on labelled "
                              "data (DITR Table 8's visible/invisible split when cameras "
                              "exist).")
    _data_args(p)
    p.add_argument("--checkpoint", required=True, metavar="CKPT")
    p.add_argument("--out", metavar="DIR", help="confusion matrix + metrics folder "
                   "(default CKPT.eval)")
    p.add_argument("--cache", metavar="DIR", help="cache ViT patch maps on disk")
    _run_args(p)
    p.set_defaults(func=_eval_seg)

"""``fit3d-ros lift`` / ``finetune`` / ``eval-correspondence`` / ``eval-depth-probe`` /
``eval-seg-probe``: FiT3D on recorded logs.

Design note: thin wrappers over `fit3d_ros.training` (imported inside the handlers so
``--help`` stays instant). SCENE is a bag (.mcap/.db3/rosbag2 folder) or a 7-Scenes /
Redwood folder; ``--frames`` and ``--holdout-every`` select the same train / held-out
views in every command. The backbone's weights are always explicit (``--weights FILE``,
``--pretrained`` or ``--random-init``, a seeded random ViT that is the same network in
every command). ``--json`` prints exactly one JSON object on stdout; progress bars go
to stderr; ``--out FILE`` also writes an evaluation's result as JSON.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fit3d_ros.cli._common import backbone_args, backbone_spec, emit, fmt, setup_threads
from fit3d_ros.cli.main import CommandError


def _scene(p: argparse.ArgumentParser, holdout: int) -> None:
    p.add_argument("scene", metavar="SCENE", help="bag or 7-Scenes / Redwood folder")
    p.add_argument("--format", choices=["bag", "7scenes", "redwood"],
                   help="input format (default: detected)")
    p.add_argument("--frames", metavar="START:STOP:STEP", help="frames to use (default all)")
    p.add_argument("--holdout-every", type=int, default=holdout, metavar="K",
                   help=f"every K-th selected frame is held out (default {holdout})")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", choices=["tiny", "default"], default="default",
                   help="tiny: CPU in minutes; default: the papers' recipe (GPU)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--backend", default="auto", choices=["auto", "cpu", "torch", "cuda"],
                   help="rasterizer backend")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _emit(args: argparse.Namespace, result: dict[str, Any], lines: list[str]) -> int:
    return emit(args, result, lines, out=getattr(args, "out", None))  # evaluations: --out FILE


def _load(args: argparse.Namespace):
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.scenes import load_scene

    return load_scene(args.scene, args.format, args.frames, args.holdout_every)


def _lift(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.config import LiftConfig
    from fit3d_ros.training.fit3d.lift import lift_scene

    setup_threads(args)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise CommandError(f"{out} exists (pass --force to replace it)")
    cfg = LiftConfig.preset_named(args.config).with_overrides(
        iterations=args.iterations, feature_dim=args.feature_dim, image_width=args.width,
        save_every=args.save_every, seed=args.seed)
    spec = backbone_spec(args, cfg.token_budget)
    r = lift_scene(_load(args), spec, cfg, out, resume=args.resume,
                   progress=not args.no_progress, backend=args.backend, device=args.device)
    keys = ("psnr_heldout", "feature_l1_heldout", "num_gaussians", "iterations", "seconds")
    short = {**{k: r.get(k) for k in keys}, "backbone": r["backbone"], "output": str(out),
             "psnr_train": r.get("psnr_train"), "heldout_views": r.get("heldout_views")}
    return _emit(args, short, [
        f"wrote {out}: {r['num_gaussians']} Gaussians, {r['iterations']} iterations, "
        f"{r['seconds']:.0f} s (teacher {spec.teacher})",
        f"held-out PSNR {fmt(r.get('psnr_heldout'), '.2f')} dB, "
        f"feature L1 {fmt(r.get('feature_l1_heldout'))}"])


def _finetune(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.config import FinetuneConfig
    from fit3d_ros.training.fit3d.finetune import finetune

    setup_threads(args)
    if Path(args.output).exists() and not args.force:
        raise CommandError(f"{args.output} exists (pass --force to replace it)")
    cfg = FinetuneConfig.preset_named(args.config).with_overrides(
        epochs=args.epochs, lora_rank=args.lora_rank, lr=args.lr, batch_size=args.batch_size,
        seed=args.seed, save_every=args.save_every)
    r = finetune(args.scene_files, backbone_spec(args, cfg.token_budget), cfg, args.output,
                 progress=not args.no_progress, backend=args.backend, device=args.device,
                 resume=args.resume)
    return _emit(args, r, [f"wrote {r['output']} ({r['steps']} steps over {r['views']} views, "
                           f"L1 {r['loss_first']:.4f} -> {r['loss_last']:.4f}, "
                           f"{r['seconds']:.0f} s)"])


def _eval_cfg(args: argparse.Namespace):
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.config import EvalConfig

    return EvalConfig.preset_named(args.config).with_overrides(
        pairs=getattr(args, "pairs", None), probe_steps=getattr(args, "steps", None))


def _eval_corr(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.evaluate import run_correspondence

    setup_threads(args)
    cfg = _eval_cfg(args)
    r = run_correspondence(_load(args), backbone_spec(args, cfg.token_budget), args.finetuned, cfg,
                           device=args.device)
    key = f"recall@{cfg.threshold_px:g}px"
    lines = [f"{key} over {r['pairs']} held-out pairs ({r['backbone']['provenance']}):"]
    lines += [f"  {n:<10} {fmt(v)}  ({r['matches'][n]} matches)" for n, v in r[key].items()]
    lines += [f"  {b}: " + ", ".join(f"{n} {fmt(v[n])}" for n in r[key]) + f" ({v['pairs']} pairs)"
              for b, v in r["bins"].items()]
    return _emit(args, r, lines)


def _eval_depth(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.evaluate import run_depth_probe

    setup_threads(args)
    cfg = _eval_cfg(args)
    r = run_depth_probe(_load(args), backbone_spec(args, cfg.token_budget), args.finetuned, cfg,
                           device=args.device)
    return _emit(args, r, [f"depth probe ({r['backbone']['provenance']}):"] +
                 [f"  {n:<10} RMSE {fmt(v['rmse'])} m  AbsRel {fmt(v['absrel'])}"
                  for n, v in r["depth"].items()])


def _eval_seg(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.evaluate import run_seg_probe

    setup_threads(args)
    cfg = _eval_cfg(args)
    r = run_seg_probe(args.folder, backbone_spec(args, cfg.token_budget), args.finetuned, cfg,
                      args.holdout_every, device=args.device)
    return _emit(args, r, [f"segmentation probe ({r['backbone']['provenance']}):"] +
                 [f"  {n:<10} mIoU {fmt(v['miou'])}  mAcc {fmt(v['macc'])}  aAcc {fmt(v['aacc'])}"
                  for n, v in r["segmentation"].items()])


def _eval_args(p: argparse.ArgumentParser) -> None:
    backbone_args(p, required=True)
    p.add_argument("--finetuned", metavar="FILE", help="fine-tuned weights (finetune output)")
    p.add_argument("--out", metavar="FILE", help="also write the result as JSON")
    _common(p)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the FiT3D sub-commands."""
    p = subparsers.add_parser("lift", help="FiT3D stage I: lift ViT features into Gaussians",
                              description="Fit feature Gaussians to an RGB-D log (init from "
                              "depth, 3DGS colour loss, L1 feature loss with gradient "
                              "separation) and write a scene file.")
    _scene(p, 8)
    backbone_args(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="SCENE_FILE")
    p.add_argument("--iterations", type=int, help="override the config's iterations")
    p.add_argument("--feature-dim", type=int, metavar="D", help="feature channels (64)")
    p.add_argument("--width", type=int, help="render width in pixels")
    p.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N iterations")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--resume", action="store_true", help="continue from SCENE_FILE.ckpt")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    _common(p)
    p.set_defaults(func=_lift)

    p = subparsers.add_parser("finetune", help="FiT3D stage II: fine-tune the ViT (Alg. 1)",
                              description="Fine-tune the ViT on features rendered from lifted "
                              "scenes; writes safetensors loadable by timm.")
    p.add_argument("scene_files", nargs="+", metavar="SCENE_FILE")
    backbone_args(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="FINETUNED.safetensors")
    p.add_argument("--epochs", type=float, help="passes over all training views (1)")
    p.add_argument("--lora-rank", type=int, metavar="R", help="LoRA instead of full tuning")
    p.add_argument("--lr", type=float, help="AdamW learning rate (1e-5)")
    p.add_argument("--batch-size", type=int, help="views per step (2)")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    _common(p)
    p.set_defaults(func=_finetune)

    p = subparsers.add_parser("eval-correspondence", help="multi-view correspondence recall",
                              description="Probe3D / SnD correspondence recall on held-out "
                              "RGB-D pairs: original vs fine-tuned vs concatenated features.")
    _scene(p, 8)
    p.add_argument("--pairs", type=int, metavar="N", help="at most N pairs")
    _eval_args(p)
    p.set_defaults(func=_eval_corr)

    p = subparsers.add_parser("eval-depth-probe", help="linear depth probe (256 bins)",
                              description="Train a linear depth probe on the training views, "
                              "score RMSE / AbsRel on the held-out views.")
    _scene(p, 8)
    p.add_argument("--steps", type=int, help="probe training steps")
    _eval_args(p)
    p.set_defaults(func=_eval_depth)

    p = subparsers.add_parser("eval-seg-probe", help="linear segmentation probe",
                              description="Train a linear segmentation probe on a folder "
                              "(images/, labels/, classes.txt, train.txt/val.txt).")
    p.add_argument("folder", metavar="FOLDER")
    p.add_argument("--holdout-every", type=int, default=5, metavar="K",
                   help="without train.txt/val.txt every K-th image is validation (5)")
    p.add_argument("--steps", type=int, help="probe training steps")
    _eval_args(p)
    p.set_defaults(func=_eval_seg)

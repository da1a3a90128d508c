"""``fit3d-ros snd``: Splat-and-Distill fine-tuning on RGB-D logs.

Design note: a thin wrapper over `fit3d_ros.training.snd.train.snd_train` (imported in
the handler so ``--help`` stays instant). SCENE... are bags or 7-Scenes / Redwood
folders read as by ``lift`` (the same ``--frames`` / ``--holdout-every`` rules, applied
to every scene); the options override the ``tiny`` / ``default`` preset. The output is a
timm state dict accepted wherever ``--finetuned`` / ``finetuned_weights`` is.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from fit3d_ros.cli._common import backbone_args, backbone_spec, emit, fmt, setup_threads
from fit3d_ros.cli.fit3d import _common
from fit3d_ros.cli.main import CommandError


def _snd(args: argparse.Namespace) -> int:
    # costly (torch, rosbags): imported per command so that --help stays instant
    from fit3d_ros.training.fit3d.scenes import load_scene
    from fit3d_ros.training.snd.config import SnDConfig
    from fit3d_ros.training.snd.train import snd_train

    setup_threads(args)
    out = Path(args.output)
    if out.exists() and not args.force:
        raise CommandError(f"{out} exists (pass --force to replace it)")
    if args.masks and args.mask_topic:
        raise CommandError("give --masks or --mask-topic, not both")
    cfg = SnDConfig.preset_named(args.config).with_overrides(
        steps=args.steps, lr=args.lr, lora_rank=args.lora_rank, render_width=args.width,
        upscale=args.upscale, loss=args.loss, prototypes=args.prototypes,
        blend=args.blend, save_every=args.save_every, seed=args.seed,
        scale_mode=args.gaussian_scale, opacity_mode=args.gaussian_opacity,
        frozen_teacher=True if args.frozen_teacher else None)
    scenes = [load_scene(s, args.format, args.frames, args.holdout_every) for s in args.scene]
    r = snd_train(scenes, backbone_spec(args, cfg.token_budget), cfg, out, masks=args.masks,
                  mask_topic=args.mask_topic, progress=not args.no_progress,
                  backend=args.backend, device=args.device, resume=args.resume,
                  evaluate=not args.no_eval)
    rec = r["recall@10px"] or {}
    lines = [(f"wrote {out}: {r['steps']} steps, loss {r['loss_first']:.4f} -> "
              f"{r['loss_last']:.4f}, {r['seconds']:.0f} s "
              f"(teacher {r['teacher']['provenance']})"),
             (f"recall@10px on held-out pairs ({r['recall_pairs']}): teacher "
              f"{fmt(rec.get('teacher'))}, rendered {fmt(rec.get('rendered'))}")]
    return emit(args, r, lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``snd`` sub-command."""
    p = subparsers.add_parser(
        "snd", help="Splat-and-Distill: EMA-teacher distillation through depth Gaussians",
        description="Fine-tune a ViT by Splat-and-Distill on RGB-D logs: pixel-aligned "
        "Gaussians from two context views' depth carry the EMA teacher's mask-aware "
        "upscaled features to a target view; the LoRA student learns the semantically "
        "blended rendering through a DINO head. Writes safetensors loadable by timm.")
    p.add_argument("scene", nargs="+", metavar="SCENE",
                   help="bags or 7-Scenes / Redwood folders")
    p.add_argument("--format", choices=["bag", "7scenes", "redwood"],
                   help="input format (default: detected)")
    p.add_argument("--frames", metavar="START:STOP:STEP", help="frames to use (default all)")
    p.add_argument("--holdout-every", type=int, default=8, metavar="K",
                   help="every K-th selected frame is held out (default 8)")
    backbone_args(p, required=True)
    p.add_argument("-o", "--output", required=True, metavar="STUDENT.safetensors")
    p.add_argument("--steps", type=int, help="training steps (default 50000, tiny 300)")
    p.add_argument("--lr", type=float, help="Adam learning rate (2e-5; cosine schedule)")
    p.add_argument("--lora-rank", type=int, metavar="R", help="LoRA rank (8)")
    p.add_argument("--width", type=int, help="render width of the Gaussians (320, tiny 80)")
    p.add_argument("--frozen-teacher", action="store_true",
                   help="ablation: never update the teacher (no EMA)")
    p.add_argument("--upscale", choices=["mask", "bilinear"],
                   help="teacher upscaling: mask-aware (default) or plain bilinear")
    p.add_argument("--loss", choices=["dino", "cosine"], help="DINO head (default) or cosine")
    p.add_argument("--prototypes", type=int, metavar="K", help="DINO head prototypes")
    p.add_argument("--blend", type=float, metavar="A",
                   help="semantic blending weight a (0.5; 1 = no blending)")
    p.add_argument("--gaussian-scale", choices=["isotropic", "gradient"],
                   help="Σ from the pixel footprint (default) or shaped by the depth gradient")
    p.add_argument("--gaussian-opacity", choices=["fixed", "confidence"],
                   help="α fixed (default) or lowered at depth discontinuities")
    p.add_argument("--masks", metavar="DIR", help="segment masks DIR/NNNNNN.png (frame index)")
    p.add_argument("--mask-topic", metavar="TOPIC", help="segment masks from a bag topic")
    p.add_argument("--no-eval", action="store_true", help="skip the held-out recall")
    p.add_argument("--save-every", type=int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--seed", type=int, help="training seed")
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT.ckpt")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    _common(p)
    p.set_defaults(func=_snd)

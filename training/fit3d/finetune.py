"""Stage II of FiT3D (Algorithm 1): fine-tune the ViT on features rendered from the scenes.

Design note: all feature scenes are pre-loaded (CPU memory, as in the paper). An epoch
is one pass over every training view of every scene in a seeded random order; each step
takes `batch_size` views, renders ``F_high = d(r_feat(G, P_i))`` (frozen Gaussians and
decoder), applies the same random horizontal flip to image and target, resizes F_high
to the student's token grid (bilinear, antialiased) and minimises the L1 to the student's
patch features; AdamW (lr 1e-5, weight decay 1e-4), gradient clipping 0.1. With
``lora_rank`` only low-rank adapters on every block's ``qkv`` and ``proj`` train; they
are merged before saving, so the output is always a plain timm state dict (safetensors)
that loads into `fit3d_ros.models.build_backbone(weights=...)` and into timm directly.
A checkpoint (``OUTPUT.ckpt``: ViT or adapter weights, AdamW state, step, losses) is
written every `save_every` steps; ``resume`` continues from it and, since the view order
and flips are functions of (seed, step), reproduces the uninterrupted run.
LoRA is written here (`LoRALinear`, ~20 lines) because peft would add transformers and
accelerate as dependencies for it.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import atomic_save
from fit3d_ros.training.fit3d.config import FinetuneConfig
from fit3d_ros.training.fit3d.scene_file import FeatureScene, load_scene_file
from fit3d_ros.training.fit3d.vit_features import build_spec_backbone, spec_dict
from fit3d_ros.training.loop import run_steps, step_rng
from fit3d_ros.training.resume import load_run_checkpoint, resume_checkpoint


class LoRALinear(nn.Module):
    """y = W x + b + (α/r)·B A x with W, b frozen; B starts at zero (Hu et al., 2021)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.scale = (alpha if alpha is not None else rank) / rank
        self.A = nn.Parameter(torch.randn(rank, base.in_features, generator=generator)
                              / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + F.linear(F.linear(x, self.A), self.B) * self.scale

    def merged(self) -> nn.Linear:
        """The plain Linear with the adapter folded into its weight."""
        with torch.no_grad():
            self.base.weight += self.scale * (self.B @ self.A)
        for p in self.base.parameters():
            p.requires_grad_(True)
        return self.base


def add_lora(vit: nn.Module, rank: int, alpha: float | None, seed: int) -> list[nn.Parameter]:
    """Freeze `vit` and wrap every block's attn.qkv / attn.proj with LoRA; the new params."""
    for p in vit.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    params: list[nn.Parameter] = []
    for block in vit.blocks:
        for name in ("qkv", "proj"):
            lora = LoRALinear(getattr(block.attn, name), rank, alpha, g)
            setattr(block.attn, name, lora)
            params += [lora.A, lora.B]
    return params


def merge_lora(vit: nn.Module) -> None:
    """Fold every LoRALinear of `vit` back into a plain Linear (in place)."""
    for block in vit.blocks:
        for name in ("qkv", "proj"):
            layer = getattr(block.attn, name)
            if isinstance(layer, LoRALinear):
                setattr(block.attn, name, layer.merged())


def epoch_order(counts: Sequence[int], epochs: float, seed: int) -> list[tuple[int, int]]:
    """(scene, view) pairs: each epoch a seeded permutation of every training view."""
    pairs = [(s, v) for s, n in enumerate(counts) for v in range(n)]
    total = int(math.ceil(len(pairs) * epochs))
    order: list[tuple[int, int]] = []
    e = 0
    while len(order) < total:
        perm = np.random.default_rng([seed, e]).permutation(len(pairs))
        order += [pairs[i] for i in perm]
        e += 1
    return order[:total]


def _targets(scene: FeatureScene, view: int, grid: tuple[int, int], flips: bool,
             backend: str) -> dict[bool, torch.Tensor]:
    """F_high resized to the token grid (C,h,w), keyed by whether the image is flipped;
    the flipped one (only when `flips`) is flipped before resizing, like the image, so
    it is bit-identical to resizing the flipped render. One render serves both."""
    f = scene.render_f_high(view, backend)
    return {flip: F.interpolate((f.flip(-1) if flip else f)[None], size=grid,
                                mode="bilinear", align_corners=False, antialias=True)[0]
            for flip in ((False, True) if flips else (False,))}


CKPT_FORMAT = "fit3d_ros.finetune/1"
LOG_EVERY = 20  # steps between loss reads (each a device sync)


def _run_id(scene_paths: Sequence[str | Path], spec: BackboneSpec, cfg: FinetuneConfig
            ) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (save_every may change)."""
    conf = {k: v for k, v in cfg.to_dict().items() if k != "save_every"}
    return {"config": conf, "backbone": spec_dict(spec),
            "scenes": [str(Path(p).resolve()) for p in scene_paths]}


def finetune(scene_paths: Sequence[str | Path], spec: BackboneSpec, cfg: FinetuneConfig,
             output: str | Path, *, progress: bool = True, backend: str = "auto",
             device: str = "cpu", resume: bool = False, stop_at: int | None = None
             ) -> dict[str, Any]:
    """Run Algorithm 1 over the scene files and write the fine-tuned ViT to `output`.

    `resume` continues from ``OUTPUT.ckpt``; `stop_at` ends after that many steps leaving
    only the checkpoint (an interruption, for tests and time-sliced jobs)."""
    t0 = time.perf_counter()
    ckpt, run_id = resume_checkpoint(output, resume), _run_id(scene_paths, spec, cfg)
    scenes = [load_scene_file(p).to(device) for p in scene_paths]
    student = build_spec_backbone(spec, device)
    width = int(scenes[0].decoder.weight.shape[0])
    for p, s in zip(scene_paths, scenes):
        if int(s.decoder.weight.shape[0]) != student.embed_dim:
            raise ValueError(f"{p}: decoder width {s.decoder.weight.shape[0]} != "
                             f"{spec.name}'s embedding width {student.embed_dim}: lifted "
                             f"with another backbone ({s.backbone.get('name')})")
        if not s.train_ids:
            raise ValueError(f"{p}: no training views")
    vit = student.model
    if cfg.lora_rank:
        params = add_lora(vit, cfg.lora_rank, cfg.lora_alpha, cfg.seed)
    else:
        params = [p for p in vit.parameters() if p.requires_grad]
    vit.to(device).train()
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    order = epoch_order([len(s.train_ids) for s in scenes], cfg.epochs, cfg.seed)
    steps = int(math.ceil(len(order) / cfg.batch_size))
    start, history = 0, []
    if resume:
        d = load_run_checkpoint(ckpt, CKPT_FORMAT, "finetune", run_id)
        vit.load_state_dict(d["vit"])
        opt.load_state_dict(d["optimizer"])
        start, history = int(d["step"]), [float(x) for x in d["losses"]]
    end = steps if stop_at is None else min(stop_at, steps)
    # the frozen scene's targets, rendered once per (scene, view, grid) when views recur
    # (more than one epoch); with one epoch each view comes up once and caching only costs
    # memory
    cache: dict[tuple[int, int, tuple[int, int]], dict[bool, torch.Tensor]] | None = \
        {} if cfg.epochs > 1 else None

    def target(s: int, view: int, grid: tuple[int, int], flip: bool) -> torch.Tensor:
        if cache is None:
            return _targets(scenes[s], view, grid, flip, backend)[flip]
        key = (s, view, grid)
        if key not in cache:
            cache[key] = _targets(scenes[s], view, grid, cfg.flip, backend)
        return cache[key][flip]

    def step_fn(step: int) -> torch.Tensor:
        rng = step_rng(cfg.seed, step)
        imgs, targets = [], []
        for s, v in order[step * cfg.batch_size:(step + 1) * cfg.batch_size]:
            scene = scenes[s]
            view = scene.train_ids[v]
            flip = bool(cfg.flip and rng.random() < 0.5)
            img = scene.images[view]
            x = student.preprocess(img.flip(1) if flip else img, cfg.token_budget)
            grid = (x.shape[2] // student.patch_size, x.shape[3] // student.patch_size)
            imgs.append(x)
            targets.append(target(s, view, grid, flip))
        same = all(t.shape == targets[0].shape for t in targets)
        if not same:
            raise ValueError("scenes of one batch have different sizes; use batch_size 1")
        pred = student(torch.cat(imgs).to(device)).patch
        loss = (pred - torch.stack(targets).to(device)).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        return loss.detach()  # a device scalar: read with the others (run_steps, save)

    def save(done: int) -> None:
        if done < steps:  # the finished run writes the output instead
            atomic_save({"format": CKPT_FORMAT, **run_id, "step": done,
                         "vit": vit.state_dict(), "optimizer": opt.state_dict(),
                         "losses": history + _floats(losses)}, ckpt)

    losses: list[torch.Tensor] = []  # filled as steps run, so `save` sees them

    def recorded_step(step: int) -> torch.Tensor:
        losses.append(step_fn(step))
        return losses[-1]

    run_steps(start, end, recorded_step, save, cfg.save_every, progress, "finetune",
              log_every=LOG_EVERY)
    losses = history + _floats(losses)
    if end < steps:
        return {"stopped": True, "step": end, "steps": steps, "checkpoint": str(ckpt),
                "seconds": time.perf_counter() - t0}
    if cfg.lora_rank:
        merge_lora(vit)
    meta = {"backbone": spec_dict(spec), "scenes": [str(p) for p in scene_paths],
            "config": cfg.to_dict(), "steps": steps, "embed_dim": width,
            "teacher": [s.backbone for s in scenes]}
    save_finetuned(vit, output, meta)
    ckpt.unlink(missing_ok=True)
    k = max(1, min(10, len(losses) // 4))
    return {"output": str(output), "steps": steps, "views": len(order),
            "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
            "seconds": time.perf_counter() - t0, "backbone": spec_dict(spec),
            "scenes": [str(p) for p in scene_paths]}


def _floats(losses: list[torch.Tensor]) -> list[float]:
    """Device loss scalars as floats (one transfer)."""
    return torch.stack(losses).tolist() if losses else []


def save_finetuned(vit: nn.Module, output: str | Path, meta: dict[str, Any]) -> Path:
    """The ViT's timm state dict as safetensors, with `meta` as JSON metadata."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in vit.state_dict().items()}
    tmp = output.with_name(f".{output.name}.tmp")
    save_file(state, str(tmp), metadata={"fit3d_ros": json.dumps(meta)})
    tmp.replace(output)
    return output

"""The SnD training loop: LoRA student, EMA teacher, DINO-head distillation, resumable.

Design note: student and teacher start as the same network (`fit3d.vit_features`). The
student gets rank-r LoRA on every block's qkv / proj (`fit3d.finetune.add_lora`); the
trainable parameters are its adapters and the shared DINO head, optimised by Adam with
a cosine schedule computed from the step (so resuming needs no scheduler state). Each
step draws (scene, contexts, target) from `training.loop.step_rng(seed, step)`, renders
the teacher's targets (`targets`), runs the student on the target image and minimises
the DINO cross-entropy (or 1 − cos) over valid tokens. Every `ema_every` steps the
teacher's qkv / proj weights move towards the student's merged ones
(θ_t ← m θ_t + (1 − m) (W + s·B A)); the student changes no other weight, so this is
the EMA of the whole student. ``OUTPUT.ckpt`` (student, teacher, head, Adam, centre,
losses, step) is written every `save_every` steps and ``resume`` reproduces the
uninterrupted run. The output is the student with LoRA merged, as a plain timm state
dict (`fit3d.finetune.save_finetuned`), loadable wherever ``--finetuned`` is.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import atomic_save
from fit3d_ros.training.fit3d.config import EvalConfig
from fit3d_ros.training.fit3d.finetune import (
    LoRALinear,
    add_lora,
    merge_lora,
    save_finetuned,
)
from fit3d_ros.training.fit3d.scenes import Scene
from fit3d_ros.training.fit3d.vit_features import build_spec_backbone, spec_dict
from fit3d_ros.training.loop import run_steps, step_rng
from fit3d_ros.training.resume import load_run_checkpoint, resume_checkpoint
from fit3d_ros.training.snd.config import SnDConfig
from fit3d_ros.training.snd.data import prepare_scene, scene_id
from fit3d_ros.training.snd.evaluate import rendered_recall
from fit3d_ros.training.snd.head import DINOHead, cosine_loss, dino_loss, update_center
from fit3d_ros.training.snd.sampling import draw
from fit3d_ros.training.snd.targets import render_from, token_targets

CKPT_FORMAT = "fit3d_ros.snd/1"


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """θ_t ← m θ_t + (1 − m) θ_s for every block's attn.qkv / attn.proj weight, a LoRA
    layer counting as its merged weight W + s·B A (the student's only trained weights)."""
    for bt, bs in zip(teacher.blocks, student.blocks):
        for name in ("qkv", "proj"):
            ls, lt = getattr(bs.attn, name), getattr(bt.attn, name)
            w = (ls.base.weight + ls.scale * (ls.B @ ls.A) if isinstance(ls, LoRALinear)
                 else ls.weight)
            lt.weight.mul_(momentum).add_(w, alpha=1 - momentum)


def cosine_lr(step: int, steps: int, lr: float) -> float:
    """lr · ½ (1 + cos(π step / steps))."""
    return lr * 0.5 * (1 + math.cos(math.pi * step / steps))


def _run_id(scenes: Sequence[Scene], spec: BackboneSpec, cfg: SnDConfig,
            masks: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (save_every may change)."""
    conf = {k: v for k, v in cfg.to_dict().items() if k != "save_every"}
    return {"config": conf, "backbone": spec_dict(spec), "masks": masks,
            "scenes": [scene_id(s) for s in scenes]}


def snd_train(scenes: Sequence[Scene], spec: BackboneSpec, cfg: SnDConfig, output: str | Path,
              *, masks: str | Path | None = None, mask_topic: str | None = None,
              progress: bool = True, backend: str = "auto", device: str = "cpu",
              resume: bool = False, stop_at: int | None = None, evaluate: bool = True
              ) -> dict[str, Any]:
    """Train a student by Splat-and-Distill on `scenes` and write it to `output`.

    `resume` continues from ``OUTPUT.ckpt``; `stop_at` ends after that many steps leaving
    only the checkpoint (an interruption, for tests and time-sliced jobs); `evaluate`
    computes the teacher / rendered correspondence recall on held-out views at the end."""
    t0 = time.perf_counter()
    mask_src = {"folder": None if masks is None else str(masks), "topic": mask_topic}
    ckpt, run_id = resume_checkpoint(output, resume), _run_id(scenes, spec, cfg, mask_src)
    prepared = [prepare_scene(s, cfg, device, masks, mask_topic) for s in scenes]
    student, teacher = build_spec_backbone(spec, device), build_spec_backbone(spec, device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    vit = student.model
    head: DINOHead | None = None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        params = add_lora(vit, cfg.lora_rank, cfg.lora_alpha, cfg.seed)
        if cfg.loss == "dino":
            head = DINOHead(student.embed_dim, cfg.head_hidden, cfg.head_bottleneck,
                            cfg.prototypes)
            params += list(head.parameters())
    vit.to(device).train()
    if head is not None:
        head.to(device)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    center = torch.zeros(cfg.prototypes, device=device)
    start, history = 0, []
    if resume:
        d = load_run_checkpoint(ckpt, CKPT_FORMAT, "snd", run_id)
        vit.load_state_dict(d["vit"])
        teacher.model.load_state_dict(d["teacher"])
        if head is not None:
            head.load_state_dict(d["head"])
        opt.load_state_dict(d["optimizer"])
        center.copy_(d["center"])
        start, history = int(d["step"]), [float(x) for x in d["losses"]]
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    losses: list[float] = []  # filled as steps run, so `save` sees them

    def step_fn(step: int) -> float:
        s, (a, t, b) = draw(step_rng(cfg.seed, step), [p.triples for p in prepared])
        ps = prepared[s]
        f, alpha = render_from(ps, teacher, (a, b), t, cfg, backend)
        x = student.preprocess(ps.images[t], cfg.token_budget)
        grid = (x.shape[2] // student.patch_size, x.shape[3] // student.patch_size)
        target, mask = token_targets(f, alpha, ps.labels[t], grid, cfg)
        pred = student(x).patch[0]
        c = pred.shape[0]
        ps_tok, tg_tok = pred.reshape(c, -1).T, target.reshape(c, -1).T
        weight = mask.reshape(-1)
        if head is not None:
            loss, t_mean = dino_loss(head, ps_tok, tg_tok, center, cfg.teacher_temp,
                                     cfg.student_temp, weight)
        else:
            loss = cosine_loss(ps_tok, tg_tok, weight)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg.steps, cfg.lr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if head is not None:
            update_center(center, t_mean, cfg.center_momentum)
        if not cfg.frozen_teacher and (step + 1) % cfg.ema_every == 0:
            ema_update(teacher.model, vit, cfg.ema_momentum)
        losses.append(float(loss.detach()))
        return losses[-1]

    def save(done: int) -> None:
        if done < cfg.steps:  # the finished run writes the output instead
            atomic_save({"format": CKPT_FORMAT, **run_id, "step": done,
                         "vit": vit.state_dict(), "teacher": teacher.model.state_dict(),
                         "head": None if head is None else head.state_dict(),
                         "optimizer": opt.state_dict(), "center": center.cpu(),
                         "losses": history + losses}, ckpt)

    run_steps(start, end, step_fn, save, cfg.save_every, progress, "snd")
    all_losses = history + losses
    teacher_info = {"provenance": spec.teacher, "ema_momentum": cfg.ema_momentum,
                    "ema_every": cfg.ema_every, "frozen": cfg.frozen_teacher,
                    "updates": 0 if cfg.frozen_teacher else end // cfg.ema_every}
    if end < cfg.steps:
        return {"stopped": True, "step": end, "steps": cfg.steps, "checkpoint": str(ckpt),
                "seconds": time.perf_counter() - t0}
    recall = (rendered_recall(prepared, teacher, cfg, EvalConfig.preset_named(cfg.preset),
                              backend) if evaluate else None)
    merge_lora(vit)
    meta = {"method": "snd", "backbone": spec_dict(spec), "config": cfg.to_dict(),
            "scenes": [scene_id(s) for s in scenes], "steps": cfg.steps,
            "embed_dim": student.embed_dim, "teacher": teacher_info}
    save_finetuned(vit, output, meta)
    ckpt.unlink(missing_ok=True)
    k = max(1, min(10, len(all_losses) // 4))
    return {"output": str(output), "steps": cfg.steps,
            "seconds": time.perf_counter() - t0,
            "loss_first": float(np.mean(all_losses[:k])),
            "loss_last": float(np.mean(all_losses[-k:])),
            "recall@10px": None if recall is None else recall["recall@10px"],
            "recall_pairs": None if recall is None else recall["pairs"],
            "teacher": teacher_info, "backbone": spec_dict(spec), "config": cfg.to_dict(),
            "triples": [len(p.triples) for p in prepared],
            "scenes": [s.source for s in scenes]}

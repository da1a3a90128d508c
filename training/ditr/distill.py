"""D-DITR: distil a frozen 2D ViT into the sparse 3D U-Net through the DITR mapping.

Design note: following Knaebel et al., every point visible in at least one camera gets
the feature x_i^2D of the patch it projects into (`point_features`); the U-Net sees only
the point cloud and its distillation head regresses that feature, trained with
``L = (1/|V|) Σ_{i∈V} (1 − cos(x_i^pred, x_i^2D))`` over the visible points V
(`fit3d_ros.models.cosine_distillation_loss`). Several data sources are several
datasets: each keeps its own BatchNorm layers (D-DITR's multi-dataset pretraining) and
the steps visit them round-robin, one dataset per batch. A held-out share of each
dataset (its last samples) measures the mean cosine similarity on visible points after
training. The checkpoint (kind ``distillation``) records the teacher's identity; with a
random-init teacher every number is about a random network and says so.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fit3d_ros.models import SpUNet, cosine_distillation_loss
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import Checkpoint, Preprocessing, save_checkpoint
from fit3d_ros.models.preprocess import centered, feature_width, input_features
from fit3d_ros.training.ditr.config import DistillConfig
from fit3d_ros.training.ditr.data import SegDataset, split_holdout
from fit3d_ros.training.ditr.loop import (
    LOG_EVERY,
    autocast,
    build_optimizer,
    device_batches,
    grad_scaler,
    optimizer_step,
    random_batch,
)
from fit3d_ros.training.ditr.point_features import PointFeatureSource
from fit3d_ros.training.loop import run_steps, step_rng


@torch.no_grad()
def heldout_cosine(model: torch.nn.Module, parts: Sequence[Sequence[Any]],
                   source: PointFeatureSource, feature_names: Sequence[str],
                   device: torch.device) -> tuple[float | None, int]:
    """Mean cos(x_pred, x_2D) over visible points of held-out samples, and their count.

    `parts[d]` are the held-out samples of dataset d (run with that dataset's BatchNorm).
    """
    model.eval()
    total, count = 0.0, 0
    for d, samples in enumerate(parts):
        for sample in samples:
            target, vis = source.features(sample, seed=0)
            if not vis.any():
                continue
            xyz = centered(sample.xyz)
            out = model(torch.from_numpy(xyz).to(device),
                        torch.from_numpy(input_features(sample, feature_names)).to(device),
                        dataset=d)
            cos = F.cosine_similarity(out.distill[vis.to(device)], target[vis].to(device), dim=1)
            total += float(cos.sum())
            count += int(vis.sum())
    model.train()
    return (total / count if count else None), count


def run_distillation(datasets: Sequence[SegDataset], spec: BackboneSpec,
                     config: DistillConfig, output: str | Path,
                     cache_dir: str | Path | None = None, device: str = "cpu",
                     progress: bool = True) -> dict[str, Any]:
    """Train a D-DITR checkpoint at `output`; returns a summary (held-out cosine etc.)."""
    if not datasets:
        raise ValueError("distillation needs at least one data source")
    for ds in datasets:
        if not ds.has_cameras:
            raise ValueError(f"{ds.name}: no camera images; D-DITR needs clouds with cameras")
    dev = torch.device(device)
    source = PointFeatureSource(spec, cache_dir, dev)
    splits = [split_holdout(ds.samples, config.holdout) for ds in datasets]
    train = [s[0] for s in splits]
    held = [s[1] for s in splits]
    unet_cfg = config.unet(in_channels=feature_width(config.input_features), num_classes=None,
                           distill_dim=source.dim, num_datasets=len(datasets))
    torch.manual_seed(config.seed)
    model = SpUNet(unet_cfg).to(dev).train()
    opt, sched = build_optimizer(list(model.parameters()), config.optim, config.steps)
    prep = Preprocessing(config.voxel_size, config.input_features, spec)
    names = [ds.name for ds in datasets]

    scaler = grad_scaler(config.amp, dev)

    def make(step: int):  # host work of one step (built one step ahead)
        return random_batch(train[step % len(datasets)], config, step_rng(config.seed, step),
                            source)

    def step_fn(step: int) -> float:
        batch = get_batch(step)
        with autocast(config.amp, dev):
            out = model(batch.points, batch.features, batch=batch.batch,
                        dataset=step % len(datasets))
            loss = cosine_distillation_loss(out.distill.float(), batch.feat_2d, batch.visible)
        return optimizer_step(model, loss, opt, sched, config.optim.grad_clip, scaler)

    def save(step: int, metrics: dict[str, Any] | None = None) -> None:
        save_checkpoint(output, Checkpoint(
            "distillation", unet_cfg, model.state_dict(), prep, None,
            training={"step": step, "steps": config.steps, "config": config.to_dict(),
                      "datasets": names, "teacher": spec.teacher},
            metrics=metrics or {}))

    with device_batches(make, config, dev) as get_batch:
        losses = run_steps(0, config.steps, step_fn, save, config.save_every, progress,
                           "distill", log_every=LOG_EVERY)
    cos, n_points = heldout_cosine(model, held, source, config.input_features, dev)
    tail = losses[-max(1, len(losses) // 10):]
    result = {"heldout_cosine": cos, "heldout_points": n_points,
              "heldout_samples": sum(len(h) for h in held),
              "train_samples": sum(len(t) for t in train),
              "final_train_loss": float(np.mean(tail)), "steps": config.steps,
              "datasets": names, "teacher": spec.teacher, "backbone": spec.name,
              "feature_dim": source.dim, "config": config.preset, "output": str(output)}
    save(config.steps, {k: v for k, v in result.items() if k != "output"})
    return result

"""Segmentation training: from scratch, from a D-DITR checkpoint, or DITR with injection.

Design note: three starting points share one loop — a randomly initialised U-Net; a
D-DITR checkpoint whose regression head is dropped and replaced by a fresh segmentation
head (`checkpoint.transfer_for_segmentation`; its voxel size and input features are
kept, and inference needs no images); or DITR, where per-point ViT features X^2D are
injected into every decoder level (then the 2D backbone is part of the model and its
spec is stored with it). The loss is cross-entropy with ``ignore_index`` −1. Checkpoints
are written every ``save_every`` steps with optimizer and scheduler state, so
``resume=True`` continues the run at ``output`` exactly (steps are pure functions of
(seed, step), see `training.loop`); the final checkpoint drops the optimizer state. An
optional validation set is scored at the end with `ditr.evaluate`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from fit3d_ros.models import SpUNet
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import (
    Checkpoint,
    CheckpointError,
    Preprocessing,
    build_model_from_checkpoint,
    config_from_dict,
    config_to_dict,
    load_checkpoint,
    save_checkpoint,
    transfer_for_segmentation,
)
from fit3d_ros.models.classes import IGNORE_INDEX, ClassMap
from fit3d_ros.models.preprocess import feature_width
from fit3d_ros.training.ditr.config import SegTrainConfig
from fit3d_ros.training.ditr.data import SegDataset
from fit3d_ros.training.ditr.evaluate import check_classes, evaluate
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


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over labelled points (0 with a graph when every point is ignored)."""
    if not (labels != IGNORE_INDEX).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def build_model(config: SegTrainConfig, classes: ClassMap, init: Checkpoint | None = None,
                init_dataset: int = 0, feat_2d_dim: int | None = None
                ) -> tuple[torch.nn.Module, Any, SegTrainConfig, list[str]]:
    """(model, SpUNetConfig, effective config, freshly initialised keys).

    With `init`, the U-Net topology, voxel size and input features come from it.
    """
    inject = dict(inject_2d=feat_2d_dim is not None, feat_2d_dim=feat_2d_dim or 384)
    torch.manual_seed(config.seed)
    if init is None:
        unet = config.unet(in_channels=feature_width(config.input_features),
                           num_classes=classes.num_classes, **inject)
        return SpUNet(unet), unet, config, []
    d = config_to_dict(init.model_config)
    d.update(num_classes=classes.num_classes, distill_dim=None, num_datasets=1, **inject)
    unet = config_from_dict(d)
    prep = init.preprocessing
    config = SegTrainConfig.from_dict({**config.to_dict(), "voxel_size": prep.voxel_size,
                                       "input_features": list(prep.input_features)})
    state, fresh = transfer_for_segmentation(init, unet, init_dataset)
    model = SpUNet(unet)
    model.load_state_dict(state, strict=False)
    return model, unet, config, fresh


def _common_classes(datasets: Sequence[SegDataset]) -> ClassMap:
    if not datasets:
        raise ValueError("segmentation training needs at least one data source")
    first = datasets[0]
    if not first.labelled:
        raise ValueError(f"{first.name}: no per-point labels (or no class map; pass --classes)")
    check_classes(first.classes, datasets)
    return first.classes


def train_segmentation(datasets: Sequence[SegDataset], config: SegTrainConfig,
                       output: str | Path, *, init: str | Path | None = None,
                       init_dataset: int = 0, inject: BackboneSpec | None = None,
                       resume: bool = False, val: Sequence[SegDataset] = (),
                       cache_dir: str | Path | None = None, device: str = "cpu",
                       progress: bool = True) -> dict[str, Any]:
    """Train (or resume) a segmentation checkpoint at `output`; returns a summary."""
    dev = torch.device(device)
    classes = _common_classes(datasets)
    samples = [s for ds in datasets for s in ds.samples]
    names = [ds.name for ds in datasets]
    state: dict[str, Any] = {}
    if resume:
        ckpt = load_checkpoint(output)
        state = ckpt.training
        if ckpt.kind != "segmentation" or "optimizer" not in state:
            raise CheckpointError(f"{output}: not a resumable segmentation checkpoint (the "
                                  "final checkpoint of a finished run has no optimizer state)")
        if state.get("datasets") != names:
            raise CheckpointError(f"{output}: was trained on {state.get('datasets')}, not "
                                  f"{names}")
        config = SegTrainConfig.from_dict(state["config"])
        inject = ckpt.preprocessing.backbone if ckpt.model_config.inject_2d else None
        unet, init, init_dataset = ckpt.model_config, state.get("init"), state["init_dataset"]
        model = build_model_from_checkpoint(ckpt, dev)
        fresh: list[str] = []
    source = None if inject is None else PointFeatureSource(inject, cache_dir, dev)
    if not resume:
        init_ckpt = None if init is None else load_checkpoint(init)
        model, unet, config, fresh = build_model(config, classes, init_ckpt, init_dataset,
                                                 None if source is None else source.dim)
    model = model.to(dev).train()
    opt, sched = build_optimizer(list(model.parameters()), config.optim, config.steps)
    scaler = grad_scaler(config.amp, dev)
    if resume:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
    start = int(state.get("step", 0))
    prep = Preprocessing(config.voxel_size, config.input_features, inject)
    teacher = None if inject is None else inject.teacher
    if resume:
        teacher = state.get("teacher")
    elif init is not None:
        teacher = init_ckpt.training.get("teacher")

    def make(step: int):  # host work of one step (built one step ahead)
        return random_batch(samples, config, step_rng(config.seed, step), source)

    def step_fn(step: int) -> float:
        batch = get_batch(step)
        with autocast(config.amp, dev):
            out = model(batch.points, batch.features, batch=batch.batch,
                        feat_2d=batch.feat_2d, visible_2d=batch.visible)
            loss = segmentation_loss(out.logits.float(), batch.labels)
        return optimizer_step(model, loss, opt, sched, config.optim.grad_clip, scaler)

    def save(step: int, final: bool = False, metrics: dict | None = None) -> None:
        training = {"step": step, "steps": config.steps, "config": config.to_dict(),
                    "datasets": names, "init": None if init is None else str(init),
                    "init_dataset": init_dataset, "teacher": teacher}
        if not final:
            training.update(optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                            scaler=None if scaler is None else scaler.state_dict())
        save_checkpoint(output, Checkpoint("segmentation", unet, model.state_dict(), prep,
                                           classes, training, metrics or {}))

    with device_batches(make, config, dev) as get_batch:
        losses = run_steps(start, config.steps, step_fn, save, config.save_every, progress,
                           "train-seg", log_every=LOG_EVERY)
    result: dict[str, Any] = {
        "steps": config.steps, "resumed_from": start if resume else None,
        "final_train_loss": float(np.mean(losses[-max(1, len(losses) // 10):])) if losses
        else None, "init": None if init is None else str(init), "inject": inject is not None,
        "teacher": teacher, "fresh_parameters": fresh, "datasets": names,
        "classes": list(classes.names), "config": config.preset, "output": str(output),
        "amp": config.amp if dev.type == "cuda" else "off"}
    if val:
        result["val"] = evaluate(model, val, classes, config.input_features, source,
                                 dev).result()
        result["val_datasets"] = [ds.name for ds in val]
    save(config.steps, final=True, metrics={k: v for k, v in result.items() if k != "output"})
    return result

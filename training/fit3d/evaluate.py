"""FiT3D evaluations: original vs fine-tuned vs concatenated features, in one run.

Design note: every evaluation builds the "original" backbone from the same
`BackboneSpec` as `lift` and `finetune` (so ``--random-init`` means the very teacher
that was lifted), the fine-tuned one by loading our fine-tuning output into the same
architecture, and FiT3D's assembly by concatenating their patch maps (and [CLS]).
Features are extracted once per image and model, then handed to the correspondence
metric or to the linear probes. The segmentation probe reads a simple folder format:
``images/NAME.(png|jpg)``, ``labels/NAME.png`` (uint8 class ids, 255 = ignore),
optional ``classes.txt`` (one name per line) and optional ``train.txt`` / ``val.txt``
(stems) — else every K-th image (sorted) is the validation split. Every result states
the backbone, whether it was pretrained and the data used.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.training.fit3d.config import EvalConfig
from fit3d_ros.training.fit3d.correspondence import correspondence_recall, select_pairs
from fit3d_ros.training.fit3d.probes import (
    DepthBins,
    depth_metrics,
    seg_metrics,
    train_depth_probe,
    train_seg_probe,
)
from fit3d_ros.training.fit3d.scenes import Scene, depth_in_color, render_size, split_indices
from fit3d_ros.training.fit3d.vit_features import build_spec_backbone, extract, spec_dict

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def feature_sets(spec: BackboneSpec, finetuned: str | Path | None, images: list[np.ndarray],
                 token_budget: int | None, device: str = "cpu", batch: int = 8
                 ) -> dict[str, tuple[list[torch.Tensor], list[torch.Tensor]]]:
    """{"original", ["finetuned", "concat"]} -> (patch maps, [CLS]) for `images`, run
    `batch` images at a time (batch=1 for images of different sizes)."""
    out = {"original": extract(build_spec_backbone(spec, device), images, token_budget,
                               batch)}
    if finetuned is not None:
        ft = extract(build_spec_backbone(spec, device, weights=finetuned), images,
                     token_budget, batch)
        out["finetuned"] = ft
        out["concat"] = ([torch.cat(p, 0) for p in zip(out["original"][0], ft[0])],
                         [torch.cat(c, 0) for c in zip(out["original"][1], ft[1])])
    return out


def _provenance(spec: BackboneSpec, finetuned: str | Path | None, data: Any) -> dict[str, Any]:
    return {"backbone": spec_dict(spec), "finetuned": None if finetuned is None else
            str(finetuned), "data": data}


def run_correspondence(scene: Scene, spec: BackboneSpec, finetuned: str | Path | None,
                       cfg: EvalConfig, device: str = "cpu") -> dict[str, Any]:
    """Correspondence recall on the scene's held-out views (see `correspondence`)."""
    t0 = time.perf_counter()
    views = scene.subset("heldout")
    if len(views) < 2:
        raise ValueError(f"{scene.source}: {len(views)} held-out views; correspondence needs "
                         "2 or more (lower --holdout-every or select more --frames)")
    pairs = select_pairs(views, cfg.pairs, cfg.point_stride, cfg.min_overlap,
                         cfg.depth_tolerance)
    if not pairs:
        raise ValueError(f"{scene.source}: no held-out pair shares {cfg.min_overlap:.0%} of "
                         "its points")
    sets = feature_sets(spec, finetuned, [v.rgb for v in views], cfg.token_budget, device)
    maps = {name: s[0] for name, s in sets.items()}
    r = correspondence_recall(views, maps, pairs, cfg.point_stride, cfg.ratio,
                              cfg.threshold_px, cfg.depth_tolerance)
    r.update(_provenance(spec, finetuned, {"source": scene.source, "format": scene.fmt,
                                           "heldout_frames": [v.index for v in views]}))
    r["seconds"] = time.perf_counter() - t0
    return r


def _depth_targets(views: list, width: int) -> list[torch.Tensor]:
    return [torch.from_numpy(depth_in_color(v, width)) for v in views]


def run_depth_probe(scene: Scene, spec: BackboneSpec, finetuned: str | Path | None,
                    cfg: EvalConfig, device: str = "cpu") -> dict[str, Any]:
    """Depth probe trained on the training views, scored on the held-out views."""
    t0 = time.perf_counter()
    train, held = scene.subset("train"), scene.subset("heldout")
    if not held:
        raise ValueError(f"{scene.source}: no held-out views to score the depth probe on")
    w, _ = render_size(train[0].color_camera, cfg.target_width)
    d_train, d_held = _depth_targets(train, w), _depth_targets(held, w)
    if cfg.depth_range is not None:
        lo, hi = cfg.depth_range
    else:
        allv = torch.cat([d[torch.isfinite(d)] for d in d_train])
        if allv.numel() == 0:
            raise ValueError(f"{scene.source}: no valid depth in the training views")
        lo, hi = 0.0, float(allv.max())
    bins = DepthBins(lo, hi, cfg.depth_bins)
    sets = feature_sets(spec, finetuned, [v.rgb for v in train + held], cfg.token_budget,
                        device)
    n = len(train)
    out: dict[str, Any] = {}
    for name, (patches, cls) in sets.items():
        probe = train_depth_probe(patches[:n], cls[:n], d_train, bins, cfg.probe_steps,
                                  cfg.probe_lr, cfg.probe_upsample, seed=cfg.seed)
        out[name] = depth_metrics(probe, patches[n:], cls[n:], d_held)
    return {"depth": out, "bins": {"lo": lo, "hi": hi, "n": bins.n},
            **_provenance(spec, finetuned, {"source": scene.source, "format": scene.fmt,
                                            "train_frames": [v.index for v in train],
                                            "heldout_frames": [v.index for v in held]}),
            "seconds": time.perf_counter() - t0}


def read_seg_folder(root: str | Path, holdout_every: int = 5
                    ) -> tuple[list[str], dict[str, list[tuple[str, np.ndarray, np.ndarray]]]]:
    """(class names, {"train": [...], "val": [...]}) of (stem, rgb uint8, label int64)."""
    root = Path(root)
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise ValueError(f"{root}: a segmentation folder needs images/ and labels/")
    imgs = sorted(p for p in (root / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not imgs:
        raise ValueError(f"{root}/images holds no .png/.jpg images")
    items = []
    for p in imgs:
        lab_path = root / "labels" / f"{p.stem}.png"
        if not lab_path.is_file():
            raise ValueError(f"missing label map {lab_path}")
        rgb = np.asarray(Image.open(p).convert("RGB"))
        lab = np.asarray(Image.open(lab_path))
        if lab.ndim != 2 or lab.shape != rgb.shape[:2]:
            raise ValueError(f"{lab_path}: label map must be single-channel "
                             f"{rgb.shape[1]}x{rgb.shape[0]}, got shape {lab.shape}")
        lab = lab.astype(np.int64)
        lab[lab == 255] = -1
        items.append((p.stem, rgb, lab))
    names_file = root / "classes.txt"
    top = max(int(x[2].max()) for x in items)
    names = (names_file.read_text().split("\n") if names_file.is_file() else
             [str(i) for i in range(top + 1)])
    names = [n.strip() for n in names if n.strip()]
    if top >= len(names):
        raise ValueError(f"{root}: label {top} but only {len(names)} classes")
    split_files = {k: root / f"{k}.txt" for k in ("train", "val")}
    if all(f.is_file() for f in split_files.values()):
        want = {k: set(f.read_text().split()) for k, f in split_files.items()}
        split = {k: [x for x in items if x[0] in want[k]] for k in want}
    else:
        tr, va = split_indices(len(items), holdout_every)
        split = {"train": [items[i] for i in tr], "val": [items[i] for i in va]}
    if not split["train"] or not split["val"]:
        raise ValueError(f"{root}: the train/val split is empty ({len(items)} images)")
    return names, split


def _resize_labels(lab: np.ndarray, width: int) -> torch.Tensor:
    h = max(1, round(lab.shape[0] * width / lab.shape[1]))
    t = torch.from_numpy(lab)[None, None].float()
    return F.interpolate(t, size=(h, width), mode="nearest")[0, 0].long()


def run_seg_probe(folder: str | Path, spec: BackboneSpec, finetuned: str | Path | None,
                  cfg: EvalConfig, holdout_every: int = 5,
                  device: str = "cpu") -> dict[str, Any]:
    """Linear segmentation probe: trained on the folder's train split, scored on val."""
    t0 = time.perf_counter()
    names, split = read_seg_folder(folder, holdout_every)
    tr, va = split["train"], split["val"]
    lab_tr = [_resize_labels(x[2], cfg.target_width) for x in tr]
    lab_va = [_resize_labels(x[2], cfg.target_width) for x in va]
    sizes = {x[1].shape for x in tr + va}
    # images of different sizes cannot share a batch: then one at a time
    sets = feature_sets(spec, finetuned, [x[1] for x in tr + va], cfg.token_budget, device,
                        batch=8 if len(sizes) == 1 else 1)
    n = len(tr)
    out = {}
    for name, (patches, _) in sets.items():
        probe = train_seg_probe(patches[:n], lab_tr, len(names), cfg.probe_steps,
                                cfg.probe_lr, seed=cfg.seed)
        out[name] = seg_metrics(probe, patches[n:], lab_va, len(names))
    return {"segmentation": out, "classes": names,
            **_provenance(spec, finetuned, {"source": str(folder), "train": [x[0] for x in tr],
                                            "val": [x[0] for x in va]}),
            "seconds": time.perf_counter() - t0}

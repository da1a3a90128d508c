"""Small-data experiments for BENCHMARKS.md: D-DITR init vs scratch, DITR injection on/off.

Design note: the shared data is tiny (one labelled SemanticKITTI scan, two KITTI object
frames with box labels, one nuScenes sweep), so every number here is a smoke-scale
measurement, not a reproduction of the papers. The 2D teacher is a randomly initialised
ViT-S/14 (no pretrained weights can be downloaded here) and every result says so.
(A) D-DITR: pretrain on the KITTI frames + nuScenes sweep (per-dataset BatchNorm), then
fine-tune on one spatial half of the SemanticKITTI scan and score the other half (both
directions, several seeds), against the same fine-tuning from scratch at equal steps.
(B) DITR injection on/off at equal steps on KITTI box labels, cropped to the camera
frustum: how well each variant fits the training labels (not generalisation; see
`injection_experiment`). Run: ``python -m fit3d_ros.training.ditr.benchmark [--json]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.ditr.config import DistillConfig, SegTrainConfig
from fit3d_ros.training.ditr.data import SegDataset
from fit3d_ros.training.ditr.distill import run_distillation
from fit3d_ros.training.ditr.evaluate import visible_any
from fit3d_ros.training.ditr.sources import load_dataset
from fit3d_ros.training.ditr.train import train_segmentation


def spatial_halves(ds: SegDataset) -> tuple[SegDataset, SegDataset]:
    """Split a one-scan dataset at the median x (two disjoint regions of the scene)."""
    s = ds.samples[0]
    left = s.xyz[:, 0] < np.median(s.xyz[:, 0])
    return (SegDataset(f"{ds.name}[x<median]", [replace(s.select(left), key=s.key + "#a")],
                       ds.classes),
            SegDataset(f"{ds.name}[x>=median]", [replace(s.select(~left), key=s.key + "#b")],
                       ds.classes))


def _seg(train: list[SegDataset], val: list[SegDataset], out: Path, steps: int, seed: int,
         voxel_size: float = 0.2, max_points: int | None = 30_000, **kw: Any) -> dict[str, Any]:
    t = time.perf_counter()
    cfg = SegTrainConfig.tiny(steps=steps, seed=seed, voxel_size=voxel_size,
                              max_points=max_points)
    r = train_segmentation(train, cfg, out, val=val, progress=False, **kw)
    v = r["val"]
    return {"miou": v["miou"], "accuracy": v["accuracy"], "visible_miou": v["visible_miou"],
            "invisible_miou": v["invisible_miou"], "per_class_iou": v["per_class_iou"],
            "seconds": round(time.perf_counter() - t, 1)}


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r[key] is not None]
    return float(np.mean(vals)) if vals else None


def ddtr_experiment(data: Path, work: Path, spec: BackboneSpec, pre_steps: int, steps: int,
                    seeds: list[int]) -> dict[str, Any]:
    """(A): D-DITR-initialised vs scratch fine-tuning on SemanticKITTI halves."""
    pre_data = [load_dataset(data / "kitti" / "object"), load_dataset(data / "nuscenes")]
    t = time.perf_counter()
    pre = run_distillation(pre_data, spec, DistillConfig.tiny(steps=pre_steps),
                           work / "ddtr.ckpt", cache_dir=work / "cache", progress=False)
    pre_s = time.perf_counter() - t
    a, b = spatial_halves(load_dataset(data / "semantickitti"))
    runs: dict[str, list] = {"scratch": [], "ddtr_init": []}
    for seed in seeds:
        for train, test in ((a, b), (b, a)):
            for name, init in (("scratch", None), ("ddtr_init", work / "ddtr.ckpt")):
                runs[name].append(_seg([train], [test], work / f"{name}.ckpt", steps, seed,
                                       init=init))
    return {"pretrain": {"steps": pre_steps, "heldout_cosine": pre["heldout_cosine"],
                         "datasets": pre["datasets"], "seconds": round(pre_s, 1)},
            "finetune_steps": steps, "seeds": seeds, "folds": 2,
            "summary": {k: {"miou": _mean(v, "miou"), "accuracy": _mean(v, "accuracy")}
                        for k, v in runs.items()},
            "runs": runs}


def injection_experiment(data: Path, work: Path, spec: BackboneSpec, steps: int,
                         seeds: list[int], voxel_size: float = 0.1) -> dict[str, Any]:
    """(B): DITR injection on/off, training-set fit on the camera frustum of the KITTI frames.

    The frames' object classes barely overlap (a pedestrian in one; car, truck, cyclist
    in the other) and objects are < 2 % of the frustum's points, so a held-out score
    would only measure background; we report how well each variant fits the labels.
    """
    kitti = load_dataset(data / "kitti" / "object")
    crop = SegDataset(f"{kitti.name}[camera frustum]",
                      [s.select(visible_any(s)) for s in kitti.samples], kitti.classes)
    runs: dict[str, list] = {"no_injection": [], "injection": []}
    for seed in seeds:
        for name, inject in (("no_injection", None), ("injection", spec)):
            runs[name].append(_seg([crop], [crop], work / f"{name}.ckpt", steps, seed,
                                   voxel_size=voxel_size, max_points=None, inject=inject,
                                   cache_dir=work / "cache"))
    return {"steps": steps, "seeds": seeds, "voxel_size": voxel_size,
            "points": [len(s) for s in crop.samples], "evaluated_on": "training data",
            "summary": {k: {m: _mean(v, m) for m in ("miou", "accuracy")}
                        for k, v in runs.items()}, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[3] / "shared" / "data"
    p.add_argument("--data", default=os.environ.get("FIT3D_ROS_DATA", str(default)))
    p.add_argument("--backbone", default="dinov2_small")
    p.add_argument("--pretrain-steps", type=int, default=300)
    p.add_argument("--steps", type=int, default=150, help="fine-tuning steps of (A)")
    p.add_argument("--inject-steps", type=int, default=500, help="training steps of (B)")
    p.add_argument("--only", choices=["ddtr", "injection"], help="run one experiment")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    spec = BackboneSpec(args.backbone, random_init=True)
    with cpu_threads(args.threads), tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"teacher": f"{args.backbone} {spec.teacher}",
                                  "config": "tiny", "threads": args.threads}
        if args.only in (None, "ddtr"):
            result["ddtr"] = ddtr_experiment(Path(args.data), work, spec, args.pretrain_steps,
                                             args.steps, args.seeds)
        if args.only in (None, "injection"):
            result["injection"] = injection_experiment(Path(args.data), work, spec,
                                                       args.inject_steps, args.seeds)
    json.dump(result, sys.stdout, indent=None if args.json else 1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())

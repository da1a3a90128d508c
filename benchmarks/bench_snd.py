"""Splat-and-Distill tiny chain on the shared 7-Scenes sample, and its student next to the
original ViT and a FiT3D student in one correspondence evaluation.

Usage: ``python benchmarks/bench_snd.py [--backbone dinov2_small] [--threads 2]
[--fit3d-student FILE] [--work DIR] [--json]``. Runs ``fit3d-ros snd`` (tiny config;
frames 0:100:2, every 5th held out), then — unless ``--fit3d-student`` names an existing
FiT3D student of the same backbone — the FiT3D tiny chain on the same frames (``lift``,
``finetune``), then ``eval-correspondence`` on the same held-out pairs with each student
(the "original" column is the same network in both runs). The teacher is a seeded
*random* ViT (no pretrained weights can be downloaded here): semantic gains are not
expected; the figures show cost and whether the rendered targets are 3D-consistent.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from bench_fit3d import run_cli  # sibling script (benchmarks/ is on sys.path when run)


ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FIT3D_ROS_DATA", ROOT.parent / "shared" / "data"))


def _stage(out: dict, work: Path, key: str, argv: list[str]) -> None:
    """Run one command into out[key] (time in out["times_s"]); out so far -> work/partial.json."""
    out[key], out["times_s"][key] = run_cli(argv)
    (work / "partial.json").write_text(json.dumps(out, default=str))


def run(backbone: str, threads: int, work: Path, fit3d_student: Path | None) -> dict:
    bb = ["--backbone", backbone, "--random-init", "--config", "tiny",
          "--threads", str(threads), "--no-progress", "--json"]
    seven = [str(DATA / "rgbd" / "7scenes"), "--frames", "0:100:2", "--holdout-every", "5"]
    snd = work / "snd.safetensors"
    out: dict = {"backbone": backbone, "random_init": True, "threads": threads, "times_s": {}}
    _stage(out, work, "snd", ["snd", *seven, *bb, "-o", str(snd), "--force"])
    if fit3d_student is None:
        scene, fit3d_student = work / "7scenes.pt", work / "fit3d.safetensors"
        _stage(out, work, "lift", ["lift", *seven, *bb, "-o", str(scene), "--force"])
        _stage(out, work, "finetune", ["finetune", str(scene), *bb, "-o", str(fit3d_student),
                                       "--force"])
    out["fit3d_student"] = str(fit3d_student)
    _stage(out, work, "eval_snd", ["eval-correspondence", *seven, *bb, "--finetuned", str(snd)])
    _stage(out, work, "eval_fit3d", ["eval-correspondence", *seven, *bb, "--finetuned",
                                     str(fit3d_student)])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="dinov2_small")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--fit3d-student", type=Path, help="an existing FiT3D student to compare")
    p.add_argument("--work", type=Path, help="keep outputs here (default: a temp dir)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not (DATA / "rgbd").is_dir():
        print(f"shared data not found at {DATA} (set FIT3D_ROS_DATA)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        r = run(args.backbone, args.threads, work, args.fit3d_student)
    if args.json:
        print(json.dumps(r))
        return 0
    s = r["snd"]
    print(f"SnD tiny chain, {args.backbone} random-init, {args.threads} thread(s)")
    for k, v in r["times_s"].items():
        print(f"  {k:<12} {v:8.1f} s")
    print(f"  snd: {s['steps']} steps, loss {s['loss_first']:.4f} -> {s['loss_last']:.4f}, "
          f"recall@10px teacher {s['recall@10px']['teacher']} rendered "
          f"{s['recall@10px']['rendered']} ({s['recall_pairs']} held-out pairs)")
    a, b = r["eval_snd"], r["eval_fit3d"]
    key = "recall@10px"
    print(f"  eval-correspondence ({a['pairs']} pairs): original {a[key]['original']} "
          f"({a['matches']['original']}), SnD {a[key]['finetuned']} "
          f"({a['matches']['finetuned']}), FiT3D {b[key]['finetuned']} "
          f"({b['matches']['finetuned']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

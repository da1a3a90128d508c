"""FiT3D tiny chain on the shared RGB-D samples: lift (7-Scenes + Redwood) -> finetune ->
correspondence + depth probe (+ segmentation probe on a generated labelled set).

Usage: ``python benchmarks/bench_fit3d.py [--backbone dinov2_small] [--config tiny]
[--threads 1] [--work DIR] [--json]``. Runs every stage through the ``fit3d-ros``
command (same code as users run), times each, and prints a table or one JSON object.
The teacher is a seeded *random* ViT (``--random-init``): no pretrained weights can be
downloaded here, so semantic gains are not expected; the question is whether 3D
consistency (correspondence recall on held-out views) transfers to the student.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fit3d_ros.cli import main as cli
from fit3d_ros.training.fit3d.scene_file import load_scene_file

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FIT3D_ROS_DATA", ROOT.parent / "shared" / "data"))


def run_cli(argv: list[str]) -> tuple[dict, float]:
    """`fit3d-ros ARGV --json` in-process: (its JSON, seconds); exits on failure."""
    buf = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(argv)
    if rc != 0:
        raise SystemExit(f"fit3d-ros {' '.join(argv)} failed with {rc}")
    return json.loads(buf.getvalue()), time.perf_counter() - t0


def _seg_folder(root: Path, n: int = 20, size: int = 112) -> Path:
    """Generated labelled set: red / blue squares on grey noise (labels 1 / 2, 0 = bg)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    for i in range(n):
        img = rng.integers(90, 150, (size, size, 3)).astype(np.uint8)
        lab = np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        s = int(rng.integers(size // 4, size // 2))
        cls = 1 + i % 2
        img[y:y + s, x:x + s] = (200, 40, 40) if cls == 1 else (40, 40, 200)
        lab[y:y + s, x:x + s] = cls
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(lab).save(root / "labels" / f"{i:03d}.png")
    (root / "classes.txt").write_text("background\nred\nblue\n")
    return root


def run(backbone: str, config: str, threads: int, work: Path, reuse: bool = False) -> dict:
    rgbd = DATA / "rgbd"
    bb = ["--backbone", backbone, "--random-init", "--config", config,
          "--threads", str(threads), "--no-progress", "--json"]
    seven = [str(rgbd / "7scenes"), "--frames", "0:100:2", "--holdout-every", "5"]
    redwood = [str(rgbd / "redwood"), "--holdout-every", "2"]
    s7, rw, ft = work / "7scenes.pt", work / "redwood.pt", work / "finetuned.safetensors"
    out: dict = {"backbone": backbone, "random_init": True, "config": config,
                 "threads": threads, "times_s": {}}
    t = out["times_s"]
    for key, path, src in (("lift_7scenes", s7, seven), ("lift_redwood", rw, redwood)):
        if reuse and path.is_file():  # keep an earlier lift of the same work folder
            m = load_scene_file(path).meta["metrics"]
            out[key], t[key] = {**m, "reused": True}, m["seconds"]
        else:
            out[key], t[key] = run_cli(["lift", *src, *bb, "-o", str(path), "--force"])
    out["finetune"], t["finetune"] = run_cli(["finetune", str(s7), str(rw), *bb, "-o", str(ft),
                                           "--force"])
    ev = [*bb, "--finetuned", str(ft)]
    out["correspondence_7scenes"], t["eval_correspondence_7scenes"] = run_cli(
        ["eval-correspondence", *seven, *ev])
    try:  # Redwood has 5 frames: 2 held out, so at most one pair
        out["correspondence_redwood"], t["eval_correspondence_redwood"] = run_cli(
            ["eval-correspondence", *redwood, *ev])
    except SystemExit as exc:
        out["correspondence_redwood"] = {"error": str(exc)}
    out["depth_probe_7scenes"], t["eval_depth_probe"] = run_cli(["eval-depth-probe", *seven, *ev])
    folder = _seg_folder(work / "seg")
    out["seg_probe_generated"], t["eval_seg_probe"] = run_cli(["eval-seg-probe", str(folder),
                                                            *ev])
    t["total"] = sum(t.values())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="dinov2_small")
    p.add_argument("--config", default="tiny", choices=["tiny", "default"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, help="keep outputs here (default: a temp dir)")
    p.add_argument("--reuse", action="store_true", help="reuse scene files in --work")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not (DATA / "rgbd").is_dir():
        print(f"shared data not found at {DATA} (set FIT3D_ROS_DATA)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        r = run(args.backbone, args.config, args.threads, work, args.reuse)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"FiT3D {args.config} chain, {args.backbone} random-init, {args.threads} thread(s)")
    for k, v in r["times_s"].items():
        print(f"  {k:<30} {v:8.1f} s")
    for name in ("correspondence_7scenes", "correspondence_redwood"):
        c = r[name]
        if "error" in c:
            print(f"  {name}: {c['error']}")
            continue
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in c["recall@10px"].items())
              + f" ({c['pairs']} pairs)")
    for name in ("lift_7scenes", "lift_redwood"):
        print(f"  {name}: held-out PSNR {r[name]['psnr_heldout']:.2f} dB, "
              f"{r[name]['num_gaussians']} Gaussians")
    print(f"  depth probe: {r['depth_probe_7scenes']['depth']}")
    print(f"  seg probe: {r['seg_probe_generated']['segmentation']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

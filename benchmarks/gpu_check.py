"""One-call GPU check: CUDA tests, rasterizer, DITR segmenter latency, training speeds.

Design note: meant for a borrowed, offline GPU machine with only torch preinstalled
(see ../shared/GPU.md for what to copy there); it installs nothing. Every section runs
under its own time cap inside one overall deadline and records either its figures or an
``error`` string, so the JSON always has every key (printed once, written to
``--out``). Segmenter stages come from `LatencyStats` with synchronised timers
(`pipeline.latency.device_sync`); bf16 is the product option ``Segmenter(dtype=
"bfloat16")``: the ViT in bfloat16 and, on CUDA, the U-Net under ``torch.autocast``
(spconv casts its convolutions to fp16 there; its CPU kernels have no bf16, so on CPU
only the ViT changes). Training speeds run the real CLI in a subprocess (wall time,
steps per second from the step count); ``train_seg_inject_amp`` is the same run with
``--amp bf16`` (CUDA only). ``--device cpu --quick`` runs the same sections on tiny
sizes in ≤ 3 minutes (tested in the suite).
Usage: ``python benchmarks/gpu_check.py --data DIR --out FILE [--device cuda] [--quick]``.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fit3d_ros.logs.lidar_datasets import read_kitti_object, read_nuscenes
from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.checkpoint import Checkpoint, Preprocessing, save_checkpoint
from fit3d_ros.models.classes import semantickitti_classes
from fit3d_ros.pipeline.segmenter import Segmenter, ViewInput
from fit3d_ros.sensors import PointCloud

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = ("test/kernels/test_raster_cuda.py",)
CLI = "import sys; sys.argv[0] = 'fit3d-ros'; from fit3d_ros.cli.main import main; sys.exit(main())"
TRAIN_KEYS = ("lift", "finetune", "train_seg", "train_seg_inject", "train_seg_inject_amp")
KEYS = ("env", "cuda_tests", "raster", "segmenter", *TRAIN_KEYS, "seconds")


def peak_mb(device: torch.device) -> float | None:
    return (torch.cuda.max_memory_allocated(device) / 2 ** 20) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def section(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # a failed section is a result, the others still run
        out = {"error": repr(e)[:500]}
    out["seconds"] = round(time.perf_counter() - t, 2)
    return out


def cli(args: list[str], cap: float) -> dict[str, Any]:
    """Run `fit3d-ros ARGS` in a subprocess (no console script needed) within `cap` s."""
    t = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True,
                           timeout=max(cap, 1), cwd=ROOT)
        rc, tail = p.returncode, (p.stdout + p.stderr)[-400:]
    except subprocess.TimeoutExpired:
        rc, tail = 124, "timeout"
    return {"rc": rc, "wall_s": round(time.perf_counter() - t, 2), "tail": tail if rc else ""}


def check_env(device: torch.device) -> dict[str, Any]:
    out = {"torch": torch.__version__, "device": str(device), "python": sys.version.split()[0]}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    for mod in ("spconv", "spconv-cu120", "spconv-cu121", "gsplat", "timm", "rosbags"):
        try:
            out[mod] = importlib.metadata.version(mod)
        except importlib.metadata.PackageNotFoundError:
            out[mod] = None
    return out


def check_tests(device: torch.device, cap: float) -> dict[str, Any]:
    if device.type != "cuda":
        return {"skipped": "no CUDA device"}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        *CUDA_TESTS], capture_output=True, text=True, timeout=cap, cwd=ROOT)
    return {"rc": p.returncode, "summary": p.stdout.strip().splitlines()[-1:],
            "wall_s": round(time.perf_counter() - t, 2)}


def check_raster(device: torch.device, quick: bool) -> dict[str, Any]:
    from fit3d_ros.kernels import rasterize_gaussians  # kernels import gsplat lazily
    from fit3d_ros.kernels.scenes import SceneConfig, random_scene
    n, w, h, d = (300, 32, 24, 8) if quick else (50_000, 320, 240, 64)
    scene = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in
             random_scene(SceneConfig(n=n, width=w, height=h, features=d, seed=0)).items()}
    leaves = ("means", "quats", "scales", "opacities", "colors", "features")
    out: dict[str, Any] = {"n": n, "res": f"{h}x{w}", "d": d}
    results = {}
    backends = ("cuda", "torch") if device.type == "cuda" else ("cpu", "torch")
    for b in backends:
        def fb():
            ps = {k: scene[k].clone().requires_grad_(True) for k in leaves}
            o = rasterize_gaussians(**{**scene, **ps}, backend=b)
            sum(x.sum() for x in (o.rgb, o.features, o.alpha, o.depth)).backward()
            return o
        try:
            reset_peak(device)
            out[f"{b}_fwd_bwd_ms"], results[b] = timed(fb, device, 1 if quick else 5)
            out[f"{b}_peak_mb"] = peak_mb(device)
        except Exception as e:
            out[f"{b}_error"] = repr(e)[:300]
    if len(results) == 2:
        a, r = (results[b] for b in backends)
        out["max_abs_err"] = max(float((getattr(a, k) - getattr(r, k)).abs().max())
                                 for k in ("rgb", "features", "alpha", "depth"))
        out["speedup"] = out["torch_fwd_bwd_ms"] / out[f"{backends[0]}_fwd_bwd_ms"]
    return out


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> tuple[float, Any]:
    """(best ms of `repeats` synchronised runs after a warm-up, the last result)."""
    res = fn()
    ts = []
    for _ in range(repeats):
        res, ms = timed_once(fn, device)
        ts.append(ms)
    return min(ts), res


def seg_checkpoint(path: Path, quick: bool) -> Path:
    """A random-init DITR checkpoint: SpUNet default + ViT-S at 1369 tokens (quick: tiny)."""
    torch.manual_seed(0)
    if quick:
        cfg = SpUNetConfig.tiny(in_channels=4, num_classes=19, inject_2d=True, feat_2d_dim=48)
        spec = BackboneSpec(name="vit_tiny_test", random_init=True, token_budget=150,
                            view="center")
    else:
        cfg = SpUNetConfig.default(in_channels=4, num_classes=19, inject_2d=True,
                                   feat_2d_dim=384)
        spec = BackboneSpec(name="dinov2_small", random_init=True, token_budget=1369,
                            view="center")
    ck = Checkpoint("segmentation", cfg, SpUNet(cfg).state_dict(),
                    Preprocessing(cfg.voxel_size, ("xyz", "intensity"), spec),
                    semantickitti_classes())
    return save_checkpoint(path, ck)


def frames(data: Path, quick: bool) -> dict[str, tuple[PointCloud, list[ViewInput]]]:
    """KITTI frame 000000 with its colour camera; the nuScenes sample with six cameras."""
    k = next(iter(read_kitti_object(data / "kitti" / "object", frames=["000000"])))
    ns = read_nuscenes(data / "nuscenes")
    out = {"kitti_1cam": (k.cloud, [ViewInput(k.image.rgb, k.camera, k.T_cam_velo.matrix)]),
           "nuscenes_6cam": (ns.lidar, [
               ViewInput(f.rgb, f.camera, (ns.T_base_cams[c].inverse() @ ns.T_base_lidar).matrix)
               for c, f in ns.cameras.items()])}
    if quick:  # a quarter of the points, every second camera
        out = {n: (c.select(np.arange(len(c)) % 4 == 0), v[::2]) for n, (c, v) in out.items()}
    return out


def check_segmenter(data: Path, device: torch.device, quick: bool, work: Path
                    ) -> dict[str, Any]:
    ckpt = seg_checkpoint(work / "ditr.ckpt", quick)
    inputs = frames(data, quick)
    calls = 3 if quick else 30
    out: dict[str, Any] = {}
    for precision in ("float32", "bfloat16"):
        seg = Segmenter(ckpt, device=str(device), dtype=precision)
        for name, (cloud, views) in inputs.items():
            seg.latency.stages.clear()
            reset_peak(device)
            tot = []
            for i in range(calls + 1):
                _, t = timed_once(lambda: seg(cloud, views), device)
                if i:
                    tot.append(t)
            stages = {k: {"p50": round(v["p50"], 2), "p90": round(v["p90"], 2)}
                      for k, v in seg.latency.summary().items()}
            out[f"{name}_{precision}"] = {
                "points": len(cloud), "cameras": len(views), "total_p50_ms":
                round(statistics.median(tot), 2), "total_p90_ms":
                round(float(np.percentile(tot, 90)), 2), "stages": stages,
                "peak_mb": peak_mb(device)}
    return out


def timed_once(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    r = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return r, (time.perf_counter() - t) * 1e3


def training_runs(data: Path, device: torch.device, quick: bool, work: Path,
                  left: Callable[[], float]) -> dict[str, dict[str, Any]]:
    dev = ["--device", str(device)]
    cfg = ["--config", "tiny"] if quick else ["--config", "default"]
    vit = ["--backbone", "vit_tiny_test" if quick else "dinov2_small", "--random-init"]
    it, steps = (2, 1) if quick else (300, 60)
    s7 = data / "rgbd" / "7scenes"
    out: dict[str, dict[str, Any]] = {}
    frames_arg = ["--frames", "0:3:1"] if quick else ["--frames", "0:30:1"]
    lift = cli(["lift", str(s7), "--format", "7scenes", *frames_arg, "--holdout-every", "5",
                *vit, *cfg, "--iterations", str(it), *dev, "-o", str(work / "s7.scene"),
                "--json", "--no-progress"], min(240, left() * 0.4))
    lift["iterations"] = it
    out["lift"] = lift
    ft = cli(["finetune", str(work / "s7.scene"), *vit, *cfg, *dev, "-o",
              str(work / "ft.safetensors"), "--json", "--no-progress"], min(120, left() * 0.3))
    out["finetune"] = ft
    sk = data / "semantickitti"
    out["train_seg"] = cli(["train-seg", str(sk), *cfg, "--steps", str(steps), *dev,
                            "-o", str(work / "sk.ckpt"), "--json", "--no-progress"],
                           min(150, left() * 0.3))
    out["train_seg"]["steps"] = steps
    inject = ["train-seg", str(data / "kitti" / "object"), "--inject", *vit, "--token-budget",
              "150" if quick else "1369", *cfg, "--steps", str(steps), *dev, "--json",
              "--no-progress"]
    out["train_seg_inject"] = cli([*inject, "-o", str(work / "inj.ckpt")],
                                  min(150, left() * 0.5))
    out["train_seg_inject"]["steps"] = steps
    if device.type == "cuda":  # AMP (Pointcept's bf16 autocast) is CUDA-only
        out["train_seg_inject_amp"] = cli([*inject, "--amp", "bf16", "-o",
                                           str(work / "amp.ckpt")], min(150, left()))
        out["train_seg_inject_amp"]["steps"] = steps
    else:
        out["train_seg_inject_amp"] = {"rc": None, "wall_s": 0.0,
                                       "skipped": "AMP runs on CUDA only"}
    for v in out.values():  # wall time includes start-up: an upper bound on step time
        n = v.get("iterations", v.get("steps"))
        if n and v["rc"] == 0:
            v["per_s_incl_startup"] = round(n / v["wall_s"], 3)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get(
        "FIT3D_ROS_DATA", ROOT.parent / "shared" / "data")))
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke run)")
    ap.add_argument("--budget", type=float, default=180 if "--quick" in (argv or sys.argv)
                    else 480, help="overall deadline in seconds")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    left = lambda: a.budget - (time.perf_counter() - t0)  # noqa: E731
    device = torch.device(a.device)
    res: dict[str, Any] = {k: None for k in KEYS}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res["env"] = section(lambda: check_env(device))
        res["cuda_tests"] = section(lambda: check_tests(device, min(120, left())))
        res["raster"] = section(lambda: check_raster(device, a.quick))
        res["segmenter"] = section(lambda: check_segmenter(a.data, device, a.quick, work))
        train = section(lambda: training_runs(a.data, device, a.quick, work, left))
        for k in TRAIN_KEYS:
            res[k] = train.get(k, {"error": train.get("error", "not run")})
    res["seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(res, default=str)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)
    return res


if __name__ == "__main__":
    main()

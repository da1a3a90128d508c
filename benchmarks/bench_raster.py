"""Benchmark the feature-Gaussian rasterizer: C++ `cpu` backend vs the `torch` reference.

Design note: renders the same seeded synthetic scenes (fit3d_ros.kernels.scenes) with both
backends in one process: N = 10k, 50k, 100k Gaussians at 240x320 and 480x640 with D = 64
feature channels, timing forward (no grad) and forward+backward (the sum of every output as loss),
each the best of `--repeats` runs (wall clock; the best run is the least disturbed by other
processes on a shared machine), after one cpu warm-up. Prints a table, or with `--json` one
JSON object with
per-configuration times, speedups, `speedup_fwd_bwd_50k_240x320_d64` and `max_abs_err`
(largest forward difference between the backends over all configurations and outputs).

    python benchmarks/bench_raster.py [--json] [--threads 2] [--repeats 3] [--sizes 10k,50k]
        [--resolutions 240x320]
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from fit3d_ros.kernels import load_extension, rasterize_gaussians
from fit3d_ros.kernels.scenes import SceneConfig, random_scene

SIZES = {"10k": 10_000, "50k": 50_000, "100k": 100_000}
RESOLUTIONS = {"240x320": (320, 240), "480x640": (640, 480)}
PARAMS = ("means", "quats", "scales", "opacities", "colors", "features")


def _outputs(out) -> list[torch.Tensor]:
    return [out.rgb, out.features, out.alpha, out.depth]


def _time_forward(scene: dict, backend: str) -> tuple[float, list[torch.Tensor]]:
    with torch.no_grad():
        start = time.perf_counter()
        out = rasterize_gaussians(**scene, backend=backend)
        return time.perf_counter() - start, _outputs(out)


def _time_forward_backward(scene: dict, backend: str) -> float:
    leaves = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
    start = time.perf_counter()
    out = rasterize_gaussians(**{**scene, **leaves}, backend=backend)
    loss = sum(img.sum() for img in _outputs(out))  # minimal loss: times the rasterizer
    loss.backward()
    return time.perf_counter() - start


def run(sizes: list[str], resolutions: list[str], repeats: int, d: int) -> dict:
    """Time every configuration; returns the JSON-able result object."""
    load_extension()
    result: dict = {"threads": torch.get_num_threads(), "d": d, "configs": []}
    max_err = 0.0
    for res_name in resolutions:
        width, height = RESOLUTIONS[res_name]
        for size in sizes:
            scene = random_scene(SceneConfig(n=SIZES[size], width=width, height=height,
                                             features=d, seed=0))
            _time_forward_backward(scene, "cpu")  # warm-up (extension, allocator, caches)
            times: dict[str, float] = {}
            outs = {}
            for backend in ("cpu", "torch"):
                fwd = [_time_forward(scene, backend) for _ in range(repeats)]
                times[f"{backend}_fwd_s"] = min(t for t, _ in fwd)
                times[f"{backend}_fwd_bwd_s"] = min(_time_forward_backward(scene, backend)
                                                    for _ in range(repeats))
                outs[backend] = fwd[0][1]
            err = max(float((a - b).abs().max()) for a, b in zip(outs["cpu"], outs["torch"]))
            max_err = max(max_err, err)
            cfg = dict(n=SIZES[size], resolution=res_name, d=d, **times, max_abs_err=err)
            cfg["speedup_fwd"] = cfg["torch_fwd_s"] / cfg["cpu_fwd_s"]
            cfg["speedup_fwd_bwd"] = cfg["torch_fwd_bwd_s"] / cfg["cpu_fwd_bwd_s"]
            result["configs"].append(cfg)
            result[f"speedup_fwd_bwd_{size}_{res_name}_d{d}"] = cfg["speedup_fwd_bwd"]
            result[f"speedup_fwd_{size}_{res_name}_d{d}"] = cfg["speedup_fwd"]
            print(f"done {size} {res_name}", file=sys.stderr, flush=True)
    result["max_abs_err"] = max_err
    return result


def _table(result: dict) -> str:
    head = (f"{'N':>7} {'image':>8} {'cpu fwd':>9} {'torch fwd':>10} {'x':>6} "
            f"{'cpu f+b':>9} {'torch f+b':>10} {'x':>6} {'max err':>9}")
    rows = [f"threads={result['threads']}  D={result['d']}  (seconds)", head]
    for c in result["configs"]:
        rows.append(f"{c['n']:>7} {c['resolution']:>8} {c['cpu_fwd_s']:>9.3f} "
                    f"{c['torch_fwd_s']:>10.3f} {c['speedup_fwd']:>6.1f} "
                    f"{c['cpu_fwd_bwd_s']:>9.3f} {c['torch_fwd_bwd_s']:>10.3f} "
                    f"{c['speedup_fwd_bwd']:>6.1f} {c['max_abs_err']:>9.1e}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best of)")
    parser.add_argument("--sizes", default="10k,50k,100k", help="subset of 10k,50k,100k")
    parser.add_argument("--resolutions", default="240x320,480x640",
                        help="subset of 240x320,480x640")
    parser.add_argument("--d", type=int, default=64, help="feature channels D")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if not sizes or any(s not in SIZES for s in sizes):
        parser.error(f"--sizes must list some of {','.join(SIZES)}")
    resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    if not resolutions or any(r not in RESOLUTIONS for r in resolutions):
        parser.error(f"--resolutions must list some of {','.join(RESOLUTIONS)}")
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be >= 1")
    torch.set_num_threads(args.threads)
    result = run(sizes, resolutions, args.repeats, args.d)
    print(json.dumps(result, indent=1) if args.json else _table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""benchmarks/gpu_check.py runs on CPU (--device cpu --quick) and its JSON has every key."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_quick_on_cpu(shared_data, tmp_path):
    out = tmp_path / "check.json"
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device",
                        "cpu", "--quick", "--data", str(shared_data), "--out", str(out)],
                       capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res == json.loads(p.stdout.strip().splitlines()[-1])  # printed = written
    assert set(res) == {"env", "cuda_tests", "raster", "segmenter", "lift", "finetune",
                        "train_seg", "train_seg_inject", "train_seg_inject_amp", "seconds"}
    assert res["env"]["device"] == "cpu" and res["cuda_tests"]["skipped"]
    assert "error" not in res["raster"] and res["raster"]["max_abs_err"] < 1e-3
    seg = res["segmenter"]
    assert "error" not in seg, seg
    for frame, cams in (("kitti_1cam", 1), ("nuscenes_6cam", 3)):
        for precision in ("float32", "bfloat16"):
            r = seg[f"{frame}_{precision}"]
            assert r["cameras"] == cams and r["points"] > 1000
            assert {"backbone", "mapping", "unet"} <= set(r["stages"])
            assert r["total_p90_ms"] >= r["total_p50_ms"] > 0
    for k in ("lift", "finetune", "train_seg", "train_seg_inject"):
        assert "rc" in res[k] and "wall_s" in res[k], res[k]  # ran (or hit its time cap)
        assert res[k]["rc"] in (0, 124), (k, res[k])  # 124: its time cap on a busy machine
    assert res["train_seg_inject_amp"]["skipped"] == "AMP runs on CUDA only"

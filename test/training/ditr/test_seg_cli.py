"""``fit3d-ros distill`` -> ``train-seg --init`` -> ``eval-seg --json`` end to end, and user errors."""
from __future__ import annotations

import json

import pytest

from fit3d_ros.cli.main import main as cli
from fit3d_ros.threads import cpu_threads

RANDOM_VIT = ["--backbone", "vit_tiny_test", "--random-init"]
TINY = ["--config", "tiny", "--threads", "1", "--no-progress"]


@pytest.fixture(autouse=True)
def restore_threads():
    with cpu_threads(None):  # --threads sets torch's global thread count; restore it
        yield


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_distill_train_eval(shared_data, tmp_path, capsys):
    kitti, sk = str(shared_data / "kitti" / "object"), str(shared_data / "semantickitti")
    dd = tmp_path / "dd.ckpt"
    assert cli(["distill", kitti, *RANDOM_VIT, *TINY, "--steps", "3", "--max-points", "5000",
                "-o", str(dd), "--json"]) == 0
    r = _json(capsys)
    assert r["heldout_samples"] == 1 and "random-init" in r["teacher"]
    seg = tmp_path / "seg.ckpt"
    assert cli(["train-seg", sk, "--init", str(dd), *TINY, "--steps", "3", "--max-points",
                "5000", "-o", str(seg), "--json"]) == 0
    r = _json(capsys)
    assert r["fresh_parameters"] == ["seg_head.bias", "seg_head.weight"]
    assert cli(["eval-seg", sk, "--checkpoint", str(seg), "--threads", "1", "--json",
                "--out", str(tmp_path / "ev")]) == 0
    r = _json(capsys)
    assert set(r) >= {"miou", "accuracy", "per_class_iou", "visible_miou", "invisible_miou"}
    assert r["visible_miou"] is None  # the SemanticKITTI sample has no camera
    assert len(r["per_class_iou"]) == 19 and 0.0 <= r["accuracy"] <= 1.0
    assert r["points"] == 85962 - 2025  # 2025 points are unlabelled (ignored)
    assert "random-init" in r["teacher"]
    assert (tmp_path / "ev" / "confusion.png").is_file()
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["miou"] == r["miou"]
    # text output names the metrics
    assert cli(["eval-seg", sk, "--checkpoint", str(seg), "--threads", "1",
                "--out", str(tmp_path / "ev2")]) == 0
    assert "mIoU" in capsys.readouterr().out
    assert cli(["eval-seg", sk, "--checkpoint", str(dd)]) == 2
    assert "distillation checkpoint" in capsys.readouterr().err


def test_user_errors(shared_data, tmp_path, capsys):
    sk = str(shared_data / "semantickitti")
    out = tmp_path / "x.ckpt"
    out.write_bytes(b"")
    assert cli(["train-seg", sk, *TINY, "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert cli(["train-seg", sk, *TINY, "--inject", "-o", str(tmp_path / "y.ckpt")]) == 2
    assert "--backbone" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: weights must be chosen explicitly
        cli(["distill", sk, "--backbone", "vit_tiny_test", "-o", str(tmp_path / "z.ckpt")])
    capsys.readouterr()
    assert cli(["eval-seg", sk, "--checkpoint", str(out)]) == 2
    assert "not a loadable checkpoint" in capsys.readouterr().err
    assert cli(["train-seg", str(shared_data / "nuscenes"), *TINY, "-o",
                str(tmp_path / "n.ckpt")]) == 2
    assert "no per-point labels" in capsys.readouterr().err

"""Scenes from bags and folders, and the FiT3D commands end to end (tiny, real data)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fit3d_ros.cli.main import main
from fit3d_ros.logs.convert import rgbd_to_bag
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.fit3d.scenes import load_scene, parse_frames, split_indices

RANDOM = ["--backbone", "vit_tiny_test", "--random-init", "--config", "tiny", "--threads", "1",
          "--no-progress"]


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def bag(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("bag") / "7scenes.mcap"
    rgbd_to_bag(shared_data / "rgbd" / "7scenes", out, fmt="7scenes", every=20)
    return out


def test_frames_and_split_rules():
    assert parse_frames("2:10:4") == slice(2, 10, 4) and parse_frames("5") == slice(None, 5)
    assert parse_frames("::3") == slice(None, None, 3) and parse_frames(None) == slice(None)
    for bad in ("a:b", "1:2:0", "1:2:3:4"):
        with pytest.raises(ValueError):
            parse_frames(bad)
    assert split_indices(7, 3) == ([0, 1, 3, 4, 6], [2, 5])
    assert split_indices(3, 0) == ([0, 1, 2], [])


def test_bag_scene_matches_folder_scene(bag, shared_data):
    a = load_scene(bag, holdout_every=2)
    b = load_scene(shared_data / "rgbd" / "7scenes", frames="::20", holdout_every=2)
    assert a.fmt == "bag" and b.fmt == "7scenes" and len(a.views) == len(b.views) == 5
    assert a.heldout == b.heldout == [1, 3]
    for va, vb in zip(a.views, b.views):
        assert np.array_equal(va.rgb, vb.rgb)
        assert np.allclose(va.T_world_color, vb.T_world_color, atol=1e-6)
        assert np.array_equal(np.isnan(va.depth), np.isnan(vb.depth))
        assert va.color_camera.fx == 515.0 and va.depth_camera.fx == 585.0
        # unregistered 7-Scenes colour camera: 2.5 cm from the depth camera
        gap = np.linalg.norm(va.T_world_color[:3, 3] - va.T_world_depth[:3, 3])
        assert gap == pytest.approx(0.025, abs=1e-6)


def test_commands_end_to_end(bag, shared_data, tmp_path, capsys):
    scene = tmp_path / "s.pt"
    rc = main(["lift", str(bag), "--format", "bag", "--holdout-every", "2", *RANDOM,
               "--iterations", "6", "--width", "48", "-o", str(scene), "--json"])
    r = json.loads(capsys.readouterr().out)
    assert rc == 0 and r["iterations"] == 6 and r["num_gaussians"] > 0
    assert set(r) >= {"psnr_heldout", "feature_l1_heldout", "num_gaussians", "seconds"}
    ft = tmp_path / "ft.safetensors"
    assert main(["finetune", str(scene), *RANDOM, "-o", str(ft), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"] >= 1
    assert main(["finetune", str(scene), *RANDOM, "-o", str(tmp_path / "no.st"),
                 "--resume"]) != 0  # no checkpoint to resume from
    assert "no checkpoint" in capsys.readouterr().err
    seven = str(shared_data / "rgbd" / "7scenes")
    out = tmp_path / "corr.json"
    assert main(["eval-correspondence", seven, "--frames", "0:100:10", "--holdout-every", "2",
                 "--pairs", "3", *RANDOM, "--finetuned", str(ft), "--json",
                 "--out", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads(out.read_text())
    assert set(r["recall@10px"]) == {"original", "finetuned", "concat"} and 1 <= r["pairs"] <= 3
    assert r["backbone"]["pretrained"] is False and r["data"]["format"] == "7scenes"
    assert main(["eval-depth-probe", seven, "--frames", "0:100:10", "--holdout-every", "5",
                 *RANDOM, "--finetuned", str(ft), "--steps", "5", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d["depth"]) == {"original", "finetuned", "concat"}
    assert all(v["rmse"] > 0 for v in d["depth"].values())


def test_bad_input(shared_data, tmp_path, capsys):
    seven = str(shared_data / "rgbd" / "7scenes")
    with pytest.raises(SystemExit):  # weights must be chosen explicitly
        main(["lift", seven, "--backbone", "vit_tiny_test", "-o", str(tmp_path / "x.pt")])
    (tmp_path / "exists.pt").write_text("")
    assert main(["lift", seven, *RANDOM, "-o", str(tmp_path / "exists.pt")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["lift", seven, "--frames", "1:x", *RANDOM, "-o", str(tmp_path / "y.pt")]) == 2
    assert main(["lift", str(tmp_path), *RANDOM, "-o", str(tmp_path / "z.pt")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    assert main(["finetune", str(tmp_path / "exists.pt"), *RANDOM, "-o",
                 str(tmp_path / "f.st")]) == 2

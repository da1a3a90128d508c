"""`fit3d-ros map | locate | eval-map` on the demo room bag (real rosbag2 file)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fit3d_ros.cli.main import main
from fit3d_ros.demo import scene as S
from fit3d_ros.mapping import load_map
from fit3d_ros.mapping.bags import bag_classes, ground_truth
from fit3d_ros.mapping.io import read_ply
import torch
from fit3d_ros.models import SpUNet, SpUNetConfig
from fit3d_ros.models.checkpoint import Checkpoint, Preprocessing, save_checkpoint


@pytest.fixture(scope="module")
def map_dir(room_bag, tmp_path_factory):
    out = tmp_path_factory.mktemp("map")
    assert main(["map", str(room_bag), "--labels-from-bag", "--out", str(out),
                 "--voxel", "0.1", "--json"]) == 0
    return out


def test_map_writes_npz_ply_report(map_dir, capsys):
    vmap = load_map(map_dir)
    assert vmap.cfg.frame == "map" and vmap.class_names == list(S.CLASSES)
    cols = read_ply(map_dir / "map.ply")  # the own writer (open3d is not installed here)
    assert len(cols["x"]) == len(vmap)
    html = (map_dir / "report.html").read_text()
    assert "top_view.png" in html and "table" in html and (map_dir / "top_view.png").stat().st_size


def test_locate_json(map_dir, capsys):
    capsys.readouterr()
    assert main(["locate", str(map_dir), "--class", "table", "--json"]) == 0
    (inst,) = json.loads(capsys.readouterr().out)["instances"]
    assert set(inst) >= {"class", "centroid", "box_min", "box_max", "points", "voxels",
                         "confidence"}
    lo, hi = S.BOXES[S.CLASSES.index("table")]
    np.testing.assert_allclose(inst["box_min"], lo, atol=0.03)
    np.testing.assert_allclose(inst["box_max"], hi, atol=0.03)
    assert inst["class"] == "table"


def test_locate_unknown_class_lists_known(map_dir, capsys):
    assert main(["locate", str(map_dir), "--class", "car"]) == 2
    err = capsys.readouterr().err
    assert "unknown class 'car'" in err and "'cabinet'" in err and "'ball'" in err


@pytest.mark.slow  # eval-map's exact nearest neighbours: ~70k x 18k distances (15-25 s)
def test_eval_map_against_brute_force(map_dir, room_bag, capsys):
    capsys.readouterr()
    assert main(["eval-map", str(map_dir), "--gt", str(room_bag), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    # reference: nearest map point for every ground-truth point by brute force in numpy
    vmap = load_map(map_dir)
    gt, lab, _ = ground_truth(room_bag, "map", bag_classes([room_bag], None))
    pts = vmap.s.mean[:len(vmap)].numpy().astype(np.float64)
    pred = vmap.labels().numpy()
    sub = np.random.default_rng(0).choice(len(gt), 500, replace=False)
    d2 = ((gt[sub, None, :].astype(np.float64) - pts[None]) ** 2).sum(-1)
    assert got["points"] == len(gt)
    # accuracy on a subsample agrees with the full figure; all-class distances are exact
    acc = (pred[d2.argmin(1)] == lab[sub]).mean()
    assert abs(acc - got["accuracy"]) < 0.02 and got["accuracy"] > 0.98
    assert got["miou"] > 0.95
    assert got["completeness"]["median"] == pytest.approx(np.median(np.sqrt(d2.min(1))), abs=3e-3)
    ball = S.CLASSES.index("ball")
    gt_ball, map_ball = gt[lab == ball].astype(np.float64), pts[pred == ball]  # all of them
    ref = np.sqrt(((gt_ball[:, None] - map_ball[None]) ** 2).sum(-1).min(1))
    assert got["per_class_completeness"]["ball"]["mean"] == pytest.approx(ref.mean(), abs=1e-4)
    assert got["per_class_completeness"]["ball"]["median"] == pytest.approx(np.median(ref),
                                                                            abs=1e-4)


def test_map_without_transforms_is_a_clear_error(room_bag, tmp_path, capsys):
    assert main(["map", str(room_bag), "--labels-from-bag", "--out", str(tmp_path),
                 "--frame", "odom"]) == 2
    err = capsys.readouterr().err
    assert "6 without transform" in err and "odom" in err


def test_map_from_checkpoint_replays_the_segmenter(room_bag, tmp_path, capsys):
    """`--checkpoint`: clouds segmented by a (random, image-free) checkpoint via replay;
    the map's classes and label histogram come from its output."""
    torch.manual_seed(0)
    cfg = SpUNetConfig.tiny(in_channels=4, num_classes=len(S.CLASSES))
    save_checkpoint(tmp_path / "seg.ckpt", Checkpoint(
        "segmentation", cfg, SpUNet(cfg).state_dict(),
        Preprocessing(cfg.voxel_size, ("xyz", "intensity"), None),
        bag_classes([room_bag], None)))
    out = tmp_path / "map"
    assert main(["map", str(room_bag), "--checkpoint", str(tmp_path / "seg.ckpt"),
                 "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["integrated"] == summary["clouds"] == 6
    vmap = load_map(out)
    assert vmap.class_names == list(S.CLASSES)
    assert int(vmap.s.hits[:len(vmap)].sum()) == summary["points"] > 60_000
    conf = vmap.confidence().numpy()
    assert np.all((conf > 0) & (conf <= 1)) and conf.max() < 1  # softmax, not given labels

"""``fit3d-ros overlay``: calibration overlays from real KITTI and nuScenes bags."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fit3d_ros.cli.main import main
from fit3d_ros.cli.overlay import draw_points, jet
from fit3d_ros.logs.convert import kitti_to_bag, nuscenes_to_bag, semantickitti_to_bag


@pytest.fixture(scope="module")
def kitti_bag(shared_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bags") / "kitti.mcap"
    kitti_to_bag(shared_data / "kitti/object", out)
    return out


def _kitti_reference(root: Path, idx: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Velodyne points and their pixels by the KITTI devkit formula P2·R0·Tr·x, visible mask."""
    calib = {}
    for line in (root / "kitti/object/calib" / f"{idx}.txt").read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            calib[k] = np.array(v.split(), dtype=np.float64)
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    Tr = np.vstack([calib["Tr_velo_to_cam"].reshape(3, 4), [0, 0, 0, 1]])
    pts = np.fromfile(root / "kitti/object/velodyne" / f"{idx}.bin", np.float32).reshape(-1, 4)
    x = (calib["P2"].reshape(3, 4) @ R0 @ Tr @ np.c_[pts[:, :3], np.ones(len(pts))].T).T
    uv = x[:, :2] / x[:, 2:3]
    w, h = Image.open(root / "kitti/object/image_2" / f"{idx}.png").size
    vis = (x[:, 2] > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < w) & (uv[:, 1] >= 0) & (uv[:, 1] < h)
    return uv, vis, (w, h)


def test_kitti_overlay_matches_devkit_projection(kitti_bag, shared_data, tmp_path, capsys):
    out = tmp_path / "ov"
    assert main(["overlay", str(kitti_bag), "--frames", "2", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    refs = [_kitti_reference(shared_data, i) for i in ("000000", "000001")]
    n = sum(len(r[1]) for r in refs)
    seen = sum(int(r[1].sum()) for r in refs)
    assert summary["points"] == n and summary["frames"] == 2
    assert summary["visible_fraction"] == pytest.approx(seen / n, abs=1e-4)
    assert summary["per_camera"]["/camera/color/image_raw"] == pytest.approx(seen / n, abs=1e-4)
    assert len(summary["images"]) == 2 and not summary["skipped"]
    # the PNG differs from the camera image only around the projected points
    uv, vis, (w, h) = refs[0]
    png = np.asarray(Image.open(summary["images"][0]))
    original = np.asarray(Image.open(shared_data / "kitti/object/image_2/000000.png").convert("RGB"))
    assert png.shape == (h, w, 3)
    near = np.zeros((h, w), dtype=bool)
    px = np.floor(uv[vis]).astype(int)
    for dv in range(-2, 3):
        for du in range(-2, 3):
            near[np.clip(px[:, 1] + dv, 0, h - 1), np.clip(px[:, 0] + du, 0, w - 1)] = True
    changed = np.any(png != original, axis=2)
    assert not changed[~near].any()
    assert changed[px[:, 1], px[:, 0]].mean() > 0.95


def test_nuscenes_overlay_six_cameras(shared_data, tmp_path, capsys):
    bag = tmp_path / "nusc.mcap"
    nuscenes_to_bag(shared_data / "nuscenes", bag)
    assert main(["overlay", str(bag), "--out", str(tmp_path / "ov"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    meta = json.loads((shared_data / "nuscenes/sample.json").read_text())
    pts = np.fromfile(shared_data / "nuscenes" / meta["lidar"]["file"], np.float32).reshape(-1, 5)
    seen = np.zeros(len(pts), dtype=bool)
    for name, cam in meta["cameras"].items():  # reference: sample.json's lidar2cam and K
        q = (np.array(cam["lidar2cam"]) @ np.c_[pts[:, :3], np.ones(len(pts))].T).T[:, :3]
        x = (np.array(cam["cam2img"]) @ q.T).T
        with np.errstate(divide="ignore", invalid="ignore"):
            u, v = x[:, 0] / x[:, 2], x[:, 1] / x[:, 2]
        vis = (q[:, 2] > 0) & (u >= 0) & (u < 1600) & (v >= 0) & (v < 900)
        seen |= vis
        topic = f"/{name.lower()}/image_raw"
        assert summary["per_camera"][topic] == pytest.approx(vis.mean(), abs=2e-3), topic
    assert summary["points"] == len(pts)
    assert summary["visible_fraction"] == pytest.approx(seen.mean(), abs=2e-3)
    assert len(summary["images"]) == 6


def test_text_output_and_errors(kitti_bag, shared_data, tmp_path, capsys):
    assert main(["overlay", str(kitti_bag), "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "% visible in at least one camera" in text and "/camera/color/image_raw" in text
    assert main(["overlay", str(kitti_bag), "--frames", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--frames" in capsys.readouterr().err
    assert main(["overlay", str(kitti_bag), "--cloud-topic", "/nope", "--out",
                 str(tmp_path / "c")]) == 2
    assert "/velodyne_points" in capsys.readouterr().err
    bare = tmp_path / "sk.mcap"
    semantickitti_to_bag(shared_data / "semantickitti", bare)
    assert main(["overlay", str(bare), "--out", str(tmp_path / "d")]) == 2
    assert "CameraInfo" in capsys.readouterr().err


def test_drawing_helpers():
    assert jet(np.array([0.0]))[0].tolist() == [0, 0, 127]      # dark blue: near
    assert jet(np.array([1.0]))[0].tolist() == [127, 0, 0]      # dark red: far
    img = np.zeros((5, 6, 3), dtype=np.uint8)
    out = draw_points(img, np.array([[2.5, 2.2], [2.1, 2.9]]), np.array([50.0, 1.0]), 60.0,
                      radius=0)
    assert out[2, 2].tolist() == jet(np.array([1 / 60]))[0].tolist()  # the near point wins
    assert (out.sum(axis=2) > 0).sum() == 1 and img.sum() == 0

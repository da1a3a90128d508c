"""The demo main job completes on its procedural scene, and the scene is self-consistent."""
from __future__ import annotations

import json

import numpy as np

from fit3d_ros.demo import scene as S
from fit3d_ros.demo.run import run_demo


def test_scene_lidar_agrees_with_rendered_depth():
    """LiDAR points projected into the camera land on the rendered depth (same geometry)."""
    cfg = S.SceneConfig(width=160, height=120, azimuths=360)
    rng = np.random.default_rng(0)
    pose = S.base_pose(2, cfg)
    cam = S.camera_model(cfg)
    rgb, depth = S.render_camera(pose, cam, rng)
    cloud = S.render_lidar(pose, cfg, 0, rng)
    pts = (S.camera_mount().inverse() @ S.lidar_mount()).apply(cloud.xyz)
    uv, z = cam.project(pts)
    vis = cam.in_image(uv, z)
    assert vis.mean() > 0.05
    ui = uv[vis].astype(int)
    err = np.abs(depth[ui[:, 1], ui[:, 0]] - z[vis])
    assert np.median(err) < 0.05                      # edges differ by a pixel, not more
    assert set(np.unique(cloud.label)) >= {0, 1}      # floor and walls always in view
    assert rgb.dtype == np.uint8 and rgb.std() > 10


def test_demo_runs_end_to_end_and_says_weights_are_random(tmp_path):
    result = run_demo(tmp_path, backbone="vit_tiny_test", random_init=True, frames=4,
                      holdout=1, steps=4, token_budget=64, progress=False)
    assert "RANDOM-INIT" in result["weights"]
    assert 0.0 <= result["heldout_miou"] <= 1.0
    metrics = json.loads((tmp_path / "replay" / "metrics.json").read_text())
    assert metrics["frames_out"] == 1 and "RANDOM-INIT" in metrics["weights"]
    page = (tmp_path / "replay" / "report.html").read_text()
    assert "Random weights" in page and "alt='bev first'" in page and "id='iou'" in page
    assert (tmp_path / "demo.json").is_file() and (tmp_path / "replay" / "outputs.mcap").is_file()

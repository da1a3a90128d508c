"""`perception --map` over real DDS: RGB-D frames of the demo room → ~/map, locate by class
and by a clicked pixel (ViT point features of the same backbone as the clicked feature)."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from fit3d_ros.demo import scene as S
from fit3d_ros.msgs import (
    depth_to_image,
    model_to_camera_info,
    numpy_to_image,
    pointcloud2_to_cloud,
    rclpy_types,
    stamp_to_ns,
)
from fit3d_ros.sensors import Transform

from .fixtures import chroma_checkpoint, chroma_vit_weights
from .rosutil import diagnostic_counts, ros_context, spin_until, start, stop
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import String

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CFG = S.SceneConfig(frames=3, width=160, height=120)
FRAMES = (1, 0)      # the last one sees the ball (clicked in it)
CONF = float(np.exp(5.0) / (np.exp(5.0) + 18))  # chroma_checkpoint: logit 5, 19 classes


def _frames() -> list[tuple[np.ndarray, np.ndarray, Transform]]:
    """(rgb, depth, map <- camera) of each frame, rendered from the scene."""
    cam, rng = S.camera_model(CFG), np.random.default_rng(0)
    out = []
    for i in FRAMES:
        rgb, depth = S.render_camera(S.base_pose(i, CFG), cam, rng)
        out.append((rgb, depth, S.base_pose(i, CFG) @ S.camera_mount()))
    return out


def _ball_pixel(T_map_cam: np.ndarray) -> tuple[float, float]:
    """The pixel of the ball's centre (its ray hits the ball: checked by ray casting)."""
    cam = S.camera_model(CFG)
    pc = np.linalg.inv(T_map_cam) @ np.append(S.BALL[0], 1.0)
    u, v = cam.fx * pc[0] / pc[2] + cam.cx, cam.fy * pc[1] / pc[2] + cam.cy
    d = T_map_cam[:3, :3] @ np.array([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, 1.0])
    _, cls, _ = S._hits(T_map_cam[None, :3, 3], (d / np.linalg.norm(d))[None])
    assert pc[2] > 0 and 0 <= u < cam.width and 0 <= v < cam.height and cls[0] == 5
    return float(u), float(v)


def test_composed_map_locates_by_class_and_by_clicked_pixel(tmp_path, ros_env):
    frames = _frames()
    cam = S.camera_model(CFG)
    ckpt = chroma_checkpoint(tmp_path / "chroma.ckpt",
                             chroma_vit_weights(tmp_path / "chroma.safetensors"))
    extr = tmp_path / "extr.yaml"  # map <- cam_k: one static frame per view (no /tf here)
    extr.write_text(yaml.safe_dump({"transforms": [
        {"parent": "map", "child": f"cam_{k}", "translation": T.translation.tolist(),
         "rotation": T.quat.tolist()} for k, (_, _, T) in enumerate(frames)]}))
    proc = start(["-m", "fit3d_ros.nodes.perception", "--map", "--ros-args",
                  "-p", f"checkpoint:={ckpt}", "-p", "mode:=rgbd", "-p", f"extrinsics_file:={extr}",
                  "-p", "qos:=reliable", "-p", "publish_point_features:=true",
                  "-p", "use_features:=true", "-p", "map_rate_hz:=2.0",
                  "-r", "image:=color/image_raw"], ros_env)
    types = rclpy_types()
    got: dict[str, list] = {"map": [], "result": [], "diag": [], "feat": [], "points": []}
    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe = rclpy.create_node("probe", context=ctx)
            pubs = {t: probe.create_publisher(m, t, 10) for t, m in (
                ("/depth/image_raw", Image), ("/depth/camera_info", CameraInfo),
                ("/color/image_raw", Image), ("/semantic_map_node/locate", String))}
            probe.create_subscription(PointCloud2, "/semantic_map_node/map", got["map"].append, 2)
            probe.create_subscription(String, "/semantic_map_node/locate_result",
                                      got["result"].append, 10)
            probe.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 50)
            probe.create_subscription(Image, "/feature_node/features", got["feat"].append, 5)
            probe.create_subscription(PointCloud2, "/segmentation_node/point_features",
                                      got["points"].append, 5)

            def counts() -> dict[str, int]:
                return diagnostic_counts(got["diag"], "semantic_map_node")

            assert spin_until(ctx, probe, lambda: all(
                p.get_subscription_count() for p in pubs.values()), 120, proc), stop(proc)[-3000:]
            stamps = []
            for k, (rgb, depth, _) in enumerate(frames):
                stamp = time.time_ns()
                stamps.append(stamp)
                pubs["/depth/camera_info"].publish(model_to_camera_info(cam, stamp, f"cam_{k}",
                                                                        types))
                spin_until(ctx, probe, lambda: False, 1.0 if k == 0 else 0.2)  # info first
                pubs["/color/image_raw"].publish(numpy_to_image(rgb, "rgb8", stamp, f"cam_{k}",
                                                                types))
                pubs["/depth/image_raw"].publish(depth_to_image(depth, stamp, f"cam_{k}", types))
                assert spin_until(ctx, probe, lambda k=k: counts().get(
                    "clouds_integrated", 0) == k + 1, 120, proc), (counts(), stop(proc)[-3000:])
            # the clicked image's features (the map node keeps the newest per topic)
            assert spin_until(ctx, probe, lambda: any(
                stamp_to_ns(m.header.stamp) == stamps[-1] for m in got["feat"]), 60, proc)
            got["map"].clear()
            u, v = _ball_pixel(frames[-1][2].matrix)
            pubs["/semantic_map_node/locate"].publish(String(data=json.dumps(
                {"class": "car", "min_points": 1})))
            pubs["/semantic_map_node/locate"].publish(String(data=json.dumps(
                {"image_topic": "feature_node/features", "u": u, "v": v, "top_k": 3,
                 "min_similarity": 0.98})))
            assert spin_until(ctx, probe, lambda: len(got["result"]) >= 2 and got["map"],
                              60, proc), (got["result"], stop(proc)[-3000:])
    finally:
        log = stop(proc)
    c = counts()
    assert c.get("integrated_without_features", 0) == 0, (c, log[-3000:])
    # ~/point_features: the ViT's 48 channels per point, every depth point seen (visible 1)
    feats = pointcloud2_to_cloud(got["points"][-1])
    assert feats.feature.shape == (CFG.width * CFG.height, 48)
    assert (feats.extra["visible"] == 1).all() and np.abs(feats.feature).sum(1).min() > 0
    # reference: the frames' depth back-projected with the known poses (numpy)
    pts = np.concatenate([cam.backproject(d)[0] @ T.rotation.T + T.translation
                          for _, d, T in frames])
    voxels = len(np.unique(np.floor(pts / 0.1).astype(np.int64), axis=0))
    cloud = pointcloud2_to_cloud(got["map"][-1])
    assert cloud.frame_id == "map" and abs(len(cloud) - voxels) <= 0.02 * voxels
    assert (cloud.label == 0).all()  # every point "car" (the head's bias)
    np.testing.assert_allclose(cloud.extra["confidence"], CONF, atol=1e-5)

    by_class, by_pixel = [json.loads(m.data) for m in got["result"]]
    assert by_class["request"]["class"] == "car" and "error" not in by_class, by_class
    inst = by_class["instances"]
    assert sum(i["points"] for i in inst) == len(pts)
    np.testing.assert_allclose(np.min([i["box_min"] for i in inst], 0), pts.min(0), atol=1e-3)
    np.testing.assert_allclose(np.max([i["box_max"] for i in inst], 0), pts.max(0), atol=1e-3)
    lo, hi = S.BOXES[S.CLASSES.index("table")]  # the table top floats: its own instance
    assert any(np.allclose(i["box_min"], lo, atol=0.05) and np.allclose(i["box_max"], hi, atol=0.05)
               for i in inst), [(i["box_min"], i["box_max"]) for i in inst]
    assert all(i["confidence"] == pytest.approx(CONF, abs=1e-5) for i in inst)

    # the clicked pixel is on the ball: the best voxels and the largest instance are there
    assert "error" not in by_pixel, by_pixel
    centre, r = np.asarray(S.BALL[0]), S.BALL[1]
    for vox in by_pixel["voxels"]:
        assert abs(np.linalg.norm(np.asarray(vox["xyz"]) - centre) - r) < 0.1, vox
    ball = by_pixel["instances"][0]
    assert np.linalg.norm(np.asarray(ball["centroid"]) - centre) < r, ball
    assert np.all(np.asarray(ball["box_min"]) >= centre - r - 0.05), ball
    assert np.all(np.asarray(ball["box_max"]) <= centre + r + 0.05), ball
    assert ball["points"] >= 100 and ball["similarity"] >= 0.98


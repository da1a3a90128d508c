"""`fit3d-ros demo`: procedural scene → bags → tiny DITR training → replay → report.

Design note: the main job on an embedded default, with no data and no downloads. It
renders the procedural room (`demo.scene`) into two rosbag2 logs (training frames and
held-out frames, with CameraInfo, TF, depth and labelled LiDAR), trains the tiny DITR
segmentation config on the first through the same code as `fit3d-ros train-seg`, and
replays the second through the node pipeline (`fit3d-ros replay`), which writes
outputs.mcap, metrics.json and report.html. The backbone is the pretrained one when its
weights are available (hub cache or --weights), else a seeded random ViT, said loudly.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fit3d_ros.logs.bag import BagWriter
from fit3d_ros.logs.convert import CAMERA_INFO, IMAGE, POINTCLOUD2, BagOut
from fit3d_ros.models import WeightsUnavailableError
from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.models.backbones import weights_source
from fit3d_ros.models.classes import ClassMap, write_sidecar
from fit3d_ros.msgs import cloud_to_pointcloud2, depth_to_image, model_to_camera_info, rosbags_types
from fit3d_ros.pipeline.replay import ReplayConfig, replay_bag
from fit3d_ros.threads import cpu_threads
from fit3d_ros.training.ditr.config import SegTrainConfig
from fit3d_ros.training.ditr.sources import load_dataset
from fit3d_ros.training.ditr.train import train_segmentation

from . import scene as S

TOPICS = {"image": "/camera/color/image_raw", "info": "/camera/color/camera_info",
          "depth": "/camera/depth/image_raw", "depth_info": "/camera/depth/camera_info",
          "cloud": "/points"}
T0_NS, PERIOD_NS = 1_700_000_000_000_000_000, 200_000_000


def demo_classes():
    return ClassMap(S.CLASSES, tuple(range(len(S.CLASSES))), S.PALETTE, name="demo_room")


def write_scene_bag(path: Path, frames: range, cfg: S.SceneConfig) -> Path:
    """Render `frames` of the procedural scene into a bag (+ class sidecar)."""
    types, cam = rosbags_types(), S.camera_model(cfg)
    rng = np.random.default_rng(cfg.seed)
    with BagWriter(path, overwrite=True) as writer:
        out = BagOut(writer, types)
        out.tf([S.camera_mount(), S.lidar_mount()], T0_NS, static=True)
        for i in frames:
            stamp = T0_NS + i * PERIOD_NS
            pose = S.base_pose(i, cfg)
            pose.stamp = stamp
            out.tf([pose], stamp)
            rgb, depth = S.render_camera(pose, cam, rng)
            out.camera(TOPICS["image"], TOPICS["info"], cam, rgb, stamp)
            writer.write(TOPICS["depth_info"], CAMERA_INFO, stamp,
                         model_to_camera_info(cam, stamp, cam.frame_id, types))
            writer.write(TOPICS["depth"], IMAGE, stamp,
                         depth_to_image(depth, stamp, cam.frame_id, types))
            cloud = S.render_lidar(pose, cfg, stamp, rng)
            writer.write(TOPICS["cloud"], POINTCLOUD2, stamp,
                         cloud_to_pointcloud2(cloud, types))
    write_sidecar(path, demo_classes())
    return path


def check_weights(name: str, weights: str | None) -> None:
    """Raise as `build_backbone` would when `name`'s weights are missing, without building
    the network (``WeightsUnavailableError`` offline, ``FileNotFoundError`` for a file)."""
    source = weights_source(name, weights=weights)[2]
    if weights is not None and not source.is_file():  # as models.weights.read_state_dict says
        raise FileNotFoundError(f"weights file not found: {source}")


def choose_backbone(name: str, weights: str | None, random_init: bool) -> tuple[bool, str]:
    """(random_init, note): pretrained when its weights are available, else random + warning."""
    if random_init:
        return True, f"RANDOM-INIT {name} (asked for): no pretrained weights"

    try:
        check_weights(name, weights)
        return False, f"pretrained {name} ({weights or 'hub cache'})"
    except WeightsUnavailableError as exc:
        print(f"WARNING: {exc}\nWARNING: the demo continues with a RANDOMLY INITIALISED "
              f"{name}: features and labels show the pipeline working, not a trained "
              "model.", file=sys.stderr)
        return True, f"RANDOM-INIT {name} (pretrained weights unavailable offline)"


def run_demo(out_dir: str | Path, *, backbone: str = "dinov2_small", weights: str | None = None,
             random_init: bool = False, frames: int = 12, holdout: int = 4, steps: int = 150,
             token_budget: int = 256, progress: bool = True) -> dict[str, Any]:
    """The whole demo; returns the replay metrics plus the training summary."""
    if not 0 < holdout < frames:
        raise ValueError(f"need 0 < holdout ({holdout}) < frames ({frames})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = S.SceneConfig(frames=frames)
    train_bag = write_scene_bag(out / "demo_train.mcap", range(frames - holdout), cfg)
    eval_bag = write_scene_bag(out / "demo_eval.mcap", range(frames - holdout, frames), cfg)
    is_random, note = choose_backbone(backbone, weights, random_init)
    spec = BackboneSpec(name=backbone, weights=weights, random_init=is_random,
                        token_budget=token_budget)
    ckpt = out / "demo_seg.ckpt"
    with cpu_threads(1):  # tiny sparse U-Net: one thread is much faster (fit3d_ros.threads)
        summary = train_segmentation(
            [load_dataset(train_bag)], SegTrainConfig.tiny(steps=steps, voxel_size=0.1,
                                                           input_features=("xyz", "intensity")),
            ckpt, inject=spec, cache_dir=out / "feature_cache", progress=progress)
    metrics = replay_bag(eval_bag, out / "replay", ReplayConfig(checkpoint=str(ckpt)),
                         progress=progress)
    result = {"weights": note, "train_frames": frames - holdout, "eval_frames": holdout,
              "train_steps": steps, "heldout_miou": metrics.get("miou"),
              "heldout_accuracy": metrics.get("accuracy"),
              "visible_miou": metrics.get("segmentation", {}).get("visible_miou"),
              "report": str(out / "replay" / "report.html"),
              "seconds": round(time.perf_counter() - t0, 1),
              "train_summary": {k: v for k, v in summary.items() if k != "history"}}
    (out / "demo.json").write_text(json.dumps(result, indent=2, default=str))
    return result

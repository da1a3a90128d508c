"""Scenes prepared for SnD: per view the ViT image, the render-size colour, depth, camera,
segment labels and pixel-aligned Gaussians, all as tensors on the training device.

Design note: everything that depends only on the log is computed once per scene here
(numpy only at this boundary: the scene readers' arrays); a training step then only
indexes these tensors. Depth is re-projected into the colour camera at the render size
(`fit3d.scenes.depth_in_color`) so that Gaussians, teacher features and masks are
pixel-aligned with the colour image the ViT sees (7-Scenes colour and depth are not
registered). Views without any valid depth are kept as targets but never as contexts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from fit3d_ros.training.fit3d.scenes import (
    Scene,
    depth_in_color,
    render_size,
    resize_rgb,
)
from fit3d_ros.training.snd.config import SnDConfig
from fit3d_ros.training.snd.gaussians import PixelGaussians, pixel_gaussians
from fit3d_ros.training.snd.masks import (
    discontinuity_masks,
    folder_masks,
    resize_labels,
    topic_masks,
)
from fit3d_ros.training.snd.sampling import Triple, select_triples


@dataclass
class PreparedScene:
    """One scene's per-view tensors (index = position in `scene.views`) and its triples."""

    scene: Scene
    images: Tensor               # (V,Hi,Wi,3) uint8: the ViTs' input source
    rgb: Tensor                  # (V,H,W,3) float in [0,1] at the render size
    depth: Tensor                # (V,H,W) colour-camera depth (m), NaN = unknown
    Ks: Tensor                   # (V,3,3) render-size colour intrinsics
    viewmats: Tensor             # (V,4,4) world -> colour camera
    labels: Tensor               # (V,H,W) segment ids
    gaussians: list[PixelGaussians]
    triples: list[Triple]

    @property
    def size(self) -> tuple[int, int]:
        """Render (width, height)."""
        return int(self.rgb.shape[2]), int(self.rgb.shape[1])

    @property
    def usable(self) -> set[int]:
        return {i for i, g in enumerate(self.gaussians) if len(g) > 0}


def prepare_scene(scene: Scene, cfg: SnDConfig, device: str | torch.device = "cpu",
                  masks: str | Path | None = None, mask_topic: str | None = None
                  ) -> PreparedScene:
    """Tensors, masks, Gaussians and training triples of `scene` (see the module note)."""
    views = scene.views
    cam = views[0].color_camera
    w, h = render_size(cam, cfg.render_width)
    wi, hi = render_size(cam, cfg.image_width)
    images = torch.stack([(resize_rgb(v.rgb, wi, hi) * 255).round().to(torch.uint8)
                          for v in views])
    rgb = torch.stack([resize_rgb(v.rgb, w, h) for v in views])
    depth = torch.stack([torch.from_numpy(depth_in_color(v, w)) for v in views])
    if not torch.isfinite(depth).any():
        raise ValueError(f"{scene.source}: no valid depth in any view (SnD builds its "
                         "Gaussians from depth)")
    Ks = torch.stack([torch.from_numpy(v.color_camera.scaled(w, h).K) for v in views]).float()
    vms = torch.stack([torch.from_numpy(v.viewmat) for v in views]).float()
    c2w = torch.stack([torch.from_numpy(v.T_world_color) for v in views]).float()
    if masks is not None or mask_topic is not None:
        given = (folder_masks(masks, [v.index for v in views]) if masks is not None else
                 topic_masks(scene.source, mask_topic, [v.stamp for v in views]))
        labels = torch.stack([resize_labels(m, w, h) for m in given])
    else:
        labels = torch.stack([discontinuity_masks(rgb[i], depth[i], cfg.depth_edge,
                                                  cfg.color_edge, cfg.min_segment)
                              for i in range(len(views))])
    gs = [pixel_gaussians(depth[i], rgb[i], Ks[i], c2w[i], scale_mode=cfg.scale_mode,
                          footprint=cfg.footprint, max_stretch=cfg.max_stretch,
                          opacity_mode=cfg.opacity_mode, opacity=cfg.opacity,
                          depth_edge=cfg.depth_edge).to(device)
          for i in range(len(views))]
    usable = {i for i, g in enumerate(gs) if len(g) > 0}
    triples = select_triples(scene, cfg.min_baseline, cfg.max_baseline, cfg.min_overlap,
                             cfg.max_span, usable)
    return PreparedScene(scene, images.to(device), rgb.to(device), depth.to(device),
                         Ks.to(device), vms.to(device), labels.to(device), gs, triples)


def scene_id(scene: Scene) -> dict:
    """What identifies a scene's selection in checkpoints and results."""
    return {"source": str(Path(scene.source).resolve()), "format": scene.fmt,
            "frames": [v.index for v in scene.views], "train": list(scene.train),
            "heldout": list(scene.heldout)}


"""Are SnD's rendered targets 3D-consistent? Correspondence recall, teacher vs F_rendered.

Design note: on each scene's held-out views (never sampled in training) the Probe3D
recall of `fit3d.correspondence` is computed twice for the same pairs: with the teacher's
own patch maps of the two views, and with F_rendered of each view rendered (at the render
size) from its nearest training views before and after it (`sampling.contexts_for`).
Pixels the contexts do not cover are zero. Scenes are pooled by their match counts.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fit3d_ros.models.backbones import Backbone
from fit3d_ros.training.fit3d.config import EvalConfig
from fit3d_ros.training.fit3d.correspondence import correspondence_recall, select_pairs
from fit3d_ros.training.snd.config import SnDConfig
from fit3d_ros.training.snd.data import PreparedScene
from fit3d_ros.training.snd.sampling import contexts_for
from fit3d_ros.training.snd.targets import render_from, teacher_patches

NAMES = ("teacher", "rendered")


def scene_recall(ps: PreparedScene, teacher: Backbone, cfg: SnDConfig, ecfg: EvalConfig,
                 backend: str = "auto") -> dict[str, Any] | None:
    """`correspondence_recall` of the teacher / rendered maps on one scene's held-out
    pairs, or None when it has fewer than 2 held-out views or no overlapping pair."""
    held = list(ps.scene.heldout)
    views = [ps.scene.views[i] for i in held]
    if len(views) < 2:
        return None
    pairs = select_pairs(views, ecfg.pairs, ecfg.point_stride, ecfg.min_overlap,
                         ecfg.depth_tolerance)
    if not pairs:
        return None
    used = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
    maps: dict[str, list[torch.Tensor]] = {n: [torch.zeros(1, 1, 1)] * len(views)
                                           for n in NAMES}
    patches = teacher_patches(teacher, ps.images[[held[k] for k in used]], cfg.token_budget)
    for k, p in zip(used, patches):
        maps["teacher"][k] = p.cpu()
        f, alpha = render_from(ps, teacher, contexts_for(ps.scene, held[k], ps.usable),
                               held[k], cfg, backend)
        maps["rendered"][k] = (f * (alpha > cfg.min_alpha)).cpu()
    return correspondence_recall(views, maps, pairs, ecfg.point_stride, ecfg.ratio,
                                 ecfg.threshold_px, ecfg.depth_tolerance)


def rendered_recall(scenes: Sequence[PreparedScene], teacher: Backbone, cfg: SnDConfig,
                    ecfg: EvalConfig, backend: str = "auto") -> dict[str, Any]:
    """{"recall@…px": {"teacher", "rendered"}, "pairs", "matches"} pooled over scenes
    (recalls None when no scene has held-out pairs)."""
    key = f"recall@{ecfg.threshold_px:g}px"
    correct = {n: 0.0 for n in NAMES}
    matches = {n: 0 for n in NAMES}
    pairs = 0
    for ps in scenes:
        r = scene_recall(ps, teacher, cfg, ecfg, backend)
        if r is None:
            continue
        pairs += r["pairs"]
        for n in NAMES:
            matches[n] += r["matches"][n]
            correct[n] += (r[key][n] or 0.0) * r["matches"][n]
    rec = {n: (correct[n] / matches[n] if matches[n] else None) for n in NAMES}
    return {key: rec, "pairs": pairs, "matches": matches}

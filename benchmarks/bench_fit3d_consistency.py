"""Where does FiT3D's 3D consistency go? Lifted scene vs teacher vs fine-tuned students.

Usage: ``python benchmarks/bench_fit3d_consistency.py SCENE_FILE [FINETUNED ...]
[--frames 0:100:2 --holdout-every 5] [--unseen 1:100:2] [--pairs 60] [--json]``

On the lifted scene's held-out 7-Scenes views it scores, side by side in one run, the
correspondence recall @10 px (mutual NN + ratio test, `training.fit3d.correspondence`) of the
teacher ("original"), each fine-tuned student, and the scene's own rendered features
``F_high = d(r_feat(G, P))`` (at render resolution and resized to the token grid). With
``--unseen`` it also scores the teacher and students on frames the lift never saw.
Besides recall it prints, per model, plain nearest-neighbour accuracy (every point, no
selection) and the mean cosine at the true partner vs the mean cosine to all points, to
tell "more consistent" from "less discriminative", and Probe3D's own ranking (a fixed
number of the most distinctive matches per pair). The teacher is the seeded random ViT.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fit3d_ros.models.backbone_spec import BackboneSpec
from fit3d_ros.training.fit3d.config import EvalConfig
from fit3d_ros.training.fit3d.correspondence import (
    covisible_points,
    project_to_color,
    sample_features,
    score_matches,
    select_pairs,
)
from fit3d_ros.training.fit3d.scene_file import load_scene_file
from fit3d_ros.training.fit3d.scenes import load_scene
from fit3d_ros.training.fit3d.vit_features import build_spec_backbone, extract

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FIT3D_ROS_DATA", ROOT.parent / "shared" / "data"))


def score(views, maps: dict, pairs, cfg, num_corr: int = 250) -> dict:
    """Recall (mutual NN + ratio test, EvalConfig `cfg` as in eval-correspondence), NN
    accuracy, cosine statistics, and Probe3D's fixed-count variant: the `num_corr` NN
    matches per pair with the highest ratio-test weight 1 - d1/d2 (cosine distances), all
    or mutual ones only."""
    acc = {n: np.zeros(4) for n in maps}
    extra = {n: {"topk": np.zeros(2), "topk_mutual": np.zeros(2)} for n in maps}  # correct, proposed, nn correct, nn total
    cos = {n: ([], []) for n in maps}
    for i, j, _, _ in pairs:
        va, vb = views[i], views[j]
        pa, pb = covisible_points(va, vb, cfg.point_stride, cfg.depth_tolerance)
        uv_true, _ = project_to_color(vb, pa.xyz)
        d2 = ((uv_true[:, None, :] - pb.uv[None]) ** 2).sum(-1)
        partner = d2.argmin(1)
        near = d2[np.arange(len(partner)), partner] < 16  # a b point within 4 px
        for name, m in maps.items():
            fa = F.normalize(sample_features(m[i], pa.uv, *va.color_camera.size).double(), dim=1)
            fb = F.normalize(sample_features(m[j], pb.uv, *vb.color_camera.size).double(), dim=1)
            c, p = score_matches(pa, pb, vb, fa, fb, cfg.ratio, cfg.threshold_px)
            sim = (fa @ fb.T).numpy()
            err = np.linalg.norm(uv_true - pb.uv[sim.argmax(1)], axis=1)
            acc[name] += (c, p, (err < cfg.threshold_px).sum(), len(err))
            top2 = torch.from_numpy(sim).topk(2, dim=1)
            dist = (1 - top2.values).clamp_min(1e-9)
            weight = 1 - dist[:, 0] / dist[:, 1]
            nn_ab = top2.indices[:, 0].numpy()
            mutual = torch.from_numpy(sim).argmax(0).numpy()[nn_ab] == np.arange(len(nn_ab))
            for tag, cand in (("topk", np.ones(len(nn_ab), bool)), ("topk_mutual", mutual)):
                w = weight.numpy().copy(); w[~cand] = -np.inf
                k = min(num_corr, int(cand.sum()))
                pick = np.argsort(-w)[:k]
                extra[name][tag] += ((err[pick] < cfg.threshold_px).sum(), k)
            cos[name][0].append(sim[np.arange(len(partner)), partner][near])
            cos[name][1].append(sim.mean(1)[near])
    return {n: {"recall@10px": a[0] / max(a[1], 1), "matches": int(a[1]),
                "nn_accuracy@10px": a[2] / max(a[3], 1),
                "cos_true_partner": float(np.concatenate(cos[n][0]).mean()),
                "cos_mean": float(np.concatenate(cos[n][1]).mean()),
                **{f"{t}_recall": float(v[0] / max(v[1], 1)) for t, v in extra[n].items()},
                **{f"{t}_n": int(v[1]) for t, v in extra[n].items()}} for n, a in acc.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scene_file")
    p.add_argument("finetuned", nargs="*")
    p.add_argument("--data", default=str(DATA / "rgbd" / "7scenes"))
    p.add_argument("--frames", default="0:100:2", help="the lift's --frames")
    p.add_argument("--holdout-every", type=int, default=5, help="the lift's --holdout-every")
    p.add_argument("--unseen", default="1:100:2", help="frames the lift never saw ('' = skip)")
    p.add_argument("--pairs", type=int, default=60)
    p.add_argument("--num-corr", type=int, default=250, help="Probe3D top-k per pair (its "
                   "1000 of 160x120 depth points, scaled to our 80x60 grid)")
    p.add_argument("--token-budget", type=int, default=192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = BackboneSpec(name="dinov2_small", random_init=True, token_budget=args.token_budget)
    cfg = EvalConfig.tiny(token_budget=args.token_budget, pairs=args.pairs)
    fs = load_scene_file(args.scene_file)
    out: dict = {"scene_file": args.scene_file, "token_budget": args.token_budget}

    def models(views) -> dict:
        """Patch maps of the teacher ("original", extracted once) and of each student."""
        images = [v.rgb for v in views]
        maps = {"original": extract(build_spec_backbone(spec), images, args.token_budget)[0]}
        for f in args.finetuned:
            maps[Path(f).name] = extract(build_spec_backbone(spec, weights=f), images,
                                         args.token_budget)[0]
        return maps

    scene = load_scene(args.data, frames=args.frames, holdout_every=args.holdout_every)
    views = scene.subset("heldout")
    held = [i for i in range(len(fs.train)) if not fs.train[i]]
    if [fs.meta["frames"][i] for i in held] != [v.index for v in views]:
        raise SystemExit("--frames/--holdout-every do not match the scene file's views")
    maps = models(views)
    grid = maps["original"][0].shape[1:]
    with torch.no_grad():
        full = [fs.render_f_high(i) for i in held]
    maps["rendered F_high (render size)"] = full
    maps["rendered F_high (token grid)"] = [F.interpolate(
        f[None], size=grid, mode="bilinear", antialias=True, align_corners=False)[0]
        for f in full]
    pairs = select_pairs(views, cfg.pairs, cfg.point_stride, cfg.min_overlap,
                         cfg.depth_tolerance)
    out["lift_heldout"] = {"views": len(views), "pairs": len(pairs),
                           **score(views, maps, pairs, cfg, num_corr=args.num_corr)}
    if args.unseen:
        uv = load_scene(args.data, frames=args.unseen, holdout_every=2).subset("heldout")
        up = select_pairs(uv, cfg.pairs, cfg.point_stride, cfg.min_overlap, cfg.depth_tolerance)
        out["unseen"] = {"views": len(uv), "pairs": len(up),
                         **score(uv, models(uv), up, cfg, num_corr=args.num_corr)}
    if args.json:
        print(json.dumps(out))
        return 0
    for part in ("lift_heldout", "unseen"):
        if part not in out:
            continue
        r = out[part]
        print(f"{part}: {r['views']} views, {r['pairs']} pairs")
        for name, s in r.items():
            if isinstance(s, dict):
                print(f"  {name:32s} recall {s['recall@10px']:.3f} ({s['matches']:6d} matches)"
                      f"  NN acc {s['nn_accuracy@10px']:.4f}  cos true {s['cos_true_partner']:.3f}"
                      f" / mean {s['cos_mean']:.3f}  top-k {s['topk_recall']:.3f} ({s['topk_n']})"
                      f" mutual top-k {s['topk_mutual_recall']:.3f} ({s['topk_mutual_n']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

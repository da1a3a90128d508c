"""Context / target view selection of SnD, from poses and depth (training views only).

Design note: a training triple is two context views a < b (positions in the scene's
training list at most `max_span` apart) whose camera centres are `min_baseline` to
`max_baseline` metres apart and whose frusta overlap — at least `min_overlap` of a's
depth points (every 16th pixel) land in b's colour image unoccluded
(`fit3d.correspondence.visible_in`) — with every training view between them as a target.
Triples are listed once per scene (cost: views × span); a step draws one uniformly over
all scenes' triples from its own rng (`training.loop.step_rng`), so a resumed run draws
the same. A held-out view (the recall evaluation) renders from the nearest training
views before and after it in the frame list.
"""
from __future__ import annotations

import numpy as np

from fit3d_ros.training.fit3d.correspondence import view_points, visible_in
from fit3d_ros.training.fit3d.scenes import Scene, SceneView

Triple = tuple[int, int, int]  # (context a, target, context b): indices into scene.views


def overlap(va: SceneView, vb: SceneView, stride: int = 16, tolerance: float = 0.05) -> float:
    """Share of a's depth points that b's colour camera sees unoccluded (0 without depth)."""
    pts = view_points(va, stride)
    if len(pts.xyz) == 0:
        return 0.0
    ok, _ = visible_in(vb, pts.xyz, tolerance)
    return float(ok.mean())


def baseline(va: SceneView, vb: SceneView) -> float:
    """Distance (m) between the two colour cameras' centres."""
    return float(np.linalg.norm(va.T_world_color[:3, 3] - vb.T_world_color[:3, 3]))


def select_triples(scene: Scene, min_baseline: float, max_baseline: float,
                   min_overlap: float, max_span: int, usable: set[int] | None = None
                   ) -> list[Triple]:
    """Every (a, target, b) of the scene's training views that passes the rules above;
    `usable` (view indices with depth) restricts the contexts. ValueError when none."""
    train = list(scene.train)
    if len(train) < 3:
        raise ValueError(f"{scene.source}: {len(train)} training views; SnD needs at least 3 "
                         "(two contexts and a target between them)")
    usable = set(train) if usable is None else usable
    triples: list[Triple] = []
    seen: list[float] = []
    for p in range(len(train)):
        for q in range(p + 2, min(len(train), p + max_span + 1)):
            a, b = train[p], train[q]
            if a not in usable or b not in usable:
                continue
            d = baseline(scene.views[a], scene.views[b])
            seen.append(d)
            if not min_baseline <= d <= max_baseline:
                continue
            if overlap(scene.views[a], scene.views[b]) < min_overlap:
                continue
            triples += [(a, train[k], b) for k in range(p + 1, q)]
    if not triples:
        span = f"{min(seen):.3f}..{max(seen):.3f} m" if seen else "none with depth"
        raise ValueError(f"{scene.source}: no overlapping context pairs (baseline "
                         f"{min_baseline}..{max_baseline} m, overlap >= {min_overlap:.0%}, "
                         f"span <= {max_span}; candidate baselines {span})")
    return triples


def draw(rng: np.random.Generator, triples: list[list[Triple]]) -> tuple[int, Triple]:
    """(scene, triple) drawn uniformly over all scenes' triples."""
    counts = np.array([len(t) for t in triples])
    k = int(rng.integers(counts.sum()))
    s = int(np.searchsorted(np.cumsum(counts), k, side="right"))
    return s, triples[s][k - int(counts[:s].sum())]


def contexts_for(scene: Scene, view: int, usable: set[int] | None = None) -> tuple[int, int]:
    """The nearest usable training views before and after `view` (or the two nearest on
    one side at the ends of the log)."""
    train = [t for t in scene.train if usable is None or t in usable]
    if len(train) < 2:
        raise ValueError(f"{scene.source}: fewer than 2 training views with depth")
    before = [t for t in train if t < view]
    after = [t for t in train if t > view]
    if before and after:
        return before[-1], after[0]
    near = sorted(train, key=lambda t: (abs(t - view), t))[:2]
    return min(near), max(near)

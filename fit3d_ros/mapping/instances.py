"""Instance queries on a `VoxelMap`: by class name and by feature similarity.

Design note: an instance is a connected component of map voxels (Euclidean clustering on
the voxel grid: voxels within ``gap`` cells in every axis are neighbours; gap 1 = the
26-neighbourhood). Components come from min-label propagation with pointer jumping over
the neighbour pairs found through a `VoxelHash`, all in torch on the map's device (no
connected-components routine exists in the runtime's dependencies; scipy is not one).
Per instance: centroid (mean of the accumulated points), axis-aligned box (min/max of
the points), a gravity-aligned oriented box (yaw from the 2D PCA of the voxel means,
extents containing every voxel's point box), point and voxel counts, mean segmentation
confidence. `locate_feature` scores voxels by cosine similarity between their mean
point feature and a query (e.g. the ViT feature at a clicked pixel), returns the best
voxels and clusters those above a threshold into instances.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .voxel_hash import VoxelHash, pack_coords, unpack_keys
from .voxel_map import VoxelMap


@dataclass
class Instance:
    """One located object, in the map frame (metres)."""

    class_name: str
    centroid: list[float]
    box_min: list[float]
    box_max: list[float]
    obb_center: list[float]
    obb_size: list[float]       # along the box's own x, y (yaw-rotated) and z
    obb_yaw: float              # radians about the map's z axis
    points: int
    voxels: int
    confidence: float
    similarity: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("class_name")
        return d


def neighbour_offsets(gap: int) -> torch.Tensor:
    """The half of the (2·gap+1)^3 cube of offsets after (0,0,0) in lexical order."""
    r = range(-gap, gap + 1)
    offs = [o for o in itertools.product(r, r, r) if o > (0, 0, 0)]
    return torch.tensor(offs, dtype=torch.int64).reshape(-1, 3)


def connected_components(coords: torch.Tensor, gap: int = 1) -> torch.Tensor:
    """(V,) component index 0..C-1 of integer voxel coordinates (V,3)."""
    v = coords.shape[0]
    if v == 0:
        return torch.zeros(0, dtype=torch.int64, device=coords.device)
    if gap < 1:
        raise ValueError(f"gap must be >= 1, got {gap}")
    keys = pack_coords(coords)
    table = VoxelHash(coords.device)
    table.rebuild(keys)
    src, dst = [], []
    for off in neighbour_offsets(gap).to(coords.device):
        j = table.find(pack_coords(coords + off))
        ok = j >= 0
        src.append(torch.nonzero(ok).squeeze(1))
        dst.append(j[ok])
    a, b = torch.cat(src), torch.cat(dst)
    lab = torch.arange(v, device=coords.device)
    while True:  # hook each edge's larger root onto the smaller label, then jump pointers
        m = torch.minimum(lab[a], lab[b])
        new = lab.clone()
        for ends in (a, b, lab[a], lab[b]):
            new.scatter_reduce_(0, ends, m, "amin")
        while True:
            jumped = new[new]
            if torch.equal(jumped, new):
                break
            new = jumped
        if torch.equal(new, lab):
            break
        lab = new
    return torch.unique(lab, return_inverse=True)[1]


def _segment(values: torch.Tensor, comp: torch.Tensor, n: int, how: str) -> torch.Tensor:
    """Per-component "sum" / "amin" / "amax" of rows of `values` (V, D)."""
    if how == "sum":
        return torch.zeros(n, values.shape[1], dtype=values.dtype,
                           device=values.device).index_add_(0, comp, values)
    fill = float("inf") if how == "amin" else float("-inf")
    return torch.full((n, values.shape[1]), fill, dtype=values.dtype,
                      device=values.device).scatter_reduce_(
        0, comp[:, None].expand(-1, values.shape[1]), values, how)


def _extents(lo, hi, comp, n, yaw):
    """Per component: (min, max) of the voxels' point-box corners in the frame rotated by
    the component's `yaw` (2D), each (n, 2)."""
    c, s = torch.cos(yaw)[comp], torch.sin(yaw)[comp]
    us, vs = [], []
    for x in (lo[:, 0], hi[:, 0]):
        for y in (lo[:, 1], hi[:, 1]):
            us.append(c * x + s * y)
            vs.append(-s * x + c * y)
    uv = torch.stack([torch.stack(us, 1).flatten(), torch.stack(vs, 1).flatten()], 1)
    comp4 = comp.repeat_interleave(4)
    return _segment(uv, comp4, n, "amin"), _segment(uv, comp4, n, "amax")


def _obb(means, lo, hi, w, comp, n, centroid):
    """Gravity-aligned boxes: yaw from the hit-weighted 2D PCA of each component's voxel
    means, or 0 where the axis-aligned footprint is smaller (near-square objects, whose
    PCA axis is arbitrary); extents contain every corner of the voxels' point boxes."""
    dxy = means[:, :2] - centroid[comp, :2]
    outer = (dxy[:, :, None] * dxy[:, None, :]).reshape(-1, 4) * w[:, None]
    cov = _segment(outer, comp, n, "sum").reshape(n, 2, 2) / _segment(
        w[:, None], comp, n, "sum")[:, :, None]
    evecs = torch.linalg.eigh(cov)[1][:, :, 1]  # eigenvalues ascend: the major axis
    pca = torch.atan2(evecs[:, 1], evecs[:, 0])
    boxes = [(yaw, *_extents(lo, hi, comp, n, yaw)) for yaw in (pca, torch.zeros_like(pca))]
    area = [(mx - mn).prod(dim=1) for _, mn, mx in boxes]
    pick = area[1] <= area[0] + 1e-9
    yaw = torch.where(pick, boxes[1][0], boxes[0][0])
    umin = torch.where(pick[:, None], boxes[1][1], boxes[0][1])
    umax = torch.where(pick[:, None], boxes[1][2], boxes[0][2])
    mid = (umin + umax) / 2
    cy, sy = torch.cos(yaw), torch.sin(yaw)
    zlo, zhi = _segment(lo[:, 2:], comp, n, "amin")[:, 0], _segment(hi[:, 2:], comp, n,
                                                                     "amax")[:, 0]
    center = torch.stack([cy * mid[:, 0] - sy * mid[:, 1], sy * mid[:, 0] + cy * mid[:, 1],
                          (zlo + zhi) / 2], 1)
    size = torch.stack([umax[:, 0] - umin[:, 0], umax[:, 1] - umin[:, 1], zhi - zlo], 1)
    return center, size, yaw


def instances_of(vmap: VoxelMap, voxels: torch.Tensor, class_names: list[str],
                 gap: int = 1, min_points: int = 1,
                 similarity: torch.Tensor | None = None) -> list[Instance]:
    """Cluster the map voxels `voxels` (slot indices) into instances named
    `class_names[0]`, or (empty list) each by its voxels' majority class."""
    if voxels.numel() == 0:
        return []
    s = vmap.s
    comp = connected_components(unpack_keys(vmap.index.keys[voxels]), gap)
    n = int(comp.max()) + 1
    w = s.hits[voxels].double()
    means, lo, hi = s.mean[voxels].double(), s.lo[voxels].double(), s.hi[voxels].double()
    pts = _segment(w[:, None], comp, n, "sum")[:, 0]
    centroid = _segment(means * w[:, None], comp, n, "sum") / pts[:, None]
    center, size, yaw = _obb(means, lo, hi, w, comp, n, centroid)
    stats = {
        "centroid": centroid, "box_min": _segment(lo, comp, n, "amin"),
        "box_max": _segment(hi, comp, n, "amax"), "obb_center": center, "obb_size": size,
        "obb_yaw": yaw, "points": pts, "voxels": torch.bincount(comp, minlength=n),
        "confidence": _segment(s.conf_sum[voxels].double()[:, None], comp, n, "sum")[:, 0] / pts,
        "majority": _segment(s.hist[voxels].double(), comp, n, "sum").argmax(dim=1)}
    if similarity is not None:
        stats["similarity"] = _segment(similarity.double()[:, None], comp, n, "sum")[:, 0] / \
            stats["voxels"]
    keep = pts >= min_points
    host = {k: v[keep].cpu().tolist() for k, v in stats.items()}  # one copy per field
    out = []
    for i in range(int(keep.sum())):
        name = class_names[0] if class_names else vmap.class_names[host["majority"][i]]
        out.append(Instance(
            class_name=name, centroid=host["centroid"][i], box_min=host["box_min"][i],
            box_max=host["box_max"][i], obb_center=host["obb_center"][i],
            obb_size=host["obb_size"][i], obb_yaw=host["obb_yaw"][i],
            points=int(host["points"][i]), voxels=int(host["voxels"][i]),
            confidence=host["confidence"][i],
            similarity=host["similarity"][i] if similarity is not None else None))
    return out


def _sort(found: list[Instance], near) -> list[Instance]:
    if near is None:
        return sorted(found, key=lambda i: -i.points)
    p = np.asarray(near, np.float64).reshape(3)
    return sorted(found, key=lambda i: float(np.linalg.norm(np.asarray(i.centroid) - p)))


def locate(vmap: VoxelMap, class_name: str, gap: int = 1, min_points: int = 1,
           near=None) -> list[Instance]:
    """Instances of `class_name` (largest first, or nearest to `near` = (x,y,z) first).

    Raises KeyError listing the known classes for an unknown name."""
    c = vmap.class_index(class_name)
    voxels = torch.nonzero(vmap.labels() == c).squeeze(1)
    return _sort(instances_of(vmap, voxels, [class_name], gap, min_points), near)


def locate_feature(vmap: VoxelMap, feature, top_k: int = 10, min_similarity: float = 0.5,
                   gap: int = 1, min_points: int = 1, near=None
                   ) -> tuple[list[dict], list[Instance]]:
    """(best `top_k` voxels as {"xyz", "similarity", "class"}, instances of the voxels with
    cosine similarity >= `min_similarity` to `feature`, named by their majority class)."""
    if vmap.s.feat is None:
        raise ValueError("the map holds no point features (feed it ~/point_features)")
    f = torch.as_tensor(np.asarray(feature, np.float32).reshape(-1), device=vmap.device)
    if f.numel() != vmap.feature_dim:
        raise ValueError(f"query feature has {f.numel()} channels, the map's features "
                         f"{vmap.feature_dim}")
    m = len(vmap)
    has = vmap.s.feat_hits[:m] > 0
    sim = torch.nn.functional.cosine_similarity(vmap.s.feat[:m], f[None], dim=1)
    sim = torch.where(has, sim, torch.full_like(sim, -2.0))
    k = min(top_k, int(has.sum()))
    best = torch.topk(sim, k).indices if k else torch.zeros(0, dtype=torch.int64)
    labels = vmap.labels()
    top = [{"xyz": vmap.s.mean[i].tolist(), "similarity": float(sim[i]),
            "class": vmap.class_names[int(labels[i])]} for i in best.cpu()]
    voxels = torch.nonzero(sim >= min_similarity).squeeze(1)
    return top, _sort(instances_of(vmap, voxels, [], gap, min_points, sim[voxels]), near)

"""Exact k-nearest-neighbour distances on a uniform grid (3DGS scale initialisation).

Design note: 3DGS initialises each Gaussian's scale from its 3 nearest neighbours
(``simple-knn`` on CUDA). We wrote this by hand (torch only: no KD-tree dependency, runs
on any device): points are hashed into cubic cells of side h (packed 1-D int64 keys,
sorted once), and each query's candidates are the points of its 3×3×3 cell block, which
holds every point closer than h. A query whose k-th candidate lies within h is therefore
exact; the few others (isolated points) are retried on a grid of side 2h, 4h, … until
the block spans the whole cloud. h is picked so that occupied cells hold ~4 points, so
the work is ~108 candidates per query: cost O(N log N) for the sort, linear in practice.
Candidate lists are expanded with ``repeat_interleave`` and ranked per query
(a padded top-k, or a segmented sort where a cell is crowded), in query chunks of 16k
(~1.7M candidates: a bounded working set keeps the cost per point flat as N grows).
On CPU it runs on one intra-op thread, as `models.voxels` (shared cores, BENCHMARKS).
"""
from __future__ import annotations

import torch

from fit3d_ros.threads import cpu_threads

_OFFSETS = torch.tensor([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)])


def _cells(xyz: torch.Tensor, low: torch.Tensor, h: float) -> torch.Tensor:
    return torch.floor((xyz - low) / h).to(torch.int64) + 1  # +1: the -1 offset stays >= 0


def _pick_cell(xyz: torch.Tensor, low: torch.Tensor, extent: float, target: float = 4.0
               ) -> float:
    """Cell side with ~`target` points per occupied cell (a few unique passes)."""
    n = xyz.shape[0]
    h = max(extent / max(n, 1) ** (1 / 3), 1e-9)
    for _ in range(4):
        occ = n / _Grid(xyz, low, h).ukeys.shape[0]
        if target / 2 <= occ <= target * 2:
            break
        h *= (target / occ) ** 0.5  # surfaces: occupancy grows ~h^2
    return h


class _Grid:
    """Points sorted by packed cell key; per occupied cell its start and count."""

    def __init__(self, xyz: torch.Tensor, low: torch.Tensor, h: float) -> None:
        self.h = h
        c = _cells(xyz, low, h)
        self.ext = (c.max(dim=0).values + 2).tolist()  # room for the +1 offset
        key = self.pack(c)
        self.key_sorted, self.order = torch.sort(key)
        self.ukeys, self.counts = torch.unique_consecutive(self.key_sorted, return_counts=True)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.cells = c

    def pack(self, c: torch.Tensor) -> torch.Tensor:
        return (c[..., 0] * self.ext[1] + c[..., 1]) * self.ext[2] + c[..., 2]

    def candidates(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(query row, point index) pairs for queries `q` over their 27 cells."""
        nq = q.shape[0]
        nb = self.cells[q][:, None, :] + _OFFSETS.to(q.device)[None]          # (Q, 27, 3)
        nk = self.pack(nb).reshape(-1)
        pos = torch.searchsorted(self.ukeys, nk).clamp_max(self.ukeys.shape[0] - 1)
        cnt = torch.where(self.ukeys[pos] == nk, self.counts[pos], torch.zeros_like(pos))
        total = int(cnt.sum())
        rows = torch.arange(nq, device=q.device).repeat_interleave(27)
        qi = torch.repeat_interleave(rows, cnt, output_size=total)
        first = torch.repeat_interleave(self.starts[pos] - (torch.cumsum(cnt, 0) - cnt), cnt,
                                        output_size=total)
        return qi, self.order[first + torch.arange(total, device=q.device)]


def _smallest_k(qi: torch.Tensor, d2: torch.Tensor, nq: int, k: int,
                max_width: int = 512) -> torch.Tensor:
    """(Q, k) ascending smallest d2 per query row (inf where fewer than k); `qi` is
    grouped by query (non-decreasing), as `_Grid.candidates` returns it."""
    per = torch.bincount(qi, minlength=nq)
    seg_start = torch.cumsum(per, 0) - per
    rank = torch.arange(qi.shape[0], device=qi.device) - seg_start[qi]
    width = int(per.max()) if qi.numel() else 0
    if width <= max_width:  # usual case: pad to (Q, width) and take topk
        table = torch.full((nq, max(width, k)), torch.inf, dtype=d2.dtype, device=d2.device)
        table[qi, rank] = d2
        return torch.topk(table, k, dim=1, largest=False, sorted=True).values
    o = torch.argsort(d2, stable=True)  # dense cells: segmented sort, no padding
    o = o[torch.argsort(qi[o], stable=True)]
    qs, ds = qi[o], d2[o]
    rank = torch.arange(qs.shape[0], device=qs.device) - seg_start[qs]
    keep = rank < k
    out = torch.full((nq, k), torch.inf, dtype=d2.dtype, device=d2.device)
    out[qs[keep], rank[keep]] = ds[keep]
    return out


def knn_sq_dists(xyz: torch.Tensor, k: int = 3, chunk: int = 16384) -> torch.Tensor:
    """(N, k) ascending squared distances to the `k` nearest other points (exact)."""
    with cpu_threads(1 if xyz.device.type == "cpu" else None):  # see the module note
        return _knn_sq_dists(xyz, k, chunk)


def _knn_sq_dists(xyz: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    n = xyz.shape[0]
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(xyz.shape)}")
    if n <= k:
        raise ValueError(f"need more than {k} points for the scale init, got {n}")
    low = xyz.min(dim=0).values
    extent = float((xyz.max(dim=0).values - low).max())
    out = torch.full((n, k), torch.inf, dtype=xyz.dtype, device=xyz.device)
    todo = torch.arange(n, device=xyz.device)
    h = _pick_cell(xyz, low, extent)
    while todo.numel():
        grid = _Grid(xyz, low, h)
        covers_all = h > extent  # the 27 cells hold the whole cloud: every answer exact
        unresolved = []
        for s in range(0, todo.numel(), chunk):
            q = todo[s:s + chunk]
            qi, cand = grid.candidates(q)
            d2 = ((xyz[q[qi]] - xyz[cand]) ** 2).sum(dim=1)
            d2 = torch.where(cand == q[qi], torch.full_like(d2, torch.inf), d2)  # not itself
            best = _smallest_k(qi, d2, q.numel(), k)
            ok = best[:, -1] <= h * h if not covers_all else torch.ones_like(best[:, 0],
                                                                               dtype=torch.bool)
            out[q[ok]] = best[ok]
            unresolved.append(q[~ok])
        todo = torch.cat(unresolved)
        h *= 2.0
    return out


def knn_mean_sq_dist(xyz: torch.Tensor, k: int = 3, chunk: int = 16384) -> torch.Tensor:
    """Mean squared distance to the `k` nearest other points (N,) (3DGS scale init)."""
    return knn_sq_dists(xyz, k, chunk).mean(dim=1)

"""Voxelisation (grid sampling) on torch: one entry per occupied voxel and the inverse map.

Design note: the sparse U-Net sees one point per voxel (Pointcept's grid sampling) and
its per-voxel outputs are mapped back to all N input points through ``inverse``. It runs on
the points' device (float64 coordinates: N x 3 elementwise work, cheap anywhere, and
the keys stay those of the CPU reference); voxel keys are packed into one int64 and
deduplicated with ``torch.unique`` (sorted, so the voxel order does not depend on the
point order); per-voxel reductions use ``Tensor.scatter_reduce`` (replacing torch-scatter). The representative point of a voxel
is the first, a seeded random one, or the one nearest the voxel centre. On CPU it runs on
one intra-op thread (`fit3d_ros.threads`): its ~30 small ops each paid a scheduling
quantum with two threads on shared cores (25k points: 144 ms vs 5 ms, BENCHMARKS).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from fit3d_ros.threads import cpu_threads

Pick = Literal["first", "random", "center"]
Reduce = Literal["mean", "max", "sum", "pick"]


@dataclass
class Voxelization:
    """Occupied voxels of a (batched) cloud and the maps between points and voxels."""

    coords: torch.Tensor   # (M, 3) int64 grid coords (x, y, z) >= 0
    batch: torch.Tensor    # (M,) int64 sample index
    inverse: torch.Tensor  # (N,) int64 voxel of every input point
    index: torch.Tensor    # (M,) int64 representative input point of every voxel
    counts: torch.Tensor   # (M,) int64 points per voxel
    origin: torch.Tensor   # (3,) float64 world position of grid cell (0, 0, 0)'s corner
    voxel_size: float

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    @property
    def batch_size(self) -> int:
        return int(self.batch.max()) + 1 if self.num_voxels else 0

    def spatial_shape(self, multiple: int = 1) -> list[int]:
        """Grid extent (x, y, z), rounded up to a multiple of `multiple`."""
        ext = (self.coords.max(dim=0).values + 1).tolist()
        return [int(-(-e // multiple) * multiple) for e in ext]

    def spconv_indices(self) -> torch.Tensor:
        """(M, 4) int32 [batch, x, y, z], spconv's index layout."""
        return torch.cat([self.batch[:, None], self.coords], dim=1).int()

    def centers(self) -> torch.Tensor:
        """(M, 3) float64 voxel centres in the input frame."""
        return self.origin + (self.coords.double() + 0.5) * self.voxel_size

    def reduce(self, values: torch.Tensor, op: Reduce = "mean",
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-voxel (M, C) reduction of per-point values (N, C).

        With `mask` (N,) bool only masked points count; voxels without any get zeros.
        """
        n = self.inverse.shape[0]
        if values.shape[0] != n:
            raise ValueError(f"values have {values.shape[0]} rows, voxelised cloud has {n}")
        squeeze = values.ndim == 1
        v = values[:, None] if squeeze else values
        if op == "pick" and mask is None:
            out = v[self.index]
        else:
            inv = self.inverse
            if mask is not None:
                mask = mask.to(torch.bool)
                v, inv = v[mask], inv[mask]
            if op == "pick":
                raise ValueError("op='pick' takes no mask")
            if op not in ("mean", "max", "sum"):
                raise ValueError(f"unknown reduction {op!r}")
            torch_op = {"mean": "mean", "max": "amax", "sum": "sum"}[op]
            out = v.new_zeros((self.num_voxels, v.shape[1]))
            out = out.scatter_reduce(0, inv[:, None].expand_as(v), v, torch_op,
                                     include_self=False)
        return out[:, 0] if squeeze else out

    def to_points(self, voxel_values: torch.Tensor) -> torch.Tensor:
        """Per-point (N, ...) values from per-voxel (M, ...) values."""
        return voxel_values[self.inverse]


def _first_of_min(score: torch.Tensor, inverse: torch.Tensor, m: int) -> torch.Tensor:
    """Per voxel, the lowest point index among points with the voxel's minimal score."""
    n, dev = score.shape[0], score.device
    best = torch.full((m,), torch.inf, dtype=score.dtype, device=dev).scatter_reduce(
        0, inverse, score, "amin", include_self=True)
    is_best = score == best[inverse]
    arange = torch.arange(n, device=dev)
    cand = torch.where(is_best, arange, torch.full_like(arange, n))
    return torch.full((m,), n, dtype=torch.long, device=dev).scatter_reduce(
        0, inverse, cand, "amin")


def voxelize(points: torch.Tensor | np.ndarray, voxel_size: float, *,
             batch: torch.Tensor | np.ndarray | None = None, pick: Pick = "center",
             seed: int = 0) -> Voxelization:
    """Grid-sample points (N, 3) at `voxel_size`; `batch` (N,) gives sample ids."""
    p = torch.as_tensor(points).detach()
    with cpu_threads(1 if p.device.type == "cpu" else None):  # see the module note
        return _voxelize(p, voxel_size, batch, pick, seed)


def _voxelize(p: torch.Tensor, voxel_size: float, batch: torch.Tensor | np.ndarray | None,
              pick: Pick, seed: int) -> Voxelization:
    if p.ndim != 2 or p.shape[1] != 3 or p.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (N, 3) array, got {tuple(p.shape)}")
    if not voxel_size > 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    p = p.to(torch.float64)  # N x 3 elementwise: cheap on any device, keys exact
    dev, n = p.device, p.shape[0]
    b = (torch.zeros(n, dtype=torch.long, device=dev) if batch is None
         else torch.as_tensor(batch).to(dev, torch.long))
    if b.shape != (n,):
        raise ValueError(f"batch must be (N,) non-negative ints, got {tuple(b.shape)}")
    cell = torch.floor(p / voxel_size).long()
    low = cell.min(dim=0).values
    grid = cell - low
    # one host read for every check: finiteness, batch sign, grid extent
    stats = torch.cat([torch.isfinite(p).all()[None].long(), b.min()[None], b.max()[None],
                       grid.max(dim=0).values + 1]).tolist()
    finite, bmin, bmax, ext = stats[0], stats[1], stats[2], stats[3:]
    if not finite:
        raise ValueError("points contain NaN or inf (drop them first, e.g. PointCloud.finite())")
    if bmin < 0:
        raise ValueError(f"batch must be (N,) non-negative ints, got {tuple(b.shape)}")
    if float(np.prod(np.asarray(ext, dtype=np.float64))) * (bmax + 1) >= 2 ** 62:
        raise ValueError(f"grid of {ext} voxels is too large; raise voxel_size")
    ex, ey, ez = ext
    key = ((b * ex + grid[:, 0]) * ey + grid[:, 1]) * ez + grid[:, 2]  # packed 1-D key
    uniq, inverse, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
    m = uniq.shape[0]
    z = uniq % ez
    y = (uniq // ez) % ey
    x = (uniq // (ez * ey)) % ex
    vb = uniq // (ez * ey * ex)
    coords = torch.stack([x, y, z], dim=1)
    if pick == "first":
        score = torch.zeros(n, dtype=p.dtype, device=dev)
    elif pick == "random":
        score = torch.rand(n, generator=torch.Generator().manual_seed(seed),
                           dtype=torch.float64).to(dev, p.dtype)
    elif pick == "center":
        centre = (cell.to(p.dtype) + 0.5) * voxel_size
        score = ((p - centre) ** 2).sum(dim=1)
    else:
        raise ValueError(f"pick must be 'first', 'random' or 'center', got {pick!r}")
    index = _first_of_min(score, inverse, m)
    origin = low.double() * voxel_size  # (3,) on the points' device
    return Voxelization(coords, vb, inverse, index, counts, origin, float(voxel_size))

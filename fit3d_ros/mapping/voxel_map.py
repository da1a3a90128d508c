"""A semantic voxel map in one fixed frame, fed with labelled (optionally featured) clouds.

Design note: SAB3R's "Map and Locate" (METHODS.md §4) for a robot with poses: every
segmented cloud is moved into the map frame (default ``map``) and accumulated per voxel:
a label histogram (points per class), the summed segmentation confidence, the running
mean, min and max of the points (centroids and tight boxes for instances), the running
mean of point features when given (all-zero rows, e.g. points no camera saw, count as
no feature), the hit count and the last-seen stamp. The voxels
live in dense torch tensors on the map's device, found through `VoxelHash`, so one
`integrate` costs O(points added) (a sort for the frame's unique voxels, one hashed
probe per voxel, scatter-adds); nothing goes back to numpy per frame. Memory is bounded:
at most ``max_voxels`` (the least recently seen are forgotten first, down to
``evict_fraction`` so evictions are rare), and optionally voxels unseen for
``max_age_s`` or farther than ``max_distance_m`` from the latest sensor origin are
forgotten by a sweep that runs at most every ``sweep_period_s`` (amortised: the sweep is
O(map) but rare). Voxel label = argmax of the histogram; voxel confidence = mean point
confidence. Not to be confused with `fit3d_ros.models.mapping`, DITR's point → image
patch mapping.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fit3d_ros.sensors import PointCloud, Transform

from .voxel_hash import COORD_MAX, VoxelHash, pack_coords


@dataclass
class MapConfig:
    voxel_size: float = 0.1        # voxel edge (m)
    frame: str = "map"             # the fixed frame the map lives in
    max_voxels: int = 2_000_000    # hard memory bound
    evict_fraction: float = 0.9    # on overflow keep this share of max_voxels (newest)
    max_age_s: float = 0.0         # forget voxels unseen this long (0 = never)
    max_distance_m: float = 0.0    # forget voxels this far from the sensor (0 = never)
    max_range_m: float = 0.0       # ignore points this far from the sensor (0 = all)
    sweep_period_s: float = 1.0    # at most one age/distance sweep per this much stamp time
    device: str = "cpu"

    def __post_init__(self) -> None:
        if not self.voxel_size > 0:
            raise ValueError(f"voxel_size must be positive, got {self.voxel_size}")
        if self.max_voxels < 1:
            raise ValueError(f"max_voxels must be >= 1, got {self.max_voxels}")
        if not 0 < self.evict_fraction <= 1:
            raise ValueError(f"evict_fraction must be in (0, 1], got {self.evict_fraction}")
        for name in ("max_age_s", "max_distance_m", "max_range_m", "sweep_period_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class IntegrateStats:
    """What one `integrate` call did."""

    points: int = 0                 # points accumulated
    skipped_label: int = 0          # label outside 0..K-1 (e.g. ignore)
    skipped_range: int = 0          # non-finite, beyond max_range_m or outside the key range
    dropped_overflow: int = 0       # in new voxels beyond max_voxels in one frame
    new_voxels: int = 0
    forgotten: int = 0


# per-voxel tensors (slot-indexed, capacity >= len(map))
_FIELDS = ("hits", "conf_sum", "mean", "lo", "hi", "last_seen", "hist")


@dataclass
class _Store:
    hits: torch.Tensor
    conf_sum: torch.Tensor
    mean: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    last_seen: torch.Tensor
    hist: torch.Tensor
    feat: torch.Tensor | None = None      # (M, C) running mean of point features
    feat_hits: torch.Tensor | None = None


class VoxelMap:
    """Accumulates labelled clouds into voxels; see the module note."""

    def __init__(self, class_names: list[str] | tuple[str, ...],
                 config: MapConfig | None = None, palette: np.ndarray | None = None) -> None:
        self.cfg = config or MapConfig()
        self.class_names = [str(n) for n in class_names]
        if not self.class_names:
            raise ValueError("a map needs at least one class name")
        k = len(self.class_names)
        self.palette = (np.asarray(palette, np.uint8).reshape(k, 3) if palette is not None
                        else default_palette(k))
        self.device = torch.device(self.cfg.device)
        self.index = VoxelHash(self.device)
        d = self.device
        self.s = _Store(hits=torch.zeros(0, dtype=torch.int64, device=d),
                        conf_sum=torch.zeros(0, device=d), mean=torch.zeros(0, 3, device=d),
                        lo=torch.zeros(0, 3, device=d), hi=torch.zeros(0, 3, device=d),
                        last_seen=torch.zeros(0, dtype=torch.int64, device=d),
                        hist=torch.zeros(0, k, device=d))
        self.frames = 0
        self.latest_stamp = 0
        self.origin: torch.Tensor | None = None
        self._last_sweep: int | None = None

    # ------------------------------------------------------------------ state
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return self.index.size

    @property
    def feature_dim(self) -> int | None:
        return None if self.s.feat is None else int(self.s.feat.shape[1])

    def class_index(self, name: str) -> int:
        """Index of class `name`; a clear error listing the known classes otherwise."""
        if name not in self.class_names:
            raise KeyError(f"unknown class {name!r}; the map knows {self.class_names}")
        return self.class_names.index(name)

    def labels(self) -> torch.Tensor:
        """(M,) int64 voxel label: the histogram's argmax."""
        return self.s.hist[:len(self)].argmax(dim=1)

    def confidence(self) -> torch.Tensor:
        """(M,) mean segmentation confidence of each voxel's points."""
        m = len(self)
        return self.s.conf_sum[:m] / self.s.hits[:m].clamp(min=1)

    def nbytes(self) -> int:
        """Bytes held by the voxel tensors and the hash table."""
        ts = [getattr(self.s, f) for f in _FIELDS] + [self.s.feat, self.s.feat_hits]
        return self.index.nbytes() + sum(t.numel() * t.element_size() for t in ts
                                         if t is not None)

    def cloud(self) -> PointCloud:
        """The map as a cloud in its frame: one point per voxel (mean of its points) with
        label, palette rgb, `confidence` and `hits` columns."""
        labels = self.labels().cpu().numpy().astype(np.int32)
        m = len(self)
        return PointCloud(self.latest_stamp, self.cfg.frame, self.s.mean[:m].cpu().numpy(),
                          rgb=self.palette[labels], label=labels,
                          extra={"confidence": self.confidence().cpu().numpy().astype(np.float32),
                                 "hits": self.s.hits[:m].cpu().numpy().astype(np.uint32)})

    # ------------------------------------------------------------------ writing
    def integrate_cloud(self, cloud: PointCloud, T_map_cloud: Transform | np.ndarray | None,
                        confidence: np.ndarray | None = None,
                        features: np.ndarray | None = None) -> IntegrateStats:
        """Add a labelled cloud given the transform map <- cloud frame (None: identity).

        Confidence defaults to the cloud's ``confidence`` column (else 1), features to
        its ``feature`` column."""
        if cloud.label is None:
            raise ValueError(f"cloud on {cloud.frame_id!r} has no label field")
        conf = confidence if confidence is not None else cloud.extra.get("confidence")
        feats = features if features is not None else cloud.feature
        m = np.eye(4) if T_map_cloud is None else (
            T_map_cloud.matrix if isinstance(T_map_cloud, Transform) else T_map_cloud)
        return self.integrate(cloud.xyz, cloud.label, cloud.stamp, confidence=conf,
                              features=feats, T_map_points=m)

    def integrate(self, xyz, labels, stamp_ns: int, confidence=None, features=None,
                  T_map_points: np.ndarray | None = None) -> IntegrateStats:
        """Add points (N,3) with class indices `labels` (any integer dtype; values outside
        0..K-1 are skipped) seen at `stamp_ns`; `T_map_points` (4x4) moves them into the
        map frame and its translation is the sensor origin (range and distance limits)."""
        d, stats = self.device, IntegrateStats()
        pts = torch.as_tensor(np.asarray(xyz, np.float32).reshape(-1, 3), device=d)
        lab = torch.as_tensor(np.asarray(labels).astype(np.int64).reshape(-1), device=d)
        n = pts.shape[0]
        if lab.numel() != n:
            raise ValueError(f"{lab.numel()} labels for {n} points")
        conf = (torch.ones(n, device=d) if confidence is None else
                torch.as_tensor(np.asarray(confidence, np.float32).reshape(-1), device=d))
        feat = None if features is None else torch.as_tensor(
            np.asarray(features, np.float32).reshape(n, -1), device=d)
        if conf.numel() != n:
            raise ValueError(f"{conf.numel()} confidences for {n} points")
        origin = torch.zeros(3, device=d)
        if T_map_points is not None:
            tm = torch.as_tensor(np.asarray(T_map_points, np.float32), device=d)
            pts, origin = pts @ tm[:3, :3].T + tm[:3, 3], tm[:3, 3]
        if feat is not None and self.s.feat is not None and feat.shape[1] != self.feature_dim:
            raise ValueError(f"features have {feat.shape[1]} channels, the map holds "
                             f"{self.feature_dim}")
        ok_label = (lab >= 0) & (lab < self.num_classes)
        ijk = torch.floor(pts / self.cfg.voxel_size).to(torch.int64) if n else \
            torch.zeros(0, 3, dtype=torch.int64, device=d)
        ok = torch.isfinite(pts).all(dim=1) & (ijk.abs() <= COORD_MAX).all(dim=1)
        if self.cfg.max_range_m > 0:
            ok &= (pts - origin).norm(dim=1) <= self.cfg.max_range_m
        stats.skipped_range = int((~ok).sum())
        stats.skipped_label = int((ok & ~ok_label).sum())
        keep = ok & ok_label
        self.frames += 1
        self.latest_stamp = max(self.latest_stamp, int(stamp_ns))
        self.origin = origin
        stats.forgotten += self._maybe_sweep(int(stamp_ns))
        pts, lab, conf, ijk = pts[keep], lab[keep], conf[keep], ijk[keep]
        feat = None if feat is None else feat[keep]
        if pts.shape[0] == 0:
            return stats
        ukeys, inv = torch.unique(pack_coords(ijk), return_inverse=True)
        ukeys, inv, pts, lab, conf, feat, stats = self._make_room(ukeys, inv, pts, lab, conf,
                                                                  feat, stats)
        slots, new = self.index.find_or_add(ukeys)
        self._grow(self.index.size)
        stats.new_voxels, stats.points = int(new.sum()), int(pts.shape[0])
        self._accumulate(slots, inv, pts, lab, conf, feat, int(stamp_ns))
        return stats

    def _accumulate(self, slots, inv, pts, lab, conf, feat, stamp: int) -> None:
        s, u = self.s, slots.numel()
        cnt = torch.bincount(inv, minlength=u)
        total = s.hits[slots] + cnt
        psum = torch.zeros(u, 3, device=self.device).index_add_(0, inv, pts)
        s.mean[slots] += (psum - cnt[:, None] * s.mean[slots]) / total[:, None]
        idx3 = inv[:, None].expand(-1, 3)
        s.lo[slots] = torch.minimum(s.lo[slots], torch.full((u, 3), float("inf"),
                                    device=self.device).scatter_reduce(0, idx3, pts, "amin"))
        s.hi[slots] = torch.maximum(s.hi[slots], torch.full((u, 3), float("-inf"),
                                    device=self.device).scatter_reduce(0, idx3, pts, "amax"))
        s.hist.view(-1).index_add_(0, slots[inv] * self.num_classes + lab,
                                   torch.ones_like(conf))
        s.conf_sum.index_add_(0, slots, torch.zeros(u, device=self.device).index_add_(0, inv,
                                                                                      conf))
        s.hits[slots] = total
        s.last_seen[slots] = stamp
        if feat is not None:
            if s.feat is None:
                s.feat = torch.zeros(s.hits.shape[0], feat.shape[1], device=self.device)
                s.feat_hits = torch.zeros(s.hits.shape[0], dtype=torch.int64, device=self.device)
            # all-zero rows are "no feature" (points no camera saw): not in the mean
            fcnt = torch.zeros(u, dtype=torch.int64, device=self.device).index_add_(
                0, inv, (feat != 0).any(dim=1).long())
            ftotal = s.feat_hits[slots] + fcnt
            fsum = torch.zeros(u, feat.shape[1], device=self.device).index_add_(0, inv, feat)
            s.feat[slots] += (fsum - fcnt[:, None] * s.feat[slots]) / ftotal.clamp(min=1)[:, None]
            s.feat_hits[slots] = ftotal

    def _grow(self, n: int) -> None:
        """Make the per-voxel tensors hold `n` voxels (capacity doubles: amortised O(1))."""
        s = self.s
        if s.hits.shape[0] >= n:
            return
        cap = max(n, 2 * s.hits.shape[0], 1024)
        fills = {"lo": float("inf"), "hi": float("-inf")}
        for name in _FIELDS + ("feat", "feat_hits"):
            t = getattr(s, name)
            if t is None:
                continue
            bigger = torch.full((cap, *t.shape[1:]), fills.get(name, 0), dtype=t.dtype,
                                device=self.device)
            bigger[:t.shape[0]] = t
            setattr(s, name, bigger)

    # ------------------------------------------------------------------ forgetting
    def _compact(self, keep: torch.Tensor) -> int:
        """Keep only voxels `keep` (bool over the used slots); returns how many went."""
        m = len(self)
        gone = int(m - keep.sum())
        if gone == 0:
            return 0
        idx = keep.nonzero().squeeze(1)
        for name in _FIELDS + ("feat", "feat_hits"):
            t = getattr(self.s, name)
            if t is not None:
                setattr(self.s, name, t[:m][idx].clone())
        self.index.rebuild(self.index.keys[idx])
        self._grow(1)
        return gone

    def _maybe_sweep(self, stamp: int) -> int:
        cfg = self.cfg
        if not (cfg.max_age_s > 0 or cfg.max_distance_m > 0) or not len(self):
            return 0
        if self._last_sweep is not None and stamp - self._last_sweep < cfg.sweep_period_s * 1e9:
            return 0
        self._last_sweep = stamp
        return self.forget(stamp)

    def forget(self, stamp_ns: int | None = None) -> int:
        """Drop voxels older than max_age_s at `stamp_ns` (default: the newest stamp) or
        farther than max_distance_m from the latest sensor origin; returns the count."""
        m, cfg = len(self), self.cfg
        keep = torch.ones(m, dtype=torch.bool, device=self.device)
        now = self.latest_stamp if stamp_ns is None else int(stamp_ns)
        if cfg.max_age_s > 0:
            keep &= self.s.last_seen[:m] >= now - int(cfg.max_age_s * 1e9)
        if cfg.max_distance_m > 0 and self.origin is not None:
            keep &= (self.s.mean[:m] - self.origin).norm(dim=1) <= cfg.max_distance_m
        return self._compact(keep)

    def _make_room(self, ukeys, inv, pts, lab, conf, feat, stats):
        """Evict the least recently seen voxels so the frame's new voxels fit; new voxels
        beyond what max_voxels allows next to the frame's known ones drop their points."""
        cap = self.cfg.max_voxels
        if len(self) + ukeys.numel() <= cap:  # fits even if every voxel is new
            return ukeys, inv, pts, lab, conf, feat, stats
        slot = self.index.find(ukeys)
        is_new = slot < 0
        n_new = int(is_new.sum())
        if len(self) + n_new <= cap:
            return ukeys, inv, pts, lab, conf, feat, stats
        n_seen = slot.numel() - n_new
        if n_new > cap - n_seen:  # keep the frame's known voxels and the first new ones
            allowed = ~is_new | (torch.cumsum(is_new.long(), 0) <= cap - n_seen)
            pick = allowed[inv]
            stats.dropped_overflow = int((~pick).sum())
            remap = torch.cumsum(allowed.long(), 0) - 1
            ukeys, inv = ukeys[allowed], remap[inv[pick]]
            pts, lab, conf = pts[pick], lab[pick], conf[pick]
            feat = None if feat is None else feat[pick]
            slot, n_new = slot[allowed], cap - n_seen
        m = len(self)
        target = min(max(n_seen, int(self.cfg.evict_fraction * cap) - n_new), cap - n_new)
        score = self.s.last_seen[:m].clone()
        score[slot[slot >= 0]] = torch.iinfo(torch.int64).max  # the frame's own voxels stay
        keep = torch.zeros(m, dtype=torch.bool, device=self.device)
        keep[torch.topk(score, target, sorted=False).indices] = True
        stats.forgotten += self._compact(keep)
        return ukeys, inv, pts, lab, conf, feat, stats


def default_palette(k: int) -> np.ndarray:
    """(k,3) uint8 distinct-ish colours (golden-angle hues) for maps without a palette."""
    h = (np.arange(k) * 0.618033988749895) % 1.0
    rgb = np.clip(np.abs(((h[:, None] * 6 + np.array([0, 4, 2])) % 6) - 3) - 1, 0, 1)
    return (40 + 200 * rgb).astype(np.uint8)

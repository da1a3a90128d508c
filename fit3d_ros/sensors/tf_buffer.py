"""A tf2-like transform buffer without ROS: static and timed edges, chained lookups.

Design note: the frames form a forest in which every child frame has one parent edge,
either static (time-free) or timed (a time-sorted history pruned to ``cache_time_s``
behind its newest entry). ``lookup(target, source, t)`` follows tf2's
``lookup_transform`` semantics: it walks both frames up to their common ancestor,
evaluates each timed edge at ``t`` (linear translation + SLERP rotation between the
bracketing samples) and composes ``T_target<-ancestor @ T_ancestor<-source``, a transform
mapping points in ``source`` into ``target``. ``t = None`` means the latest time common to
every timed edge on the path (tf2's time 0). Lookups outside an edge's history raise
`ExtrapolationException` unless within ``extrapolation_tolerance_s``, where the nearest
sample is used (held, never extrapolated). Written by hand: tf2's buffer core is C++ and
not on PyPI; this keeps replay and tests ROS-free.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import yaml

from .extrinsics_yaml import rpy_to_matrix, static_from_entry  # noqa: F401 (re-export)
from .transforms import Transform

NS_PER_S = 1_000_000_000


class TransformError(LookupError):
    """Base class of the buffer's lookup failures (tf2's TransformException)."""


class LookupException(TransformError):
    """A frame is unknown to the buffer."""


class ConnectivityException(TransformError):
    """Both frames are known but lie in disconnected trees."""


class ExtrapolationException(TransformError):
    """The requested time lies outside an edge's cached history (beyond the tolerance)."""


@dataclass
class _Edge:
    """The parent edge of one child frame: static, or a time-sorted history."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    samples: list[Transform] = field(default_factory=list)

    def insert(self, tf: Transform) -> None:
        i = bisect.bisect_left(self.stamps, tf.stamp)
        if i < len(self.stamps) and self.stamps[i] == tf.stamp:
            self.samples[i] = tf  # same stamp: the newer message wins, as in tf2
            return
        self.stamps.insert(i, tf.stamp)
        self.samples.insert(i, tf)

    def prune(self, keep_ns: int) -> None:
        cut = bisect.bisect_left(self.stamps, self.stamps[-1] - keep_ns)
        if cut:
            del self.stamps[:cut], self.samples[:cut]

    def at(self, stamp: int, tol_ns: int, child: str) -> np.ndarray:
        """The 4x4 parent<-child matrix at `stamp` (interpolated)."""
        if self.static:
            return self.samples[0].matrix
        lo, hi = self.stamps[0], self.stamps[-1]
        if stamp < lo or stamp > hi:
            gap = lo - stamp if stamp < lo else stamp - hi
            if gap > tol_ns:
                when = "before the oldest" if stamp < lo else "after the newest"
                raise ExtrapolationException(
                    f"lookup of {self.parent}<-{child} at {stamp} ns is {gap / 1e9:.6f} s "
                    f"{when} cached sample (history {lo}..{hi} ns, tolerance "
                    f"{tol_ns / 1e9:g} s)")
            return self.samples[0 if stamp < lo else -1].matrix
        i = bisect.bisect_left(self.stamps, stamp)
        if self.stamps[i] == stamp:
            return self.samples[i].matrix
        a, b = self.samples[i - 1], self.samples[i]
        t = (stamp - a.stamp) / (b.stamp - a.stamp)
        return a.interpolate(b, t).matrix


class TransformBuffer:
    """Static and timed transforms with tf2-style chained, interpolated lookups."""

    def __init__(self, cache_time_s: float = 10.0, extrapolation_tolerance_s: float = 0.0):
        if not cache_time_s > 0:
            raise ValueError(f"cache_time_s must be positive, got {cache_time_s}")
        if not extrapolation_tolerance_s >= 0:
            raise ValueError("extrapolation_tolerance_s must be >= 0, got "
                             f"{extrapolation_tolerance_s}")
        self.cache_ns = int(round(cache_time_s * NS_PER_S))
        self.tolerance_ns = int(round(extrapolation_tolerance_s * NS_PER_S))
        self._edges: dict[str, _Edge] = {}

    # ---------------------------------------------------------------- writing
    def set_transform(self, tf: Transform, static: bool = False) -> None:
        """Add ``tf`` (parent <- child at ``tf.stamp``); ``static`` edges ignore time.

        A child that gets a new parent, or switches between static and timed, loses its
        old history (tf2 would keep per-sample parents; we keep one parent per child).
        """
        parent, child = tf.parent_frame, tf.child_frame
        if not parent or not child:
            raise ValueError(f"transform needs both frames, got parent={parent!r} "
                             f"child={child!r}")
        if parent == child:
            raise ValueError(f"transform from frame {child!r} to itself")
        if child in self._root_path(parent):
            raise ValueError(f"transform {parent}<-{child} would close a loop in the tree")
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = self._edges[child] = _Edge(parent=parent, static=static)
        if static:
            edge.stamps, edge.samples = [0], [tf]
            return
        edge.insert(tf)
        edge.prune(self.cache_ns)

    def set_transforms(self, tfs: Iterable[Transform], static: bool = False) -> None:
        """`set_transform` for each of `tfs` (e.g. the contents of one TFMessage)."""
        for tf in tfs:
            self.set_transform(tf, static=static)

    # ---------------------------------------------------------------- reading
    def static_transforms(self) -> list[Transform]:
        """The static edges (parent <- child), e.g. to hand them to a tf2 buffer."""
        return [e.samples[0] for e in self._edges.values() if e.static and e.samples]

    def frames(self) -> set[str]:
        """Every frame named as a parent or a child."""
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def _root_path(self, frame: str) -> list[str]:
        """[frame, parent, grandparent, ..., root]."""
        path = [frame]
        while path[-1] in self._edges:
            path.append(self._edges[path[-1]].parent)
        return path

    def _path(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Frames from source and from target up to (excluding) their common ancestor."""
        known = self.frames()
        for name, frame in (("target", target), ("source", source)):
            if frame not in known:
                raise LookupException(f"{name} frame {frame!r} does not exist (known: "
                                      f"{', '.join(sorted(known)) or 'none'})")
        up_s, up_t = self._root_path(source), self._root_path(target)
        common = set(up_s) & set(up_t)
        if not common:
            raise ConnectivityException(
                f"frames {target!r} and {source!r} are in disconnected trees (roots "
                f"{up_t[-1]!r} and {up_s[-1]!r})")
        ancestor = next(f for f in up_s if f in common)
        return up_s[:up_s.index(ancestor)], up_t[:up_t.index(ancestor)]

    def _latest_common(self, chain: list[str]) -> int:
        timed = [self._edges[c] for c in chain if not self._edges[c].static]
        return min((e.stamps[-1] for e in timed), default=0)

    def lookup(self, target_frame: str, source_frame: str,
               stamp_ns: int | None = None) -> Transform:
        """Transform mapping points in `source_frame` into `target_frame` at `stamp_ns`.

        ``stamp_ns=None`` uses the latest time common to the timed edges on the path (0
        when all are static). Raises LookupException, ConnectivityException or
        ExtrapolationException.
        """
        if target_frame == source_frame:
            if target_frame not in self.frames():
                raise LookupException(f"frame {target_frame!r} does not exist")
            return Transform.identity(parent_frame=target_frame, child_frame=source_frame,
                                      stamp=0 if stamp_ns is None else int(stamp_ns))
        from_source, from_target = self._path(target_frame, source_frame)
        stamp = self._latest_common(from_source + from_target) if stamp_ns is None \
            else int(stamp_ns)
        up_source = np.eye(4)  # ancestor <- source
        for child in from_source:
            up_source = self._edges[child].at(stamp, self.tolerance_ns, child) @ up_source
        up_target = np.eye(4)  # ancestor <- target
        for child in from_target:
            up_target = self._edges[child].at(stamp, self.tolerance_ns, child) @ up_target
        rt, tt = up_target[:3, :3], up_target[:3, 3]
        target_from_ancestor = np.eye(4)
        target_from_ancestor[:3, :3] = rt.T
        target_from_ancestor[:3, 3] = -rt.T @ tt
        return Transform(target_from_ancestor @ up_source, parent_frame=target_frame,
                         child_frame=source_frame, stamp=stamp)

    def can_transform(self, target_frame: str, source_frame: str,
                      stamp_ns: int | None = None) -> bool:
        """Whether `lookup` would succeed."""
        try:
            self.lookup(target_frame, source_frame, stamp_ns)
        except TransformError:
            return False
        return True

    # ---------------------------------------------------------------- loading
    @classmethod
    def from_yaml(cls, path_or_dict, **kwargs) -> "TransformBuffer":
        """A buffer of static extrinsics from a YAML file (or its parsed dict).

        ``transforms: [{parent, child, translation: [x,y,z], rotation: [x,y,z,w]}]``;
        ``rpy: [roll, pitch, yaw]`` (radians, fixed axes X-Y-Z as in REP-103 / tf2's
        ``setRPY``) may replace ``rotation``; an entry may also be the arguments of
        ``static_transform_publisher`` (see `extrinsics_yaml`).
        """
        if isinstance(path_or_dict, dict):
            doc, where = path_or_dict, "extrinsics dict"
        else:
            where = str(path_or_dict)
            with open(Path(path_or_dict), encoding="utf-8") as fh:
                doc = yaml.safe_load(fh)
        items = doc.get("transforms") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise ValueError(f"{where}: expected a top-level 'transforms' list")
        buf = cls(**kwargs)
        for i, item in enumerate(items):
            buf.set_transform(static_from_entry(item, f"{where}: transforms[{i}]"),
                              static=True)
        return buf

"""A growable open-addressing hash table from voxel keys to dense slots, in torch.

Design note: the map stores its voxels in dense slot-indexed tensors; this table finds
the slot of each integer voxel key (or gives a new one) with vectorised linear probing:
every round looks up all pending keys at once, so one call costs O(keys × probe length)
and no Python loop runs per key. The table is kept at most half full (it doubles and
re-inserts when needed) and is rebuilt from the surviving keys after the map forgets
voxels (open addressing has no cheap delete). Written by hand: neither torch nor numpy
has a vectorised hash map, and a Python dict would loop per point.
"""
from __future__ import annotations

import torch

COORD_BITS = 21                      # per axis: ±2**20 voxels (±104 km at 0.1 m)
COORD_MAX = (1 << (COORD_BITS - 1)) - 1
_MULT = -7046029254386353131         # 0x9E3779B97F4A7C15 as int64 (Fibonacci hashing)
EMPTY = -1


def pack_coords(ijk: torch.Tensor) -> torch.Tensor:
    """(N,3) int64 voxel coordinates in ±COORD_MAX → (N,) int64 keys (21 bits per axis)."""
    off = ijk + (COORD_MAX + 1)
    return (off[:, 0] << (2 * COORD_BITS)) | (off[:, 1] << COORD_BITS) | off[:, 2]


def unpack_keys(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_coords`: (N,) keys → (N,3) int64 coordinates."""
    mask = (1 << COORD_BITS) - 1
    return torch.stack([(keys >> (2 * COORD_BITS)) & mask, (keys >> COORD_BITS) & mask,
                        keys & mask], dim=1) - (COORD_MAX + 1)


def _hash(keys: torch.Tensor, mask: int) -> torch.Tensor:
    """Fibonacci hashing: the top bits of the (wrapping) int64 product depend on every key
    bit (the low bits would ignore x and y)."""
    return ((keys * _MULT) >> (64 - mask.bit_length())) & mask


class VoxelHash:
    """key → slot for `size` distinct keys; `keys[slot]` holds each slot's key."""

    def __init__(self, device: torch.device | str = "cpu", capacity: int = 1 << 12) -> None:
        self.device = torch.device(device)
        self.table = torch.full((capacity,), EMPTY, dtype=torch.int64, device=self.device)
        self.keys = torch.empty(0, dtype=torch.int64, device=self.device)

    @property
    def size(self) -> int:
        return int(self.keys.numel())

    def nbytes(self) -> int:
        return self.table.numel() * 8 + self.keys.numel() * 8

    def _probe(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(found slot or -1, table cell where the probe stopped) for each key."""
        mask = self.table.numel() - 1
        cell = _hash(keys, mask)
        slot = torch.full_like(keys, EMPTY)
        pending = torch.arange(keys.numel(), device=self.device)
        while pending.numel():  # rounds = longest probe sequence (short at load <= 1/2)
            t = self.table[cell[pending]]
            hit = (t >= 0) & (self.keys[t.clamp(min=0)] == keys[pending]) if self.size else \
                torch.zeros_like(t, dtype=torch.bool)
            slot[pending[hit]] = t[hit]
            go_on = (t >= 0) & ~hit
            pending = pending[go_on]
            cell[pending] = (cell[pending] + 1) & mask
        return slot, cell

    def _insert(self, keys: torch.Tensor, slots: torch.Tensor) -> None:
        """Put new distinct `keys` (absent from the table) at `slots` into the table."""
        mask = self.table.numel() - 1
        cell = _hash(keys, mask)
        pending = torch.arange(keys.numel(), device=self.device)
        while pending.numel():
            c = cell[pending]
            free = self.table[c] < 0
            # several keys may want one free cell: the lowest index claims it this round
            uc, inv = torch.unique(c[free], return_inverse=True)
            first = torch.full((uc.numel(),), keys.numel(), dtype=torch.int64,
                               device=self.device).scatter_reduce_(0, inv, pending[free], "amin")
            won = free.clone()
            won[free] = first[inv] == pending[free]
            self.table[c[won]] = slots[pending[won]]
            pending = pending[~won]
            cell[pending] = (cell[pending] + 1) & mask

    def _reserve(self, n: int) -> None:
        """Grow the table so that `n` keys keep it at most half full."""
        cap = self.table.numel()
        if 2 * n <= cap:
            return
        while 2 * n > cap:
            cap *= 2
        self.table = torch.full((cap,), EMPTY, dtype=torch.int64, device=self.device)
        if self.size:
            self._insert(self.keys, torch.arange(self.size, device=self.device))

    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Slots of `keys` (-1 where absent)."""
        return self._probe(keys)[0] if keys.numel() else keys.clone()

    def find_or_add(self, ukeys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots of distinct `ukeys`, adding the absent ones at the end; (slots, is_new)."""
        slot = self.find(ukeys)
        new = slot < 0
        n_new = int(new.sum())
        if n_new:
            fresh = torch.arange(self.size, self.size + n_new, device=self.device)
            self._reserve(self.size + n_new)
            self._insert(ukeys[new], fresh)
            self.keys = torch.cat([self.keys, ukeys[new]])
            slot[new] = fresh
        return slot, new

    def rebuild(self, keys: torch.Tensor) -> None:
        """Replace the contents by `keys` (distinct) at slots 0..len-1 (after forgetting)."""
        cap = 1 << 12
        while 2 * keys.numel() > cap:
            cap *= 2
        self.table = torch.full((cap,), EMPTY, dtype=torch.int64, device=self.device)
        self.keys = keys.clone()
        if keys.numel():
            self._insert(keys, torch.arange(keys.numel(), device=self.device))

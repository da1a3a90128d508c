"""Intra-op thread count for small sparse convolutions on CPU.

Design note: spconv's CPU path issues thousands of tiny matrix products per step; with
several intra-op threads each one pays OpenMP fork/spin costs, which explode when the
cores are shared (measured here: a tiny SpUNet training step took 29 s with the default
threads on a loaded 2-core machine and 1.2 s with one thread). `cpu_threads` sets the
count for a block and restores it; it is process-wide, so callers use it around
U-Net work and the per-point CPU work of `models.voxels`, `models.mapping_device` and
the 3-NN (many small ops: same effect, BENCHMARKS "Point-work scaling"). No-op for CUDA
work.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


@contextmanager
def cpu_threads(n: int | None = 1) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads (None: leave unchanged)."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)

"""The step loop shared by every training command (FiT3D and DITR).

Design note: a step is a pure function of (seed, step): its random choices come from
:func:`step_rng`, so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have; :func:`run_steps` calls the step function, shows progress
on stderr and saves every N steps and at the end. A step may return its loss as a device
tensor: run_steps reads the pending ones together every `log_every` steps (one device
sync instead of one per step) and stops with an error on a non-finite loss.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The random stream of one training step (independent of every other step)."""
    return np.random.default_rng([int(seed), int(step)])


def _read(pending: list[float | torch.Tensor], first: int) -> list[float]:
    """The pending losses as floats (tensors read in one transfer); raises on NaN/inf."""
    tensors = [x.detach().reshape(()) for x in pending if isinstance(x, torch.Tensor)]
    read = iter(torch.stack(tensors).tolist() if tensors else [])
    values = [next(read) if isinstance(x, torch.Tensor) else float(x) for x in pending]
    for i, x in enumerate(values):
        if not math.isfinite(x):
            raise FloatingPointError(f"loss became {x} at step {first + i}: training diverged "
                                     "(lower the learning rate; resume from the last checkpoint)")
    return values


def run_steps(start: int, steps: int, step_fn: Callable[[int], float | torch.Tensor],
              save_fn: Callable[[int], None], save_every: int, progress: bool, desc: str,
              log_every: int = 1) -> list[float]:
    """Call ``step_fn(step)`` for step in [start, steps), saving every `save_every` steps
    and at the end; a tqdm bar on stderr when `progress`, updated every `log_every`
    steps. Returns the losses."""
    losses: list[float] = []
    pending: list[float | torch.Tensor] = []
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, file=sys.stderr,
               initial=start, total=steps, dynamic_ncols=True)
    for step in bar:
        pending.append(step_fn(step))
        done = step + 1
        save = done == steps or (save_every > 0 and done % save_every == 0)
        if save or done % max(1, log_every) == 0:  # read before saving: no NaN checkpoints
            losses += _read(pending, done - len(pending))
            pending = []
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if save:
            save_fn(done)
    bar.close()
    return losses

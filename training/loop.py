"""The step loop shared by every training command (FiT3D and DITR).

Design note: a step is a pure function of (seed, step): its random choices come from
:func:`step_rng`, so a run resumed from a checkpoint continues exactly as the
uninterrupted run would have; :func:`run_steps` calls the step function, shows progress
on stderr and saves every N steps and at the end.
"""
from __future__ import annotations

import sys
from collections.abc import Callable

import numpy as np
from tqdm import tqdm


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The random stream of one training step (independent of every other step)."""
    return np.random.default_rng([int(seed), int(step)])


def run_steps(start: int, steps: int, step_fn: Callable[[int], float],
              save_fn: Callable[[int], None], save_every: int, progress: bool, desc: str
              ) -> list[float]:
    """Call ``step_fn(step)`` for step in [start, steps), saving every `save_every` steps
    and at the end; a tqdm bar on stderr when `progress`. Returns the losses."""
    losses: list[float] = []
    bar = tqdm(range(start, steps), desc=desc, disable=not progress, file=sys.stderr,
               initial=start, total=steps, dynamic_ncols=True)
    for step in bar:
        loss = step_fn(step)
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}")
        done = step + 1
        if done == steps or (save_every > 0 and done % save_every == 0):
            save_fn(done)
    bar.close()
    return losses

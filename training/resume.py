"""Resume checkpoints of the FiT3D runs (`lift`, `finetune`): where they live, how they load.

Design note: a run writing ``OUTPUT`` keeps its resume state in ``OUTPUT.ckpt`` (written
atomically with `fit3d_ros.models.checkpoint.atomic_save`); a resumed run must be the same
run, so every identifying field stored in the checkpoint is compared with this run's
before anything is restored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def checkpoint_path(output: str | Path) -> Path:
    """Where a `lift` / `finetune` run writing `output` keeps its resume checkpoint."""
    return Path(f"{output}.ckpt")


def resume_checkpoint(output: str | Path, resume: bool) -> Path:
    """`checkpoint_path(output)`; with `resume`, FileNotFoundError if it does not exist."""
    path = checkpoint_path(output)
    if resume and not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint {path}")
    return path


def load_run_checkpoint(path: Path, fmt: str, kind: str, run_id: dict[str, Any]
                        ) -> dict[str, Any]:
    """A `kind` (lift, finetune) resume checkpoint of format `fmt` whose fields agree
    with `run_id` (ValueError naming the first that differs)."""
    d = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(d, dict) or d.get("format") != fmt:
        raise ValueError(f"{path} is not a {kind} checkpoint")
    for what, mine in run_id.items():
        if d[what] != mine:
            raise ValueError(f"--resume: the checkpoint's {what} differs from this run's "
                             f"({d[what]} vs {mine})")
    return d

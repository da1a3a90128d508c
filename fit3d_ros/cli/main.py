"""``fit3d-ros``: one sub-command per job.

Design note: every module in `fit3d_ros.cli` that defines ``register(subparsers)`` adds
its sub-commands (and sets ``func``); heavy imports (torch, rosbags) stay inside the
handlers so ``fit3d-ros --help`` is instant.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import fit3d_ros.cli as _cli_pkg


class CommandError(RuntimeError):
    """A user-facing failure: printed as ``fit3d-ros: error: ...`` with exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fit3d-ros",
        description="3D-aware 2D features (FiT3D) and DITR segmentation for ROS 2.")
    parser.add_argument("--version", action="version", version="fit3d_ros 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_cli_pkg.__path__), key=lambda m: m.name):
        if info.name in ("main", "__main__") or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_cli_pkg.__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, FileNotFoundError, ValueError) as exc:
        print(f"fit3d-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""A labelled multi-frame bag of the demo's procedural room (moving robot, TF, 16 rings)."""
from __future__ import annotations

from pathlib import Path

import pytest

from fit3d_ros.demo import scene as S
from fit3d_ros.demo.run import write_scene_bag


@pytest.fixture(scope="session")
def room_bag(tmp_path_factory) -> Path:
    """Six frames around the room (bag + class sidecar)."""
    out = tmp_path_factory.mktemp("room") / "room.mcap"
    return write_scene_bag(out, range(6), S.SceneConfig(frames=6))

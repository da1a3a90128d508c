"""Shared fixtures: the real sensor data in ../shared/data (skipped where absent)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FIT3D_ROS_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with a message where it is absent."""
    if not DATA.is_dir():
        pytest.skip(f"shared sensor data not found at {DATA} (set FIT3D_ROS_DATA)")
    return DATA


@pytest.fixture
def ros_env(monkeypatch) -> dict[str, str]:
    """Environment for real rclpy over DDS on loopback with a random domain id."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(random.randint(1, 200))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    for key in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION"):
        monkeypatch.setenv(key, env[key])
    return env

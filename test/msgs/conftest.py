"""Fixtures for the message-conversion tests."""
from __future__ import annotations

import pytest

from fit3d_ros.msgs import rclpy_types, rosbags_types


@pytest.fixture(params=["rosbags", "rclpy"])
def types(request):
    """Message constructors of each flavour: every conversion must work on both."""
    return rosbags_types() if request.param == "rosbags" else rclpy_types()

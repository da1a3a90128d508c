"""Node plumbing over real DDS: read-only / ranged / run-time parameters through the real
parameter services, /diagnostics under use_sim_time without /clock, clean SIGINT/SIGTERM."""
from __future__ import annotations

import signal

import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402

from .rosutil import ros_context, spin_until, start, stop  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray

NODE = ["-m", "fit3d_ros.nodes.feature_node", "--ros-args", "-p", "backbone:=vit_tiny_test",
        "-p", "random_init:=true", "-p", "use_sim_time:=true"]
pytestmark = pytest.mark.ros


def _value(v) -> ParameterValue:
    if isinstance(v, bool):
        return ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=v)
    if isinstance(v, float):
        return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=v)
    return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=v)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_parameters_diagnostics_under_sim_time_and_clean_shutdown(ros_env, sig):
    proc = start(NODE, ros_env)
    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            node = rclpy.create_node("probe", context=ctx)
            diags = []
            node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
            # use_sim_time and nobody publishes /clock: diagnostics still come (steady timer)
            assert spin_until(ctx, node, lambda: len(diags) >= 2, 240, proc), "no diagnostics"
            client = node.create_client(SetParameters, "/feature_node/set_parameters")
            assert client.wait_for_service(timeout_sec=30)

            def set_param(name, value):
                fut = client.call_async(SetParameters.Request(
                    parameters=[Parameter(name=name, value=_value(value))]))
                assert spin_until(ctx, node, fut.done, 30), name
                return fut.result().results[0]

            refused = set_param("backbone", "dinov2_base")       # start-up only: read-only
            assert not refused.successful and "read-only" in refused.reason.lower()
            assert not set_param("device", "cuda").successful
            assert not set_param("rate_limit_hz", -1.0).successful   # out of [0, 1000]
            assert not set_param("rate_limit_hz", 5000.0).successful
            assert set_param("rate_limit_hz", 2.0).successful       # run time
            assert set_param("publish_pca", False).successful
            assert set_param("throttle_s", 1.5).successful
            node.destroy_node()
        assert proc.poll() is None
        proc.send_signal(sig)
        proc.wait(60)
    finally:
        log = stop(proc)
    assert proc.returncode == 0, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    for text in ("parameter rate_limit_hz = 2.0", "parameter publish_pca = False",
                 "parameter throttle_s = 1.5"):  # the on-set callback applied them
        assert text in log, log

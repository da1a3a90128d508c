"""semantic_map_node over real DDS: map from labelled clouds, locate requests, bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (ros extra)")

from fit3d_ros.demo import scene as S  # noqa: E402
from fit3d_ros.demo.run import demo_classes  # noqa: E402
from fit3d_ros.msgs import cloud_to_pointcloud2, pointcloud2_to_cloud, rclpy_types  # noqa: E402
from fit3d_ros.sensors import PointCloud  # noqa: E402

from fit3d_ros.nodes.semantic_map_node import SemanticMapNode  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from .rosutil import diagnostic_counts, ros_context, spin_until, start, stop  # noqa: E402

pytestmark = pytest.mark.ros


def _scans(n: int) -> list[PointCloud]:
    """Demo-room scans in the base_link frame (labels as UINT32 like issue 14's node)."""
    cfg, rng = S.SceneConfig(frames=n), np.random.default_rng(0)
    out = []
    for i in range(n):
        scan = S.render_lidar(S.base_pose(i, cfg), cfg, 1000 + i, rng)
        scan = scan.transformed(S.lidar_mount())  # base_link frame
        scan.frame_id = f"base_{i}"                # each scan has its own static pose
        scan.extra = {"confidence": np.full(len(scan), 0.9, np.float32)}
        out.append(scan)
    return out


def test_map_published_and_locate_answered(tmp_path, ros_env):
    n = 4
    scans = _scans(n)
    # static transforms map <- base_i (the node has no /tf here: tf2_msgs is not on PyPI)
    items = []
    for i in range(n):
        pose = S.base_pose(i, S.SceneConfig(frames=n))
        items.append({"parent": "map", "child": f"base_{i}",
                      "translation": pose.translation.tolist(), "rotation": pose.quat.tolist()})
    extr = tmp_path / "extr.yaml"
    extr.write_text(yaml.safe_dump({"transforms": items}))
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(demo_classes().to_dict()))
    proc = start(["-m", "fit3d_ros.nodes.semantic_map_node", "--ros-args",
                  "-p", f"classes:={classes}", "-p", f"extrinsics_file:={extr}",
                  "-p", "qos:=reliable", "-p", "map_rate_hz:=4.0",
                  "-r", "segmentation_node/segmentation:=/seg"], ros_env)
    types = rclpy_types()
    msgs = [cloud_to_pointcloud2(s, types) for s in scans]
    for m in msgs:  # labels as UINT32 (datatype 6)
        for f in m.fields:
            if f.name == "label":
                f.datatype = 6
    lost = cloud_to_pointcloud2(PointCloud(5, "nowhere", np.zeros((3, 3)), label=[0, 0, 0]),
                                types)
    got: dict[str, list] = {"map": [], "result": [], "diag": [], "markers": []}
    try:  # optional: visualization_msgs (the ros extra installs it)
        from visualization_msgs.msg import MarkerArray
    except ImportError:  # then the node publishes no ~/markers either
        MarkerArray = None
    sent = {"clouds": False}
    try:
        with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
            probe = rclpy.create_node("probe", context=ctx)
            pub = probe.create_publisher(PointCloud2, "/seg", 10)
            req = probe.create_publisher(String, "/semantic_map_node/locate", 10)
            probe.create_subscription(PointCloud2, "/semantic_map_node/map", got["map"].append, 2)
            probe.create_subscription(String, "/semantic_map_node/locate_result",
                                      got["result"].append, 10)
            probe.create_subscription(DiagnosticArray, "/diagnostics", got["diag"].append, 50)
            if MarkerArray is not None:
                probe.create_subscription(MarkerArray, "/semantic_map_node/markers",
                                          got["markers"].append, 10)

            def counts() -> dict[str, int]:
                return diagnostic_counts(got["diag"], "semantic_map_node")

            def fed() -> bool:
                if not sent["clouds"] and pub.get_subscription_count() and \
                        req.get_subscription_count():
                    for m in msgs + [lost]:
                        pub.publish(m)
                    sent["clouds"] = True
                c = counts()
                return c.get("clouds_integrated", 0) == n and c.get("missing_transform", 0) == 1

            assert spin_until(ctx, probe, fed, 90, proc), (counts(), stop(proc)[-3000:])
            got["map"].clear()
            assert spin_until(ctx, probe, lambda: bool(got["map"]), 30, proc)
            req.publish(String(data=json.dumps({"class": "table"})))
            req.publish(String(data=json.dumps({"class": "car"})))
            req.publish(String(data="not json"))
            assert spin_until(ctx, probe, lambda: len(got["result"]) >= 3 and (
                MarkerArray is None or got["markers"]), 30, proc)
    finally:
        log = stop(proc)
    cloud = pointcloud2_to_cloud(got["map"][-1])
    assert cloud.frame_id == "map" and len(cloud) > 1000
    assert {"confidence"} <= set(cloud.extra) and cloud.rgb is not None
    np.testing.assert_allclose(cloud.extra["confidence"], 0.9, atol=1e-6)
    # the table's points landed where the scene has it
    table = cloud.xyz[cloud.label == S.CLASSES.index("table")]
    lo, hi = S.BOXES[S.CLASSES.index("table")]
    assert len(table) and np.all(table >= np.asarray(lo) - 0.05) and \
        np.all(table <= np.asarray(hi) + 0.05)
    results = [json.loads(m.data) for m in got["result"]]
    (ok,) = [r for r in results if isinstance(r["request"], dict)
             and r["request"].get("class") == "table"]
    (inst,) = ok["instances"]
    np.testing.assert_allclose(inst["box_min"], lo, atol=0.05)
    np.testing.assert_allclose(inst["box_max"], hi, atol=0.05)
    errors = [r["error"] for r in results if "error" in r]
    assert any("unknown class 'car'" in e and "'table'" in e for e in errors), errors
    assert len(errors) == 2, errors
    assert "no transform" in log and "nowhere" in log
    if MarkerArray is not None:  # DELETEALL, then one box per table instance
        boxes = [m for m in got["markers"][0].markers if m.action == 0]
        assert len(boxes) == 1 and boxes[0].header.frame_id == "map"
        assert boxes[0].scale.x == pytest.approx(hi[0] - lo[0], abs=0.1)


def test_default_qos_follows_our_reliable_segmentation_output(ros_env):
    """qos auto (the default): the map node's subscription to ~/segmentation becomes
    reliable once its publisher (segmentation_node publishes reliable) is seen."""
    with ros_context(int(ros_env["ROS_DOMAIN_ID"])) as ctx:
        node = SemanticMapNode(class_names=["a", "b"], context=ctx)
        pub_node = rclpy.create_node("seg_pub", context=ctx)
        pub = pub_node.create_publisher(PointCloud2, "/segmentation_node/segmentation", 10)
        match = node._qos_match
        assert match is not None and match.changes == 0
        sub = match.subs[0]
        assert sub.sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
        ok = spin_until(ctx, node, lambda: match.changes >= 1, 30)
        assert ok and sub.sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        assert pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        pub_node.destroy_node()
        node.destroy_node()

"""The launch file, its executables and parameter file, as installed from a wheel.

`ros2 launch` is not installable here: where `launch`/`launch_ros` import, the launch
description is loaded for real; otherwise the wheel is checked to contain every
executable and file the launch file names, and the YAML's keys are checked against the
parameters the nodes really declare.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "perception.launch.py"
CONFIG = ROOT / "config" / "perception.yaml"


def _launch_executables() -> set[str]:
    """Executables named in the launch file's Node(...) calls (parsed, not run)."""
    tree = ast.parse(LAUNCH.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Node":
            for kw in node.keywords:
                if kw.arg == "executable":
                    names.add(ast.literal_eval(kw.value))
    return names


def test_launch_nodes_per_mode_with_stub_launch_modules(monkeypatch):
    """Run the launch file's node selection with minimal stand-ins for launch/launch_ros
    (not installable here): which executables start for each mode and `composed`."""
    class Cfg:
        def __init__(self, name):
            self.name = name

        def perform(self, context):
            return context[self.name]

    class Node:
        def __init__(self, **kw):
            self.kw = kw

    stubs = {"launch": types.SimpleNamespace(LaunchDescription=list),
             "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=None,
                                                     OpaqueFunction=None),
             "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=Cfg),
             "launch_ros.actions": types.SimpleNamespace(Node=Node),
             "ament_index_python.packages": types.SimpleNamespace(
                 get_package_share_directory=lambda p: "/share")}
    for name, mod in stubs.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("perception_launch_stub", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = {"config": "/c.yaml", "namespace": "", "use_sim_time": "true", "checkpoint": "",
            "map": "false"}
    run = lambda **kw: [n.kw for n in module._nodes({**base, **kw})]  # noqa: E731
    (one,) = run(mode="ditr", composed="true")
    assert one["executable"] == "perception"
    assert one["parameters"] == ["/c.yaml", {"use_sim_time": True, "mode": "ditr"}]
    assert [n["executable"] for n in run(mode="rgbd", composed="false")] == [
        "feature_node", "segmentation_node"]
    assert [n["executable"] for n in run(mode="features", composed="true")] == ["feature_node"]
    (seg,) = run(mode="image_free", composed="true", checkpoint="/m/seg.ckpt")
    assert seg["parameters"][1]["checkpoint"] == "/m/seg.ckpt"
    (composed,) = run(mode="ditr", composed="true", map="true")
    assert composed["executable"] == "perception" and composed["arguments"] == ["--map"]
    assert one["arguments"] == []
    nodes = run(mode="ditr", composed="false", map="true", checkpoint="/m/seg.ckpt")
    assert [n["executable"] for n in nodes] == ["feature_node", "segmentation_node",
                                                "semantic_map_node"]
    assert nodes[2]["parameters"][1] == {"use_sim_time": True, "checkpoint": "/m/seg.ckpt"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(out), str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("fit3d_ros-*.whl")
    return zipfile.ZipFile(whl)


def test_wheel_installs_share_files_and_every_launched_executable(wheel):
    names = wheel.namelist()
    share = "fit3d_ros-0.1.0.data/data/share/"
    for f in ("ament_index/resource_index/packages/fit3d_ros", "fit3d_ros/package.xml",
              "fit3d_ros/launch/perception.launch.py", "fit3d_ros/config/perception.yaml"):
        assert share + f in names, f
    # mapped folders install under fit3d_ros, never as top-level packages
    assert "fit3d_ros/models/__init__.py" in names and "fit3d_ros/kernels/__init__.py" in names
    assert not any(n.startswith(("models/", "training/", "kernels/")) for n in names)
    entry = wheel.read("fit3d_ros-0.1.0.dist-info/entry_points.txt").decode()
    scripts = {line.split("=")[0].strip() for line in entry.splitlines() if "=" in line}
    assert _launch_executables() == {"perception", "feature_node", "segmentation_node",
                                     "semantic_map_node"}
    assert _launch_executables() <= scripts
    for line in entry.splitlines():
        if "=" in line:
            module, func = line.split("=")[1].strip().split(":")
            assert callable(getattr(importlib.import_module(module), func)), line


def test_launch_description_loads_where_launch_is_installed(monkeypatch, tmp_path):
    pytest.importorskip("launch", reason="launch is not installable from PyPI")
    pytest.importorskip("launch_ros", reason="launch_ros is not installable from PyPI")
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    desc = module.generate_launch_description()
    assert len(desc.entities) == 8  # seven arguments and the node selection


@pytest.mark.ros
def test_yaml_keys_are_declared_node_parameters(tmp_path, ros_env):
    rclpy = pytest.importorskip("rclpy")
    # optional: rclpy (the launch-file tests above run without ROS)
    from rclpy.parameter import Parameter

    from fit3d_ros.nodes.feature_node import FeatureNode
    from fit3d_ros.nodes.segmentation_node import SegmentationNode
    from fit3d_ros.nodes.semantic_map_node import SemanticMapNode
    from .fixtures import tiny_checkpoint

    doc = yaml.safe_load(CONFIG.read_text())
    common = set(doc["/**"]["ros__parameters"])
    ckpt = tiny_checkpoint(tmp_path / "c.ckpt")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    try:
        feat = FeatureNode(context=ctx, parameter_overrides=[
            Parameter("backbone", value="vit_tiny_test"), Parameter("random_init", value=True)])
        seg = SegmentationNode(context=ctx, parameter_overrides=[
            Parameter("checkpoint", value=str(ckpt))])
        smap = SemanticMapNode(context=ctx, parameter_overrides=[
            Parameter("checkpoint", value=str(ckpt))])
        declared = {"feature_node": set(feat._parameters), "segmentation_node": set(seg._parameters),
                    "semantic_map_node": set(smap._parameters)}
        for name in declared:
            keys = set(doc[f"/**/{name}"]["ros__parameters"]) | (common & declared[name])
            assert keys <= declared[name], (name, keys - declared[name])
        # every shared key is used by at least one node
        assert common <= declared["feature_node"] | declared["segmentation_node"] | {"use_sim_time"}
        feat.destroy_node()
        seg.destroy_node()
        smap.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)

"""package.xml (issue 14 item 9): every declared dependency is a real rosdep key, and every
third-party import of the package is covered by package.xml or setup.py.

The known keys were checked by hand in ros/rosdistro (``rosdep/python.yaml`` for the
``python3-*`` apt keys; the ROS packages are released in Jazzy). Keys that do NOT exist,
so the README documents them as pip installs: torch (``python3-pytorch-pip`` is
end-of-life since 2025-04-30), safetensors, rosbags, spconv, gsplat, huggingface_hub;
``python3-timm-pip`` / ``python3-open3d-pip`` exist but are pip keys (rosdep would run a
system-wide pip install, which Ubuntu 24.04 refuses and which would pull CUDA torch), so
they are not declared either.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ROS_PACKAGES = {"rclpy", "rcl_interfaces", "builtin_interfaces", "sensor_msgs", "std_msgs",
                "geometry_msgs", "tf2_ros", "tf2_msgs", "message_filters", "diagnostic_msgs",
                "visualization_msgs", "rosgraph_msgs", "sensor_msgs_py", "launch", "launch_ros"}
PYTHON_KEYS = {"python3-numpy": "numpy", "python3-yaml": "pyyaml", "python3-pil": "pillow",
               "python3-tqdm": "tqdm", "python3-setuptools": "setuptools",
               "python3-pytest": "pytest", "python3-pytest-timeout": "pytest-timeout"}
# import name -> distribution, where they differ
DISTRIBUTION = {"PIL": "pillow", "yaml": "pyyaml", "open3d": "open3d-cpu"}
# imported only when present, with a fallback (module docstrings say so)
OPTIONAL = {"torchvision": "compat shim, applied only when installed (timm pulls it)",
            "tf2_ros": "nodes/extrinsics falls back to sensors.tf_buffer",
            "message_filters": "sensors.sync falls back to its own synchronizer"}


def _depends() -> dict[str, set[str]]:
    root = ET.parse(ROOT / "package.xml").getroot()
    out: dict[str, set[str]] = {}
    for el in root:
        if el.tag.endswith("depend"):
            out.setdefault(el.tag, set()).add(el.text.strip())
    return out


def _setup_names() -> set[str]:
    code = ("import json; from distutils.core import run_setup; "
            "d = run_setup('setup.py', stop_after='init'); "
            "print(json.dumps([d.install_requires, d.extras_require]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    base, extras = json.loads(out.strip().splitlines()[-1])
    reqs = [*base, *(r for group in extras.values() for r in group)]
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def _third_party_imports() -> dict[str, str]:
    """Top-level import name -> one file importing it (imports anywhere in a module, and
    importlib.import_module("...") literals)."""
    found: dict[str, str] = {}
    for folder in ("fit3d_ros", "models", "training", "kernels"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") ==
                      "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
                    names = [node.args[0].value]
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top != "fit3d_ros":
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_declared_dependencies_are_known_rosdep_keys():
    deps = _depends()
    declared = set().union(*deps.values())
    unknown = declared - ROS_PACKAGES - set(PYTHON_KEYS)
    assert not unknown, f"not a rosdep key we checked: {sorted(unknown)}"
    assert {"python3-numpy", "python3-yaml", "python3-pil"} <= deps["exec_depend"]
    # nothing that resolves to a system-wide pip install
    assert not [d for d in declared if d.endswith("-pip")]


def test_every_third_party_import_is_covered():
    deps = set().union(*_depends().values())
    covered = _setup_names() | {canonicalize_name(PYTHON_KEYS[k]) for k in deps
                                if k in PYTHON_KEYS}
    ros = deps & ROS_PACKAGES
    imports = _third_party_imports()
    assert {"torch", "numpy", "rclpy", "timm", "yaml"} <= set(imports)  # the scan works
    missing = {}
    for name, where in imports.items():
        if name in ros or name in OPTIONAL:
            continue
        if canonicalize_name(DISTRIBUTION.get(name, name)) not in covered:
            missing[name] = where
    assert not missing, f"imported but declared nowhere: {missing}"

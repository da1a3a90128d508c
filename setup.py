"""fit3d_ros: 3D-aware 2D foundation features and DITR point-cloud segmentation for ROS 2.

Installs as a plain pip package and as an ament_python package (colcon build). The
``models/``, ``training/`` and ``kernels/`` folders install as ``fit3d_ros.models``,
``fit3d_ros.training`` and ``fit3d_ros.kernels`` (package_dir), never as top-level names.
"""
from glob import glob
import os

from setuptools import find_packages, setup

PACKAGE = "fit3d_ros"


def _subpackages(folder: str) -> list[str]:
    """Dotted names of `folder` and its sub-packages, mapped under fit3d_ros."""
    found = [f"{PACKAGE}.{folder}"]
    for sub in find_packages(where=folder):
        found.append(f"{PACKAGE}.{folder}.{sub}")
    return found


_mapped = ("models", "training", "kernels")
packages = [p for p in find_packages(include=[PACKAGE, f"{PACKAGE}.*"])]
package_dir = {PACKAGE: PACKAGE}
for folder in _mapped:
    for name in _subpackages(folder):
        packages.append(name)
        package_dir[name] = name.replace(f"{PACKAGE}.", "", 1).replace(".", "/")

data_files = [
    ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
    (f"share/{PACKAGE}", ["package.xml"]),
    (f"share/{PACKAGE}/launch", glob("launch/*.py")),
    (f"share/{PACKAGE}/config", glob("config/*.yaml")),
]

ROS = ["ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-geometry-msgs",
       "ros-rmw-fastrtps-cpp", "ros-diagnostic-msgs"]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="3D-aware 2D foundation features (FiT3D) and DITR segmentation for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={f"{PACKAGE}.kernels": ["csrc/*.cpp", "csrc/*.h"]},
    data_files=[d for d in data_files if d[1]],
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",          # pinned to 2.13.0 (CPU) by constraints.txt
        "rosbags>=0.10",
        "pillow>=9",
        "pyyaml>=6",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "setuptools",
        "ninja",               # builds the C++ rasterizer (torch.utils.cpp_extension)
        "timm>=1.0",
    ],
    extras_require={
        "ros": ROS,
        "cpu": ["spconv"],     # CPU build of spconv (pick cpu or cuda, not both)
        "viz": ["open3d-cpu"],
        "cuda": ["gsplat", "spconv-cu120"],
        "test": ["pytest>=7", "pytest-timeout", "mcap"],
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "fit3d-ros = fit3d_ros.cli.main:main",
            "feature_node = fit3d_ros.nodes.feature_node:main",
            "segmentation_node = fit3d_ros.nodes.segmentation_node:main",
            "perception = fit3d_ros.nodes.perception:main",
            "player = fit3d_ros.nodes.player:main",
        ],
    },
)

"""fit3d_ros: 3D-aware 2D foundation features and DITR point-cloud segmentation for ROS 2.

Installs as a plain pip package (``pip install .``, ``pip install -e .``) and as an
ament_python package (``colcon build``, ``colcon build --symlink-install``). The top-level
``models/``, ``training/`` and ``kernels/`` folders are reached through relative symlinks
committed in git (``fit3d_ros/models -> ../models`` and so on), so they install only as
``fit3d_ros.models``, ``fit3d_ros.training`` and ``fit3d_ros.kernels`` (with their
sub-packages), never as top-level names. There is deliberately no ``package_dir`` mapping:
colcon's symlink-install rejects a mapping of ``fit3d_ros`` onto itself and cannot map
folders that lie outside the package. ``find_packages`` follows the symlinks, ``build_py``
copies the real files into wheels, and editable installs resolve through the links.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "fit3d_ros"


# fit3d_ros/{models,training,kernels} are symlinks to the top-level folders (see above)
packages = find_packages(include=[PACKAGE, f"{PACKAGE}.*"])

data_files = [
    ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
    (f"share/{PACKAGE}", ["package.xml"]),
    (f"share/{PACKAGE}/launch", glob("launch/*.py")),
    (f"share/{PACKAGE}/config", glob("config/*.yaml")),
]

ROS = ["ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-geometry-msgs",
       "ros-rmw-fastrtps-cpp", "ros-diagnostic-msgs",
       "ros-visualization-msgs"]  # semantic_map_node's ~/markers (optional at run time)

setup(
    name=PACKAGE,
    version="0.1.0",
    description="3D-aware 2D foundation features (FiT3D) and DITR segmentation for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages,
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
        "huggingface_hub",     # models/weights.py (also a timm dependency)
    ],
    extras_require={
        "ros": ROS,
        "cpu": ["spconv"],     # CPU build of spconv (pick cpu or cuda, not both)
        "viz": ["open3d-cpu"],
        # spconv-cu120 has no cp312 wheels (Ubuntu 24.04 / Jazzy): cu121 from 3.12 on
        "cuda": ["gsplat", 'spconv-cu120; python_version < "3.12"',
                 'spconv-cu121; python_version >= "3.12"'],
        "test": ["pytest>=7", "pytest-timeout", "mcap",
                 "colcon-core>=0.15.2", "colcon-ros>=0.4",  # test/test_setup.py
                 "uv"],  # test/test_install.py: resolutions for other Pythons, metadata only
    },
    zip_safe=False,
    entry_points={
        "console_scripts": [
            "fit3d-ros = fit3d_ros.cli.main:main",
            "feature_node = fit3d_ros.nodes.feature_node:main",
            "segmentation_node = fit3d_ros.nodes.segmentation_node:main",
            "perception = fit3d_ros.nodes.perception:main",
            "semantic_map_node = fit3d_ros.nodes.semantic_map_node:main",
            "player = fit3d_ros.nodes.player:main",
        ],
    },
)

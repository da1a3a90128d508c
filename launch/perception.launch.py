"""Start fit3d_ros perception: `ros2 launch fit3d_ros perception.launch.py checkpoint:=SEG.ckpt`.

Launch arguments:
  checkpoint    SEG.ckpt from `fit3d-ros train-seg` (needed unless mode:=features;
                overrides the config file's value when given)
  config        parameters file (default: share/fit3d_ros/config/perception.yaml)
  mode          ditr (cameras + cloud) | image_free (D-DITR, cloud only) |
                rgbd (depth cloud + its camera) | features (feature node only)
  composed      true: one `perception` process (ViT runs once per image);
                false: separate feature_node and segmentation_node processes
  map           true: also run semantic_map_node (in the composed process, or as its
                own process), accumulating ~/segmentation into ~/map
  use_sim_time  true when playing a bag with /clock
  namespace     namespace for the nodes
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "fit3d_ros"
MODES = ["ditr", "image_free", "rgbd", "features"]


def _nodes(context):
    arg = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    mode, composed = arg("mode"), arg("composed").lower() == "true"
    sim = arg("use_sim_time").lower() == "true"
    common = dict(package=PACKAGE, namespace=arg("namespace"), output="screen")
    overrides = {"use_sim_time": sim}
    seg_overrides = dict(overrides, mode=mode)
    if arg("checkpoint"):
        seg_overrides["checkpoint"] = arg("checkpoint")
    params = [arg("config")]
    if mode == "features":
        return [Node(executable="feature_node", parameters=params + [overrides], **common)]
    with_map = arg("map").lower() == "true"
    if composed:  # one process hosting `feature_node`, `segmentation_node` (+ the map node)
        return [Node(executable="perception", parameters=params + [seg_overrides],
                     arguments=["--map"] if with_map else [], **common)]
    nodes = [Node(executable="feature_node", parameters=params + [overrides], **common),
             Node(executable="segmentation_node", parameters=params + [seg_overrides],
                  **common)]
    if with_map:
        map_overrides = {k: v for k, v in seg_overrides.items() if k != "mode"}
        nodes.append(Node(executable="semantic_map_node", parameters=params + [map_overrides],
                          **common))
    return nodes


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="segmentation checkpoint (fit3d-ros train-seg)"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config",
                                                                   "perception.yaml")),
        DeclareLaunchArgument("mode", default_value="ditr", choices=MODES),
        DeclareLaunchArgument("composed", default_value="true", choices=["true", "false"]),
        DeclareLaunchArgument("map", default_value="false", choices=["true", "false"]),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("namespace", default_value=""),
        OpaqueFunction(function=_nodes),
    ])

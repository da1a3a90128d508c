"""Start fit3d_ros perception: `ros2 launch fit3d_ros perception.launch.py [mode:=ditr]`.

Launch arguments:
  config        parameters file (default: share/fit3d_ros/config/perception.yaml)
  mode          ditr (cameras + cloud) | image_free (D-DITR, cloud only) |
                rgbd (depth cloud + its camera) | features (feature node only)
  composed      true: one `perception` process (ViT runs once per image);
                false: separate feature_node and segmentation_node processes
  use_sim_time  true when playing a bag with /clock
  namespace     namespace for the nodes
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

PACKAGE = "fit3d_ros"
MODES = ["ditr", "image_free", "rgbd", "features"]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    config = LaunchConfiguration("config")
    mode = LaunchConfiguration("mode")
    composed = LaunchConfiguration("composed")
    sim = LaunchConfiguration("use_sim_time")
    ns = LaunchConfiguration("namespace")
    overrides = {"use_sim_time": sim, "mode": mode}
    separate = PythonExpression(["'", composed, "'.lower() != 'true' and '", mode,
                                 "' != 'features'"])
    together = PythonExpression(["'", composed, "'.lower() == 'true' and '", mode,
                                 "' != 'features'"])
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config",
                                                                   "perception.yaml")),
        DeclareLaunchArgument("mode", default_value="ditr", choices=MODES),
        DeclareLaunchArgument("composed", default_value="true", choices=["true", "false"]),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("namespace", default_value=""),
        # the composed process hosts the nodes `feature_node` and `segmentation_node`
        Node(package=PACKAGE, executable="perception", namespace=ns,
             parameters=[config, overrides], output="screen", condition=IfCondition(together)),
        Node(package=PACKAGE, executable="feature_node", name="feature_node", namespace=ns,
             parameters=[config, {"use_sim_time": sim}], output="screen",
             condition=UnlessCondition(together)),
        Node(package=PACKAGE, executable="segmentation_node", name="segmentation_node",
             namespace=ns, parameters=[config, overrides], output="screen",
             condition=IfCondition(separate)),
    ])

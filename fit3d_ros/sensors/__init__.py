"""Typed sensor data shared by the whole package (no ROS imports)."""
from .camera import CameraModel
from .frames import PointCloud, RGBDFrame
from .sync import ApproximateTimeSynchronizer, make_ros_synchronizer, make_subscriber
from .tf_buffer import (ConnectivityException, ExtrapolationException, LookupException,
                        TransformBuffer, TransformError)
from .transforms import Transform, matrix_to_quat, quat_to_matrix, slerp

__all__ = ["ApproximateTimeSynchronizer", "CameraModel", "ConnectivityException",
           "ExtrapolationException", "LookupException", "PointCloud", "RGBDFrame",
           "Transform", "TransformBuffer", "TransformError", "make_ros_synchronizer",
           "make_subscriber", "matrix_to_quat", "quat_to_matrix", "slerp"]

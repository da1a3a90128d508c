"""Typed sensor data shared by the whole package (no ROS imports)."""
from .camera import CameraModel
from .frames import PointCloud, RGBDFrame
from .transforms import Transform, matrix_to_quat, quat_to_matrix, slerp

__all__ = ["CameraModel", "PointCloud", "RGBDFrame", "Transform", "matrix_to_quat",
           "quat_to_matrix", "slerp"]

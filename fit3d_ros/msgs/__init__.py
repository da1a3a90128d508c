"""ROS message ⇄ typed sensor data conversions (rclpy and rosbags messages alike).

Design note: every reader is duck-typed on the ROS field names, so the same function
decodes an rclpy message from a live subscription and a rosbags message from a bag;
every writer takes a `MsgTypes` (`rclpy_types()` or `rosbags_types()`) that says which
flavour to build. Failures raise `ConversionError` (a ValueError) naming the field.
"""
from .camera_info import camera_info_to_model, model_to_camera_info
from .features import feature_info, features_from_msg, features_from_msgs, features_to_msg
from .image import (depth_to_image, encoding_layout, image_to_depth, image_to_numpy,
                    image_to_rgb, numpy_to_image)
from .pointcloud2 import cloud_to_pointcloud2, pointcloud2_to_cloud, pointcloud2_to_numpy
from .tf import (tf_message_to_transforms, transform_stamped_to_transform,
                 transform_to_transform_stamped, transforms_to_tf_message)
from .types import (ConversionError, MsgTypes, header, ns_to_time, rclpy_types,
                    rosbags_types, rosbags_typestore, stamp_to_ns)

__all__ = [
    "ConversionError", "MsgTypes", "camera_info_to_model", "cloud_to_pointcloud2",
    "depth_to_image", "encoding_layout", "feature_info", "features_from_msg",
    "features_from_msgs", "features_to_msg", "header", "image_to_depth", "image_to_numpy",
    "image_to_rgb", "model_to_camera_info", "ns_to_time", "numpy_to_image",
    "pointcloud2_to_cloud", "pointcloud2_to_numpy", "rclpy_types", "rosbags_types",
    "rosbags_typestore", "stamp_to_ns", "tf_message_to_transforms",
    "transform_stamped_to_transform", "transform_to_transform_stamped",
    "transforms_to_tf_message",
]

"""rosbag2 logs: reading/writing (rosbags), dataset readers and converters, read-back.

Design note: `bag` is the only module that touches rosbags' storage API; `datasets` /
`lidar_datasets` turn dataset folders into `fit3d_ros.sensors` types without ROS;
`convert` writes those as ROS messages into bags; `scene_io` reads bags back into the
same types, so a round trip can be checked value by value.
"""
from .bag import (BagError, BagMessage, BagReader, BagWriter, TopicInfo, bag_info,
                  bag_storage, open_bag)
from .convert import (kitti_to_bag, nuscenes_to_bag, rgbd_to_bag, semantickitti_to_bag)
from .datasets import (KittiFrame, KittiObject, NuScenesSample, read_kitti_object,
                       read_nuscenes, read_rgbd_dir, read_semantickitti)
from .scene_io import (read_camera_frames, read_clouds, read_rgbd_frames,
                       read_transform_buffer, replay)

__all__ = ["BagError", "BagMessage", "BagReader", "BagWriter", "KittiFrame", "KittiObject",
           "NuScenesSample", "TopicInfo", "bag_info", "bag_storage", "kitti_to_bag",
           "nuscenes_to_bag", "open_bag", "read_camera_frames", "read_clouds",
           "read_kitti_object", "read_nuscenes", "read_rgbd_dir", "read_rgbd_frames",
           "read_semantickitti", "read_transform_buffer", "replay", "rgbd_to_bag",
           "semantickitti_to_bag"]

"""fit3d_ros: 3D-aware 2D foundation features and DITR segmentation for ROS 2."""

__version__ = "0.1.0"

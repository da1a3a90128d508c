"""fit3d_ros.training"""

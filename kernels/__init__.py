"""fit3d_ros.kernels"""

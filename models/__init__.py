"""fit3d_ros.models"""

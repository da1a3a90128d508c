"""rclpy edge: nodes, the composed perception executable and the bag player.

Only this package (and the `play` command) imports rclpy.
"""

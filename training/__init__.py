"""fit3d_ros.training: the training commands, by method (`fit3d`, `ditr`), and the
step loop, presets and resume checkpoints they share."""

"""The `fit3d-ros demo` main job: a procedural indoor scene, tiny training, replay, report."""

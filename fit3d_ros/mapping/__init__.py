"""Semantic voxel maps from segmented clouds, instance queries and SAB3R-style evaluation
(ROS-free; `fit3d_ros.nodes.semantic_map_node` is the ROS edge). Not the DITR point →
patch mapping, which is `fit3d_ros.models.mapping`."""
from .evaluate import evaluate_map, nearest
from .instances import Instance, connected_components, locate, locate_feature
from .io import export_ply, load_map, save_map, write_ply
from .voxel_map import IntegrateStats, MapConfig, VoxelMap

__all__ = ["Instance", "IntegrateStats", "MapConfig", "VoxelMap", "connected_components",
           "evaluate_map", "export_ply", "load_map", "locate", "locate_feature", "nearest",
           "save_map", "write_ply"]

"""fit3d_ros.models: 2D ViT backbones, FiT3D assembly, DITR mapping, voxelisation, sparse U-Net.

Names are imported lazily (PEP 562) so that ``import fit3d_ros.models`` stays cheap and
timm / spconv load only when a backbone or the U-Net is used.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Backbone": "backbones", "BackboneOutput": "backbones", "build_backbone": "backbones",
    "backbone_names": "backbones", "input_size": "backbones", "BACKBONES": "backbones",
    "FINETUNED": "backbones", "TINY_TEST": "backbones", "DITR_TOKEN_BUDGET": "backbones",
    "WeightsUnavailableError": "weights", "WeightsFormatError": "weights",
    "read_state_dict": "weights",
    "FiT3DConfig": "fit3d", "FiT3DFeatures": "fit3d",
    "Projection": "mapping", "project_points": "mapping",
    "gather_point_features": "mapping",
    "Voxelization": "voxels", "voxelize": "voxels",
    "SpUNet": "spunet", "SpUNetConfig": "spunet", "SpUNetOutput": "spunet",
    "SegmentationHead": "heads", "DistillationHead": "heads",
    "cosine_distillation_loss": "heads",
    "DatasetBatchNorm1d": "sparse_blocks",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

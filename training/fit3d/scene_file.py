"""The lifted feature scene on disk: Gaussians + decoder d + views + provenance.

Design note: one ``torch.save`` file of plain tensors, strings and numbers, so it loads
with ``torch.load(weights_only=True)`` (no pickled classes). It carries everything
Algorithm 1 needs to render ``F_high = d(r_feat(G, P_i))`` for a training view without
the original log: the Gaussian parameters, the decoder's 3×3 conv weight (no bias, as
in FiT3D), the training views' images (uint8, at the render size), world→camera
matrices and intrinsics, plus the teacher's identity (backbone name, weights source,
seed) and the data it came from. Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fit3d_ros.models.checkpoint import atomic_save
from fit3d_ros.training.fit3d.gaussians import GaussianModel

FORMAT = "fit3d_ros.feature-scene/1"


class SceneFileError(ValueError):
    """A file is not a feature scene written by ``fit3d-ros lift`` (or is damaged)."""


def make_decoder(feature_dim: int, out_dim: int) -> nn.Conv2d:
    """FiT3D's per-scene decoder d: one 3×3 conv D -> C, no bias."""
    return nn.Conv2d(feature_dim, out_dim, kernel_size=3, padding=1, bias=False)


@dataclass
class FeatureScene:
    """A lifted scene in memory (see the module note)."""

    gaussians: GaussianModel
    decoder: nn.Conv2d
    images: torch.Tensor     # (V,H,W,3) uint8
    viewmats: torch.Tensor   # (V,4,4) float32 world -> camera
    Ks: torch.Tensor         # (V,3,3) float32 at the render size
    train: torch.Tensor      # (V,) bool
    backbone: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the stored views."""
        return int(self.images.shape[2]), int(self.images.shape[1])

    def to(self, device: str | torch.device) -> "FeatureScene":
        """Gaussians, decoder and cameras on `device` (images stay where they are)."""
        self.gaussians.to(device)
        self.decoder.to(device)
        self.viewmats, self.Ks = self.viewmats.to(device), self.Ks.to(device)
        return self

    @property
    def train_ids(self) -> list[int]:
        return torch.nonzero(self.train)[:, 0].tolist()

    @torch.no_grad()
    def render_f_high(self, view: int, backend: str = "auto") -> torch.Tensor:
        """F_high = d(r_feat(G, P_view)) as (C,H,W)."""
        w, h = self.size
        out = self.gaussians.render(self.viewmats[view], self.Ks[view], w, h, backend=backend)
        return self.decoder(out.features.permute(2, 0, 1)[None])[0]

    def to_payload(self) -> dict[str, Any]:
        return {"format": FORMAT, "gaussians": self.gaussians.state(),
                "sh_degree": self.gaussians.sh_degree,
                "decoder": {"weight": self.decoder.weight.detach().cpu().clone()},
                "views": {"images": self.images.cpu(), "viewmats": self.viewmats.cpu(),
                          "Ks": self.Ks.cpu(), "train": self.train.cpu()},
                "backbone": dict(self.backbone), "meta": dict(self.meta)}


def save_scene_file(path: str | Path, scene: FeatureScene) -> Path:
    return atomic_save(scene.to_payload(), path)


def load_scene_file(path: str | Path) -> FeatureScene:
    """Read a feature scene (``torch.load(weights_only=True)``); SceneFileError if foreign."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene file {path} not found")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged / not a torch file
        raise SceneFileError(f"cannot read scene file {path}: {exc}") from exc
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        got = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise SceneFileError(f"{path} is not a feature scene ({FORMAT}); got {got!r}")
    try:
        g = GaussianModel.from_state(d["gaussians"], int(d["sh_degree"]))
        w = d["decoder"]["weight"]
        dec = make_decoder(w.shape[1], w.shape[0])
        dec.weight.data.copy_(w)
        v = d["views"]
        scene = FeatureScene(g, dec, v["images"], v["viewmats"].float(), v["Ks"].float(),
                             v["train"].bool(), d["backbone"], d.get("meta", {}))
    except (KeyError, ValueError, RuntimeError, AttributeError) as exc:
        raise SceneFileError(f"{path}: malformed feature scene: {exc}") from exc
    if g.feature_dim != dec.weight.shape[1]:
        raise SceneFileError(f"{path}: decoder expects D={dec.weight.shape[1]}, Gaussians "
                             f"have D={g.feature_dim}")
    return scene

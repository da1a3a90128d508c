"""Feature Gaussians: the per-scene model G of FiT3D (3DGS parameters + features f).

Design note: parameters are stored unconstrained as in 3DGS — means μ, log-scales,
quaternions (w, x, y, z; normalised in the rasterizer), opacity logits, SH colour split
into the DC band and the rest (they get different learning rates) — plus FiT3D's
per-Gaussian feature f ∈ R^D, initialised randomly. Without COLMAP the Gaussians start
from back-projected depth (`training.fit3d.scenes.colored_points`): voxel-downsampled (mean
position and colour per voxel, torch ``unique`` + ``index_add``), scale = root of the
mean squared distance to the 3 nearest neighbours (3DGS's ``simple-knn`` init, here by
chunked ``torch.cdist``), opacity 0.1, identity rotation. :meth:`render` calls
`fit3d_ros.kernels.rasterize_gaussians` with ``detach_geometry_for_features=True`` so
that the feature loss moves only f (and the decoder), never the geometry.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from fit3d_ros.kernels import RasterOutput, rasterize_gaussians
from fit3d_ros.models.voxels import voxelize
from fit3d_ros.threads import cpu_threads

from .knn import knn_mean_sq_dist

SH_C0 = 0.28209479177387814  # degree-0 real SH constant: colour = SH_C0·c_dc + 0.5
PARAMS = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest", "features")
GEOMETRY = ("means", "log_scales", "quats", "opacity_logits", "sh_dc", "sh_rest")


def voxel_downsample(xyz: torch.Tensor, rgb: torch.Tensor, voxel: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean position and colour of the points in each occupied voxel of side `voxel`."""
    vox = voxelize(xyz, voxel, pick="first")  # packed 1-D keys, same (x, y, z) order
    with cpu_threads(1 if xyz.device.type == "cpu" else None):  # as voxelize (its note)
        sums = torch.zeros(vox.num_voxels, 6, dtype=torch.float64,
                           device=xyz.device).index_add_(
            0, vox.inverse, torch.cat([xyz, rgb], 1).double())
        mean = (sums / vox.counts[:, None]).float()
    return mean[:, :3].contiguous(), mean[:, 3:].contiguous()


class GaussianModel(nn.Module):
    """N feature Gaussians; every parameter is an (N, …) `nn.Parameter` named in PARAMS."""

    def __init__(self, means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor,
                 opacity_logits: torch.Tensor, sh_dc: torch.Tensor, sh_rest: torch.Tensor,
                 features: torch.Tensor, sh_degree: int) -> None:
        super().__init__()
        n = means.shape[0]
        shapes = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4),
                  "opacity_logits": (n,), "sh_dc": (n, 1, 3),
                  "sh_rest": (n, (sh_degree + 1) ** 2 - 1, 3), "features": (n, None)}
        values = dict(means=means, log_scales=log_scales, quats=quats,
                      opacity_logits=opacity_logits, sh_dc=sh_dc, sh_rest=sh_rest,
                      features=features)
        for name, want in shapes.items():
            t = values[name]
            if t.ndim != len(want) or any(w is not None and w != s for w, s in
                                          zip(want, t.shape)):
                raise ValueError(f"{name}: expected shape {want}, got {tuple(t.shape)}")
            setattr(self, name, nn.Parameter(t.detach().float().clone().contiguous()))
        self.sh_degree = int(sh_degree)

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_points(cls, xyz: np.ndarray | torch.Tensor, rgb: np.ndarray | torch.Tensor,
                    feature_dim: int, sh_degree: int = 3, voxel_size: float | None = None,
                    max_points: int | None = None, seed: int = 0) -> "GaussianModel":
        """3DGS init from a coloured point cloud (M,3)+(M,3 in [0,1]); random features."""
        xyz = torch.as_tensor(np.asarray(xyz), dtype=torch.float32).reshape(-1, 3)
        rgb = torch.as_tensor(np.asarray(rgb), dtype=torch.float32).reshape(-1, 3)
        if xyz.shape[0] != rgb.shape[0] or not torch.isfinite(xyz).all():
            raise ValueError("points: xyz must be finite and match rgb row for row")
        if voxel_size:
            xyz, rgb = voxel_downsample(xyz, rgb, voxel_size)
        g = torch.Generator().manual_seed(seed)
        if max_points is not None and xyz.shape[0] > max_points:
            keep = torch.randperm(xyz.shape[0], generator=g)[:max_points].sort().values
            xyz, rgb = xyz[keep], rgb[keep]
        n = xyz.shape[0]
        dist2 = knn_mean_sq_dist(xyz).clamp_min(1e-7)
        log_scales = torch.log(torch.sqrt(dist2))[:, None].repeat(1, 3)
        quats = torch.zeros(n, 4)
        quats[:, 0] = 1.0
        opac = torch.full((n,), math.log(0.1 / 0.9))
        sh_dc = ((rgb - 0.5) / SH_C0)[:, None, :]
        sh_rest = torch.zeros(n, (sh_degree + 1) ** 2 - 1, 3)
        feats = 0.1 * torch.randn(n, feature_dim, generator=g)
        return cls(xyz, log_scales, quats, opac, sh_dc, sh_rest, feats, sh_degree)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], sh_degree: int) -> "GaussianModel":
        missing = [p for p in PARAMS if p not in state]
        if missing:
            raise ValueError(f"Gaussian state misses {missing}")
        return cls(**{p: state[p] for p in PARAMS}, sh_degree=sh_degree)

    def state(self) -> dict[str, torch.Tensor]:
        """Plain tensors (detached, CPU) keyed by PARAMS."""
        return {p: getattr(self, p).detach().cpu().clone() for p in PARAMS}

    # -- activated values -----------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.means.shape[0])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[1])

    @property
    def scales(self) -> torch.Tensor:
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:
        return torch.sigmoid(self.opacity_logits)

    def sh(self, degree: int) -> torch.Tensor:
        """SH coefficients (N,(degree+1)²,3) of the active bands."""
        return torch.cat([self.sh_dc, self.sh_rest], 1)[:, : (degree + 1) ** 2]

    def render(self, viewmat: torch.Tensor, K: torch.Tensor, width: int, height: int,
               sh_degree: int | None = None, backend: str = "auto", validate: bool = True
               ) -> RasterOutput:
        """Colour, F_low (H,W,D), alpha and depth from one camera (gradient separation on);
        ``validate=False``: skip `rasterize_gaussians`' argument checks (validated before)."""
        d = self.sh_degree if sh_degree is None else min(sh_degree, self.sh_degree)
        return rasterize_gaussians(
            self.means, self.quats, self.scales, self.opacities, self.sh(d),
            self.features, viewmat, K, width, height,
            sh_degree=d, detach_geometry_for_features=True, backend=backend,
            validate=validate)

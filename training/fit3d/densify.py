"""3DGS adaptive density control and per-parameter Adam for feature Gaussians.

Design note: written from the 3DGS paper (Kerbl et al. 2023, §5.2) and FiT3D's notes.
Every visible Gaussian accumulates the norm of its view-space (NDC) positional gradient;
every `densify_every` iterations those whose average exceeds the threshold are *cloned*
when small (max scale ≤ percent_dense × scene extent) or *split* into two samples of
themselves with scales / 1.6 when large, and Gaussians with opacity below
`prune_opacity` (and, after an opacity reset, very large ones) are removed. Because the
colour loss alone produces the view-space gradient (the feature branch is detached),
densification follows geometry, as in FiT3D. Adding and removing rows must keep Adam's
moments aligned with the parameters, so :func:`edit_rows` rebuilds each parameter and its
``exp_avg``/``exp_avg_sq`` (zeros for new rows) — the one optimizer surgery 3DGS needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fit3d_ros.kernels import quat_to_rotmat
from fit3d_ros.training.fit3d.config import LiftConfig
from fit3d_ros.training.fit3d.gaussians import PARAMS, GaussianModel


def build_optimizer(model: GaussianModel, decoder: torch.nn.Module, cfg: LiftConfig,
                    extent: float) -> torch.optim.Adam:
    """Adam with one group per Gaussian parameter (3DGS learning rates) + the decoder."""
    lrs = {"means": cfg.lr_position * extent, "log_scales": cfg.lr_scaling,
           "quats": cfg.lr_rotation, "opacity_logits": cfg.lr_opacity, "sh_dc": cfg.lr_sh_dc,
           "sh_rest": cfg.lr_sh_dc / 20.0, "features": cfg.lr_feature}
    groups = [{"params": [getattr(model, p)], "lr": lrs[p], "name": p} for p in PARAMS]
    groups.append({"params": list(decoder.parameters()), "lr": cfg.lr_decoder,
                   "name": "decoder"})
    return torch.optim.Adam(groups, lr=0.0, eps=1e-15)


def position_lr(step: int, cfg: LiftConfig, extent: float) -> float:
    """3DGS's log-linear decay of the position learning rate over the run."""
    t = min(max(step / max(cfg.iterations, 1), 0.0), 1.0)
    lo, hi = math.log(cfg.lr_position_final), math.log(cfg.lr_position)
    return math.exp(hi * (1 - t) + lo * t) * extent


@dataclass
class DensifyStats:
    """Running view-space gradient statistics and the largest screen radius per Gaussian."""

    grad_accum: torch.Tensor  # (N,)
    denom: torch.Tensor       # (N,)
    max_radii: torch.Tensor   # (N,)

    @classmethod
    def zeros(cls, n: int, device: torch.device | str = "cpu") -> "DensifyStats":
        return cls(*(torch.zeros(n, device=device) for _ in range(3)))

    def update(self, means2d_grad: torch.Tensor, radii: torch.Tensor, width: int,
               height: int) -> None:
        """Accumulate ‖∂L/∂μ_ndc‖ for Gaussians drawn this iteration (radius > 0)."""
        vis = (radii > 0).any(1)
        g = means2d_grad.detach() * means2d_grad.new_tensor([width / 2.0, height / 2.0])  # px->NDC
        self.grad_accum[vis] += g[vis].norm(dim=1)
        self.denom[vis] += 1
        self.max_radii[vis] = torch.maximum(self.max_radii[vis], radii.detach()[vis].max(1).values)

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {"grad_accum": self.grad_accum, "denom": self.denom, "max_radii": self.max_radii}


def edit_rows(model: GaussianModel, opt: torch.optim.Adam, keep: torch.Tensor,
              new_rows: dict[str, torch.Tensor] | None = None) -> None:
    """Keep the rows `keep` (bool (N,)) of every Gaussian parameter, append `new_rows`
    (same keys as PARAMS), and carry Adam's moments along (zeros for new rows)."""
    groups = {g["name"]: g for g in opt.param_groups}
    for name in PARAMS:
        old = getattr(model, name)
        extra = None if new_rows is None else new_rows[name].detach().to(old)
        data = old.detach()[keep]
        if extra is not None:
            data = torch.cat([data, extra], 0)
        new = torch.nn.Parameter(data.contiguous())
        state = opt.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                moved = state[key][keep]
                if extra is not None:
                    moved = torch.cat([moved, torch.zeros_like(extra)], 0)
                state[key] = moved.contiguous()
            opt.state[new] = state
        groups[name]["params"] = [new]
        setattr(model, name, new)


def _limit(mask: torch.Tensor, score: torch.Tensor, budget: int) -> torch.Tensor:
    """`mask` reduced to its `budget` highest-scoring entries."""
    if budget <= 0:
        return torch.zeros_like(mask)
    if int(mask.sum()) <= budget:
        return mask
    idx = torch.nonzero(mask)[:, 0]
    top = idx[score[idx].topk(budget).indices]
    out = torch.zeros_like(mask)
    out[top] = True
    return out


def densify_and_prune(model: GaussianModel, opt: torch.optim.Adam, stats: DensifyStats,
                      cfg: LiftConfig, extent: float, step: int, generator: torch.Generator
                      ) -> DensifyStats:
    """Clone / split / prune once (3DGS); returns fresh statistics for the new rows."""
    n = len(model)
    grads = stats.grad_accum / stats.denom.clamp_min(1)
    big = model.scales.detach().max(1).values > cfg.percent_dense * extent
    hot = grads >= cfg.densify_grad_threshold
    room = max(cfg.max_gaussians - n, 0)
    clone = _limit(hot & ~big, grads, room)
    split = _limit(hot & big, grads, max(room - int(clone.sum()), 0))
    new: dict[str, torch.Tensor] = {p: getattr(model, p).detach()[clone] for p in PARAMS}
    if split.any():
        # two samples from each split Gaussian, scales divided by 0.8·2 (3DGS)
        idx = torch.nonzero(split)[:, 0].repeat(2)
        std = model.scales.detach()[idx]
        rot = quat_to_rotmat(model.quats.detach()[idx])
        offs = torch.randn(idx.numel(), 3, generator=generator).to(std) * std
        child = {p: getattr(model, p).detach()[idx] for p in PARAMS}
        child["means"] = model.means.detach()[idx] + (rot @ offs[:, :, None])[:, :, 0]
        child["log_scales"] = torch.log(std / 1.6)
        new = {p: torch.cat([new[p], child[p]], 0) for p in PARAMS}
    keep = ~split
    edit_rows(model, opt, keep, new)
    # prune (on the densified set): transparent, and after a reset also huge ones
    prune = model.opacities.detach() < cfg.prune_opacity
    if cfg.opacity_reset_every and step > cfg.opacity_reset_every:
        radii = torch.cat([stats.max_radii[keep],
                           stats.max_radii.new_zeros(len(model) - int(keep.sum()))])
        prune |= (radii > 20) | (model.scales.detach().max(1).values > 0.1 * extent)
    if prune.all():
        prune[:] = False  # never delete the whole scene
    edit_rows(model, opt, ~prune)
    return DensifyStats.zeros(len(model), model.means.device)


def reset_opacity(model: GaussianModel, opt: torch.optim.Adam, value: float = 0.01) -> None:
    """Clamp every opacity to at most `value` and clear its Adam moments (3DGS)."""
    with torch.no_grad():
        cap = math.log(value / (1 - value))
        model.opacity_logits.clamp_(max=cap)
    state = opt.state.get(model.opacity_logits)
    if state:
        state["exp_avg"].zero_()
        state["exp_avg_sq"].zero_()


__all__ = ["DensifyStats", "build_optimizer", "densify_and_prune", "edit_rows",
           "position_lr", "reset_opacity"]

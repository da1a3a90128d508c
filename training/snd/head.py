"""The shared DINO head and the distillation losses of SnD.

Design note: one head (3-layer MLP in → hidden → hidden → bottleneck with GELU, L2
normalisation, then K prototypes as a weight-normalised linear layer without bias whose
norm is fixed to 1, DINO's ``norm_last_layer``) maps both the student's tokens and the
teacher's blended targets to K logits. The teacher side runs without gradient (stop-
gradient); its logits are centred (running mean, momentum 0.9) and sharpened (τ_t 0.04),
the student's softened (τ_s 0.1); the loss is the cross-entropy H(p_t, p_s) averaged over
valid tokens. Gradients reach the student's adapters and the head, never the teacher.
The cosine alternative is 1 − cos(student, target) over valid tokens, without a head.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DINOHead(nn.Module):
    """MLP (3 layers, GELU) → L2-normalised bottleneck → cosine to K prototypes."""

    def __init__(self, in_dim: int, hidden: int = 2048, bottleneck: int = 256,
                 prototypes: int = 65_536) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        self.prototypes = nn.Parameter(torch.empty(prototypes, bottleneck))
        nn.init.trunc_normal_(self.prototypes, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits (M,K) of tokens (M,C)."""
        z = F.normalize(self.mlp(x), dim=-1)
        return z @ F.normalize(self.prototypes, dim=-1).T


def _wmean(x: Tensor, weight: Tensor | None) -> Tensor:
    """Mean of (M,…) over its rows, weighted by `weight` (M,) when given (0 if all zero)."""
    if weight is None:
        return x.mean(0)
    w = weight.to(x.dtype)
    return (x * w.reshape(-1, *([1] * (x.ndim - 1)))).sum(0) / w.sum().clamp_min(1)


def dino_loss(head: DINOHead, student: Tensor, target: Tensor, center: Tensor,
              teacher_temp: float = 0.04, student_temp: float = 0.1,
              weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(loss, the mean teacher logits for the centre update) for student tokens (M,C) and
    their targets (M,C), tokens weighted by `weight` (M,) (no gradient flows into
    `target`)."""
    with torch.no_grad():
        t_logits = head(target.detach())
        p_t = F.softmax((t_logits - center) / teacher_temp, dim=-1)
    log_p_s = F.log_softmax(head(student) / student_temp, dim=-1)
    return _wmean(-(p_t * log_p_s).sum(-1), weight), _wmean(t_logits, weight)


def cosine_loss(student: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean 1 − cos between student tokens (M,C) and their targets (M,C) (stop-gradient)."""
    return _wmean(1 - F.cosine_similarity(student, target.detach(), dim=-1), weight)


def update_center(center: Tensor, batch_mean: Tensor, momentum: float = 0.9) -> Tensor:
    """DINO's teacher centre: an EMA of the teacher logits' batch means (in place)."""
    return center.mul_(momentum).add_(batch_mean, alpha=1 - momentum)

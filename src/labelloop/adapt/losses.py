"""Self-supervised objectives: SimCLR's NT-Xent, BYOL's cosine loss and its momentum target.

Both take the outputs for two augmented views of the same batch, row ``i`` of ``z1`` and
row ``i`` of ``z2`` coming from the same item.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["nt_xent_loss", "byol_loss", "ema_update", "byol_momentum"]


def nt_xent_loss(z1: "torch.Tensor", z2: "torch.Tensor", temperature: float = 0.5) -> "torch.Tensor":
    """NT-Xent (Chen et al. 2020, SimCLR), mean over the ``2N`` anchors.

    ``z1``, ``z2``: ``(N, d)`` projections of two views (normalised here).
    ``temperature``: 0.5, SimCLR's CIFAR-10 value (0.1 is for batches of 4096); also the best
    of 0.1 / 0.2 / 0.5 for adaptation at batch 128 here (see train.AdaptConfig).
    """
    import torch
    import torch.nn.functional as F

    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)          # (2N, d)
    # l_i = -log( exp(s_i,p(i) / T) / sum_{k != i} exp(s_ik / T) ),  p(i) = the other view of i
    logits = z @ z.T / temperature                              # (2N, 2N)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)  # (2N,)
    return F.cross_entropy(logits, positive)


def byol_loss(p1: "torch.Tensor", z2: "torch.Tensor", p2: "torch.Tensor", z1: "torch.Tensor") -> "torch.Tensor":
    """Symmetrised BYOL loss (Grill et al. 2020; the cosine loss of Bai et al.).

    ``p1``, ``p2``: online predictions for views 1 and 2, ``(N, d)``;
    ``z1``, ``z2``: target projections, ``(N, d)``, treated as constants (no gradient).
    Returns ``mean_i [ (2 - 2 cos(p1_i, z2_i)) + (2 - 2 cos(p2_i, z1_i)) ]``, in ``[0, 8]``.
    """
    import torch.nn.functional as F

    def half(p, z):
        # ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z)
        return 2.0 - 2.0 * F.cosine_similarity(p, z.detach(), dim=1)  # (N,)

    return (half(p1, z2) + half(p2, z1)).mean()


def ema_update(target: "torch.nn.Module", online: "torch.nn.Module", tau: float) -> None:
    """In place: ``xi <- tau * xi + (1 - tau) * theta`` for every parameter; buffers copied.

    ``target`` and ``online`` must have the same architecture (BYOL's momentum encoder).
    BatchNorm running statistics are copied rather than averaged (the target runs in train
    mode, so they only matter for eval-mode use of the target)."""
    import torch

    with torch.no_grad():
        for xi, theta in zip(target.parameters(), online.parameters(), strict=True):
            xi.mul_(tau).add_(theta.detach(), alpha=1.0 - tau)
        for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
            b_t.copy_(b_o)


def byol_momentum(step: int, total_steps: int, base: float = 0.99) -> float:
    """BYOL's cosine schedule ``tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``.

    ``base``: 0.99 as in Lightly's CIFAR-10 BYOL benchmark; the paper's 0.996 is meant for
    ~10^5 steps, while a CPU adaptation here runs a few hundred."""
    if total_steps <= 0:
        return base
    k = min(max(step, 0), total_steps)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * k / total_steps) + 1.0) / 2.0

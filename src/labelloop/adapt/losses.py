"""Self-supervised objectives: SimCLR's NT-Xent, BYOL's cosine loss and its momentum target,
SwAV's swapped prediction with Sinkhorn-Knopp codes.

All take the outputs for augmented views of the same batch: row ``i`` of every view comes
from the same item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["nt_xent_loss", "byol_loss", "ema_update", "byol_momentum", "sinkhorn_knopp", "swav_loss"]


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


def sinkhorn_knopp(scores: "torch.Tensor", epsilon: float = 0.05, iterations: int = 3) -> "torch.Tensor":
    """SwAV's codes (Caron et al. 2020, eq. 3 and Algorithm 1): ``(B, K)`` soft assignments of
    ``B`` samples to ``K`` prototypes that spread the batch equally over the prototypes.

    ``scores``: ``(B, K)`` similarities ``z_b . c_k`` (no gradient flows through the codes).
    ``Q = Diag(u) exp(S / epsilon) Diag(v)`` with ``u, v`` found by ``iterations`` rounds of
    alternately scaling the prototype sums to ``1 / K`` and the sample sums to ``1 / B``; the
    result is scaled by ``B`` so every row (sample) sums to 1, while every column (prototype)
    sums to about ``B / K`` (exactly in the limit of many iterations).
    ``epsilon``: 0.05 and ``iterations``: 3 are the paper's values.
    """
    import torch

    with torch.no_grad():
        s = scores.detach().double()
        # exp(S / eps), shifted by the maximum: a common factor that the scaling removes
        q = torch.exp((s - s.max()) / epsilon).T                     # (K, B)
        q /= q.sum()
        k, b = q.shape
        for _ in range(iterations):
            q /= q.sum(dim=1, keepdim=True) * k                      # each prototype: 1 / K
            q /= q.sum(dim=0, keepdim=True) * b                      # each sample: 1 / B
        return (q * b).T.to(scores.dtype)                            # (B, K), rows sum to 1


def swav_loss(scores: Sequence["torch.Tensor"], *, n_assign: int = 2, temperature: float = 0.1,
              epsilon: float = 0.05, iterations: int = 3,
              queue_scores: Sequence["torch.Tensor | None"] | None = None) -> "torch.Tensor":
    """SwAV's swapped prediction (Caron et al. 2020, eq. 1-2, multi-crop as in section 3.2).

    ``scores[v]``: ``(B, K)`` similarities of crop ``v``'s normalised projection to the
    normalised prototypes; the first ``n_assign`` crops are the global (full-resolution) ones,
    the only crops codes are computed from. For each such crop ``i`` the code
    ``q_i = sinkhorn_knopp(scores[i])`` is predicted from every other crop ``v``::

        loss = mean_{i < n_assign} mean_{v != i} mean_b  -sum_k q_ibk log softmax_k(scores[v]_b / T)

    ``queue_scores[i]``: optional ``(L, K)`` scores of earlier batches' projections of global
    crop ``i``, put before the batch when computing its codes (the paper's queue for small
    batches); only the batch's rows of the codes are used.
    """
    import torch

    n_crops = len(scores)
    if not 1 <= n_assign <= n_crops or n_crops < 2:
        raise ValidationError(f"swav_loss needs >= 2 crops and 1 <= n_assign <= crops, got {n_crops}, {n_assign}")
    log_p = [torch.log_softmax(s / temperature, dim=1) for s in scores]        # (B, K) each
    total = scores[0].new_zeros(())
    for i in range(n_assign):
        s = scores[i]
        extra = queue_scores[i] if queue_scores is not None else None
        if extra is not None:
            s = torch.cat([extra, s])                                          # (L + B, K)
        q = sinkhorn_knopp(s, epsilon, iterations)[-scores[i].shape[0]:]       # (B, K)
        for v in range(n_crops):
            if v != i:
                total = total - (q * log_p[v]).sum(dim=1).mean()
    return total / (n_assign * (n_crops - 1))

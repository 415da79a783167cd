"""Drift between batches: how each new batch differs from the ones before it.

Per batch (in the order they arrived): its size, the share of its items people labeled and
the share auto-labeled, the predicted class proportions, and how far they moved from the
pooled proportions of every earlier batch:

    TV(p, q) = 1/2 sum_c |p_c - q_c|      total variation distance, in [0, 1]

(0: the same mix of classes; 1: no class in common). The estimated accuracy per batch comes
from :mod:`labelloop.loop.estimate` (the caller adds it). Arrays in, dicts out.
"""

from __future__ import annotations

import numpy as np

__all__ = ["batch_drift", "total_variation"]


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(np.asarray(p, dtype=np.float64) - np.asarray(q, dtype=np.float64)).sum())


def batch_drift(codes: np.ndarray, predicted: np.ndarray, n_classes: int, *, human: np.ndarray,
                machine: np.ndarray) -> list[dict]:
    """One dict per batch ``0 .. codes.max()`` (arrival order). ``codes``: (n,) batch of each
    item; ``predicted``: (n,) predicted class column; ``human`` / ``machine``: (n,) bool, the
    item's label in effect is a person's (or imported) / an accepted machine label."""
    codes = np.asarray(codes, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    out = []
    n_batches = int(codes.max()) + 1 if len(codes) else 0
    for b in range(n_batches):
        m = codes == b
        n = int(m.sum())
        shares = np.bincount(predicted[m], minlength=n_classes)[:n_classes] / max(n, 1)    # (C,)
        earlier = codes < b
        row = {"items": n, "human": int(human[m].sum()), "machine": int(machine[m].sum()),
               "human_share": round(float(human[m].mean()), 4) if n else 0.0,
               "auto_labeled_share": round(float(machine[m].mean()), 4) if n else 0.0,
               "predicted_shares": shares, "earlier_shares": None, "shift": None, "largest_change": None}
        if earlier.any():
            prev = np.bincount(predicted[earlier], minlength=n_classes)[:n_classes] / earlier.sum()   # (C,)
            c = int(np.argmax(np.abs(shares - prev)))
            row.update(earlier_shares=prev, shift=round(total_variation(shares, prev), 4),
                       largest_change=(c, float(prev[c]), float(shares[c])))
        out.append(row)
    return out

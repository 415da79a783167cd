"""Coverage strategies: ask about items that represent the data, not about the boundary.

- random: a seeded uniform draw (the baseline every other strategy must beat).
- k-center greedy core-set (Sener & Savarese 2018): repeatedly the unlabeled item farthest
  from every labeled or already chosen item, on L2-normalised embeddings.
- typicality (TypiClust, Hacohen et al. 2022): cold start with almost no labels: cluster all
  items into |labeled| + n clusters and take the densest item of each uncovered cluster.

All work in chunks, so 100k x 384 embeddings never form an n x n matrix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ValidationError
from ..graph import TYPICALITY_NEIGHBOURS
from .base import (
    CHUNK_BYTES,
    Selection,
    SelectionInputs,
    Strategy,
    kmeans_labels,
    register_strategy,
    unit_rows,
    validate_inputs,
)

__all__ = [
    "random_sampling",
    "kcenter_greedy",
    "typicality_sampling",
    "typicality_scores",
    "Random",
    "KCenterGreedy",
    "Typicality",
]

# TypiClust (Hacohen et al. 2022): typicality = 1 / mean distance to the 20 nearest neighbours
# (TYPICALITY_NEIGHBOURS, set in labelloop.graph, which sizes the shared graph by it), at most
# 500 clusters (beyond that k-means costs more than it helps at a cold start).
MAX_CLUSTERS = 500
# k-means for typicality is fitted on a subsample of max(10_000, 50 * clusters) items: enough
# points per centre, and a bounded cost at 100k+ items (measured in the helper's report).
KMEANS_FIT_MIN = 10_000
KMEANS_FIT_PER_CLUSTER = 50
# Without a graph, typicality is exact kNN inside a cluster up to this size; larger clusters
# rank a sample of this many of their unlabeled items (size^2 * d would not scale).
TYPICALITY_EXACT_MAX = 5_000


def _unit_distance(sim: np.ndarray) -> np.ndarray:
    # ||a - b|| = sqrt(2 - 2 cos(a, b)) for unit vectors a, b
    return np.sqrt(np.maximum(2.0 - 2.0 * sim, 0.0))


# ---------------------------------------------------------------- random


def _random(inp: SelectionInputs) -> Selection:
    pos = inp.rng().permutation(inp.unlabeled.size)[: inp.n]
    reasons = [f"random draw (seed {inp.seed})"] * inp.n
    return Selection(inp.unlabeled[pos], np.zeros(inp.n), reasons, "random")


@register_strategy
class Random(Strategy):
    """Uniform random draw without replacement; score 0."""

    name = "random"

    def _select(self, inputs: SelectionInputs) -> Selection:
        return _random(inputs)


def random_sampling(labeled: Any, unlabeled: Any, n: int, *, seed: int = 0) -> Selection:
    """n unlabeled items drawn uniformly without replacement."""
    inputs = validate_inputs(strategy="random", n=n, labeled=labeled, unlabeled=unlabeled,
                             seed=seed)
    return _random(inputs)


# ---------------------------------------------------------------- k-center greedy


def _max_similarity(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """max_j <A_i, B_j> for every row i of A, (len(A),), in row blocks of bounded memory."""
    out = np.full(A.shape[0], -np.inf, dtype=np.float32)
    if B.shape[0] == 0:
        return out
    rows = max(1, CHUNK_BYTES // (4 * B.shape[0]))
    for s in range(0, A.shape[0], rows):
        out[s : s + rows] = (A[s : s + rows] @ B.T).max(axis=1)  # block (rows, |B|)
    return out


def _kcenter(inp: SelectionInputs, start: str) -> Selection:
    Xu = unit_rows(inp.embeddings[inp.unlabeled])  # (U, d)
    Xl = unit_rows(inp.embeddings[inp.labeled])  # (L, d)
    # d2_i = min over labeled j of ||x_i - x_j||^2 = 2 - 2 max_j cos(x_i, x_j)
    d2 = np.maximum(2.0 - 2.0 * _max_similarity(Xu, Xl), 0.0)  # (U,) +inf without labels
    picks, scores, reasons = [], [], []
    for t in range(inp.n):
        if t == 0 and inp.labeled.size == 0:
            centre = Xu.mean(axis=0)  # (d,)
            centre /= max(float(np.linalg.norm(centre)), 1e-12)
            sims = Xu @ centre  # (U,)
            if start == "random":
                i = int(inp.rng().integers(Xu.shape[0]))
                why = "random start"
            else:
                i = int(np.argmax(sims))
                why = "nearest item to the centre of the pool"
            dist = float(_unit_distance(sims[i]))
            reasons.append(f"{why} (distance {dist:.2f} from the centre); no labeled items yet")
            scores.append(dist)
        else:
            i = int(np.argmax(d2))
            dist = float(np.sqrt(d2[i]))
            who = "every labeled item" if t == 0 else "every labeled or already chosen item"
            reasons.append(f"farthest from {who} (distance {dist:.2f})")
            scores.append(dist)
        picks.append(i)
        # d2 <- min(d2, ||x - x_i||^2): the chosen item joins the centres
        d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * (Xu @ Xu[i]), 0.0))
        d2[i] = -np.inf  # never chosen twice, even among exact duplicates
    pos = np.asarray(picks, dtype=np.int64)
    return Selection(inp.unlabeled[pos], np.asarray(scores, dtype=np.float64), reasons,
                     "coreset")


@register_strategy
class KCenterGreedy(Strategy):
    """Greedy k-center core-set on L2-normalised embeddings.

    Score = distance to the nearest labeled or earlier chosen item when chosen (the first
    item of a project without labels: its distance to the pool's mean direction).

    ``start``: where to begin when nothing is labeled: "mean" (the item nearest the pool's
    mean direction; deterministic) or "random" (seeded).
    """

    name = "coreset"
    requires = ("embeddings",)

    def __init__(self, *, start: str = "mean") -> None:
        if start not in ("mean", "random"):
            raise ValidationError(f"start must be 'mean' or 'random', got {start!r}")
        self.start = start

    def _select(self, inputs: SelectionInputs) -> Selection:
        return _kcenter(inputs, self.start)


def kcenter_greedy(embeddings: np.ndarray, labeled: Any, unlabeled: Any, n: int, *,
                   start: str = "mean", seed: int = 0) -> Selection:
    """n unlabeled items, each the farthest from all labeled and previously chosen ones."""
    strategy = KCenterGreedy(start=start)
    inputs = validate_inputs(strategy=strategy.name, requires=strategy.requires, n=n,
                             labeled=labeled, unlabeled=unlabeled, embeddings=embeddings,
                             seed=seed)
    return strategy._select(inputs)


# ---------------------------------------------------------------- typicality


def typicality_scores(
    members: np.ndarray,
    *,
    X: np.ndarray | None = None,
    graph: Any = None,
    k: int = TYPICALITY_NEIGHBOURS,
) -> np.ndarray:
    """Typicality (m,) of items ``members``: 1 / mean distance to their k nearest neighbours.

    With ``graph`` the neighbours are the graph's (all items, at most graph.k of them);
    otherwise exact neighbours among ``members`` themselves (TypiClust computes it within a
    cluster), from the unit rows ``X`` (n_items, d). Distances are Euclidean on unit vectors.
    A lone item has typicality 0.
    """
    members = np.asarray(members, dtype=np.int64)
    if graph is not None:
        sims = np.asarray(graph.similarities)[members, :k]  # (m, k')
        if sims.shape[1] == 0:
            return np.zeros(members.size)
        mean_d = _unit_distance(sims.astype(np.float64)).mean(axis=1)  # (m,)
    else:
        kk = min(k, members.size - 1)
        if kk < 1:
            return np.zeros(members.size)
        Xm = X[members]  # (m, d)
        mean_d = np.empty(members.size)
        rows = max(1, CHUNK_BYTES // (4 * members.size))
        for s in range(0, members.size, rows):
            S = Xm[s : s + rows] @ Xm.T  # (rows, m)
            S[np.arange(S.shape[0]), np.arange(s, s + S.shape[0])] = -np.inf  # not oneself
            top = -np.partition(-S, kk - 1, axis=1)[:, :kk]  # (rows, kk) largest similarities
            mean_d[s : s + rows] = _unit_distance(top.astype(np.float64)).mean(axis=1)
    # typicality(x) = (mean_{j in kNN(x)} ||x - x_j||)^-1
    return 1.0 / np.maximum(mean_d, 1e-12)


def _cluster_typicality(inp: SelectionInputs, X: np.ndarray, items: np.ndarray,
                        rows: np.ndarray, is_pool: np.ndarray, k: int) -> np.ndarray:
    """Typicality of the cluster rows ``rows`` (-inf where not computed)."""
    if inp.graph is not None:
        return typicality_scores(items[rows], graph=inp.graph, k=k)
    if rows.size <= TYPICALITY_EXACT_MAX:
        return typicality_scores(np.arange(rows.size), X=X[rows], k=k)
    # a huge cluster (few clusters, many items, no graph): exact kNN among all its members
    # would cost size^2 * d, so rank a seeded sample of its pool members among themselves
    pool_rows = np.flatnonzero(is_pool[rows])
    rng = inp.rng(salt=int(rows[0]) + 1)
    sample = np.sort(rng.choice(pool_rows, min(pool_rows.size, TYPICALITY_EXACT_MAX),
                                replace=False))
    out = np.full(rows.size, -np.inf)
    out[sample] = typicality_scores(np.arange(sample.size), X=X[rows[sample]], k=k)
    return out


def _typicality(inp: SelectionInputs, k: int, max_clusters: int) -> Selection:
    items = np.concatenate([inp.labeled, inp.unlabeled])  # (L + U,) items clustered
    X = unit_rows(inp.embeddings[items])  # (L + U, d), row r is item items[r]
    n_clusters = min(inp.labeled.size + inp.n, max_clusters, items.size)
    # fit on at most max(10k, 50 per cluster) items, assign the rest to the nearest centre
    max_fit = max(KMEANS_FIT_MIN, KMEANS_FIT_PER_CLUSTER * n_clusters)
    cluster = kmeans_labels(X, n_clusters, inp.seed, max_fit=max_fit)  # (L + U,)
    size = np.bincount(cluster, minlength=n_clusters)  # (K,)
    taken = np.bincount(cluster[: inp.labeled.size], minlength=n_clusters)  # labeled + chosen
    is_pool = np.zeros(items.size, dtype=bool)
    is_pool[inp.labeled.size :] = True
    open_count = np.bincount(cluster[inp.labeled.size :], minlength=n_clusters)  # pool left
    by_cluster = np.argsort(cluster, kind="stable")
    members = np.split(by_cluster, np.cumsum(size)[:-1])  # rows of each cluster
    typ: dict[int, np.ndarray] = {}  # cluster -> typicality of its rows, on demand

    picks, scores, reasons = [], [], []
    for _ in range(inp.n):
        # TypiClust's order: the cluster with the fewest labeled/chosen items, largest first
        open_ = np.flatnonzero(open_count)
        c = int(open_[np.lexsort((-size[open_], taken[open_]))[0]])
        rows = members[c]
        t = np.where(is_pool[rows], typ.get(c, np.full(rows.size, -np.inf)), -np.inf)
        if not np.isfinite(t).any():  # first visit, or its sampled candidates are used up
            typ[c] = _cluster_typicality(inp, X, items, rows, is_pool, k)
            t = np.where(is_pool[rows], typ[c], -np.inf)
        j = int(np.argmax(t))
        r = int(rows[j])
        if taken[c] == 0:
            reasons.append(f"densest item (typicality {t[j]:.2f}) of an uncovered cluster "
                           f"of {size[c]} items")
        else:
            reasons.append(f"densest remaining item (typicality {t[j]:.2f}) of a cluster of "
                           f"{size[c]} items that already has {taken[c]} labeled or chosen")
        picks.append(items[r])
        scores.append(float(t[j]))
        is_pool[r] = False
        taken[c] += 1
        open_count[c] -= 1
    details = {"clusters": n_clusters}
    if inp.graph is not None and inp.graph.k < k:
        # a consumer that gets fewer neighbours than it wants says so
        details["note"] = (f"typicality wanted {k} neighbours per item; the shared graph has {inp.graph.k} "
                           f"(Project builds it at the largest k any consumer asks for)")
    return Selection(np.asarray(picks, dtype=np.int64), np.asarray(scores), reasons,
                     "typicality", details)


@register_strategy
class Typicality(Strategy):
    """TypiClust cold start; score = typicality of the chosen item.

    ``k``: neighbours in the typicality (TypiClust: 20; with a graph at most graph.k are
    used); ``max_clusters``: cap on |labeled| + n clusters (TypiClust: 500).
    """

    name = "typicality"
    requires = ("embeddings",)

    def __init__(self, *, k: int = TYPICALITY_NEIGHBOURS, max_clusters: int = MAX_CLUSTERS
                 ) -> None:
        for key, v in (("k", k), ("max_clusters", max_clusters)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValidationError(f"{key} must be a whole number >= 1, got {v!r}")
        self.k = k
        self.max_clusters = max_clusters

    def _select(self, inputs: SelectionInputs) -> Selection:
        return _typicality(inputs, self.k, self.max_clusters)


def typicality_sampling(embeddings: np.ndarray, labeled: Any, unlabeled: Any, n: int, *,
                        graph: Any = None, k: int = TYPICALITY_NEIGHBOURS,
                        max_clusters: int = MAX_CLUSTERS, seed: int = 0) -> Selection:
    """The densest unlabeled item of each of the n largest clusters that have no label."""
    strategy = Typicality(k=k, max_clusters=max_clusters)
    inputs = validate_inputs(strategy=strategy.name, requires=strategy.requires, n=n,
                             labeled=labeled, unlabeled=unlabeled, embeddings=embeddings,
                             graph=graph, seed=seed)
    return strategy._select(inputs)

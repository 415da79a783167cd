"""Novelty: items far from every known class, grouped into candidate new classes.

Three signals from the shared kNN graph and the embeddings (cosine geometry, as the graph):

- distance to the labeled data  ``d_lab(i) = 1 - max_j cos(x_i, x_j)`` over labeled items j;
- neighbourhood density         ``d_knn(i) = 1 - mean_k cos(x_i, x_nb)`` over its k nearest
  neighbours (the graph's similarities): a dense region has a small radius;
- novelty score                 ``s(i) = d_lab(i) / d_knn(i)``: how many neighbourhood radii the
  item lies from the nearest label. An item inside a tight cluster that no label is near scores
  high; a lone outlier (large radius) does not, nor does an unlabeled item of a labeled cluster.

The threshold calibrates itself on the labels: the score of each labeled item against the
*other* labeled items of its class (leave one out) is what an item of a known class scores at
this labeling density; unlabeled items above its ``quantile`` are novel. Clusters are the connected
components of the kNN graph restricted to the novel items (cluster structure); those with at
least ``min_size`` items are the candidate new classes, largest first, each with its most
typical members (most neighbours inside the cluster) as examples.

This module knows nothing of projects: arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import NotReadyError

__all__ = ["NovelCluster", "NoveltyResult", "find_novel_clusters", "novelty_scores",
           "DEFAULT_QUANTILE", "DEFAULT_MIN_SIZE", "DENSITY_K"]

#: share of known-class items (leave-one-out labels) scoring below the threshold
DEFAULT_QUANTILE = 0.95
#: a candidate class needs at least this many novel items that hang together
DEFAULT_MIN_SIZE = 5
#: neighbours for the density and the clusters (the paper's propagation k: Bai et al.)
DENSITY_K = 10
_CHUNK = 4096  # rows per block of the (rows, reference) similarity product
#: exact nearest-reference search up to this many (row, reference) pairs (~1 s of BLAS)
EXACT_MAX = 200_000_000


@dataclass
class NovelCluster:
    rows: np.ndarray          # (m,) member rows, most typical first
    examples: np.ndarray      # (e,) the first rows: what a person looks at
    mean_score: float         # mean novelty score of the members
    nearest_class: int        # label of the nearest labeled item, most common among members
    similarity: float         # mean cosine of the members to their nearest labeled item
    cohesion: float           # mean cosine along the kNN edges inside the cluster

    @property
    def size(self) -> int:
        return int(len(self.rows))


@dataclass
class NoveltyResult:
    score: np.ndarray         # (n,) novelty score; NaN for labeled items
    threshold: float
    novel: np.ndarray         # (n,) bool: candidate rows above the threshold
    clusters: list[NovelCluster] = field(default_factory=list)
    n_candidates: int = 0


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _nearest(Xn: np.ndarray, rows: np.ndarray, among: np.ndarray, *, same: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(max cosine (m,), position in ``among`` of the nearest (m,)) for ``rows``, exactly; a
    row never counts as its own neighbour. ``same``: (n,) group of every row (-1 none): only
    members of the row's own group count (-inf where there is none)."""
    A = Xn[among]                                                       # (R, d)
    best = np.full(len(rows), -np.inf, dtype=np.float32)
    arg = np.zeros(len(rows), dtype=np.int64)
    for start in range(0, len(rows), _CHUNK):
        part = rows[start:start + _CHUNK]
        S = Xn[part] @ A.T                                              # (m, R)
        S[part[:, None] == among[None, :]] = -np.inf
        if same is not None:
            S[same[part][:, None] != same[among][None, :]] = -np.inf
        a = S.argmax(axis=1)
        arg[start:start + len(part)] = a
        best[start:start + len(part)] = S[np.arange(len(part)), a]
    return best, arg


def _nearest_in_graph(graph, rows: np.ndarray, member: np.ndarray) -> np.ndarray:
    """(m,) cosine to the nearest ``member`` ((n,) bool) among each row's graph neighbours;
    where none is among them, the k-th neighbour's cosine: a bound the true one is below."""
    idx, sim = graph.indices[rows], graph.similarities[rows]            # (m, k)
    hit = member[idx]
    first = hit.argmax(axis=1)
    return np.where(hit.any(axis=1), sim[np.arange(len(rows)), first], sim[:, -1])


def novelty_scores(X: np.ndarray, graph, rows: np.ndarray, labeled: np.ndarray, labels: np.ndarray, *,
                   reference: np.ndarray | None = None, k: int = DENSITY_K,
                   exact_max: int = EXACT_MAX) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(score of rows (m,), leave-one-out score of the reference items (<= R,), nearest labeled
    position (m,), its cosine (m,))``.

    The reference -- what counts as known -- is the labeled items, plus ``reference`` ((n,)
    bool, e.g. the items of earlier batches) when given. ``d_ref`` is the cosine distance to
    the nearest reference item, ``d_knn`` the item's mean distance to its ``k`` graph
    neighbours; the score is their ratio. Leave-one-out: each reference item scored against
    the others (labels only: against the other labels of *its* class -- how far an item of a
    known class lies from that class's labels). Exact while rows x reference <= ``exact_max``;
    above, ``d_ref`` comes from the graph's neighbour lists (a lower bound where no reference
    item is among them, so novelty is never overstated)."""
    Xn = _unit(X)
    n = len(Xn)
    g = graph.truncate(min(k, graph.k))
    radius = np.maximum(1.0 - g.similarities.astype(np.float64).mean(axis=1), 1e-6)   # d_knn (n,)
    sim_lab, near = _nearest(Xn, rows, labeled)
    if reference is None:
        group = np.full(n, -1, dtype=np.int64)
        group[labeled] = labels
        loo_rows = labeled[np.bincount(labels)[labels] >= 2]
        sim_loo, _ = _nearest(Xn, loo_rows, labeled, same=group)
        sim_ref = sim_lab
    else:
        member = np.asarray(reference, dtype=bool).copy()
        member[labeled] = True
        ref = np.flatnonzero(member)
        # a fixed sample of the reference is enough for a quantile
        loo_rows = ref if len(ref) <= 5000 else np.sort(np.random.default_rng(0).choice(ref, 5000, replace=False))
        if len(rows) * len(ref) <= exact_max:
            sim_ref = _nearest(Xn, rows, ref)[0]
            sim_loo = _nearest(Xn, loo_rows, ref)[0]
        else:
            sim_ref = np.maximum(_nearest_in_graph(graph, rows, member), sim_lab)
            sim_loo = _nearest_in_graph(graph, loo_rows, member)
    score = (1.0 - sim_ref.astype(np.float64)) / radius[rows]                          # d_ref / d_knn
    ok = np.isfinite(sim_loo)
    loo = (1.0 - sim_loo[ok].astype(np.float64)) / radius[loo_rows[ok]]
    return score, loo, near, sim_lab


def find_novel_clusters(X: np.ndarray, graph, labeled: np.ndarray, labels: np.ndarray,
                        candidates: np.ndarray, *, reference: np.ndarray | None = None,
                        quantile: float = DEFAULT_QUANTILE, min_size: int = DEFAULT_MIN_SIZE,
                        k: int = DENSITY_K, n_examples: int = 5) -> NoveltyResult:
    """Candidate new classes among the ``candidates`` rows ((n,) bool, e.g. the unlabeled items
    of one batch). ``graph``: the shared :class:`~labelloop.graph.KnnGraph` over all rows;
    ``labeled``: rows with a known class, ``labels``: their class (same order); ``reference``:
    (n,) bool, more rows that count as known (the earlier batches), see :func:`novelty_scores`.
    Without it, two labeled rows of one class are needed (the threshold is their
    leave-one-out score)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    labeled = np.asarray(labeled, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    g = graph.truncate(min(k, graph.k))
    cand = np.asarray(candidates, dtype=bool).copy()
    cand[labeled] = False
    crow = np.flatnonzero(cand)
    s_c, loo, near_c, sim_c = novelty_scores(X, graph, crow, labeled, labels, reference=reference, k=k)
    if not len(loo):
        raise NotReadyError("novelty is calibrated on classes with at least two labels: label a second "
                            "item of some class first")
    threshold = float(np.quantile(loo, quantile))
    n = len(cand)
    score = np.full(n, np.nan)
    score[crow] = s_c
    near = np.zeros(n, dtype=np.int64)
    near[crow] = near_c
    sim = np.full(n, np.nan)
    sim[crow] = sim_c
    novel = np.zeros(n, dtype=bool)
    novel[crow] = s_c > threshold
    res = NoveltyResult(score, threshold, novel, n_candidates=int(cand.sum()))
    rows = np.flatnonzero(novel)
    if len(rows) < min_size:
        return res
    # kNN edges between novel items, undirected: the clusters are the connected components
    pos = np.full(len(novel), -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    src = np.repeat(np.arange(len(rows)), g.k)                          # (m k,)
    dst = pos[g.indices[rows].reshape(-1)]
    esim = g.similarities[rows].reshape(-1)
    keep = dst >= 0
    A = coo_matrix((esim[keep], (src[keep], dst[keep])), shape=(len(rows), len(rows))).tocsr()
    A = A.maximum(A.T)
    n_comp, comp = connected_components(A, directed=False)
    degree = np.asarray((A > 0).sum(axis=1)).ravel()                   # neighbours inside the cluster
    for c in range(n_comp):
        members = np.flatnonzero(comp == c)
        if len(members) < min_size:
            continue
        order = np.lexsort((-score[rows[members]], -degree[members]))  # most connected, then most novel
        members = members[order]
        sub = A[members][:, members]
        cls = np.bincount(labels[near[rows[members]]]).argmax()
        res.clusters.append(NovelCluster(
            rows=rows[members], examples=rows[members[:n_examples]],
            mean_score=float(score[rows[members]].mean()), nearest_class=int(cls),
            similarity=float(sim[rows[members]].mean()),
            cohesion=float(sub.data.mean()) if sub.nnz else 0.0))
    res.clusters.sort(key=lambda cl: (-cl.size, -cl.mean_score))
    return res

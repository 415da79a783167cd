"""The one cosine k-nearest-neighbour graph shared by propagation, selection and audit.

Built once at the largest k any consumer needs (consumers call :meth:`KnnGraph.truncate`).
Exact inner-product search (FAISS ``IndexFlatIP``) below ``exact_threshold`` items, an
approximate index above it. The default approximate method and the threshold come from
``benchmarks/knn_backends.py`` (results in ``benchmarks/results/knn_backends.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelloop.errors import MissingDependencyError, ValidationError

__all__ = [
    "KnnGraph",
    "normalize_rows",
    "build_knn_graph",
    "extend_knn_graph",
    "choose_method",
    "REBUILD_AFTER_ADDED",
    "KNN_METHODS",
    "DEFAULT_APPROX_METHOD",
    "DEFAULT_EXACT_THRESHOLD",
    "numba_cache_dir",
]

#: every accepted ``method``; "auto" picks by size (see :func:`build_knn_graph`).
KNN_METHODS = ("auto", "exact", "ivf-blas", "ivf", "hnsw", "nndescent")

#: "auto" searches exactly up to this many items (:func:`choose_method`). benchmarks/results/
#: knn_backends.md: no recall loss at a cost still small here (10k: 10.8 s exact vs 2.7 s IVF on
#: the shared 2-core machine), but 409 s vs 35 s at 50k.
DEFAULT_EXACT_THRESHOLD = 20_000

#: "auto" above the exact threshold: IVF lists searched block by block with BLAS
#: (:func:`_search_ivf_blas`; no JIT, centroids kept for adding items). knn_backends.md: 100k
#: in 6.4-6.5 CPU-s (recall@10 1.000 clustered, 0.965 latent; FAISS IVF 46-163 s, NN-descent
#: 18-33 s + its compile); 1M (goal: recall 0.95 in 120 CPU-s and 2 GB), read into a float16
#: copy (:func:`_read_rows`): latent (searched in its 32-d principal subspace,
#: :func:`_build_ivf_blas`) 88 CPU-s, recall 0.958, peak RSS 1.62 GB; clustered (full space)
#: 103 CPU-s, recall 0.996, 1.31 GB.
DEFAULT_APPROX_METHOD = "ivf-blas"


#: A graph extended with added items (:func:`extend_knn_graph`) is rebuilt in full once more
#: than this share of the items of its last full build were added since (new centroids, lists
#: balanced again). benchmarks/results/graph_update.md, 5 % batches appended to 50k items:
#: recall@10 stayed 0.9999-1.0 up to +80 % (batches from the same clusters) and +60 % (each
#: batch from new clusters), the largest shares measured; 0.5 stays inside them, and the
#: updates up to +50 % cost about one rebuild's CPU together (54 vs 71-103 CPU-s).
REBUILD_AFTER_ADDED = 0.5

#: neighbours the shared graph's consumers read besides the propagation's own ``k``
#: (:meth:`labelloop.Project.graph_k` builds it with the largest): the label audit's graph signal
#: (:mod:`labelloop.audit.label_errors`, k = 10 as Bai et al.) and TypiClust's typicality
#: (:mod:`labelloop.select.coverage`, 20 as Hacohen et al. 2022). Set here, with the graph, so
#: sizing it does not import either package.
GRAPH_K = 10
TYPICALITY_NEIGHBOURS = 20


def _n_threads() -> int:
    """CPU cores this process may use (respects affinity masks / container limits)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _import_faiss():
    try:
        import faiss
    except ImportError as exc:  # faiss-cpu is a core dependency; a broken install lands here
        raise MissingDependencyError(
            "'faiss' is not installed; install it with: pip install -c constraints.txt faiss-cpu"
        ) from exc
    faiss.omp_set_num_threads(_n_threads())
    return faiss


@dataclass
class KnnGraph:
    """k nearest neighbours of every item, self excluded, most similar first."""

    indices: np.ndarray  # (n, k) int64 neighbour ids
    similarities: np.ndarray  # (n, k) float32 cosine similarities, descending per row
    method: str = "exact"  # "exact" | the approximate method used
    #: (nlist, d) IVF coarse centroids of an "ivf" build, reused when items are added
    #: (:func:`extend_knn_graph`); None for other methods
    centroids: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    def truncate(self, k: int) -> KnnGraph:
        """The graph restricted to each item's ``k`` nearest neighbours."""
        if not 1 <= k <= self.k:
            raise ValidationError(f"truncate(k={k}): k must be between 1 and {self.k}, the graph's k")
        return KnnGraph(self.indices[:, :k].copy(), self.similarities[:, :k].copy(), self.method, self.centroids)

    def save(self, path: Path | str) -> None:
        """Write to ``path`` as an uncompressed ``.npz`` (indices, similarities, method, centroids)."""
        extra = {} if self.centroids is None else {"centroids": self.centroids}
        np.savez(
            Path(path),
            indices=self.indices,
            similarities=self.similarities,
            method=np.array(self.method),
            **extra,
        )

    @classmethod
    def load(cls, path: Path | str) -> KnnGraph:
        """Read a graph written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(
                indices=data["indices"].astype(np.int64, copy=False),
                similarities=data["similarities"].astype(np.float32, copy=False),
                method=str(data["method"]),
                centroids=data["centroids"] if "centroids" in data.files else None,
            )


def normalize_rows(X: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of ``X`` as float32; all-zero rows stay zero."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValidationError(f"embeddings must be a 2-D array (n, dim); got shape {X.shape}")
    X = X.astype(np.float32, copy=True)
    # x / ||x||, norms in float64 (in chunks: no full float64 copy) so tiny / huge rows
    # neither underflow nor overflow
    norms = np.empty(X.shape[0])  # (n,)
    for i in range(0, X.shape[0], 65_536):
        norms[i : i + 65_536] = np.linalg.norm(X[i : i + 65_536].astype(np.float64), axis=1)
    nonzero = norms > 0
    X[nonzero] /= norms[nonzero, None].astype(np.float32)
    return X


def build_knn_graph(
    X: np.ndarray,
    k: int = 10,  # Bai et al. use k = 10-15
    *,
    method: str = "auto",
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    seed: int = 0,
) -> KnnGraph:
    """Cosine kNN graph of the rows of ``X`` (any scale; rows are L2-normalised here).

    ``method``: "exact" (FAISS flat inner product), "ivf-blas" (IVF lists searched block by
    block with BLAS, :func:`_search_ivf_blas`), "ivf" (FAISS IVF-Flat), "hnsw" (FAISS
    HNSW-Flat), "nndescent" (pynndescent, the ``ann`` extra), or "auto": :func:`choose_method`. Self is never its own neighbour; zero rows get similarity 0
    to everything; identical rows are fine. FAISS uses every core this process may use.
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValidationError(f"embeddings must be a 2-D array (n, dim); got shape {X.shape}")
    n = X.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValidationError(f"k must be a positive integer; got {k!r}")
    if n < k + 1:
        raise ValidationError(
            f"a {k}-NN graph needs at least {k + 1} items; got {n}: pass k <= {max(n - 1, 0)}"
        )
    if method not in KNN_METHODS:
        raise ValidationError(f"unknown kNN method {method!r}; choose one of {', '.join(KNN_METHODS)}")
    if not _all_finite(X):
        raise ValidationError("embeddings contain NaN or infinite values; fix or drop those rows")
    k = int(k)
    if method == "auto":
        method = choose_method(n, exact_threshold)
    centroids = None
    if method == "ivf-blas":
        # rows are normalised block by block as they are read (their inverse norms computed
        # once): no normalised copy of X, which may be a read-only memory map
        idx, sim, order, centroids, inv = _build_ivf_blas(X, k + 1, seed=seed)
        Xn = None
    elif method == "nndescent":
        # pynndescent normalises its own copy of the rows (cosine): not normalised twice here
        # (at 1M x 384 a second pass cost 10 s and 1.5 GB); rows are normalised below only if
        # some need an exact repair
        idx, sim = _search_nndescent(X, k + 1, seed=seed)
        Xn = None
    else:
        Xn = np.ascontiguousarray(normalize_rows(X))  # (n, dim)
        if method == "exact":
            idx, sim = _search_exact(Xn, Xn, k + 1)
        elif method == "ivf":
            centroids = _ivf_centroids(Xn, seed=seed)
            idx, sim = _search_ivf(Xn, k + 1, seed=seed, centroids=centroids)
        else:
            idx, sim = _search_hnsw(Xn, k + 1, seed=seed)
    idx, sim = _drop_self(idx, sim, k)
    idx, sim = _repair_missing(X if Xn is None else Xn, idx, sim, normalised=Xn is not None)
    if method == "ivf-blas":
        idx, sim = _reverse_merge(idx, sim)
        for _ in range(IVF_BLAS_REFINE_PASSES):
            idx, sim = _refine_neighbours(X, inv, idx, sim, order)
    return KnnGraph(idx, sim, method, centroids)


def extend_knn_graph(
    graph: KnnGraph,
    X_old: np.ndarray,
    X_new: np.ndarray,
    *,
    method: str = "auto",
    exact_threshold: int = DEFAULT_EXACT_THRESHOLD,
    seed: int = 0,
) -> tuple[KnnGraph, int]:
    """``graph`` (over the rows of ``X_old``) with the rows of ``X_new`` appended as items
    ``n_old ..``, without a rebuild. Returns ``(graph over n_old + m items, old rows changed)``.

    The new rows' neighbours: the new vectors searched against every vector. The old rows:
    each one's ``k`` nearest new vectors, merged into its list where closer than its current
    ``k``-th neighbour (the reverse-neighbour update); an old item's other neighbours cannot
    change, as only items were added. ``method`` as in :func:`build_knn_graph` for the new
    total: with "exact" both searches are exact, so the result equals a rebuild by exact
    search (up to ties); above the exact threshold both are FAISS IVF searches (pynndescent
    cannot search without building its own search index, which costs more than the two
    searches). Recall and time against a rebuild: ``benchmarks/graph_update.py``."""
    X_old = np.asarray(X_old)
    X_new = np.asarray(X_new)
    n_old, m = X_old.shape[0], X_new.shape[0]
    if n_old != graph.n:
        raise ValidationError(f"the graph has {graph.n} items but {n_old} old vectors were given")
    if X_new.ndim != 2 or X_new.shape[1] != X_old.shape[1]:
        raise ValidationError(f"new vectors must be (m, {X_old.shape[1]}); got shape {X_new.shape}")
    if not np.isfinite(X_new).all():
        raise ValidationError("embeddings contain NaN or infinite values; fix or drop those rows")
    k = graph.k
    if m == 0:
        return graph, 0
    n = n_old + m
    exact = (choose_method(n, exact_threshold) if method == "auto" else method) == "exact"
    new = normalize_rows(X_new)  # (m, d)
    # the new rows: k+1 nearest among every item, then self dropped. An IVF search keeps the
    # coarse centroids of the last full build (k-means on every item was most of its cost)
    # plus centroids of the new items alone: with the old ones only, a batch from new clusters
    # fell into arbitrary cells and recall@10 fell to 0.97 after one 5 % batch, 0.86 after six
    # (benchmarks/results/graph_update.md). The old rows are normalised chunk by chunk as they
    # are added or searched: no normalised copy of every row (1.5 GB at 1M x 384)
    centroids = None
    if exact:
        X = np.empty((n, X_old.shape[1]), np.float32)  # (n, d) every row, normalised
        for lo in range(0, n_old, _CHUNK):
            X[lo : min(lo + _CHUNK, n_old)] = normalize_rows(X_old[lo : lo + _CHUNK])
        X[n_old:] = new
        idx_n, sim_n = _search_exact(new, X, k + 1)
    else:
        old_centroids = graph.centroids
        if old_centroids is None:
            old_centroids = _ivf_centroids(X_old, seed=seed, inv=_inverse_norms(X_old))
        centroids = np.vstack([old_centroids, _ivf_centroids(new, seed=seed)])
        index = _ivf_flat_index(centroids)
        for lo in range(0, n_old, _CHUNK):
            index.add(normalize_rows(X_old[lo : lo + _CHUNK]))
        index.add(new)
        idx_n, sim_n = _ivf_search(index, new, k + 1)
        del index
    idx_n, sim_n = _drop_self(idx_n, sim_n, k, self_ids=np.arange(n_old, n))
    # the old rows: their k nearest new items, merged where closer than their k-th neighbour
    kr = min(k, m)
    if exact:
        idx_r, sim_r = _search_exact(X[:n_old], new, kr)
    else:
        index = _ivf_flat_index(_ivf_centroids(new, seed=seed))
        index.add(new)
        found = [_ivf_search(index, normalize_rows(X_old[lo : lo + _CHUNK]), kr) for lo in range(0, n_old, _CHUNK)]
        idx_r, sim_r = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
    sim_r = np.where(idx_r < 0, -np.inf, sim_r)
    idx_r = np.where(idx_r < 0, -1, idx_r + n_old)
    closer = sim_r[:, 0] > graph.similarities[:, -1]  # (n_old,) rows that change
    rows = np.flatnonzero(closer)
    cand_i = np.concatenate([graph.indices[rows], idx_r[rows]], axis=1)  # (r, k + kr)
    cand_s = np.concatenate([graph.similarities[rows].astype(np.float32), sim_r[rows]], axis=1)
    order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]  # old neighbours first on ties
    indices = np.empty((n, k), np.int64)
    sims = np.empty((n, k), np.float32)
    indices[:n_old], sims[:n_old] = graph.indices, graph.similarities
    indices[rows] = np.take_along_axis(cand_i, order, 1)
    sims[rows] = np.clip(np.take_along_axis(cand_s, order, 1), -1.0, 1.0)
    indices[n_old:], sims[n_old:] = idx_n, sim_n
    if not exact and (indices < 0).any():  # rare: every row normalised for an exact repair
        X = np.vstack([normalize_rows(X_old), new])
        indices, sims = _repair_missing(X, indices, sims)
    elif exact:
        indices, sims = _repair_missing(X, indices, sims)
    # an approximate update keeps the name of the approximate method the graph was built with
    label = "exact" if exact else (graph.method if graph.method != "exact" else "ivf")
    return KnnGraph(indices, sims, label, centroids), int(rows.size)


def choose_method(n: int, exact_threshold: int = DEFAULT_EXACT_THRESHOLD) -> str:
    """The search method "auto" uses for ``n`` items -- the one place the choice is made:
    "exact" up to ``exact_threshold`` (:data:`DEFAULT_EXACT_THRESHOLD`), else
    :data:`DEFAULT_APPROX_METHOD`. Measured in ``benchmarks/results/knn_backends.md`` (its
    decision paragraph)."""
    return "exact" if n <= exact_threshold else DEFAULT_APPROX_METHOD


# --------------------------------------------------------------------------- backends
# Each returns (indices (n, k+1) int64, similarities (n, k+1) float32), rows sorted by
# similarity descending; an index of -1 marks a slot the backend could not fill.


def _search_exact(Q: np.ndarray, X: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = _import_faiss()
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    sim, idx = index.search(Q, kk)
    return idx.astype(np.int64, copy=False), sim.astype(np.float32, copy=False)


#: IVF parameters. nlist = sqrt(n), nprobe = 5 % of the lists (at least 8): the search then
#: scans ~5 % of the items per query, and k-means on 64 points per list stays cheap (with
#: nlist = 4 sqrt(n) the k-means cost more than the search; benchmarks/knn_backends.md).
IVF_NLIST_PER_SQRT_N = 1.0
IVF_PROBE_FRACTION = 0.05
IVF_MIN_NPROBE = 8


def _ivf_centroids(X: np.ndarray, *, seed: int, inv: np.ndarray | None = None,
                   per_list: int = 64, niter: int = 25) -> np.ndarray:
    """(nlist, d) IVF coarse centroids of the rows of ``X``: spherical k-means (FAISS). ``inv``:
    the rows' inverse norms when ``X`` is not normalised (:func:`_inverse_norms`)."""
    faiss = _import_faiss()
    n, d = X.shape
    nlist = max(1, min(int(IVF_NLIST_PER_SQRT_N * np.sqrt(n)), n // 39))
    # k-means on a sample of 64 points per list (FAISS warns below 39, gains little above 256)
    rng = np.random.default_rng(seed)
    n_train = min(n, per_list * nlist)
    rows = np.sort(rng.choice(n, n_train, replace=False)) if n_train < n else np.arange(n)
    train = _unit_rows(X, inv, rows) if inv is not None else X[rows]
    km = faiss.Kmeans(d, nlist, niter=niter, seed=int(seed), spherical=True, min_points_per_centroid=1)
    km.train(np.ascontiguousarray(train, dtype=np.float32))
    return km.centroids.astype(np.float32, copy=False)


def _search_ivf(X: np.ndarray, kk: int, *, seed: int, Q: np.ndarray | None = None,
                centroids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``kk`` nearest rows of ``X`` to each row of ``Q`` (``X`` itself when None), by an
    IVF-Flat index over ``centroids`` (trained here when None)."""
    if centroids is None:
        centroids = _ivf_centroids(X, seed=seed)
    index = _ivf_flat_index(centroids)
    index.add(X)
    return _ivf_search(index, X if Q is None else Q, kk)


#: rows normalised at a time where a normalised copy of every row is avoided
_CHUNK = 65_536


def _ivf_flat_index(centroids: np.ndarray):
    """An empty FAISS IVF-Flat inner-product index over ``centroids`` (nlist, d), probing 5 % of
    its lists (at least IVF_MIN_NPROBE)."""
    faiss = _import_faiss()
    nlist, d = centroids.shape
    quantizer = faiss.IndexFlatIP(d)
    quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.is_trained = True
    index.nprobe = min(nlist, max(IVF_MIN_NPROBE, int(np.ceil(IVF_PROBE_FRACTION * nlist))))
    return index


def _ivf_search(index, Q: np.ndarray, kk: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``kk`` nearest indexed rows to each row of ``Q`` (at most as many as are indexed)."""
    sim, idx = index.search(np.ascontiguousarray(Q, dtype=np.float32), min(kk, index.ntotal))
    return idx.astype(np.int64, copy=False), sim.astype(np.float32, copy=False)


#: "ivf-blas" (the default above the exact threshold): the IVF lists of FAISS k-means
#: (nlist = sqrt(n), :func:`_ivf_centroids`), every item probing its IVF_BLAS_NPROBE nearest
#: lists -- a fixed number, not a share of n -- but searched list by list: the items probing a
#: list are one block, scored against the list's members with one BLAS matrix product, and
#: only scores above each item's current k-th best are kept (:func:`_search_ivf_blas`).
#: Measured in benchmarks/results/knn_backends.md.
IVF_BLAS_NPROBE = 8
#: its k-means: (training points per list, iterations); FAISS IVF's (64, 25) cost 40 s at 1M
IVF_BLAS_KMEANS = (32, 10)
#: at most this many scores (rows x members) in one block's product: 16 MB of float32
_BLOCK_SCORES = 1 << 22


#: "ivf-blas" searches in a reduced space when the rows are nearly low-rank: the top principal
#: directions (of the unit rows, uncentred: inner products are kept) holding this share of a
#: sample's energy, if they are at most IVF_BLAS_REDUCED_MAX_DIM; the candidates found there
#: are then scored in the full space (:func:`_build_ivf_blas`). Rows of sentence
#: embeddings spread their energy wider and are searched in the full space.
IVF_BLAS_REDUCED_ENERGY = 0.95
IVF_BLAS_REDUCED_MAX_DIM = 128
#: probed lists and candidates per item (scored in the full space) of a reduced-space search.
#: 1M `latent`: in its 32-d space the exact top 11 held recall 0.978 of the true top 10, the
#: exact top 16 all of it; the search's 11 candidates gave 0.948 (14 probes), 16 gave 0.958,
#: their scoring being cheap once it reads the float16 copy (26 -> 15 CPU-s for 11 -> 16)
IVF_BLAS_REDUCED_NPROBE = 14
IVF_BLAS_RERANK = 16
#: ... used from this many items on. Below it the full space, as measured before: at 100k
#: `latent` the two were close (full 7.8-11.6 CPU-s at recall 0.965; reduced with 16 probes and
#: 16 candidates 16.1 CPU-s at 0.985, with 12 and 11 7.2 CPU-s at 0.968; single runs at load
#: 13-16). At 1M `latent` the full space needs far more probes (8: recall 0.877 in 144 CPU-s)
IVF_BLAS_REDUCED_MIN_N = 500_000
#: from this many items "ivf-blas" reads the rows once into a float16 copy of the unit rows
#: and searches / scores that copy (:func:`_read_rows`); below it the rows are read in place
#: (same graphs as before at 100k-200k)
IVF_BLAS_HALF_MIN_N = 500_000
#: rows sampled for the principal directions
_PCA_SAMPLE = 20_000


def _release_pages(X: np.ndarray) -> None:
    """Let a memory-mapped ``X`` drop the pages this process has read from its resident set
    (they stay in the page cache; a later read maps them again): reading every row of a
    1M x 384 file would otherwise add 1.5 GB to the peak RSS. A no-op for other arrays."""
    import mmap

    while X is not None and not isinstance(getattr(X, "_mmap", None), mmap.mmap):
        X = getattr(X, "base", None)   # np.asarray(memmap) is a plain view of it
    if X is not None and hasattr(mmap, "MADV_DONTNEED"):
        X._mmap.madvise(mmap.MADV_DONTNEED)


def _reduced_basis(X: np.ndarray, *, seed: int) -> np.ndarray | None:
    """(d, r) orthonormal principal directions of a sample of unit rows holding
    :data:`IVF_BLAS_REDUCED_ENERGY` of its energy, r a multiple of 16; None when that takes
    more than :data:`IVF_BLAS_REDUCED_MAX_DIM` (or half of d) directions."""
    from threadpoolctl import threadpool_limits

    n, d = X.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, min(n, _PCA_SAMPLE), replace=False))
    S = normalize_rows(X[rows]).astype(np.float64)
    with threadpool_limits(1, user_api="blas"):  # a small product: threads only spin
        w, vecs = np.linalg.eigh(S.T @ S)  # ascending
    energy = np.cumsum(w[::-1])
    r = int(np.searchsorted(energy, IVF_BLAS_REDUCED_ENERGY * energy[-1])) + 1
    r = -(-r // 16) * 16
    if r > min(IVF_BLAS_REDUCED_MAX_DIM, d // 2):
        return None
    return np.ascontiguousarray(vecs[:, ::-1][:, :r], dtype=np.float32)


def _read_rows(X: np.ndarray, V: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One pass over ``X`` in row order: (inverse norms (n,), unit rows projected on ``V``
    (n, r) or None without ``V``, the unit rows as float16 (n, d)). The float16 copy is what
    the search and the scoring read afterwards: half the bytes of the rows, in memory, so the
    memory map's pages are released as the pass goes (:func:`_release_pages`) and never mapped
    again (re-reading released pages at random cost page faults and put the whole file in the
    peak RSS). Its rounding (2^-11 relative) moves a cosine by ~1e-4."""
    n = X.shape[0]
    inv = np.zeros(n, np.float32)
    Y = None if V is None else np.empty((n, V.shape[1]), np.float32)
    H = np.empty(X.shape, np.float16)
    step = 32_768
    for i in range(0, n, step):
        B = np.asarray(X[i : i + step], dtype=np.float32)
        norms = np.linalg.norm(B.astype(np.float64), axis=1)
        inv[i : i + step] = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        B = B * inv[i : i + step, None]
        H[i : i + step] = B
        if Y is not None:
            Y[i : i + step] = B @ V
        _release_pages(X)   # every 32k rows: 50 MB of mapped pages at a time
    return inv, Y, H


def _build_ivf_blas(X: np.ndarray, kk: int, *, seed: int):
    """The "ivf-blas" search: (ids (n, kk), sims, rows in list order, centroids (nlist, d),
    inverse norms). From :data:`IVF_BLAS_HALF_MIN_N` items the rows are read once into a
    float16 copy of the unit rows (:func:`_read_rows`) and everything after reads that copy.
    Low-rank rows (:func:`_reduced_basis`, from :data:`IVF_BLAS_REDUCED_MIN_N` items) are
    searched in the reduced space for :data:`IVF_BLAS_RERANK` candidates each, then scored in
    the full space (:func:`_rerank_exact`); others in the full space."""
    per_list, niter = IVF_BLAS_KMEANS
    n = X.shape[0]
    V = _reduced_basis(X, seed=seed) if n >= max(IVF_BLAS_REDUCED_MIN_N, _PCA_SAMPLE) else None
    if V is None:
        if n >= IVF_BLAS_HALF_MIN_N:
            inv, _, H = _read_rows(X)
            src, src_inv = H, None
        else:
            inv = _inverse_norms(X)
            src, src_inv = X, inv
        centroids = _ivf_centroids(src, seed=seed, inv=src_inv, per_list=per_list, niter=niter)
        idx, sim, order = _search_ivf_blas(src, src_inv, kk, centroids, IVF_BLAS_NPROBE)
        return idx, sim, order, centroids, inv
    inv, Y, H = _read_rows(X, V)
    cy = _ivf_centroids(Y, seed=seed, per_list=per_list, niter=niter)
    cand, order = _search_ivf_blas(Y, None, max(kk, IVF_BLAS_RERANK), cy, IVF_BLAS_REDUCED_NPROBE)[::2]
    del Y
    cand = cand.astype(np.int32)  # less to hold while the rows are scored
    idx, sim = _rerank_exact(H, None, cand, kk, order)
    return idx, sim, order, normalize_rows(cy @ V.T), inv


def _rerank_exact(X: np.ndarray, inv: np.ndarray, cand: np.ndarray, kk: int, order: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``kk`` best of its candidates ``cand`` (-1: none) by their cosine in the
    full space (rows of ``X`` -- the float16 unit rows of :func:`_read_rows` -- normalised by
    ``inv`` as read), rows taken in ``order`` in chunks, one per core."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n, r = cand.shape
    idx = np.full((n, kk), -1, np.int64)
    sim = np.full((n, kk), -np.inf, np.float32)

    def chunk(rows: np.ndarray) -> None:
        c = cand[rows]                                                  # (b, r)
        Q = _unit_rows(X, inv, rows)                                    # (b, d)
        # rows of one list share most candidates: each read and converted once
        U, at = np.unique(np.maximum(c, 0), return_inverse=True)
        M = _unit_rows(X, inv, U)[at.reshape(c.shape)]                  # (b, r, d)
        s = np.einsum("bd,brd->br", Q, M)
        s[c < 0] = -np.inf
        top = np.argsort(-s, axis=1, kind="stable")[:, :kk]
        idx[rows] = np.where(np.take_along_axis(s, top, 1) > -np.inf, np.take_along_axis(c, top, 1), -1)
        sim[rows] = np.take_along_axis(s, top, 1)

    step, workers = 256, _n_threads()
    chunks = [order[i : i + step] for i in range(0, n, step)]
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        list(pool.map(chunk, chunks))
    np.minimum(sim, 1.0, out=sim)
    return idx, sim


def _all_finite(X: np.ndarray) -> bool:
    """No NaN or infinity in ``X``, checked :data:`_CHUNK` rows at a time with a memory map's
    pages released after each: ``np.isfinite(X).all()`` at 1M x 384 built a 384 MB mask and
    kept the whole 1.5 GB file mapped, 1,862 MB of peak RSS before any search began."""
    for i in range(0, X.shape[0], _CHUNK):
        if not np.isfinite(X[i : i + _CHUNK]).all():
            return False
        _release_pages(X)
    return True


def _inverse_norms(X: np.ndarray) -> np.ndarray:
    """(n,) float32 1 / ||x|| per row (0 for all-zero rows); norms in float64, in chunks."""
    inv = np.zeros(X.shape[0], np.float32)
    for i in range(0, X.shape[0], 65_536):
        norms = np.linalg.norm(np.asarray(X[i : i + 65_536], dtype=np.float64), axis=1)
        inv[i : i + 65_536] = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return inv


def _unit_rows(X: np.ndarray, inv: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """The rows ``rows`` of ``X`` as a new float32 array, normalised (``inv``: inverse norms;
    None: taken as they are)."""
    B = np.asarray(X)[rows]  # a memory map as a plain array: the fancy index copies once
    B = B.astype(np.float32, copy=False)
    if inv is not None:
        B *= inv[rows, None]
    return B


def _topk_rows(S: np.ndarray, kk: int, floor: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``kk`` largest entries of each row of ``S`` (m, M): (columns (m, kk) int64,
    values (m, kk) float32), descending; slots with nothing (fewer than kk columns, or nothing
    at least ``floor`` (m,)) are -1 / -inf. With a floor (a row's current k-th best, tight
    after its first list) only rows whose maximum reaches it are looked at, and in them only
    the entries that reach it: far cheaper than a partition of every row."""
    m, M = S.shape
    cols = np.full((m, kk), -1, np.int64)
    vals = np.full((m, kk), -np.inf, np.float32)
    if floor is None:
        if M > kk:
            top = np.argpartition(S, M - kk, axis=1)[:, M - kk :]  # (m, kk), unordered
        else:
            top = np.broadcast_to(np.arange(M), (m, M))
        v = np.take_along_axis(S, top, 1)
        order = np.argsort(-v, axis=1, kind="stable")
        cols[:, : top.shape[1]] = np.take_along_axis(top, order, 1)
        vals[:, : top.shape[1]] = np.take_along_axis(v, order, 1)
        return cols, vals
    # one comparison pass and a flat scan (a 2-D np.nonzero of the same mask took 10x longer)
    hits = np.flatnonzero(S >= floor[:, None])
    if hits.size == 0:
        return cols, vals
    rr, c = np.divmod(hits, M)
    live, start, r = np.unique(rr, return_index=True, return_inverse=True)
    width = max(kk, int(np.diff(np.append(start, rr.size)).max()))
    pos = np.arange(rr.size) - start[r]
    wc = np.full((live.size, width), -1, np.int64)
    wv = np.full((live.size, width), -np.inf, np.float32)
    wc[r, pos] = c
    wv[r, pos] = S.ravel()[hits]
    order = np.argsort(-wv, axis=1, kind="stable")[:, :kk]
    cols[live] = np.take_along_axis(wc, order, 1)
    vals[live] = np.take_along_axis(wv, order, 1)
    return cols, vals


def _merge_into(idx: np.ndarray, sim: np.ndarray, rows: np.ndarray, ids: np.ndarray, vals: np.ndarray) -> None:
    """Rows ``rows`` of ``idx`` / ``sim`` (descending lists) keep their best of their list and
    the candidates ``ids`` / ``vals`` (one row each, ids not already listed), in place."""
    better = vals.max(axis=1, initial=-np.inf) > sim[rows, -1]
    rows, ids, vals = rows[better], ids[better], vals[better]
    cand_i = np.concatenate([idx[rows], ids], axis=1)
    cand_s = np.concatenate([sim[rows], vals], axis=1)
    top = np.argsort(-cand_s, axis=1, kind="stable")[:, : idx.shape[1]]  # kept ones first on ties
    idx[rows] = np.take_along_axis(cand_i, top, 1)
    sim[rows] = np.take_along_axis(cand_s, top, 1)


def _search_ivf_blas(X: np.ndarray, inv: np.ndarray | None, kk: int, centroids: np.ndarray,
                     nprobe: int = IVF_BLAS_NPROBE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``kk`` nearest rows of ``X`` (normalised by ``inv`` as read) to each row, each row
    searching the members of its ``IVF_BLAS_NPROBE`` nearest ``centroids`` (an IVF search),
    computed list by list: first every list against itself (each row's nearest list), then
    each list against the block of rows that probe it, keeping scores above a row's current
    k-th best. BLAS runs single-threaded in one worker thread per core (a multi-threaded BLAS
    spins on small products and bills the CPU for it). Returns (ids, sims, the rows ordered by
    their nearest list)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n = X.shape[0]
    C = np.ascontiguousarray(centroids, dtype=np.float32)
    nlist = C.shape[0]
    nprobe = min(nprobe, nlist)
    idx = np.full((n, kk), -1, np.int64)
    sim = np.full((n, kk), -np.inf, np.float32)

    def blocks(rows: np.ndarray, width: int):
        step = max(1, _BLOCK_SCORES // max(width, 1))
        return [rows[i : i + step] for i in range(0, rows.size, step)]

    def probe(rows: np.ndarray) -> np.ndarray:
        return faiss.knn(_unit_rows(X, inv, rows), C, nprobe, faiss.METRIC_INNER_PRODUCT)[1].astype(np.int32)

    def score(task):  # (rows, list members, members' unit rows) -> rows, ids, sims
        rows, members, M, use_floor = task
        Q = _unit_rows(X, inv, rows)
        if use_floor:
            cols, vals = _topk_rows(Q @ M.T, min(kk, members.size), sim[rows, -1])
        else:  # a row's first list: FAISS's product + heap beats a partition of each row
            vals, cols = faiss.knn(Q, M, min(kk, members.size), faiss.METRIC_INNER_PRODUCT)
            vals = np.where(cols < 0, -np.inf, vals).astype(np.float32, copy=False)
        return rows, np.where(cols < 0, -1, members[np.maximum(cols, 0)]), vals

    def merge(result) -> None:
        _merge_into(idx, sim, *result)

    def lists(assign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(assign, kind="stable")
        return order, np.searchsorted(assign[order], np.arange(nlist + 1))

    workers = _n_threads()
    faiss = _import_faiss()
    faiss.omp_set_num_threads(1)  # one single-threaded FAISS call per worker thread
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        probes = np.concatenate(list(pool.map(probe, blocks(np.arange(n), nlist))))  # (n, nprobe)
        members, mb = lists(probes[:, 0])
        for step, (queries, qb) in enumerate([(members, mb), lists(probes[:, 1:].ravel())]):
            if step == 1:
                queries = queries // (nprobe - 1) if nprobe > 1 else queries[:0]
                if queries.size == 0:
                    break

            def tasks(queries=queries, qb=qb, step=step):
                for L in range(nlist):
                    mem = members[mb[L] : mb[L + 1]]
                    if mem.size == 0:
                        continue
                    M = _unit_rows(X, inv, mem)
                    for rows in blocks(queries[qb[L] : qb[L + 1]], mem.size):
                        yield rows, mem, M, step == 1

            pending: deque = deque()   # a few blocks in flight: Executor.map would take them all
            for task in tasks():
                pending.append(pool.submit(score, task))
                if len(pending) > 2 * workers:
                    merge(pending.popleft().result())
            while pending:
                merge(pending.popleft().result())
    faiss.omp_set_num_threads(workers)
    return idx, sim, members


#: neighbour-of-neighbour passes after the "ivf-blas" search (:func:`_refine_neighbours`).
#: Off: on 200k `latent` one pass cost more than the search (15.6 -> 33.9 CPU-s) for recall
#: 0.950 -> 0.964, where 16 probes reach 0.982 in 22 CPU-s; 1M `latent`: 144 -> 259 CPU-s for
#: 0.877 -> 0.931 (benchmarks/results/knn_backends.md)
IVF_BLAS_REFINE_PASSES = 0
#: rows per chunk of a refinement pass, each scored against every neighbour of the chunk's
#: neighbours (about 64 x 70 of them); larger chunks find more but cost more per row
#: (200k latent, 3 probes: 0.75 -> 0.93 with 256 rows for 25 CPU-s, 64 rows 11 CPU-s)
_REFINE_ROWS = 64


def _refine_neighbours(X: np.ndarray, inv: np.ndarray, idx: np.ndarray, sim: np.ndarray,
                       order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One neighbour-of-neighbour pass (after NN-descent's local join), later chunks seeing the
    lists that earlier ones improved: rows are taken in ``order`` (rows of one IVF list together) in chunks of
    :data:`_REFINE_ROWS`; a chunk is scored with one BLAS product against every neighbour of
    its rows' neighbours (rows of ``X`` normalised by ``inv`` as read), and each row keeps the
    k best of its list and those candidates, so no row's list gets worse. One chunk per core
    at a time, BLAS single-threaded in each."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n, k = idx.shape
    rows_all = np.arange(n) if order is None else np.asarray(order)

    def chunk(rows: np.ndarray):
        own = idx[rows]                                              # (b, k)
        U = np.unique(idx[own[own >= 0]])                            # every neighbour's neighbours
        U = U[U >= 0]
        if U.size == 0:
            return rows[:0], own[:0], sim[rows[:0]]
        S = _unit_rows(X, inv, rows) @ _unit_rows(X, inv, U).T       # (b, |U|)
        at = np.searchsorted(U, rows)
        hit = np.flatnonzero((at < U.size) & (U[np.minimum(at, U.size - 1)] == rows))
        S[hit, at[hit]] = -np.inf                                    # self
        cols, cs = _topk_rows(S, k, sim[rows, -1])
        ci = np.where(cols < 0, -1, U[np.maximum(cols, 0)])
        cs[(ci[:, :, None] == own[:, None, :]).any(axis=2)] = -np.inf   # already listed
        return rows, ci, cs

    idx, sim = idx.copy(), sim.copy()
    workers = _n_threads()
    chunks = [rows_all[i : i + _REFINE_ROWS] for i in range(0, n, _REFINE_ROWS)]
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        for i in range(0, len(chunks), workers):
            for result in pool.map(chunk, chunks[i : i + workers]):
                _merge_into(idx, sim, *result)
    np.minimum(sim, 1.0, out=sim)   # float32 products of unit rows may pass 1 by a rounding
    return idx, sim


def _reverse_merge(idx: np.ndarray, sim: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One reverse-neighbour pass: i enters j's list when j is in i's list and i is closer to
    j than j's current last neighbour (cosine is symmetric). Lifts an approximate graph's
    recall for the price of a sort of the few edges that qualify."""
    n, k = idx.shape
    src = np.repeat(np.arange(n), k)
    dst = idx.ravel()
    s = sim.ravel()
    ok = dst >= 0
    src, dst, s = src[ok], dst[ok], s[ok]
    ok = s > sim[dst, -1]
    src, dst, s = src[ok], dst[ok], s[ok]
    # i already in j's list: checked 1M edges at a time (idx[dst] is 88 bytes per edge)
    step = 1 << 20
    ok = np.concatenate([~(idx[dst[i : i + step]] == src[i : i + step, None]).any(axis=1)
                         for i in range(0, dst.size, step)] or [np.zeros(0, bool)])
    src, dst, s = src[ok], dst[ok], s[ok]
    if dst.size == 0:
        return idx, sim
    order = np.lexsort((-s, dst))
    src, dst, s = src[order], dst[order], s[order]
    rows, start = np.unique(dst, return_index=True)
    pos = np.arange(dst.size) - np.repeat(start, np.diff(np.append(start, dst.size)))
    keep = pos < k
    slot = np.searchsorted(rows, dst[keep])
    add_i = np.full((rows.size, k), -1, np.int64)
    add_s = np.full((rows.size, k), -np.inf, np.float32)
    add_i[slot, pos[keep]] = src[keep]
    add_s[slot, pos[keep]] = s[keep]
    cand_i = np.concatenate([idx[rows], add_i], axis=1)
    cand_s = np.concatenate([sim[rows], add_s], axis=1)
    order = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
    idx, sim = idx.copy(), sim.copy()
    idx[rows] = np.take_along_axis(cand_i, order, 1)
    sim[rows] = np.take_along_axis(cand_s, order, 1)
    return idx, sim


#: HNSW parameters (FAISS defaults for good recall: M = 32, efConstruction 200, efSearch 128).
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128


def _search_hnsw(X: np.ndarray, kk: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = _import_faiss()
    index = faiss.IndexHNSWFlat(X.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.add(X)  # HNSW insertion is deterministic given the order; seed is unused
    index.hnsw.efSearch = max(HNSW_EF_SEARCH, kk)
    sim, idx = index.search(X, kk)
    return idx.astype(np.int64, copy=False), sim.astype(np.float32, copy=False)


#: pynndescent builds a 30-NN graph (its default) and keeps the top k. At 100k overlapping
#: 384-d points recall@10 was 0.814 / 0.962 / 0.987 with 11 / 20 / 30 neighbours, built in
#: 7.4 / 11.4 / 17.8 s (IVF: 0.981 in 46 s); benchmarks/results/knn_backends.md, `latent` rows.
NNDESCENT_N_NEIGHBORS = 30


def numba_cache_dir() -> Path:
    """Where numba keeps pynndescent's compiled functions between processes: ``NUMBA_CACHE_DIR``
    when set, else ``$XDG_CACHE_HOME/labelloop/numba`` (``~/.cache/labelloop/numba``). Numba's
    default is ``__pycache__`` beside pynndescent's sources, which a system-wide or read-only
    install cannot write. Only pynndescent's ``cache=True`` functions are kept: the first build
    in a fresh process took 88.6 CPU-s with an empty cache and 43.6 with a filled one
    (2,000 x 384, load ~22 on 2 cores); the rest is compiled in every process."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return Path(os.environ["NUMBA_CACHE_DIR"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "labelloop" / "numba"


def _search_nndescent(X: np.ndarray, kk: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    import sys

    if "numba" not in sys.modules:   # numba reads its cache location once, at import
        os.environ["NUMBA_CACHE_DIR"] = str(numba_cache_dir())
    try:
        import pynndescent
    except ImportError as exc:
        raise MissingDependencyError.for_extra("pynndescent", "ann") from exc
    index = pynndescent.NNDescent(
        X,
        metric="cosine",
        n_neighbors=max(kk, NNDESCENT_N_NEIGHBORS),
        random_state=seed,
        n_jobs=_n_threads(),
    )
    idx, dist = index.neighbor_graph  # cosine distance = 1 - cos
    sim = (1.0 - dist).astype(np.float32)
    idx = idx.astype(np.int64, copy=False)
    # pynndescent marks empty slots with -1 (and distance inf); keep rows sorted, -1 last
    order = np.argsort(np.where(idx < 0, np.inf, -sim), axis=1, kind="stable")[:, :kk]
    return np.take_along_axis(idx, order, 1), np.take_along_axis(sim, order, 1)


# --------------------------------------------------------------------------- clean-up


def _drop_self(idx: np.ndarray, sim: np.ndarray, k: int, self_ids: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id (``self_ids``, row i is item i when None; wherever it sits:
    duplicates may tie with it), keep k."""
    n = idx.shape[0]
    own = (np.arange(n) if self_ids is None else np.asarray(self_ids))[:, None]  # (n, 1)
    is_self = idx == own  # (n, k+1)
    # rows without self (ties among > k+1 duplicates, approximate misses) drop their last slot
    drop = is_self.copy()
    no_self = ~is_self.any(axis=1)
    drop[no_self, -1] = True
    first = np.argmax(drop, axis=1)  # the one slot to drop per row
    keep = np.ones_like(drop)
    keep[np.arange(n), first] = False
    idx = idx[keep].reshape(n, k)  # (n, k)
    sim = np.clip(sim[keep].reshape(n, k), -1.0, 1.0)  # (n, k)
    # self-duplicates after the first occurrence (cannot happen in FAISS / pynndescent output,
    # but cheap to guard): turn into missing slots for _repair_missing
    idx = np.where(idx == own, -1, idx)
    return idx, sim.astype(np.float32, copy=False)


def _repair_missing(
    X: np.ndarray, idx: np.ndarray, sim: np.ndarray, *, normalised: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Rows with unfilled (-1) slots from an approximate index are searched exactly."""
    bad = np.flatnonzero((idx < 0).any(axis=1))
    if bad.size == 0:
        return idx, sim
    if not normalised:
        X = np.ascontiguousarray(normalize_rows(X))
    k = idx.shape[1]
    ridx, rsim = _search_exact(X[bad], X, k + 1)
    is_self = ridx == bad[:, None]
    drop = is_self.copy()
    drop[~is_self.any(axis=1), -1] = True
    keep = np.ones_like(drop)
    keep[np.arange(bad.size), np.argmax(drop, axis=1)] = False
    idx = idx.copy()
    sim = sim.copy()
    idx[bad] = ridx[keep].reshape(bad.size, k)
    sim[bad] = np.clip(rsim[keep].reshape(bad.size, k), -1.0, 1.0)
    return idx, sim

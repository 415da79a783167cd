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
    "KNN_METHODS",
    "DEFAULT_APPROX_METHOD",
    "DEFAULT_EXACT_THRESHOLD",
    "NNDESCENT_MIN_N",
    "numba_cache_dir",
]

#: every accepted ``method``; "auto" picks by size (see :func:`build_knn_graph`).
KNN_METHODS = ("auto", "exact", "ivf", "hnsw", "nndescent")

#: "auto" searches exactly up to this many items. benchmarks/results/knn_backends.md: exact
#: search took 10.8 s at 10k vs 6.4 s for IVF on the shared 2-core machine (~1 s vs ~0.6 s on
#: an idle one; the brief's idle figure is 121 s at 100k) and has no recall loss; at 50k IVF
#: was 3.5x faster.
DEFAULT_EXACT_THRESHOLD = 20_000

#: "auto" above the exact threshold: FAISS IVF-Flat (recall@10 1.000 at 10k / 50k on the
#: clustered benchmark, 3.5x faster than exact at 50k, no JIT). HNSW was 2x slower than IVF at
#: the same recall; PCA-128 before IVF lost recall (0.95 at 50k) and saved no time.
DEFAULT_APPROX_METHOD = "ivf"

#: "auto" switches to pynndescent (when installed: the ``ann`` extra) above this many items.
#: Its numba JIT costs 46-120 s (measured), about half of it kept between processes in
#: :func:`numba_cache_dir`, which only large sets earn back: 25 s vs 118 s for IVF at 50k
#: (recall 0.982 vs 1.000); the brief's figures at 1M: 110 s (recall 0.982) vs ~585 s for IVF.
NNDESCENT_MIN_N = 200_000


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
        return KnnGraph(self.indices[:, :k].copy(), self.similarities[:, :k].copy(), self.method)

    def save(self, path: Path | str) -> None:
        """Write to ``path`` as an uncompressed ``.npz`` (indices, similarities, method)."""
        np.savez(
            Path(path),
            indices=self.indices,
            similarities=self.similarities,
            method=np.array(self.method),
        )

    @classmethod
    def load(cls, path: Path | str) -> KnnGraph:
        """Read a graph written by :meth:`save`."""
        with np.load(Path(path), allow_pickle=False) as data:
            return cls(
                indices=data["indices"].astype(np.int64, copy=False),
                similarities=data["similarities"].astype(np.float32, copy=False),
                method=str(data["method"]),
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

    ``method``: "exact" (FAISS flat inner product), "ivf" (FAISS IVF-Flat), "hnsw" (FAISS
    HNSW-Flat), "nndescent" (pynndescent, the ``ann`` extra), or "auto": exact when
    ``n <= exact_threshold``, else "ivf", or "nndescent" above :data:`NNDESCENT_MIN_N` items
    when pynndescent is installed. Self is never its own neighbour; zero rows get similarity 0
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
    if not np.isfinite(X).all():
        raise ValidationError("embeddings contain NaN or infinite values; fix or drop those rows")
    k = int(k)
    if method == "auto":
        method = _auto_method(n, exact_threshold)
    if method == "nndescent":
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
            idx, sim = _search_ivf(Xn, k + 1, seed=seed)
        else:
            idx, sim = _search_hnsw(Xn, k + 1, seed=seed)
    idx, sim = _drop_self(idx, sim, k)
    idx, sim = _repair_missing(X if Xn is None else Xn, idx, sim, normalised=Xn is not None)
    return KnnGraph(idx, sim, method)


def _auto_method(n: int, exact_threshold: int) -> str:
    if n <= exact_threshold:
        return "exact"
    if n > NNDESCENT_MIN_N:
        import importlib.util

        if importlib.util.find_spec("pynndescent") is not None:
            return "nndescent"
    return DEFAULT_APPROX_METHOD


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


def _search_ivf(X: np.ndarray, kk: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    faiss = _import_faiss()
    n, d = X.shape
    nlist = max(1, min(int(IVF_NLIST_PER_SQRT_N * np.sqrt(n)), n // 39))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    # k-means on a sample of 64 points per list (FAISS warns below 39, gains little above 256)
    rng = np.random.default_rng(seed)
    n_train = min(n, 64 * nlist)
    train = X[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else X
    index.cp.seed = int(seed)
    index.cp.min_points_per_centroid = 1  # silence FAISS's stderr warning on small sets
    index.train(train)
    index.add(X)
    index.nprobe = min(nlist, max(IVF_MIN_NPROBE, int(np.ceil(IVF_PROBE_FRACTION * nlist))))
    sim, idx = index.search(X, kk)
    return idx.astype(np.int64, copy=False), sim.astype(np.float32, copy=False)


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


def _drop_self(idx: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own id (wherever it sits: duplicates may tie with it), keep k."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]  # (n, k+1)
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
    idx = np.where(idx == np.arange(n)[:, None], -1, idx)
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

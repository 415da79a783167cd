"""A sparse matrix as its three CSR arrays, and the products a refresh needs, through scipy's
compiled kernels without importing ``scipy.sparse``.

A refresh in a new process reads the stored affinity S memory-mapped and warm-starts from the
last state. Importing ``scipy.sparse`` is 0.15-0.25 CPU-s of such a process (mostly numpy
submodules scipy's array-API layer loads; benchmarks/results/e2e_latency_1000000.md), so the
products here call the compiled kernels of ``scipy.sparse._sparsetools`` loaded from their file
alone (:func:`kernels`, 3 ms; the usual import where scipy.sparse is loaded already or the file
cannot be loaded so): a warm update's row products, a drain's full products and the residual
never import scipy.sparse, and give the results of scipy's own products (the same kernels).
The functions take either a :class:`CsrArrays` or a scipy CSR matrix: both have ``data``,
``indices`` and ``indptr``. Full products on large graphs run on a copy of S in locality order
(:meth:`CsrArrays.ordered`).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

__all__ = ["CsrArrays", "LOCALITY_MIN_ROWS", "kernels", "matmul", "row_gather", "rows_dot", "rows_dot_transposed"]

#: from this many rows a full product (a full propagation, a drain) runs on a copy of S with its
#: rows and columns in reverse Cuthill-McKee order (:meth:`CsrArrays.ordered`): neighbours sit
#: near each other in memory, so the rows of Y a product reads are mostly in cache. One S @ Y
#: (n, 10) float32 at 1M items (16M entries): 0.39 -> 0.16 CPU-s; at 100k 0.015 -> 0.008
#: (the order costs 0.6 + 1.1 CPU-s once per affinity at 1M, 0.06 at 100k; stored beside it)
LOCALITY_MIN_ROWS = 50_000


_KERNELS = None
_KERNELS_LOCK = threading.Lock()


def kernels():
    """scipy's compiled sparse kernels (the module ``scipy.sparse._sparsetools``: ``csr_matvecs``,
    ``csc_matvecs``, ``csr_row_index``), loaded once from their extension file without running
    ``scipy/sparse/__init__.py`` (3 ms instead of 0.15-0.25 CPU-s), unless scipy.sparse is loaded
    already; the usual import where the file is not found or does not load. Not put in
    ``sys.modules``: a later ``import scipy.sparse`` loads it as usual."""
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    with _KERNELS_LOCK:
        if _KERNELS is None:
            module = None
            if "scipy.sparse" not in sys.modules:
                module = _load_kernels_alone()
            if module is None:
                from scipy.sparse import _sparsetools as module
            _KERNELS = module
    return _KERNELS


def _load_kernels_alone():
    """``scipy.sparse._sparsetools`` from its file (an extension module that needs only numpy),
    or None when it is not found or does not load so."""
    import importlib.machinery
    import importlib.util

    try:
        spec = importlib.util.find_spec("scipy")   # finds the package without importing it
        folder = Path(next(iter(spec.submodule_search_locations))) / "sparse"
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = folder / f"_sparsetools{suffix}"
            if path.exists():
                loader = importlib.machinery.ExtensionFileLoader("scipy.sparse._sparsetools", str(path))
                module = importlib.util.module_from_spec(
                    importlib.util.spec_from_file_location("scipy.sparse._sparsetools", path, loader=loader))
                loader.exec_module(module)
                return module if hasattr(module, "csr_matvecs") else None
    except (ImportError, OSError, AttributeError, StopIteration, TypeError):
        return None
    return None


def _kernel_types(S, Y: np.ndarray):
    """``(T, Y)``: the product's value type (scipy's upcast of S's and Y's) and Y as a C-ordered
    array of it, or None where the kernels cannot take S's arrays as they are (index arrays of
    two integer types, or values to be cast: scipy's own product then)."""
    T = np.result_type(S.data.dtype, Y.dtype)
    if S.data.dtype != T or S.indices.dtype != S.indptr.dtype or T.kind not in "fc":
        return None
    return T, np.ascontiguousarray(Y, dtype=T)


def matmul(S, Y: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``S @ Y`` for a CSR ``S`` (n, m) and a dense (m,) or (m, C) ``Y`` through the compiled
    kernel (:func:`kernels`), scipy's result up to nothing: the same kernel. ``out``: an (n, C)
    array of the result's type to write it into (overwritten), else a new one."""
    Y = np.asarray(Y)
    typed = _kernel_types(S, Y)
    if typed is None:
        return np.asarray(_scipy(S) @ Y)
    T, Yc = typed
    n, m = S.shape
    C = 1 if Y.ndim == 1 else Y.shape[1]
    if out is None:
        out = np.zeros((n,) + Y.shape[1:], T)
    else:
        out[...] = 0
    kernels().csr_matvecs(n, m, C, S.indptr, S.indices, S.data, Yc.ravel(), out.reshape(-1))
    return out


def _scipy(S):
    return S.tocsr() if isinstance(S, CsrArrays) else S


def _gather_rows(S, rows: np.ndarray):
    """``(indptr, indices, data)`` of ``S[rows]`` (CSR, rows in the order given), by the
    compiled row gather scipy's ``S[rows]`` uses."""
    I = S.indptr.dtype
    rows = np.asarray(rows, dtype=I)
    lens = S.indptr[rows + 1] - S.indptr[rows]
    indptr = np.zeros(rows.size + 1, I)
    np.cumsum(lens, out=indptr[1:])
    nnz = int(indptr[-1])
    indices, data = np.empty(nnz, I), np.empty(nnz, S.data.dtype)
    kernels().csr_row_index(rows.size, rows, S.indptr, S.indices, S.data, indices, data)
    return indptr, indices, data


class CsrArrays:
    """An (n, m) CSR matrix held as ``data`` (nnz,), ``indices`` (nnz,) and ``indptr`` (n + 1,),
    e.g. memory-mapped files; column indices sorted within each row. ``S @ Y`` with a dense Y
    runs the compiled kernel (:func:`matmul`); a product with a sparse matrix converts it to a
    scipy matrix once (:meth:`tocsr`). ``order_dir``: where the locality-ordered copy
    (:meth:`ordered`) is stored and read (None: kept in memory only)."""

    ndim = 2

    def __init__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int],
                 *, order_dir: Path | None = None):
        self.data, self.indices, self.indptr = data, indices, indptr
        self.shape = (int(shape[0]), int(shape[1]))
        self.order_dir = None if order_dir is None else Path(order_dir)
        self._csr = None
        self._ordered = None

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def tocsr(self):
        """The scipy CSR matrix over the same arrays (no copy), built once."""
        if self._csr is None:
            import scipy.sparse as sp

            S = sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape, copy=False)
            S.has_sorted_indices = True
            self._csr = S
        return self._csr

    def __matmul__(self, other):
        if isinstance(other, np.ndarray) and other.ndim in (1, 2):
            return matmul(self, other)
        return self.tocsr() @ other

    def ordered(self):
        """``(perm, inverse, Sp)`` for a symmetric S of at least LOCALITY_MIN_ROWS rows, else None:
        ``perm`` (n,) the reverse Cuthill-McKee order of S's rows, ``inverse`` its inverse
        (``perm[inverse] == arange(n)``) and ``Sp = S[perm][:, perm]`` (a :class:`CsrArrays`), so
        ``(S @ Y)[perm] == Sp @ Y[perm]``. Read memory-mapped from ``order_dir`` when stored
        there, else computed once (and stored there: written whole under another name, then
        renamed)."""
        if self._ordered is not None or self.shape[0] < LOCALITY_MIN_ROWS or self.shape[0] != self.shape[1]:
            return self._ordered
        parts = ("perm", "data", "indices", "indptr")
        d = self.order_dir
        if d is None or not d.exists():
            from scipy.sparse.csgraph import reverse_cuthill_mckee

            S = self.tocsr()
            perm = reverse_cuthill_mckee(S, symmetric_mode=True).astype(np.int64)
            Sp = S[perm][:, perm].tocsr()
            Sp.sort_indices()
            arrays = dict(perm=perm, data=Sp.data, indices=Sp.indices, indptr=Sp.indptr)
            if d is not None:
                tmp = d.with_name(f"{d.name}.{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.mkdir(parents=True, exist_ok=True)
                for a in parts:
                    np.save(tmp / f"{a}.npy", arrays[a])
                try:
                    tmp.replace(d)
                except OSError:   # another process stored it first
                    shutil.rmtree(tmp, ignore_errors=True)
        else:
            arrays = {a: np.asarray(np.load(d / f"{a}.npy", mmap_mode="r")) for a in parts}
        Sp = CsrArrays(arrays["data"], arrays["indices"], arrays["indptr"], self.shape)
        inverse = np.empty(self.shape[0], np.int64)
        inverse[arrays["perm"]] = np.arange(self.shape[0])
        self._ordered = (arrays["perm"], inverse, Sp)
        return self._ordered


def row_gather(S, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(seg, cols, vals, starts)`` of the rows ``rows`` of ``S``: entry e is
    ``S[rows[seg[e]], cols[e]] = vals[e]``, in row order; ``starts`` (r,) where each row's entries
    begin in them."""
    indptr, cols, vals = _gather_rows(S, rows)
    lens = np.diff(indptr)
    return np.repeat(np.arange(lens.size), lens), cols, vals, indptr[:-1]


def rows_dot(S, rows: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(r, C) ``S[rows] @ Y`` for a dense (n, C) ``Y``: O(nnz of those rows x C)."""
    typed = _kernel_types(S, Y)
    if typed is None:
        return np.asarray(_scipy(S)[rows] @ Y, dtype=np.float32)
    T, Yc = typed
    indptr, indices, data = _gather_rows(S, rows)
    out = np.zeros((indptr.size - 1, Y.shape[1]), T)
    kernels().csr_matvecs(out.shape[0], S.shape[1], Y.shape[1], indptr, indices, data, Yc.ravel(), out.reshape(-1))
    return out.astype(np.float32, copy=False)


def rows_dot_transposed(S, rows: np.ndarray, v: np.ndarray, seen: np.ndarray, pos: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(out, w)``: ``w = (S[rows]^T v)[out]`` for an (r, C) ``v`` on ``rows``, ``out`` the sorted
    columns those rows reach (for a symmetric S, the rows of ``S @ V`` that V on ``rows``
    changes). ``seen`` (n,) bool all False and ``pos`` (n,) int32 or int64 are scratch arrays."""
    n = S.shape[0]
    typed = _kernel_types(S, v)
    if typed is None:
        S = _scipy(S)
    if rows.size * 4 > n:   # much of the graph: one full product is cheaper
        V = np.zeros((n, v.shape[1]), np.float32)   # (n, C)
        V[rows] = v
        return np.arange(n), np.asarray(S @ V if typed is None else matmul(S, V), dtype=np.float32)
    if typed is None:
        G = S[rows]
        indptr, indices, data = G.indptr, G.indices, G.data
    else:
        indptr, indices, data = _gather_rows(S, rows)
    seen[indices] = True
    out = np.flatnonzero(seen)                                  # (r',) reached, sorted
    seen[out] = False
    pos[out] = np.arange(out.size)
    at = pos[indices].astype(indptr.dtype, copy=False)          # compact column of each entry
    if typed is None:
        import scipy.sparse as sp

        Gc = sp.csr_matrix((data, at, indptr), shape=(rows.size, out.size))
        return out, np.asarray(Gc.T @ v, dtype=np.float32)    # (r', C)
    T, vc = typed
    w = np.zeros((out.size, v.shape[1]), T)
    # S[rows]^T in CSC is S[rows] in CSR: the kernel scipy's (S[rows]^T) @ v runs
    kernels().csc_matvecs(out.size, rows.size, v.shape[1], indptr, at, data, vc.ravel(), w.reshape(-1))
    return out, w.astype(np.float32, copy=False)

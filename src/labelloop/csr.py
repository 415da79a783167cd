"""A sparse matrix as its three CSR arrays, and the row products a warm update needs, in numpy
alone.

A refresh in a new process reads the stored affinity S memory-mapped and warm-starts from the
last state; it needs only products over a few rows of S, so it never has to import
``scipy.sparse`` (0.2 CPU-s of a fresh process, mostly numpy submodules scipy's array-API layer
loads; benchmarks/results/e2e_latency_100000.md). :class:`CsrArrays` builds the scipy matrix
on first use of a full product (a full propagation). The functions take either a
:class:`CsrArrays` or a scipy CSR matrix: both have ``data``, ``indices`` and ``indptr``. Where
scipy is loaded already (a server, after a full propagation), or S has SCIPY_MIN_ROWS rows or
more, they use its compiled products, 3-10x faster on large row sets than the numpy ones (same
results up to float rounding). Full products on large graphs run on a copy of S in locality
order (:meth:`CsrArrays.ordered`).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from pathlib import Path

import numpy as np

__all__ = ["CsrArrays", "LOCALITY_MIN_ROWS", "SCIPY_MIN_ROWS", "row_gather", "rows_dot", "rows_dot_transposed"]

#: from this many rows a full product (a full propagation, a drain) runs on a copy of S with its
#: rows and columns in reverse Cuthill-McKee order (:meth:`CsrArrays.ordered`): neighbours sit
#: near each other in memory, so the rows of Y a product reads are mostly in cache. One S @ Y
#: (n, 10) float32 at 1M items (16M entries): 0.39 -> 0.16 CPU-s; at 100k 0.015 -> 0.008
#: (the order costs 0.6 + 1.1 CPU-s once per affinity at 1M, 0.06 at 100k; stored beside it)
LOCALITY_MIN_ROWS = 50_000


class CsrArrays:
    """An (n, m) CSR matrix held as ``data`` (nnz,), ``indices`` (nnz,) and ``indptr`` (n + 1,),
    e.g. memory-mapped files; column indices sorted within each row. ``S @ Y`` (a full product)
    converts it to a scipy matrix once (:meth:`tocsr`). ``order_dir``: where the
    locality-ordered copy (:meth:`ordered`) is stored and read (None: kept in memory only)."""

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
        return self.tocsr() @ other

    def ordered(self):
        """``(perm, inverse, Sp)`` for a symmetric S of at least LOCALITY_MIN_ROWS rows, else None:
        ``perm`` (n,) the reverse Cuthill-McKee order of S's rows, ``inverse`` its inverse
        (``perm[inverse] == arange(n)``) and ``Sp = S[perm][:, perm]`` (scipy CSR), so
        ``(S @ Y)[perm] == Sp @ Y[perm]``. Read memory-mapped from ``order_dir`` when stored
        there, else computed once (and stored there: written whole under another name, then
        renamed)."""
        if self._ordered is not None or self.shape[0] < LOCALITY_MIN_ROWS or self.shape[0] != self.shape[1]:
            return self._ordered
        import scipy.sparse as sp

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
        Sp = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=self.shape, copy=False)
        Sp.has_sorted_indices = True
        inverse = np.empty(self.shape[0], np.int64)
        inverse[arrays["perm"]] = np.arange(self.shape[0])
        self._ordered = (arrays["perm"], inverse, Sp)
        return self._ordered


#: from this many rows the row products use scipy even where it is not imported yet: a warm
#: update of 10 labels at 1M items gathers ~1M rows, whose products take 0.42 CPU-s in numpy and
#: 0.17 in scipy, more than its import (0.12-0.23), which most refreshes there pay anyway for a drain
SCIPY_MIN_ROWS = 500_000


def _loaded_scipy(S):
    """``S`` as a scipy CSR matrix when that costs no import (it is one, or scipy.sparse is
    loaded already) or is worth one (SCIPY_MIN_ROWS), else None."""
    if not isinstance(S, CsrArrays):
        return S
    if S._csr is not None or "scipy.sparse" in sys.modules or S.shape[0] >= SCIPY_MIN_ROWS:
        return S.tocsr()
    return None


def row_gather(S, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(seg, cols, vals, starts)`` of the rows ``rows`` of ``S``: entry e is
    ``S[rows[seg[e]], cols[e]] = vals[e]``, in row order; ``starts`` (r,) where each row's entries
    begin in them."""
    indptr = S.indptr
    rows = np.asarray(rows, dtype=np.int64)
    begin = indptr[rows].astype(np.int64)                      # (r,)
    lens = indptr[rows + 1].astype(np.int64) - begin           # (r,)
    starts = np.cumsum(lens) - lens                            # (r,) offsets in the gathered entries
    seg = np.repeat(np.arange(rows.size), lens)                # (m,)
    # position in S of gathered entry e: begin[seg[e]] + (e - starts[seg[e]])
    idx = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(begin - starts, lens)
    return seg, S.indices[idx], S.data[idx], starts


def rows_dot(S, rows: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(r, C) ``S[rows] @ Y`` for a dense (n, C) ``Y``: O(nnz of those rows x C)."""
    Ss = _loaded_scipy(S)
    if Ss is not None:
        return np.asarray(Ss[rows] @ Y, dtype=np.float32)
    seg, cols, vals, starts = row_gather(S, rows)
    out = np.zeros((len(rows), Y.shape[1]), np.float32)
    if cols.size:
        contrib = vals[:, None] * Y[cols]                       # (m, C) S_ij Y_j
        nonempty = np.flatnonzero(np.diff(np.append(starts, cols.size)) > 0)
        out[nonempty] = np.add.reduceat(contrib, starts[nonempty], axis=0)
    return out


def rows_dot_transposed(S, rows: np.ndarray, v: np.ndarray, seen: np.ndarray, pos: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """``(out, w)``: ``w = (S[rows]^T v)[out]`` for an (r, C) ``v`` on ``rows``, ``out`` the sorted
    columns those rows reach (for a symmetric S, the rows of ``S @ V`` that V on ``rows``
    changes). ``seen`` (n,) bool all False and ``pos`` (n,) int64 are scratch arrays."""
    Ss = _loaded_scipy(S)
    n = S.shape[0]
    if Ss is not None and rows.size * 4 > n:   # much of the graph: one full product is cheaper
        V = np.zeros((n, v.shape[1]), np.float32)   # (n, C)
        V[rows] = v
        return np.arange(n), np.asarray(Ss @ V, dtype=np.float32)
    G = Ss[rows] if Ss is not None else None                    # (r, n) CSR row gather
    seg, cols, vals, _ = row_gather(S, rows) if G is None else (None, G.indices, G.data, None)
    seen[cols] = True
    out = np.flatnonzero(seen)                                  # (r',) reached, sorted
    seen[out] = False
    pos[out] = np.arange(out.size)
    if G is not None:
        import scipy.sparse as sp

        Gc = sp.csr_matrix((G.data, pos[G.indices], G.indptr), shape=(rows.size, out.size))
        return out, np.asarray(Gc.T @ v, dtype=np.float32)    # (r', C)
    at = pos[cols]                                              # (m,) compact column of each entry
    vT = np.ascontiguousarray(v.T)                              # (C, r)
    # scatter-add S_ij v_i by compact column, one bincount per class (np.add.at is ~10x slower)
    w = [np.bincount(at, weights=vals * vT[c][seg], minlength=out.size) for c in range(v.shape[1])]
    return out, (np.stack(w, axis=1) if w else np.zeros((out.size, 0))).astype(np.float32)

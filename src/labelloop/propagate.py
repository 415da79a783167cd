"""Label propagation on the shared kNN graph (Zhou et al. 2003; Bai et al., "Self-supervised
Semi-supervised Learning for Data Labeling and Quality Evaluation").

    W_ij = exp(cos(x_i, x_j) / T)   if j is one of the k nearest neighbours of i, else 0
    W    = (W + W^T) / 2            (symmetrised by the mean)
    S    = D^-1/2 W D^-1/2,         D = diag(W 1)

Clamped (``alpha=None``, the paper):  Y(t+1) = S Y(t), labeled rows reset to their one-hot
label after every step, Y(0) = one-hot labels (zeros for unlabeled rows).
Spreading (``alpha`` in (0, 1), for noisy labels): Y(t+1) = alpha S Y(t) + (1 - alpha) Y0,
nothing clamped; the fixed point is (1 - alpha) (I - alpha S)^-1 Y0.

Robust defaults (``temperature="auto"``, ``n_iter=None``, ``class_mass=True``; measured in
benchmarks/robustness.py on images and texts, balanced and imbalanced, weak and strong features):

- local scaling: ``W_ij = exp((cos_ij - cos_i1) / T)`` with ``cos_i1`` the similarity of i's nearest
  neighbour, so every item's nearest edge weighs 1 and dense regions cannot swamp sparse ones,
  and ``T = AUTO_TEMPERATURE_SCALE * median_i(cos_i1 - cos_ik)``: relative to the spread of
  similarities inside a neighbourhood instead of the paper's 0.01 tuned on CIFAR features
  (on TF-IDF texts, T = 0.01 gave one class 90 % of the items);
- 100 steps instead of the paper's 20 (stopping early once converged): with local scaling no
  item near a label is left unreached, and the argmax settles by 50-100 steps where 20 lost up
  to 7 points at one label per class (Fashion-MNIST pixels 0.584 at 20 steps, 0.619 at 100);
- class-mass normalisation (Zhu, Ghahramani & Lafferty 2003): column c of Y is rescaled so
  that its total mass is an estimate of class c's share (:func:`class_mass_normalise`), which
  stops a class whose labeled items sit in a dense hub from taking over the graph.

The result, row-normalised, is a class distribution per item. Rows still all zero (no labeled
item within reach) get the uniform distribution and ``reached_ = False``.

Warm start (:meth:`LabelPropagation.update`): one step is the affine map F(Y) = A Y + B
(A = P S with P zeroing the clamped rows, or alpha S), so the increments of the iteration obey
delta(t+1) = A delta(t) and Y(T) = Y(0) + delta(1) + ... + delta(T). After new labels, Y(0) is
the previous Y with the new rows clamped; delta(1) = F(Y(0)) - Y(0) is computed exactly on the
new rows' neighbours and taken as 0 elsewhere, i.e. the previous state is treated as a fixed
point (its own residual, the previous fit's non-convergence, is not propagated). The
increments are pushed through the graph only on the rows they reach (a CSR row gather per
step: S is symmetric, so the gathered rows give the product). A row stops spreading once its
increment is below UPDATE_PRUNE of its mass, and the whole update stops after gathering
max_rows rows (default: one full product's worth), adding the increments' remaining steps in
place. Measured against a cold 20-step fit with the same labels (argmax agreement ~0.999 at
4k-10k items, ~0.995 at 100k and 1M; tests/test_propagate.py, benchmarks/refresh_latency.md).
Removed or re-classed labels re-run the clamped propagation (see ``update``); the spreading
variant is linear in Y0, so its update is exact up to pruning. The drift from a cold fit is
bounded by measuring it: after an update the relative residual ||F(Y) - Y|| / ||Y|| on a
sample of rows (:meth:`LabelPropagation.residual`) is compared with the one the last full
propagation left; above UPDATE_RESIDUAL_GROWTH times that, full steps continue from the warm
result towards that level (a drain, :meth:`LabelPropagation.drain`; or a full propagation runs,
``residual_action="refit"``), at most RESIDUAL_DRAIN_MAX_STEPS per update: what is left stays in
Y and the next update's residual measures it again, so a refresh's cost is bounded; after a full
fit's work (``n_iter`` drain steps) without getting there, that level is the new baseline
(``rebaseline``: REBASELINES has two rules that move it sooner, measured and not the default).
``update(drain=False)`` leaves the steps to a later ``drain()`` (a server runs them after the
predictions are shown, stopped by the next label). This replaced a full propagation every
REFIT_EVERY-th update (now off; measured in benchmarks/results/warm_drift.md). The clamped
update can also end with UPDATE_CORRECT_STEPS full steps from its result (off: with them and no
periodic fit `make demo` certified 574 machine labels instead of 968).
"""

from __future__ import annotations

import warnings

from typing import TYPE_CHECKING

import numpy as np

from labelloop.csr import CsrArrays, matmul, row_gather, rows_dot, rows_dot_transposed
from labelloop.errors import NotReadyError, ValidationError
from labelloop.graph import KnnGraph

if TYPE_CHECKING:   # scipy.sparse is imported where a new affinity or a scipy matrix needs it: the
    import scipy.sparse as sp   # products on a stored one need only its kernels (labelloop.csr)

__all__ = [
    "affinity_matrix",
    "auto_temperature",
    "class_distributions",
    "class_mass_normalise",
    "CLASS_PRIORS",
    "LabelPropagation",
    "PropagationConvergenceWarning",
    "class_index_dtype",
    "prediction_summary",
    "top_two",
]


class PropagationConvergenceWarning(UserWarning):
    """``n_iter=None`` (iterate to convergence) stopped at the step cap before ``tol``."""


#: step cap when ``n_iter=None`` asks for convergence.
MAX_ITER_TO_CONVERGE = 1000

#: ``temperature="auto"``: T = this x the median over items of (cos to the nearest neighbour -
#: cos to the k-th). 0.5 and 1.0 were within 0.01 of each other everywhere measured (digits,
#: Fashion-MNIST pixels, Rotten Tomatoes TF-IDF, 1-20 labels per class); 0.25 lost on texts.
AUTO_TEMPERATURE_SCALE = 0.5
#: floor of the automatic T (a graph of exact duplicates has zero spread)
MIN_AUTO_TEMPERATURE = 1e-4

#: warm start: an increment row stops spreading once its 2-norm is below this fraction of the
#: row's current mass (it can no longer move that item's distribution by more than ~this).
#: 3e-3: at 100k as accurate as 1e-3 and 1e-2 (argmax agreement 0.994-0.995), closer at 4k.
UPDATE_PRUNE = 3e-3

#: warm start work cap: rows of S gathered per update, summed over steps, at most
#: max(UPDATE_MIN_ROWS, UPDATE_ROWS_PER_ITEM * n): every step on graphs up to ~5k items;
#: one full product's worth of rows on large ones, which kept argmax agreement with a cold fit
#: at ~0.995 at 100k and 1M (benchmarks/refresh_latency.md).
UPDATE_MIN_ROWS = 100_000
UPDATE_ROWS_PER_ITEM = 1.0


#: full steps of the iteration after every warm update, from its result (off: 0; with 2 and no
#: periodic full propagation, at 10k / 100k items, 15 / 10 updates of 10 labels, argmax
#: agreement with a cold fit: mean 0.934 / 0.917 (periodic refit 0.943 / 0.922, none 0.911 /
#: 0.893), worst 0.876 / 0.858 (refit 0.863 / 0.831); cost 2 sparse products per update instead
#: of a full propagation's 100 every 5th (2.8 s at 100k; benchmarks/results/warm_drift.md).
#: 5 steps: mean 0.953 / 0.936 at 2.5x the products.
UPDATE_CORRECT_STEPS = 0
#: every this many warm updates with a change, a full propagation instead (None: never; the
#: rule before UPDATE_RESIDUAL_GROWTH, kept as an option: benchmarks/results/warm_drift.md)
REFIT_EVERY = None
#: the warm update's error bound. After each update the relative residual of the fixed-point
#: equation, ||F(Y) - Y||_1 / ||Y||_1 on RESIDUAL_SAMPLE rows (:meth:`LabelPropagation.residual`),
#: is compared with the one the last full propagation left (a 100-step fit is not converged
#: either: ~0.01 on the benchmark's graphs); above this many times that, full steps continue
#: from the warm result towards RESIDUAL_DRAIN_TO x that (``residual_action="drain"``, at most
#: RESIDUAL_DRAIN_MAX_STEPS per update), or a full propagation runs (``"refit"``). Measured against
#: the old rule (a full propagation every 5th update) in benchmarks/results/warm_drift.md: at 100k
#: items, 10 updates of 10 labels, argmax agreement with a cold fit mean 0.936 vs 0.922 for 2.1
#: vs 5.2 CPU-s in all (uncapped drains: 0.953 for 3.1); at 10k 0.947 vs 0.943; at 1M
#: (warm_drift_1000000.md) 0.927 vs 0.947 uncapped and 0.887 without drains, the slowest update
#: 4.3 instead of 8.3 CPU-s.
UPDATE_RESIDUAL_GROWTH = 1.5
#: residual exceeded: full steps from the warm result, this many between residual checks ...
RESIDUAL_CHECK_STEPS = 5
#: ... until it is this many times the last full fit's (hysteresis: below the bound, so that
#: the next updates warm-start without steps) ...
RESIDUAL_DRAIN_TO = 1.0
#: ... but at most this much work per update, counted in rows x steps (``drain_steps="auto"``:
#: DRAIN_MAX_ROW_STEPS // n steps; an integer: that many; None: up to ``n_iter``): what is left
#: stays in Y, where the next update's residual measures it again (carried forward). The cap is
#: in work, not steps, so that it bounds a refresh's CPU at every size without costing small
#: projects accuracy. At 1M items (5 steps) one update of 10 labels left 6x the full fit's
#: residual; 5 full steps (0.5 CPU-s each then; 0.16 on S in locality order, labelloop.csr) took
#: it to 1.2-1.4x, 10 to 1x; one `labelloop refresh` had drained 40 steps (21 CPU-s) before a
#: cap (warm_drift_1000000.md,
#: e2e_latency_1000000.md). At 100k (50 steps: a whole drain, as before the cap) a cap of 5
#: steps cost agreement with a cold fit (0.936 vs 0.953, warm_drift.md) and made most CLI
#: refreshes drain (median 0.61 vs 0.39 CPU-s, e2e_latency_100000.md). 3M since the steps are
#: Gauss-Seidel sweeps (DRAIN_SWEEP): at 1M items 3 sweeps agreed with a cold fit as 5 full steps
#: did (0.856 vs 0.855 mean over 5 updates, 0.94 vs 1.23 CPU-s per update;
#: warm_drift_gs_1000000.md); at 100k 30 sweeps (warm_drift_gs_100000.md).
DRAIN_MAX_ROW_STEPS = 3_000_000
RESIDUAL_DRAIN_MAX_STEPS = "auto"
#: a drain's full steps (``drain_sweep``): "gauss-seidel" sweeps the rows (of S in locality
#: order, labelloop.csr) in blocks of DRAIN_SWEEP_BLOCK_ROWS, each block's product reading the
#: blocks before it as this sweep left them; "jacobi": every row from the last step's Y, as a
#: full propagation's steps. Same cost per step
DRAIN_SWEEPS = ("gauss-seidel", "jacobi")
DRAIN_SWEEP = "gauss-seidel"
DRAIN_SWEEP_BLOCK_ROWS = 8192
#: ``update(drain=False)`` (a server, which drains after showing the predictions, stopped by the
#: next label) still drains now, at most ``drain_steps``, once the residual is past this many
#: times the bound: labels that keep coming faster than a drain step (0.16-0.5 CPU-s at 1M) would
#: otherwise never let it run
DEFERRED_DRAIN_LIMIT = 4.0
#: when the error bound's baseline (``residual_fit_``) moves up without a full propagation:
#: "work" (default), after a full fit's work of drain steps (``n_iter``) since the last baseline
#: without reaching the target. "landing" and "stall" also move it at once after a drain that ran
#: its whole per-update budget and left the residual no lower than the update found it (the
#: update and the drain together gained nothing) and above the target ("landing") or the bound
#: ("stall"): to that residual, at most residual_growth x the baseline, once per update. Each
#: move needs a drain that lost to its update; a drain's steps remove a share of the residual
#: (the iteration is linear and contracts), an update adds what its labels add whatever the
#: level, so the moves stop at the level where a drain gains on an update. Not the default:
#: at 1M items (benchmarks/results/warm_drift_rebase_1000000.md, 40 updates of 10 labels)
#: "landing" drained 9 updates of 40 instead of 25 (3 of the first 10 instead of 9) but agreed
#: with a cold fit 2.5-4.6 points less after 5, 10, 15 and 20 updates; "stall" 0.3-2.7 less: the
#: capped drains the default pays while the residual hovers above the bound move the argmax
#: towards the cold fit's even where the residual barely falls.
REBASELINES = ("work", "landing", "stall")
RESIDUAL_REBASELINE = "work"
#: rows (at most) the residual is estimated on: a fixed sample per graph, O(rows x k x C)
RESIDUAL_SAMPLE = 4096

#: how :func:`class_mass_normalise` estimates the class shares
CLASS_PRIORS = ("labels", "estimated")


def class_mass_normalise(Y: np.ndarray, y: np.ndarray, n_classes: int, prior: str | np.ndarray = "labels",
                         *, shares: np.ndarray | None = None) -> np.ndarray:
    """Column c of ``Y`` (n, C) rescaled to total mass q_c (Zhu, Ghahramani & Lafferty 2003).

    ``prior``: an (C,) array of class shares (e.g. from labels drawn at random), or
    ``"labels"``: q = add-one smoothed class shares among the labels ``y`` (the default).
    ``prior="estimated"``: q = sqrt(q_labels * q_territory), normalised, where q_territory are
    the add-one smoothed shares of the classes predicted after rescaling to q_labels. Human
    labels are usually a few per class whatever the classes' true shares; on imbalanced text
    sets the estimate raised accuracy a lot (Rotten Tomatoes plot-vs-review, 8 %: 0.71 -> 0.94 at
    5 labels per class), but when a minority's labeled items are hubs it can flip to predicting
    the minority almost everywhere (measured on the hub set of tests/test_loop.py: 0.96 of the items
    predicted minority at 5 labels per class, 2 of 3 seeds), so it is not fixed: the default
    ``class_prior auto`` uses it only where held-out human labels support it
    (``labelloop.loop.choose_class_prior``, which hedges with the mean of the two where too few
    labels are held out; benchmarks/results/robustness.md).
    ``shares``: (C,) label shares to use instead of those of ``y`` (for "labels" and as the
    starting point of "estimated").
    """
    Y = np.maximum(np.asarray(Y, dtype=np.float32), np.float32(0.0))  # (n, C)
    return Y * _class_mass_scale(Y, y, n_classes, prior, shares=shares)  # column c scaled to mass q_c


def _class_mass_scale(Y: np.ndarray | None, y: np.ndarray, n_classes: int, prior: str | np.ndarray,
                      *, shares: np.ndarray | None = None, mass: np.ndarray | None = None) -> np.ndarray:
    """(C,) float32 factors q_c / m_c that scale the columns of the non-negative ``Y`` (n, C) to
    the masses q of :func:`class_mass_normalise` (m_c: column c's mass; ``mass``: those masses,
    float64, summed by the caller; then ``Y`` is needed only for ``prior="estimated"``)."""
    C = n_classes
    # (C,) column mass, in float64
    m = np.einsum("ij->j", Y, dtype=np.float64, casting="safe") if mass is None else mass
    m = np.where(m > 0, m, 1.0)
    if not isinstance(prior, str):
        q = np.asarray(prior, dtype=np.float64)
        return (q / q.sum() / m).astype(np.float32)
    if shares is None:
        q = np.bincount(y[y >= 0], minlength=C)[:C].astype(np.float64) + 1.0
    else:
        q = np.asarray(shares, dtype=np.float64)
    q = q / q.sum()
    if prior == "estimated":
        F = Y * (q / m).astype(np.float32)  # (n, C) rescaled to the label shares
        has = np.einsum("ij->i", F) > 0
        q_terr = np.bincount(F[has].argmax(axis=1), minlength=C).astype(np.float64) + 1.0
        q = np.sqrt(q * q_terr / q_terr.sum())
        q /= q.sum()
    return (q / m).astype(np.float32)


def class_distributions(Y: np.ndarray, y: np.ndarray, n_classes: int, prior: str | np.ndarray | None = "labels",
                        *, shares: np.ndarray | None = None, order: np.ndarray | None = None,
                        out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(P, reached)``: the row-normalised (n, C) class distributions of a raw propagation ``Y``
    (n, C), class-mass normalised first to ``prior`` (see :func:`class_mass_normalise`; None:
    not normalised, the paper; ``shares`` as there), and the (n,) rows with any mass (the rest get the uniform
    distribution). Cheap next to the propagation: ``loop.choose_class_prior`` compares several
    priors on one propagation's ``Y_``. ``order``: (n,) ``Y``'s rows in the items' order are
    ``Y[order]`` (a state held in S's locality order): P comes in the items' order. ``out``: a
    writable (n, C) float32 array P is made in (e.g. a memory map of the file it is stored in),
    instead of a new one."""
    C = n_classes
    Y = np.asarray(Y, dtype=np.float32)
    n = len(Y)
    if out is not None and (out.shape != (n, C) or out.dtype != np.float32 or not out.flags.writeable):
        raise ValidationError(f"out must be a writable ({n}, {C}) float32 array; got {out.shape} {out.dtype}")
    if isinstance(prior, str) and prior == "estimated":   # its scale reads every row's argmax
        P = np.empty((n, C), np.float32) if out is None else out
        _clipped_rows(Y, order, 0, n, P)
        total = np.einsum("ij->i", P)
        if total.any():
            P *= _class_mass_scale(P, y, C, prior, shares=shares)   # class_mass_normalise, in place
        reached = np.empty(n, bool)
        _normalise_rows(P, reached)
        return P, reached
    # DISTRIBUTION_BLOCK_ROWS rows at a time (in cache): gathered (and reordered) from Y, clipped
    # and their column masses summed; then scaled to the class masses and row-normalised
    P = np.empty((n, C), np.float32) if out is None else out   # (n, C) the one new array (or out)
    reached = np.empty(n, bool)
    mass = np.zeros(C, np.float64)
    for a in range(0, n, DISTRIBUTION_BLOCK_ROWS):
        b = min(n, a + DISTRIBUTION_BLOCK_ROWS)
        _clipped_rows(Y, order, a, b, P[a:b])
        if prior is not None:
            mass += np.einsum("ij->j", P[a:b], dtype=np.float64, casting="safe")
    scale = None if prior is None else _class_mass_scale(None, y, C, prior, shares=shares, mass=mass)
    for a in range(0, n, DISTRIBUTION_BLOCK_ROWS):
        b = min(n, a + DISTRIBUTION_BLOCK_ROWS)
        if scale is not None:
            P[a:b] *= scale   # class_mass_normalise
        _normalise_rows(P[a:b], reached[a:b])
    return P, reached


#: :func:`class_distributions` works on blocks of this many rows (in cache, as SUMMARY_BLOCK_ROWS)
DISTRIBUTION_BLOCK_ROWS = 32_768


def _clipped_rows(Y: np.ndarray, order: np.ndarray | None, a: int, b: int, out: np.ndarray) -> None:
    """``out`` (b - a, C) float32 = max(rows a..b of ``Y``, 0), of ``Y[order]`` when ``order``
    (the warm start may leave tiny negatives)."""
    if order is None:
        np.maximum(Y[a:b], np.float32(0.0), out=out)
    else:   # np.take: 2.4x faster than Y[order] on 10 columns ("clip": the indices are valid; unbuffered)
        np.take(Y, order[a:b], axis=0, out=out, mode="clip")
        np.maximum(out, np.float32(0.0), out=out)


def _normalise_rows(P: np.ndarray, reached: np.ndarray) -> None:
    """In place: p_ic = y_ic / sum_c y_ic on the rows with mass (``reached``, (b,) set here),
    the uniform distribution on the others. Row sums by einsum: 4x faster than sum(axis=1) on
    ~10 columns and, unlike a matvec, no BLAS threads (16x slower on a loaded machine:
    benchmarks/results/e2e_latency_100000.md)."""
    total = np.einsum("ij->i", P)
    np.greater(total, 0, out=reached)
    with np.errstate(divide="ignore", invalid="ignore"):
        P /= total[:, None]
    P[~reached] = 1.0 / P.shape[1]


def auto_temperature(graph: KnnGraph) -> float:
    """T for ``temperature="auto"``: AUTO_TEMPERATURE_SCALE x the median neighbourhood spread
    ``cos_i1 - cos_ik`` (the similarity drop from the nearest to the k-th neighbour)."""
    s = graph.similarities  # (n, k) most similar first
    if s.size == 0:
        return 1.0
    spread = float(np.median(s[:, 0].astype(np.float64) - s[:, -1]))
    return max(AUTO_TEMPERATURE_SCALE * spread, MIN_AUTO_TEMPERATURE)


def affinity_matrix(graph: KnnGraph, *, temperature: float | str = "auto") -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 on the kNN edges, W symmetrised by the mean.

    ``temperature``: a number is the paper's ``W_ij = exp(cos_ij / T)`` (Bai et al. use 0.01-0.02
    on CIFAR-10); ``"auto"`` is local scaling, ``W_ij = exp((cos_ij - cos_i1) / T)`` with
    T from :func:`auto_temperature`. Returns a symmetric (n, n) float32 CSR matrix; an item
    whose edges all underflow to 0 has an empty row.
    """
    import scipy.sparse as sp

    if not isinstance(graph, KnnGraph):
        raise ValidationError(f"affinity_matrix needs a KnnGraph; got {type(graph).__name__}")
    sims = graph.similarities.astype(np.float64)  # (n, k)
    if isinstance(temperature, str):
        if temperature != "auto":
            raise ValidationError(f'temperature must be "auto" or a positive number; got {temperature!r}')
        T = auto_temperature(graph)
        top = sims[:, :1]  # (n, 1) each item's nearest similarity: its nearest edge weighs 1
    else:
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValidationError(f"temperature must be a positive number (e.g. 0.01) or \"auto\"; got {temperature!r}")
        T = float(temperature)
        # exp(cos / T) = exp(1 / T) * exp((cos - 1) / T): the constant factor exp(1/T) cancels in
        # D^-1/2 W D^-1/2, so use the second form, which cannot overflow (exp(1/0.01) = 2.7e43
        # would be inf in float32). float64: exp(-2/T) is ~1e-87 at T = 0.01, zero in float32.
        top = 1.0
    n, k = graph.n, graph.k
    w = np.exp((sims - top) / T).ravel()  # (n*k,)
    rows = np.repeat(np.arange(n, dtype=np.int64), k)
    W = sp.csr_matrix((w, (rows, graph.indices.ravel())), shape=(n, n))  # (n, n)
    W = ((W + W.T) * 0.5).tocsr()  # W <- (W + W^T) / 2
    d = np.asarray(W.sum(axis=1)).ravel()  # (n,) degrees
    with np.errstate(divide="ignore"):
        d_isqrt = np.where(d > 0, 1.0 / np.sqrt(d), 0.0)  # D^-1/2, 0 for isolated rows
    # S_ij = W_ij / sqrt(d_i d_j), scaled in place on the CSR data
    W.data *= d_isqrt[np.repeat(np.arange(n), np.diff(W.indptr))] * d_isqrt[W.indices]
    S = W.astype(np.float32)
    S.eliminate_zeros()
    S.sort_indices()
    return S


class LabelPropagation:
    """Graph label propagation, scikit-learn estimator style (``-1`` = unlabeled).

    ``temperature``: ``"auto"`` (local scaling, see the module docstring) or the paper's fixed T.
    ``n_iter``: ``None`` iterates until no entry changes by more than ``tol`` (at most 1000
    steps; a warning if it never gets there); a number is a fixed count like the paper's 20.
    ``class_mass``: class-mass normalisation of the result (see the module docstring): True or
    ``"labels"`` (class shares from the labels), ``"estimated"`` (see :func:`class_mass_normalise`),
    False (none, the paper). ``class_prior``: (C,) known class shares for the normalisation
    (``Project`` passes the shares among labels drawn at random once there are enough).
    ``alpha``: None clamps labeled rows after every step (the paper); a value in (0, 1) spreads
    instead, Y <- alpha S Y + (1 - alpha) Y0, nothing clamped (audit of noisy labels).
    """

    def __init__(
        self,
        *,
        temperature: float | str = "auto",  # Bai et al.: 0.01 on CIFAR-10; "auto" measured robust
        n_iter: int | None = 100,  # Bai et al.: "about 20 steps"; see DEFAULT_N_ITER
        alpha: float | None = None,
        tol: float = 1e-6,
        refit_every: int | None = REFIT_EVERY,
        residual_growth: float | None = UPDATE_RESIDUAL_GROWTH,
        residual_action: str = "drain",
        drain_steps: int | str | None = RESIDUAL_DRAIN_MAX_STEPS,
        drain_sweep: str = DRAIN_SWEEP,
        correct_steps: int = UPDATE_CORRECT_STEPS,
        rebaseline: str = RESIDUAL_REBASELINE,
        class_mass: bool | str = True,
        class_prior: np.ndarray | None = None,
    ) -> None:
        self.temperature = temperature
        self.n_iter = n_iter
        self.class_mass = class_mass
        self.class_prior = class_prior
        self.alpha = alpha
        self.tol = tol
        # warm updates approximate and their error accumulates (Fashion-MNIST 10k, 20 updates
        # of 50 labels: 0.737 vs 0.807 for a full fit). Every refit_every-th update with a
        # change is a full propagation (reusing S). correct_steps (0 by default) ends each
        # update with that many full steps from its result instead: with 2 and no periodic fit
        # there is no 2-10 s pause (benchmarks/warm_drift.py), but `make demo` certified 574
        # machine labels instead of 968 and digits simulations needed more labels to 98 %.
        # residual_growth (the default rule, see UPDATE_RESIDUAL_GROWTH): the warm update's
        # error bound, and residual_action what happens when it is exceeded; None: no bound.
        self.refit_every = refit_every
        self.residual_growth = residual_growth
        self.residual_action = residual_action
        self.drain_steps = drain_steps   # at most this many full steps per drain ("auto": by size; None: n_iter)
        self.drain_sweep = drain_sweep   # what one of them is (DRAIN_SWEEPS)
        self.correct_steps = correct_steps
        self.rebaseline = rebaseline     # when the bound's baseline moves up (REBASELINES)
        # where new (n, C) distributions of every row are made (:meth:`_finish`): None, a new
        # array; else a callable (n, C) -> a writable float32 array, e.g. a memory map of the
        # file they are stored in (a refresh: Project._refresh), asked once per such finish
        self.distributions_out = None

    # ------------------------------------------------------------------ the state Y
    # Y is held in the items' order, or, after a drain's Gauss-Seidel sweeps (and from a stored
    # state written then), in the rows' order of S's locality order (``_Y_ordered``): the
    # sweeps, the warm update's push, the residual and the distributions work on either, so a
    # warm refresh at 1M items does not reorder (n, C) twice per drain (2 x 40 MB gathers and
    # a new array's first touch); ``Y_`` gives the items' order (reordered once when asked).
    @property
    def Y_(self) -> np.ndarray:
        """(n, C) float32 the raw propagation state, rows in the items' order."""
        try:
            Y = self.__dict__["_Y"]
        except KeyError:
            raise AttributeError("Y_: the LabelPropagation is not fitted") from None
        if self.__dict__.get("_Y_ordered"):
            Y = np.take(Y, self.S_.ordered()[1], axis=0)
            self._Y, self._Y_ordered = Y, False
        return Y

    @Y_.setter
    def Y_(self, Y: np.ndarray) -> None:
        self._Y, self._Y_ordered = Y, False

    @property
    def fitted(self) -> bool:
        """Whether there is a state Y (fitted or restored); asks without reordering it."""
        return "_Y" in self.__dict__

    def state(self) -> tuple[np.ndarray, bool]:
        """``(Y, ordered)``: the state as held, without reordering it: ``ordered`` True when its
        rows are in S's locality order (``S_.ordered()``), else the items' order (as ``Y_``).
        ``restore(..., ordered=...)`` takes it back."""
        return self.__dict__["_Y"], bool(self.__dict__.get("_Y_ordered"))

    def move_state(self, out: np.ndarray) -> None:
        """Hold the state Y in ``out`` from now on, in the same row order: a writable (n, C)
        float32 C-contiguous array it is copied into (a refresh: a memory map of the file it will
        store it in, ``Project._refresh``), which the steps then update in place where they can."""
        Y = self.__dict__["_Y"]
        if out.shape != Y.shape or out.dtype != np.float32 or not (out.flags.writeable and out.flags.c_contiguous):
            raise ValidationError(f"out must be a writable C-contiguous {Y.shape} float32 array; "
                                  f"got {out.shape} {out.dtype}")
        np.copyto(out, Y)
        self._Y = out

    def freeze_state(self) -> None:
        """From now on no step writes into the array the state Y is held in (a refresh stored it:
        that run's file); the first one that would copies it first (:meth:`_own_state`)."""
        if self.fitted and self._Y.flags.writeable:
            Y = self._Y.view()
            Y.flags.writeable = False
            self._Y = Y

    def _own_state(self) -> np.ndarray:
        """The state Y as held, writable: a read-only one (frozen, or restored from a read-only
        array such as a stored file memory-mapped) is copied first."""
        if not self._Y.flags.writeable:
            self._Y = np.array(self._Y, dtype=np.float32)
        return self._Y

    def _order(self):
        """``(perm, inverse, Sp)`` of S's locality order when Y is held in it, else None."""
        return self.S_.ordered() if self.__dict__.get("_Y_ordered") else None

    # ------------------------------------------------------------------ validation
    def _check_params(self) -> None:
        t = self.temperature
        if not (t == "auto" if isinstance(t, str) else (np.isfinite(t) and t > 0)):
            raise ValidationError(f'temperature must be "auto" or positive (e.g. 0.01); got {t!r}')
        if self.class_mass not in (True, False, *CLASS_PRIORS):
            raise ValidationError(f"class_mass must be True, False, 'labels' or 'estimated'; got {self.class_mass!r}")
        if self.n_iter is not None and (
            isinstance(self.n_iter, bool) or not isinstance(self.n_iter, (int, np.integer)) or self.n_iter < 0
        ):
            raise ValidationError(f"n_iter must be a non-negative integer or None; got {self.n_iter!r}")
        if self.alpha is not None and not (0.0 < self.alpha < 1.0):
            raise ValidationError(f"alpha must be None (clamp labels) or in (0, 1); got {self.alpha!r}")
        if not (np.isfinite(self.tol) and self.tol >= 0):
            raise ValidationError(f"tol must be a non-negative number; got {self.tol!r}")
        if self.residual_action not in ("drain", "refit"):
            raise ValidationError(f'residual_action must be "drain" or "refit"; got {self.residual_action!r}')
        g = self.residual_growth
        if g is not None and not (isinstance(g, (int, float, np.floating)) and np.isfinite(g) and g >= 1.0):
            raise ValidationError(f"residual_growth must be None or a number >= 1 (e.g. 1.5); got {g!r}")
        d = self.drain_steps
        if d is not None and d != "auto" and (isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1):
            raise ValidationError(f'drain_steps must be "auto", None or a positive integer (e.g. 5); got {d!r}')
        if self.rebaseline not in REBASELINES:
            raise ValidationError(f"rebaseline must be one of {', '.join(REBASELINES)}; got {self.rebaseline!r}")
        if self.drain_sweep not in DRAIN_SWEEPS:
            raise ValidationError(f"drain_sweep must be one of {', '.join(DRAIN_SWEEPS)}; got {self.drain_sweep!r}")

    def _check_y(self, y: np.ndarray, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.shape != (n,):
            raise ValidationError(f"y must have shape ({n},), one entry per graph node; got {y.shape}")
        if y.size and not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
                raise ValidationError("y must hold integer class ids (-1 = unlabeled)")
        y = y.astype(np.int64)
        C = self.n_classes_
        bad = (y < -1) | (y >= C)
        if bad.any():
            raise ValidationError(
                f"y holds class id {int(y[bad][0])}; ids must be -1 (unlabeled) or in [0, {C})"
                " (pass n_classes= to fit for more classes)"
            )
        return y

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        graph: KnnGraph | sp.spmatrix,
        y: np.ndarray,
        *,
        n_classes: int | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> LabelPropagation:
        """Propagate the labels ``y`` ((n,) int, -1 = unlabeled) over ``graph``.

        ``graph``: a :class:`KnnGraph` (S is built with ``temperature``) or a precomputed
        symmetric normalised affinity S (from :func:`affinity_matrix`).
        ``sample_weight``: (n,) non-negative trust per item; Y0 row i = weight_i * one-hot.
        """
        self._check_params()
        if isinstance(graph, KnnGraph):
            S = affinity_matrix(graph, temperature=self.temperature)
        elif isinstance(graph, CsrArrays):
            S = graph   # its products run scipy's compiled kernels without importing scipy.sparse
        else:
            import scipy.sparse as sp

            if not sp.issparse(graph):
                raise ValidationError(
                    f"graph must be a KnnGraph or a scipy sparse affinity matrix; got {type(graph).__name__}")
            if graph.ndim != 2 or graph.shape[0] != graph.shape[1]:
                raise ValidationError(f"an affinity matrix must be square; got shape {graph.shape}")
            S = sp.csr_matrix(graph, dtype=np.float32)
            S.sort_indices()
        n = S.shape[0]
        y_arr = np.asarray(y)
        if n_classes is None:
            if y_arr.size == 0 or not (y_arr >= 0).any():
                raise ValidationError("no labeled item in y: pass n_classes= so the classes are known")
            n_classes = int(y_arr.max()) + 1
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 1:
            raise ValidationError(f"n_classes must be a positive integer; got {n_classes!r}")
        self.n_classes_ = int(n_classes)
        y = self._check_y(y_arr, n)
        w = np.ones(n, np.float32) if sample_weight is None else self._check_weight(sample_weight, n)
        self.S_ = S
        self.sample_weight_ = w
        self.y_ = y
        Y0 = self._seed(y)  # (n, C)
        self.Y_, self.n_iter_ = self._iterate(Y0, Y0.copy(), y >= 0)
        self._finish(np.arange(n))
        self.n_updates_ = 0  # warm updates since the last full propagation
        self.n_refits_ = 0   # full propagations update() ran instead of a warm update
        self.drained_ = 0    # drain steps since then
        for a in ("_residual_rows", "residual_before_"):
            self.__dict__.pop(a, None)
        self.residual_ = self.residual_fit_ = self.residual()
        return self

    def _seed(self, y: np.ndarray) -> np.ndarray:
        """Y0: row i = weight_i * one-hot(y_i) for labeled i, zeros elsewhere. (n, C) float32."""
        n = y.shape[0]
        Y0 = np.zeros((n, self.n_classes_), np.float32)
        lab = np.flatnonzero(y >= 0)
        Y0[lab, y[lab]] = self.sample_weight_[lab]
        return Y0

    def _iterate(self, Y: np.ndarray, Y0: np.ndarray, labeled: np.ndarray, *, steps: int | None = None,
                 tol_stop: bool = True) -> tuple[np.ndarray, int]:
        """``(Y(t), t)``: ``steps`` (default ``n_iter``) steps of the iteration from ``Y``,
        fewer once no entry changes by more than ``tol`` (``tol_stop``; a drain's few steps
        between residual checks skip that test: 3 passes over (n, C) per step)."""
        S, alpha = self.S_, self.alpha
        converge = self.n_iter is None and steps is None
        if steps is None:
            steps = MAX_ITER_TO_CONVERGE if converge else int(self.n_iter)
        order = S.ordered() if isinstance(S, CsrArrays) and steps > 0 else None
        if order is not None:   # the steps on S in locality order (labelloop.csr): 2.5x faster at 1M
            perm, inverse, S = order
            # (n, C), (n,) in that order (np.take: 2.4x faster than Y[perm] on 10 columns)
            Y, labeled = np.take(Y, perm, axis=0), labeled[perm]
        lab = np.flatnonzero(labeled)
        if alpha is None:
            Y0_lab = Y0[perm[lab]] if order is not None else Y0[lab]   # (l, C) the clamped rows
        else:
            if order is not None:
                Y0 = np.take(Y0, perm, axis=0)
            base = (1.0 - alpha) * Y0  # (n, C) the (1 - alpha) Y0 term
        done = 0
        diff = None   # (n, C) scratch for the step's change: no two new (n, C) arrays per step
        for _ in range(steps):
            if alpha is None:
                Y_new = S @ Y  # Y(t+1) = S Y(t) ...
                Y_new[lab] = Y0_lab  # ... labeled rows reset to their labels
            else:
                Y_new = alpha * (S @ Y)  # Y(t+1) = alpha S Y(t) + (1 - alpha) Y0
                Y_new += base
            done += 1
            if not tol_stop:
                Y = Y_new
                continue
            if diff is None or diff.dtype != np.result_type(Y_new, Y):
                diff = np.empty(Y.shape, np.result_type(Y_new, Y))
            change = float(np.abs(np.subtract(Y_new, Y, out=diff), out=diff).max()) if Y.size else 0.0
            Y = Y_new
            if change <= self.tol:
                break
        else:
            if converge and steps > 0:
                warnings.warn(
                    f"label propagation did not converge to tol={self.tol} in {steps} steps; "
                    "raise tol or pass a fixed n_iter",
                    PropagationConvergenceWarning,
                    stacklevel=3,
                )
        if order is not None:   # back to the items' order (a gather: faster than out[perm] = Y)
            return np.take(np.asarray(Y, dtype=np.float32), inverse, axis=0), done
        return np.ascontiguousarray(Y, dtype=np.float32), done

    def _finish(self, rows: np.ndarray) -> None:
        """Row-normalise Y_ into label_distributions_ (and reached) on ``rows`` (on every row
        with class-mass normalisation: a column's scale depends on all of them); their argmax,
        ``transduction_``, is taken when asked for (a refresh reads the labels of its
        prediction summary instead: an argmax over (n, C) is 0.03-0.05 CPU-s at 1M items)."""
        n, C = self._Y.shape
        order = self._order()
        if not hasattr(self, "label_distributions_"):
            self.label_distributions_ = np.empty((n, C), np.float32)
            self.reached_ = np.empty(n, bool)
            rows = np.arange(n)   # nothing finished yet (after restore): every row
        if self.class_mass:
            rows = np.arange(n)
        prior = None
        if self.class_mass:
            prior = self.class_prior if self.class_prior is not None else (
                "estimated" if self.class_mass == "estimated" else "labels")
        if rows.size == n:   # every row: new arrays, no gather and scatter of (n, C)
            out = None if self.distributions_out is None else self.distributions_out((n, C))
            P, reached = class_distributions(self._Y, self.y_, C, prior, order=None if order is None else order[1],
                                             out=out)
            self.label_distributions_, self.reached_ = P, reached
            return
        P, reached = class_distributions(self._Y[rows if order is None else order[1][rows]], self.y_, C, prior)
        self.label_distributions_[rows] = P
        self.reached_[rows] = reached

    # ------------------------------------------------------------------ warm start
    def update(
        self,
        y: np.ndarray,
        *,
        n_iter: int | None = None,
        sample_weight: np.ndarray | None = None,
        max_rows: int | None = None,
        drain: bool = True,
    ) -> LabelPropagation:
        """Warm start after labels changed: ``y`` is the full new label vector (-1 unlabeled).

        Reuses S and the previous Y; only the change is propagated, on the rows it reaches,
        for at most ``n_iter`` steps (default: the estimator's ``n_iter``; 20 if that is None).
        ``sample_weight``: the new (n,) trust per item, if it changed (default: unchanged).
        ``max_rows``: work cap, rows of S gathered in total over the steps (default
        max(UPDATE_MIN_ROWS, UPDATE_ROWS_PER_ITEM * n): every step on graphs up to ~5k items,
        a bounded local update on large ones; benchmarks/refresh_latency.py measures both).
        ``drain``: past the error bound, run the drain's full steps now (default); False leaves
        them to a later :meth:`drain` (a server calls it once the predictions are shown) unless
        the residual is past DEFERRED_DRAIN_LIMIT x the bound.

        Clamped variant: added labels are warm-started (see the module docstring). A removed or
        re-classed label leaves mass in the previous Y that the clamped map cannot drain in a
        few steps (it has eigenvalue ~1 on weakly labeled regions), so such a change re-runs
        the propagation from scratch (reusing S; ``n_iter`` steps of the full matrix).
        Spreading variant: the T-step result is linear in Y0, so any change is exact:
        Y_T += v_T + (1 - alpha) sum_{t<T} v_t with v_t = (alpha S)^t (Y0_new - Y0_old).
        """
        if not self.fitted:
            raise NotReadyError("update() needs a fitted LabelPropagation: call fit() first")
        n = self.S_.shape[0]
        y = self._check_y(y, n)
        if n_iter is None:
            n_iter = self.n_iter if self.n_iter is not None else MAX_ITER_TO_CONVERGE
        if isinstance(n_iter, bool) or not isinstance(n_iter, (int, np.integer)) or n_iter < 0:
            raise ValidationError(f"n_iter must be a non-negative integer; got {n_iter!r}")
        w_old = self.sample_weight_
        w = w_old if sample_weight is None else self._check_weight(sample_weight, n)
        changed = np.flatnonzero((y != self.y_) | ((w != w_old) & ((y >= 0) | (self.y_ >= 0))))
        if changed.size == 0:
            self.y_, self.sample_weight_ = y, w
            return self
        if self.residual_growth is not None and self.rebaseline != "work":   # where the last update left it
            self.residual_before_ = self.residual_ if getattr(self, "residual_", None) is not None \
                else self.residual()
        y_old, self.y_, self.sample_weight_ = self.y_, y, w
        self.n_updates_ = getattr(self, "n_updates_", 0) + 1
        self.drain_steps_ = 0   # full steps this update ran past its error bound
        full = bool(self.refit_every) and self.n_updates_ >= self.refit_every
        if full or (self.alpha is None and (y_old[changed] >= 0).any()):
            # periodic full propagation, or a label removed, re-classed or re-weighted
            return self._refit()
        if max_rows is None:
            max_rows = max(UPDATE_MIN_ROWS, int(UPDATE_ROWS_PER_ITEM * n))
        if isinstance(max_rows, bool) or not isinstance(max_rows, (int, np.integer)) or max_rows < 1:
            raise ValidationError(f"max_rows must be a positive integer; got {max_rows!r}")
        budget = int(max_rows)
        if self.alpha is None:
            touched = self._update_clamped(changed, int(n_iter), budget)
        else:
            touched = self._update_spreading(changed, y_old, w_old, int(n_iter), budget)
        if self.correct_steps and self.alpha is None:
            # correct_steps more steps of the full iteration from the warm result: they drain
            # the residual the warm start leaves (the previous state treated as a fixed point,
            # pruning, the work cap) on every row, where it would otherwise accumulate. (The
            # spreading update is linear, exact up to pruning: nothing accumulates there.)
            Y0 = self._seed(y)
            self.Y_, _ = self._iterate(self.Y_, Y0, y >= 0, steps=int(self.correct_steps))
            touched = np.arange(n)
        if self.residual_growth is not None:
            self.residual_ = self.residual()
        if self.residual_exceeded():
            if self.residual_action == "refit":
                return self._refit()   # the error bound is exceeded: start again from the labels
            if (drain or self.residual_ > DEFERRED_DRAIN_LIMIT * self.residual_growth * self.residual_fit_) \
                    and self._drain(None, None):
                touched = np.arange(n)   # every row may have changed
        self._finish(touched)
        return self

    def drain(self, max_steps: int | None = None, *, stop=None) -> int:
        """Full steps of the iteration from the current Y while its residual is above the error
        bound's target, RESIDUAL_DRAIN_TO x the last full fit's (below the bound, so the next
        few updates need none); at most ``max_steps`` (default ``drain_steps``, None: ``n_iter``,
        a full fit's work, counted in ``n_refits_`` when it runs out without getting there).
        ``stop()``: asked before every block of DRAIN_BLOCK_ROWS rows of a step; True ends the
        drain there (a new label waiting) and drops the step it cut. Steps a drain leaves undone
        stay in Y: the next update measures them again; the steps it ran are kept (when it
        stopped after one, ``label_distributions_`` and the argmax are made again only on the
        next :meth:`predict_proba` or update). Adds to ``drain_steps_``; returns the steps run."""
        if not self.fitted:
            raise NotReadyError("drain() needs a fitted LabelPropagation: call fit() first")
        done = self._drain(max_steps, stop)
        if done and stop is not None and stop():
            # stopped for an update, which finishes every row then: not twice (0.1-0.2 s at 1M)
            for a in ("label_distributions_", "reached_"):
                self.__dict__.pop(a, None)
        elif done:
            self._finish(np.arange(self.S_.shape[0]))   # every row may have changed
        return done

    def _drain(self, max_steps: int | None, stop) -> int:
        """:meth:`drain`'s steps, without refreshing the distributions."""
        y, n_iter = self.y_, self.n_iter if self.n_iter is not None else MAX_ITER_TO_CONVERGE
        d = self.drain_steps
        if d == "auto":   # a bounded amount of work per update (DRAIN_MAX_ROW_STEPS)
            d = max(1, DRAIN_MAX_ROW_STEPS // max(int(self.S_.shape[0]), 1))
        cap = n_iter if d is None else int(d)
        budget = cap if max_steps is None else int(max_steps)   # this drain's own budget
        cap = min(budget,   # and a full fit's work since the last
                  max(n_iter - getattr(self, "drained_", 0), 0))  # one (or new baseline) in all
        if getattr(self, "residual_", None) is None:
            self.residual_ = self.residual()
        if getattr(self, "residual_fit_", None) is None:
            return 0
        Y0 = None
        done = 0
        while done < cap and self.residual_ > RESIDUAL_DRAIN_TO * self.residual_fit_:
            if stop is not None and stop():
                break
            # the steps up to the next residual check at once (one reordering), or with stop() one
            steps = 1 if stop is not None else min(RESIDUAL_CHECK_STEPS - done % RESIDUAL_CHECK_STEPS, cap - done)
            ordered = False
            if self.drain_sweep == "gauss-seidel":
                Y, ordered = self._sweeps(y, steps, stop)
            else:
                if Y0 is None:   # the seeds and the clamped rows, once per drain
                    Y0 = self._seed(y)
                    fixed = np.flatnonzero(y >= 0)
                    fixed_Y0 = Y0[fixed] if self.alpha is None else None
                if stop is None:
                    Y, _ = self._iterate(self.Y_, Y0, y >= 0, steps=steps, tol_stop=False)
                else:   # one step in row blocks, stop() asked between them: a step cut short is dropped
                    Y = _blocked_product(self.S_, self.Y_, stop)
                    if Y is not None:
                        self._step_rest(Y, fixed, fixed_Y0, Y0)
            if Y is None:
                break
            self._Y, self._Y_ordered = Y, ordered
            done += steps
            if done % RESIDUAL_CHECK_STEPS == 0 or done == cap:
                self.residual_ = self.residual()
        if done % RESIDUAL_CHECK_STEPS and done != cap:
            self.residual_ = self.residual()   # stopped between checks
        self.drain_steps_ = getattr(self, "drain_steps_", 0) + done
        self.drained_ = getattr(self, "drained_", 0) + done   # since the last full fit (or new baseline)
        if self.drained_ >= n_iter and self.residual_ > RESIDUAL_DRAIN_TO * self.residual_fit_:
            # a full fit's work done without getting there: its residual is the new baseline
            self.n_refits_ = getattr(self, "n_refits_", 0) + 1
            self.n_updates_ = self.drained_ = 0
            self.residual_fit_ = self.residual_
        elif self._stalled(done == budget):
            # the update and a whole budget of steps together did not lower the residual: the
            # baseline moves up to it, by at most residual_growth (REBASELINES); once per update
            self.n_rebaselines_ = getattr(self, "n_rebaselines_", 0) + 1
            self.residual_fit_ = min(self.residual_, self.residual_growth * self.residual_fit_)
            self.residual_before_ = np.inf
        return done

    def _stalled(self, whole_budget: bool) -> bool:
        """Whether a drain that just ran (``whole_budget``: all the steps it was allowed, not
        stopped, not cut by a full fit's work) moves the bound's baseline up (``rebaseline``,
        REBASELINES): it left the residual above its target (``"landing"``) or above the bound
        (``"stall"``), and no lower than the last update found it (``residual_before_``)."""
        if self.rebaseline == "work" or not whole_budget or self.residual_growth is None:
            return False
        level = RESIDUAL_DRAIN_TO if self.rebaseline == "landing" else self.residual_growth
        return self.residual_ > level * self.residual_fit_ and \
            self.residual_ >= getattr(self, "residual_before_", np.inf)

    def _sweeps(self, y: np.ndarray, steps: int, stop=None) -> tuple[np.ndarray | None, bool]:
        """``(Y, ordered)``: ``steps`` Gauss-Seidel sweeps of the iteration from the state Y under
        the labels ``y``. Where S has a locality order the result's rows are in it (``ordered``),
        in the state's own memory when it is held in that order already (no new (n, C) array
        and no reorder at 1M items; with ``stop`` a copy), else in a new array; None when
        ``stop()``, asked every DRAIN_BLOCK_ROWS rows, said stop: the sweep it cut is dropped
        and the state is as it was.
        The rows go in blocks of DRAIN_SWEEP_BLOCK_ROWS, in S's locality order where it has one
        (labelloop.csr): a block's new rows are ``(S Y)`` on them (clamped rows reset to their
        labels; spreading: ``alpha (S Y) + (1 - alpha) Y0``) with the blocks before it already
        updated in this sweep, so a sweep moves Y further towards the fixed point than a step
        that reads only the last one (at 1M items 3 sweeps agreed with a cold fit as 5 steps)."""
        S, alpha, Y = self.S_, self.alpha, self._Y
        order = S.ordered() if isinstance(S, CsrArrays) else None
        perm = None   # the sweep's row order: S's locality order, else the items' own
        if order is not None:
            perm, _, S = order
            labeled = (y >= 0)[perm]
            if not self._Y_ordered:
                Y = np.take(Y, perm, axis=0)   # (n, C) a new array, swept in place
            elif stop is not None or Y.dtype != np.float32 or not (Y.flags.c_contiguous and Y.flags.writeable):
                Y = np.array(Y, dtype=np.float32)   # a sweep cut short leaves the state as it was
        else:
            Y, labeled = np.array(self.Y_, dtype=np.float32), y >= 0   # a copy
        n = Y.shape[0]
        fixed = np.flatnonzero(labeled)   # clamped rows (sorted) and their seed rows
        Y0 = fixed_Y0 = None
        if alpha is None:
            fixed_Y0 = self._seed_rows(fixed if perm is None else perm[fixed], y)
        else:
            Y0 = self._seed(y) if perm is None else self._seed(y)[perm]   # (n, C) in the sweep's order
        ask = DRAIN_BLOCK_ROWS   # stop() every this many rows; the blocks the same with it or without
        block_rows = min(DRAIN_SWEEP_BLOCK_ROWS, ask)
        for _ in range(steps):
            for a in range(0, n, block_rows):
                if stop is not None and a % ask < block_rows and stop():
                    return None, False
                b = min(n, a + block_rows)
                p0, p1 = int(S.indptr[a]), int(S.indptr[b])
                new = matmul(CsrArrays(S.data[p0:p1], S.indices[p0:p1], np.asarray(S.indptr[a:b + 1]) - p0,
                                       (b - a, n)), Y)   # (b - a, C)
                f0, f1 = np.searchsorted(fixed, (a, b)) if alpha is None else (0, 0)
                self._step_rest(new, fixed[f0:f1] - a, None if alpha is not None else fixed_Y0[f0:f1],
                                None if Y0 is None else Y0[a:b])
                Y[a:b] = new
        return Y, order is not None

    def _step_rest(self, SY: np.ndarray, fixed: np.ndarray, fixed_Y0: np.ndarray | None,
                   Y0: np.ndarray | None) -> None:
        """The rest of a step, in place on rows ``(S Y)`` (``SY``, a block of them or all):
        clamped, its rows ``fixed`` reset to their seeds ``fixed_Y0``; spreading,
        ``alpha (S Y) + (1 - alpha) Y0`` with ``Y0`` those rows' seeds."""
        if self.alpha is None:
            SY[fixed] = fixed_Y0
        else:
            SY *= np.float32(self.alpha)
            SY += np.float32(1.0 - self.alpha) * Y0

    def residual_exceeded(self) -> bool:
        """The error bound: the residual the warm updates left is above ``residual_growth`` x
        the one the last full propagation left."""
        r, base = getattr(self, "residual_", None), getattr(self, "residual_fit_", None)
        return self.residual_growth is not None and r is not None and base is not None \
            and r > self.residual_growth * base

    def _refit(self) -> LabelPropagation:
        """A full propagation from the current labels and weights, reusing S."""
        y = self.y_
        Y0 = self._seed(y)
        self.Y_, self.n_iter_ = self._iterate(Y0, Y0.copy(), y >= 0)
        self._finish(np.arange(y.shape[0]))
        self.n_updates_ = self.drained_ = 0
        self.n_refits_ = getattr(self, "n_refits_", 0) + 1
        self.residual_ = self.residual_fit_ = self.residual()
        return self

    def residual(self) -> float:
        """Relative residual of the fixed-point equation at the current ``Y_``:
        sum_i ||F(Y)_i - Y_i||_1 / sum_i ||Y_i||_1 over a fixed sample of at most
        RESIDUAL_SAMPLE rows (F: one step of the iteration; clamped rows have none). 0 at a fixed
        point; a full fit of ``n_iter`` steps leaves what it did not converge. Numpy only
        (:func:`labelloop.csr.rows_dot`), O(sample x k x C)."""
        S, Y, y = self.S_, self._Y, self.y_
        n = S.shape[0]
        rows = getattr(self, "_residual_rows", None)
        if rows is None or (rows.size and rows[-1] >= n):
            m = min(n, RESIDUAL_SAMPLE)
            # rows spread over the graph by a multiplicative hash (Knuth's constant): fixed, and
            # no numpy.random import in a refresh's process
            rows = np.arange(n) if m == n else sorted_unique(np.arange(m, dtype=np.int64) * 2654435761 % n)
            self._residual_rows = rows
        if self.alpha is None:
            rows = rows[y[rows] < 0]  # F(Y)_i = Y0_i = Y_i on clamped rows
        at, order = rows, self._order()
        if order is not None:   # Y held in S's locality order: the same rows there
            at, S = order[1][rows], order[2]
        if self.alpha is None:
            F = rows_dot(S, at, Y)  # (m, C) (S Y)_i
        else:  # F(Y) = alpha S Y + (1 - alpha) Y0
            F = np.float32(self.alpha) * rows_dot(S, at, Y) + np.float32(1.0 - self.alpha) * self._seed_rows(rows, y)
        Yr = Y[at]
        mass = float(np.abs(Yr).sum())
        return float(np.abs(F - Yr).sum()) / mass if mass > 0 else 0.0

    def _update_clamped(self, new: np.ndarray, steps: int, budget: int) -> np.ndarray:
        """Warm start for newly labeled rows ``new``; returns the rows whose Y changed (sorted).
        On S in locality order when Y is held in it (the rows mapped there and back)."""
        S, Y, y = self.S_, self._own_state(), self.y_
        free = y < 0  # rows the map does not clamp
        order, at = self._order(), new
        if order is not None:
            perm, inverse, S = order
            free, at = free[perm], inverse[new]
        Y[at] = self._seed_rows(new, y)  # Y(0): the previous Y with the new clamps applied
        # first increment delta(1) = F(Y(0)) - Y(0), computed exactly on the new rows'
        # neighbours; elsewhere Y(0) is the previous state, taken as a fixed point (delta = 0)
        rows = sorted_unique(row_gather(S, at)[1])
        rows = rows[free[rows]]  # clamped rows: F(Y)_i = Y0_i = Y(0)_i, no increment
        delta = rows_dot(S, rows, Y) - Y[rows]  # (r, C) (S Y(0))_i - Y(0)_i
        # Y(T) = Y(0) + sum_{t=1..T} delta(t),  delta(t+1) = P S delta(t)
        touched = _push(S, Y, rows, delta, steps, budget=budget, free=free)
        touched[at] = True
        return np.flatnonzero(touched) if order is None else np.sort(order[0][touched])

    def _update_spreading(
        self, changed: np.ndarray, y_old: np.ndarray, w_old: np.ndarray, steps: int, budget: int
    ) -> np.ndarray:
        """Change of the T-step spreading result (exact up to pruning); returns touched rows."""
        # v_0 = Y0_new - Y0_old on the changed rows
        v = self._seed_rows(changed, self.y_)  # (c, C)
        lab = y_old[changed] >= 0
        v[np.flatnonzero(lab), y_old[changed][lab]] -= w_old[changed][lab]
        # Y_T += (1 - alpha) sum_{t<T} v_t + v_T,  v_{t+1} = alpha S v_t
        self.Y_ = self.Y_   # the push works in the items' order (reordered once if held otherwise)
        touched = _push(self.S_, self._own_state(), changed, v, steps, budget=budget, alpha=self.alpha)
        return np.flatnonzero(touched)

    def _check_weight(self, sample_weight: np.ndarray, n: int) -> np.ndarray:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != (n,) or not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValidationError(
                f"sample_weight must be ({n},) finite and non-negative; got shape {w.shape}"
            )
        return w.astype(np.float32)

    def _seed_rows(self, rows: np.ndarray, y: np.ndarray) -> np.ndarray:
        out = np.zeros((rows.size, self.n_classes_), np.float32)
        lab = y[rows] >= 0
        out[np.flatnonzero(lab), y[rows][lab]] = self.sample_weight_[rows][lab]
        return out

    def restore(self, graph: KnnGraph | sp.spmatrix, Y: np.ndarray, y: np.ndarray, *,
                sample_weight: np.ndarray | None = None, n_updates: int = 0,
                residual_fit: float | None = None, drained: int = 0, ordered: bool = False) -> LabelPropagation:
        """Rebuild a fitted state saved from ``Y_`` (or :meth:`state`), ``y_`` and
        ``sample_weight_`` (another process's last fit or update), so :meth:`update` can
        warm-start from it. ``residual_fit``: ``residual_fit_`` of that state (the residual its
        last full propagation left; default: the saved state's own, measured here); ``drained``:
        its ``drained_``, the drain steps run since then; ``ordered``: ``Y``'s rows are in the
        graph's locality order (:meth:`state`; the graph a :class:`labelloop.csr.CsrArrays`).
        ``Y`` is held as given where it is float32 and C-contiguous; a read-only one (a stored file
        memory-mapped) is copied before the first step that writes it (:meth:`_own_state`)."""
        self._check_params()
        if isinstance(graph, KnnGraph):
            S = affinity_matrix(graph, temperature=self.temperature)
        elif isinstance(graph, CsrArrays):
            S = graph   # no scipy.sparse import (labelloop.csr)
        else:
            import scipy.sparse as sp

            S = sp.csr_matrix(graph, dtype=np.float32)
        Y = np.ascontiguousarray(Y, dtype=np.float32)
        n = S.shape[0]
        if Y.ndim != 2 or Y.shape[0] != n:
            raise ValidationError(f"saved state has {Y.shape[0]} rows but the graph has {n} nodes")
        if ordered and not (isinstance(S, CsrArrays) and S.ordered() is not None):
            raise ValidationError("a state in the graph's locality order needs a graph that has one")
        self.n_classes_ = Y.shape[1]
        self.S_, self._Y, self._Y_ordered = S, Y, bool(ordered)
        self.y_ = self._check_y(y, n)
        self.sample_weight_ = (np.ones(n, np.float32) if sample_weight is None
                               else self._check_weight(sample_weight, n))
        self.n_iter_ = 0
        self.n_updates_ = int(n_updates)
        self.n_refits_ = 0
        self.drained_ = int(drained)
        for a in ("_residual_rows", "residual_before_"):
            self.__dict__.pop(a, None)
        self.residual_ = None
        self.residual_fit_ = self.residual() if residual_fit is None else float(residual_fit)
        for a in ("label_distributions_", "reached_"):   # finished on first use
            self.__dict__.pop(a, None)
        return self

    @property
    def transduction_(self) -> np.ndarray:
        """(n,) the label of every item: the argmax of ``label_distributions_``."""
        if "label_distributions_" not in self.__dict__:
            raise AttributeError("transduction_: the LabelPropagation is not fitted, or not finished since restore()")
        return self.label_distributions_.argmax(axis=1)

    def release_distributions(self, P: np.ndarray) -> None:
        """The caller takes ``P``, the array :meth:`predict_proba` returned, to overwrite it (a
        warm refresh calibrates in its memory): forgotten here, made again on the next use."""
        if self.__dict__.get("label_distributions_") is P:
            del self.label_distributions_

    def predict_proba(self) -> np.ndarray:
        """(n, C) class distributions of the graph's items (rows sum to 1)."""
        if not self.fitted:
            raise NotReadyError("predict_proba() needs a fitted LabelPropagation: call fit() first")
        if not hasattr(self, "label_distributions_"):   # restored, not updated since
            self._finish(np.arange(self.Y_.shape[0]))
        return self.label_distributions_


def _push(
    S: sp.csr_matrix | CsrArrays,
    Y: np.ndarray,
    rows: np.ndarray,
    v: np.ndarray,
    steps: int,
    *,
    budget: int,
    free: np.ndarray | None = None,
    alpha: float | None = None,
) -> np.ndarray:
    """Add a propagating increment to ``Y`` in place, touching only the rows it reaches.

    Clamped (``free`` given):  Y += v_1 + ... + v_T,  v_{t+1} = P S v_t (P zeroes clamped rows).
    Spreading (``alpha``):     Y += (1 - alpha)(v_0 + ... + v_{T-1}) + v_T,  v_{t+1} = alpha S v_t.
    ``rows`` / ``v``: support and (r, C) values of the first increment. An increment row stops
    spreading once its 2-norm is below UPDATE_PRUNE of its row's mass in Y; the loop
    also stops once ``budget`` rows have been gathered in total (the remaining steps' mass is
    then added in place).
    S is symmetric, so (S v)_j = sum_i S_ij v_i over the gathered rows i: a CSR row gather and
    a scatter-add on the compacted columns (:func:`labelloop.csr.rows_dot_transposed`), O(nnz of
    those rows) plus an O(n) bitmap scan per step, numpy only.
    Returns an (n,) bool mask of the rows whose Y changed.
    """
    n = Y.shape[0]
    touched = np.zeros(n, bool)
    seen = np.zeros(n, bool)  # scratch: rows reached by this step's product
    pos = np.empty(n, np.int32 if n < 2**31 else np.int64)  # scratch: row id -> compact column
    coef = 1.0 if alpha is None else 1.0 - alpha
    for step in range(steps + (alpha is not None)):
        last = step == steps
        Yr = Y[rows]  # (r, C)
        Yr += v if (alpha is None or last) else coef * v
        Y[rows] = Yr
        touched[rows] = True
        budget -= rows.size
        if last or (alpha is None and step == steps - 1):
            break
        if budget <= 0:
            # out of budget: add the increments' remaining steps where they are now instead of
            # dropping them (mass-preserving; measured +0.4 points of argmax agreement at 100k).
            # clamped: steps - 1 - step more increments ~ v; spreading: the tail
            # (1 - alpha)(v_{t+1} + ... + v_{T-1}) + v_T with v_s ~ alpha^(s-t) v_t sums to alpha v_t
            Y[rows] += np.float32(steps - 1 - step) * v if alpha is None else np.float32(alpha) * v
            break
        # prune: ||v_i||_2 <= UPDATE_PRUNE * sum_c Y_ic cannot move row i's distribution much
        # (einsum / matvec: numpy's axis-1 reductions are slow on 10-column arrays)
        mass = np.maximum(np.einsum("ij->i", Yr), 0.0)  # (r,)
        keep = np.einsum("ij,ij->i", v, v) > (UPDATE_PRUNE * mass) ** 2
        rows, v = rows[keep], v[keep]
        if rows.size == 0:
            break
        # (S v)[out] over the rows reached, O(nnz of the frontier's rows) in numpy (labelloop.csr)
        out, v = rows_dot_transposed(S, rows, v, seen, pos)  # (r',), (r', C)
        if alpha is None:
            keep = free[out]  # P: clamped rows take no increment
            rows, v = out[keep], v[keep]
        else:
            rows, v = out, v * np.float32(alpha)
    return touched


#: :meth:`LabelPropagation.drain` with ``stop``: rows of S per block of a full step (~30 ms of
#: CPU at k = 10; scipy's product holds the GIL: a server's request threads wait at most one block)
DRAIN_BLOCK_ROWS = 100_000


def _blocked_product(S: sp.csr_matrix | CsrArrays, Y: np.ndarray, stop) -> np.ndarray | None:
    """``S @ Y`` ((n, C) float32) a block of DRAIN_BLOCK_ROWS rows at a time (CSR views on
    slices of S's arrays), asking ``stop()`` before each block; None when it said stop."""
    n = S.shape[0]
    order = S.ordered() if isinstance(S, CsrArrays) else None
    if order is not None:   # on S in locality order, as _iterate
        perm, inverse, S = order
        Y = np.take(Y, perm, axis=0)
    out = np.empty(Y.shape, np.float32)
    for a in range(0, n, DRAIN_BLOCK_ROWS):
        if stop():
            return None
        b = min(n, a + DRAIN_BLOCK_ROWS)
        p0, p1 = int(S.indptr[a]), int(S.indptr[b])
        block = CsrArrays(S.data[p0:p1], S.indices[p0:p1], np.asarray(S.indptr[a:b + 1]) - p0, (b - a, S.shape[1]))
        out[a:b] = matmul(block, Y)
    return out if order is None else np.take(out, inverse, axis=0)


#: :func:`prediction_summary` works on blocks of this many rows: its temporaries stay in cache
#: and are reused, where whole (C, n) ones were new 40 MB arrays at 1M items, page-faulted
#: afresh in every process (0.28 -> 0.1 CPU-s of a 1M refresh)
SUMMARY_BLOCK_ROWS = 32_768


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` of a 1-d array (its distinct values, ascending), by a sort. np.unique
    imports numpy.ma to ask whether ``a`` is masked: ~15 ms of a refresh in a new process."""
    a = np.sort(a)
    keep = np.empty(a.size, dtype=bool)   # (m,) the first of each run of equal values
    keep[:1] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def class_index_dtype(n_classes: int) -> np.dtype:
    """The smallest signed integer type that holds the class indices 0 .. n_classes - 1 and -1:
    int8 up to 127 classes (a 1M-item label array is 1 MB instead of int64's 8 MB)."""
    for t in (np.int8, np.int16, np.int32):
        if n_classes - 1 <= np.iinfo(t).max:
            return np.dtype(t)
    return np.dtype(np.int64)


def prediction_summary(P: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row label (argmax, in :func:`class_index_dtype`), confidence (max prob), margin
    (top1 - top2), entropy (nats)."""
    P = np.asarray(P)
    if P.ndim != 2 or P.shape[1] < 1:
        raise ValidationError(f"P must be a 2-D (n, n_classes) array; got shape {P.shape}")
    n = P.shape[0]
    dtype = P.dtype if P.dtype in (np.float32, np.float64) else np.float64
    out = {"label": np.empty(n, class_index_dtype(P.shape[1])), "confidence": np.empty(n, np.float32),
           "margin": np.empty(n, np.float32), "entropy": np.empty(n, np.float32)}
    for a in range(0, n, SUMMARY_BLOCK_ROWS):
        b = min(n, a + SUMMARY_BLOCK_ROWS)
        _summarise_block(np.array(P[a:b].T, dtype=dtype, order="C"),
                         *(out[k][a:b] for k in ("label", "confidence", "margin", "entropy")))
    return out


def _summarise_block(PT: np.ndarray, label: np.ndarray, confidence: np.ndarray, margin: np.ndarray,
                     entropy: np.ndarray) -> None:
    """:func:`prediction_summary` of the (C, b) transpose ``PT`` of b rows, into the (b,) outputs
    (PT is overwritten). On the transpose: numpy's axis-1 reductions over ~10 columns are 3x
    slower than these over the rows."""
    # H = -sum_c p_c log p_c, with 0 log 0 = 0 (log computed where p > 0 only)
    H = np.zeros_like(PT)
    np.log(PT, out=H, where=PT > 0)
    H *= PT
    np.negative(H.sum(axis=0), out=entropy, casting="same_kind")
    top1, top2 = top_two(PT, label)
    confidence[:] = top1
    np.subtract(top1, top2, out=margin, casting="same_kind")  # top1 - top2


def top_two(PT: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(top1, top2)``: the (b,) largest and second largest entries of the columns of ``PT``
    (C, b), the transpose of b rows (top2 = top1 for one class, or where the largest is there
    twice), their argmax written into ``label`` (b,), the first largest as argmax picks it.
    ``PT`` is overwritten (each column's largest set to -inf). On the transpose: numpy's
    axis-1 reductions and argmax over ~10 columns are 3x slower than these over the rows."""
    top1 = PT.max(axis=0)  # (b,) largest
    C, b = PT.shape
    if not np.isnan(top1).any():
        # argmax over the ~10 rows, the first largest as argmax picks it: the smallest c with
        # PT[c] == top1, as min_c (c if equal else C) in one pass per class of plain
        # arithmetic (numpy's argmax over axis 0 copies the array to reduce over its last axis:
        # 3x slower; a masked assignment per class, label[equal] = c, 3.5x slower than this)
        dt = class_index_dtype(C + 1)
        first, term, equal = np.full(b, C, dt), np.empty(b, dt), np.empty(b, bool)
        for c in range(C):
            np.equal(PT[c], top1, out=equal)
            np.multiply(equal, dt.type(c - C), out=term)   # c - C where equal, else 0
            term += dt.type(C)
            np.minimum(first, term, out=first)
        label[:] = first
    else:
        label[:] = PT.argmax(axis=0)
    if C < 2:
        return top1, top1
    if PT.flags.c_contiguous:   # a flat scatter: 1.5x faster than PT[label, arange]
        PT.reshape(-1)[label.astype(np.intp) * b + np.arange(b)] = -np.inf
    else:
        PT[label, np.arange(b)] = -np.inf
    return top1, PT.max(axis=0)

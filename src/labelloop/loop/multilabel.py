"""Multi-label classification: an item can carry several classes (issue 12).

Decisions are an int8 matrix ``Y`` (n, C): 1 = a person said class c applies to item i, 0 = a
person said it does not, -1 = undecided. Every function here reads that one convention.

**Propagation, one-vs-rest on the same graph** (:func:`propagate_multilabel`). The affinity
``S`` of :func:`labelloop.propagate.affinity_matrix` is built once; each class is a two-column
problem ("applies", "does not apply") and the C problems are propagated together as one
(n, 2C) matrix, so a step is one sparse product:

    F0[i, 2c] = [Y_ic = 1],  F0[i, 2c+1] = [Y_ic = 0]
    F(t+1) = S F(t),  entries of decided pairs reset to F0 after every step (clamped per pair:
                      an item may be decided for some classes and not for others)

then per class, class-mass normalisation (:func:`labelloop.propagate.class_mass_normalise`,
the column pair rescaled to masses q_c and 1 - q_c, q_c the add-one smoothed share of
"applies" among the class's decisions) and ``raw_ic = F_i,2c / (F_i,2c + F_i,2c+1)``. It is
the same computation as C separate two-class ``LabelPropagation`` fits (tests check it),
in one product per step instead of C.

**Calibration per class** (:func:`fit_calibration`). Held-out raw scores of the human decisions
come from cross-fitting (:func:`labelloop.loop.heldout.heldout_proba`: each fold's items have
all their decisions hidden and are predicted by a propagation that never saw them). A Platt
map with one slope shared by every class and one intercept per class,

    P(applies) = sigmoid(a * logit(raw_ic) + b_c),

is fitted by maximum likelihood on those held-out decisions, against add-one smoothed targets
(as :mod:`labelloop.loop.calibrate`: m decisions all right say "about (m + 1) / (m + 2)",
never "certain") with a ridge pull of the intercepts toward 0 (a class with two decisions
cannot move its own intercept far). ``scores[i, c]`` is then P(class c applies).

**A head on the embeddings** (``X``, optional): one two-class head per class
(:func:`labelloop.loop.predict.embedding_head`) averaged into the propagation at the weight
whose calibrated held-out decisions are likeliest (``head_weight="auto"``, the single-label
``choose_head_weight`` idea): on a weak graph the head carries the prediction (bare WordNet
lemmas with MiniLM, benchmarks/results/multilabel.md).

**Predicted label sets** (:meth:`MultiLabelPrediction.labels`): per class, the bar that predicts
the class for its share of the items (:func:`share_thresholds`). Calibrated probabilities of a
rare class seldom pass 0.5 even where the class applies; measured against 0.5 and against bars
fitted to the held-out F1 in benchmarks/results/multilabel.md.

**Certification per class and side** (:func:`certify_multilabel`). "Applies" is accepted where
``score >= upper``, "does not apply" where ``score <= lower``; each bar is the loosest whose
held-out human decisions inside it (predicted by a model that never saw them) reach the
target precision at the one-sided Clopper-Pearson lower bound
(:func:`labelloop.loop.certify` machinery, :mod:`labelloop.autolabel` bounds): so at least
``min_verified_count`` (59 at 95 % / 95 %) held-out decisions must lie inside. The bound is
honest only when the decisions it counts are a random sample of the items: pass
``random_rows`` (the items drawn at random) when labels were chosen actively.

**Active learning** (:func:`choose_multilabel`): items ranked by the summed binary entropy of
their undecided (item, class) pairs (pairs a bar would accept count for nothing), one per
k-means cluster of the top candidates when embeddings are given
(:func:`labelloop.select.diversity.diversify`).

**Audit** (:func:`audit_multilabel`): a human decision is suspect when the held-out score
disagrees with it; its probability of being wrong is Bayes with the prior that people are
usually right (``label_accuracy``, default 0.95), so a correct decision is never flagged at 1.00.

Pure numpy / scipy: nothing here reads the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..autolabel import DEFAULT_LEVEL, DEFAULT_TARGET, min_verified_count
from ..errors import ValidationError
from ..graph import KnnGraph
from ..propagate import affinity_matrix, class_mass_normalise
from .certify import _largest_region, candidate_threshold, coverage_of, more_needed
from .heldout import heldout_proba

__all__ = [
    "MultiLabelPrediction",
    "MultiLabelCalibration",
    "ClassBar",
    "check_decisions",
    "propagate_multilabel",
    "fit_calibration",
    "share_thresholds",
    "predict_multilabel",
    "certify_multilabel",
    "accepted_pairs",
    "choose_multilabel",
    "audit_multilabel",
    "DEFAULT_LABEL_ACCURACY",
]

#: propagation steps (stopping early once no entry moves by more than ``tol``): the single-label
#: default of ``LabelPropagation`` (100 steps, measured in benchmarks/robustness.py)
N_ITER = 100
TOL = 1e-6
#: cross-fitting folds for the held-out scores (as ``loop.heldout``'s callers)
FOLDS = 5
#: fewest held-out decisions to fit the calibration on; below it, the raw scores are used
MIN_CALIBRATION_DECISIONS = 10
#: ridge pull of the per-class intercepts toward 0 (penalty INTERCEPT_RIDGE * b_c^2, curvature 2):
#: as firm as about 8 decisions at p = 0.5 (curvature 0.25 each), so a class with a handful of
#: decisions stays near the shared map
INTERCEPT_RIDGE = 1.0
#: prior probability that a person's decision is right (audit), as benchmarks/robustness.py's audit
DEFAULT_LABEL_ACCURACY = 0.95
#: ``head_weight="auto"``: the weights of the embedding head tried (held-out log-likelihood picks)
HEAD_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: diversity: candidates per returned item (select.diversity's default)
DIVERSITY_FACTOR = 10
_EPS = 1e-6


# --------------------------------------------------------------------------- validation


def check_decisions(Y, n: int | None = None) -> np.ndarray:
    """``Y`` as an int8 (n, C) array of -1 / 0 / 1; a ValidationError naming the first bad entry."""
    A = np.asarray(Y)
    if A.ndim != 2 or A.shape[1] < 1:
        raise ValidationError(f"decisions must be a 2-D (items, classes) array; got shape {A.shape}")
    if n is not None and A.shape[0] != n:
        raise ValidationError(f"decisions have {A.shape[0]} rows but the graph has {n} items: "
                              "pass one row per graph item, in the graph's order")
    if A.size and not np.issubdtype(A.dtype, np.integer):
        if not np.isfinite(A).all() or (A != np.round(A)).any():
            raise ValidationError("decisions must be whole numbers: 1 applies, 0 does not apply, -1 undecided")
    A = A.astype(np.int64)
    bad = (A < -1) | (A > 1)
    if bad.any():
        i, c = (int(v) for v in np.argwhere(bad)[0])
        raise ValidationError(f"decision of item row {i}, class {c} is {int(A[i, c])}; use 1 (applies), "
                              "0 (does not apply) or -1 (undecided)")
    return A.astype(np.int8)


def _check_prediction(pred: MultiLabelPrediction, Y) -> np.ndarray:
    if not isinstance(pred, MultiLabelPrediction):
        raise ValidationError(f"expected a MultiLabelPrediction (from predict_multilabel); got {type(pred).__name__}")
    Y = check_decisions(Y, pred.scores.shape[0])
    if Y.shape[1] != pred.scores.shape[1]:
        raise ValidationError(f"decisions have {Y.shape[1]} classes but the prediction has {pred.scores.shape[1]}: "
                              "refresh the prediction after adding classes")
    return Y


# --------------------------------------------------------------------------- propagation


def _positive_share(Y: np.ndarray) -> np.ndarray:
    """(C,) add-one smoothed share of "applies" among each class's decisions."""
    pos = (Y == 1).sum(axis=0).astype(np.float64)
    dec = (Y >= 0).sum(axis=0).astype(np.float64)
    return (pos + 1.0) / (dec + 2.0)


def propagate_multilabel(S: sp.spmatrix, Y: np.ndarray, *, n_iter: int = N_ITER, tol: float = TOL,
                         share: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest propagation of the decisions ``Y`` (n, C) over the affinity ``S`` (n, n).

    Returns ``(raw, reached)``: (n, C) float32 uncalibrated P(applies) after class-mass
    normalisation (see the module docstring), and (n,) bool, False where no decision of any
    class is within reach (those rows get the class's positive share q_c). ``share`` (C,): q
    (default: the add-one smoothed share of "applies" among each class's decisions)."""
    n, C = Y.shape
    F0 = np.zeros((n, 2 * C), np.float32)  # (n, 2C): columns 2c "applies", 2c+1 "does not apply"
    F0[:, 0::2] = Y == 1
    F0[:, 1::2] = Y == 0
    clamp = np.repeat(Y >= 0, 2, axis=1)  # (n, 2C) decided pairs, both columns of the pair
    any_clamped = bool(clamp.any())
    F = F0.copy()
    for _ in range(n_iter):
        F_new = np.asarray(S @ F, dtype=np.float32)  # F(t+1) = S F(t) ...
        if any_clamped:
            F_new[clamp] = F0[clamp]  # ... decided pairs reset to their decisions
        change = float(np.abs(F_new - F).max()) if F.size else 0.0
        F = F_new
        if change <= tol:
            break
    q = _positive_share(Y) if share is None else share  # (C,)
    raw = np.empty((n, C), np.float32)
    reached = np.zeros(n, bool)
    for c in range(C):
        # the pair rescaled to masses (q_c, 1 - q_c): the single-label class-mass normalisation
        G = class_mass_normalise(F[:, 2 * c:2 * c + 2], Y[:, c], 2, prior=np.array([q[c], 1.0 - q[c]]))
        tot = G.sum(axis=1)  # (n,)
        hit = tot > 0
        reached |= hit
        raw[:, c] = np.where(hit, G[:, 0] / np.where(hit, tot, 1.0), q[c])
    return raw, reached


# --------------------------------------------------------------------------- calibration


@dataclass(frozen=True)
class MultiLabelCalibration:
    """P(applies) = sigmoid(slope * logit(raw) + intercepts[c]); identity when slope 1, intercepts 0."""

    slope: float
    intercepts: np.ndarray  # (C,)
    n: int                  # held-out decisions it was fitted on

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        z = _logit(raw)
        return _sigmoid(self.slope * z + self.intercepts[None, :]).astype(np.float32)

    def to_dict(self) -> dict:
        return {"slope": round(self.slope, 4), "intercepts": [round(float(b), 4) for b in self.intercepts],
                "heldout_decisions": self.n}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + e^-z), without overflow


def fit_calibration(raw_heldout: np.ndarray, Y_heldout: np.ndarray) -> MultiLabelCalibration:
    """The shared slope and per-class intercepts maximising the likelihood of the held-out
    decisions ``Y_heldout`` (m, C; -1 pairs ignored) under ``raw_heldout`` (m, C), against
    add-one smoothed targets, intercepts pulled toward 0 by INTERCEPT_RIDGE."""
    from scipy.optimize import minimize

    C = raw_heldout.shape[1]
    rows, cols = np.nonzero(Y_heldout >= 0)
    m = rows.size
    if m < MIN_CALIBRATION_DECISIONS:
        return MultiLabelCalibration(1.0, np.zeros(C), m)
    z = _logit(raw_heldout[rows, cols])  # (m,)
    y = Y_heldout[rows, cols].astype(np.float64)
    m_c = np.bincount(cols, minlength=C).astype(np.float64)
    eps = 1.0 / (m_c[cols] + 2.0)
    t = (1.0 - eps) * y + eps * 0.5  # (m,) smoothed targets

    def nll(theta):
        a, b = theta[0], theta[1:]
        u = a * z + b[cols]
        # cross-entropy of sigmoid(u) against t: log(1 + e^u) - t u
        f = float((np.logaddexp(0.0, u) - t * u).sum() + INTERCEPT_RIDGE * (b**2).sum())
        g_u = _sigmoid(u) - t
        grad = np.empty_like(theta)
        grad[0] = float((g_u * z).sum())
        grad[1:] = np.bincount(cols, weights=g_u, minlength=C) + 2.0 * INTERCEPT_RIDGE * b
        return f, grad

    theta0 = np.r_[1.0, np.zeros(C)]
    res = minimize(nll, theta0, jac=True, method="L-BFGS-B", bounds=[(0.05, 20.0)] + [(-20.0, 20.0)] * C)
    return MultiLabelCalibration(float(res.x[0]), np.asarray(res.x[1:], dtype=np.float64), m)


# --------------------------------------------------------------------------- prediction


@dataclass
class MultiLabelPrediction:
    scores: np.ndarray          # (n, C) float32 calibrated P(class c applies); decided pairs = the decision
    reached: np.ndarray         # (n,) bool: some decision is within reach on the graph
    raw: np.ndarray             # (n, C) float32 uncalibrated propagation
    calibration: MultiLabelCalibration
    heldout_rows: np.ndarray    # (m,) item rows scored by a propagation that never saw their decisions
    heldout_scores: np.ndarray  # (m, C) float32 their calibrated held-out P(applies)
    heldout_decisions: np.ndarray  # (m, C) int8 the decisions of those rows when predicted
    thresholds: np.ndarray | None = None  # (C,) per-class bar of the predicted label sets (share_thresholds)
    head_weight: float = 0.0       # weight of the embedding head averaged into the propagation

    @property
    def n_classes(self) -> int:
        return int(self.scores.shape[1])

    def labels(self) -> np.ndarray:
        """(n, C) bool predicted label sets: score >= the class's threshold (decided pairs: the decision)."""
        return self.scores >= self.labels_thresholds()[None, :]

    def arrays(self) -> dict[str, np.ndarray]:
        """Everything as named arrays (for a run folder's ``.npy`` files); :meth:`from_arrays` reads them back."""
        return {"scores": self.scores, "reached": self.reached, "raw": self.raw,
                "calibration_slope": np.array([self.calibration.slope]),
                "calibration_intercepts": np.asarray(self.calibration.intercepts),
                "calibration_n": np.array([self.calibration.n]), "heldout_rows": self.heldout_rows,
                "heldout_scores": self.heldout_scores, "heldout_decisions": self.heldout_decisions,
                "thresholds": self.labels_thresholds(), "head_weight": np.array([self.head_weight])}

    def labels_thresholds(self) -> np.ndarray:
        """(C,) the per-class bars of :meth:`labels` (0.5 where none were fitted)."""
        return np.full(self.n_classes, 0.5) if self.thresholds is None else np.asarray(self.thresholds)

    @classmethod
    def from_arrays(cls, a) -> MultiLabelPrediction:
        """The prediction :meth:`arrays` wrote (``a``: a mapping of name -> array)."""
        cal = MultiLabelCalibration(float(a["calibration_slope"][0]), np.asarray(a["calibration_intercepts"]),
                                    int(a["calibration_n"][0]))
        return cls(scores=np.asarray(a["scores"]), reached=np.asarray(a["reached"], bool), raw=np.asarray(a["raw"]),
                   calibration=cal, heldout_rows=np.asarray(a["heldout_rows"], np.int64),
                   heldout_scores=np.asarray(a["heldout_scores"]),
                   heldout_decisions=np.asarray(a["heldout_decisions"], np.int8),
                   thresholds=np.asarray(a["thresholds"]), head_weight=float(a["head_weight"][0]))


def share_thresholds(scores: np.ndarray, Y: np.ndarray, reached: np.ndarray, share: np.ndarray) -> np.ndarray:
    """(C,) bars of the predicted label sets: class c is predicted for the share ``share[c]`` of
    the undecided reached items with the highest scores (the (1 - share_c) quantile of their scores).

    Measured against bars maximising the F1 of the held-out decisions (per class, shrunk to the
    bar pooled over classes) in benchmarks/multilabel.py, 3 seeds, micro / macro F1 at 2 / 5 / 10 / 20
    labeled positives per class: digit pairs 0.49 / 0.59 / 0.65 / 0.73 micro against 0.36 / 0.48 /
    0.62 / 0.73; WordNet lemmas (MiniLM) 0.22 / 0.25 / 0.27 / 0.28 against 0.18 / 0.19 / 0.22 /
    0.26, macro likewise (TF-IDF of bare lemmas, which ranks no better than chance, is the
    exception: F1 bars 0.15-0.19, share 0.13, as much as answering every class for every item,
    0.15). A few held-out positives place an F1 bar badly; the share needs only
    the ranking, which propagation gets right earlier than the calibration's extremes (0.5 of
    calibrated scores predicted almost nothing of a rare class: micro-F1 0.01-0.05)."""
    out = np.full(Y.shape[1], 0.5)
    for c in range(Y.shape[1]):
        s = scores[(Y[:, c] < 0) & reached, c]
        if s.size:
            out[c] = float(np.quantile(s, 1.0 - share[c]))
    return out


def _embedding_heads(X: np.ndarray, Y: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """(m, C) P(applies) of ``rows`` (all when None) from one two-class head per class on the
    embeddings (``loop.predict.embedding_head``: prototypes up to 5 decisions of a value, then a
    logistic regression), fitted on the class's decisions (class 1 = applies, 0 = does not)."""
    from .predict import embedding_head

    head = embedding_head(X, 2)
    m = Y.shape[0] if rows is None else len(rows)
    out = np.empty((m, Y.shape[1]), np.float32)
    for c in range(Y.shape[1]):
        y = Y[:, c].astype(np.int64)
        if not (y >= 0).any():
            out[:, c] = 0.5
        elif (y == 1).all(where=y >= 0) or (y == 0).all(where=y >= 0):
            out[:, c] = float(y[y >= 0][0])  # one value only: a head has nothing to separate
        else:
            out[:, c] = head(y, rows)[:, 1]
    return out


def _nll(scores: np.ndarray, decisions: np.ndarray) -> float:
    """Mean negative log-likelihood of the decided pairs of ``decisions`` under ``scores``."""
    d = decisions >= 0
    p = np.clip(scores[d].astype(np.float64), 1e-4, 1 - 1e-4)
    y = decisions[d]
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean()) if y.size else 0.0


def _fold_keys(Y: np.ndarray) -> np.ndarray:
    """(n,) a class per decided item for the folds: its rarest applying class (C when none),
    -1 undecided: dealt round-robin by ``fold_ids``, no fold hides every positive of a class."""
    n, C = Y.shape
    pos = Y == 1
    count = pos.sum(axis=0)  # (C,)
    rank = np.where(pos, count[None, :], np.iinfo(np.int64).max)  # (n, C)
    key = np.where(pos.any(axis=1), rank.argmin(axis=1), C)
    return np.where((Y >= 0).any(axis=1), key, -1)


def predict_multilabel(graph: KnnGraph, Y, *, X: np.ndarray | None = None, seed: int = 0,
                       affinity: sp.spmatrix | None = None, temperature: float | str = "auto",
                       folds: int = FOLDS, n_iter: int = N_ITER, head_weight: float | str = "auto",
                       positive_share: np.ndarray | None = None) -> MultiLabelPrediction:
    """Calibrated P(class c applies) for every (item, class) from the decisions ``Y`` (n, C).

    ``graph``: the project's kNN graph (its affinity is built once here with ``temperature``
    unless ``affinity``, the precomputed S of the same graph, is given). ``X`` (n, d): the
    embeddings; when given, one head per class on them is averaged in at ``head_weight``
    (``"auto"``: the weight of HEAD_WEIGHTS whose calibrated held-out decisions are likeliest;
    0 = propagation only, 1 = the head only). ``folds`` cross-fitting folds for the held-out
    scores; ``seed`` their random split. ``positive_share`` (C,): the share of items each class
    applies to, when known better than from the decisions (e.g. among items labeled at random
    while others were chosen actively); it sets the class mass of the propagation and the bars
    of the predicted label sets (:meth:`MultiLabelPrediction.labels`, :func:`share_thresholds`).
    Default: the add-one smoothed share of "applies" among each class's decisions.
    """
    if not isinstance(graph, KnnGraph):
        raise ValidationError(f"predict_multilabel needs the project's KnnGraph; got {type(graph).__name__}")
    Y = check_decisions(Y, graph.n)
    if X is not None:
        from ..graph import normalize_rows

        X = normalize_rows(X)
        if X.shape[0] != graph.n:
            raise ValidationError(f"X has {X.shape[0]} rows but the graph has {graph.n} items")
    if not (head_weight == "auto" or (isinstance(head_weight, (int, float)) and 0.0 <= head_weight <= 1.0)):
        raise ValidationError(f'head_weight must be "auto" or a number in [0, 1]; got {head_weight!r}')
    S = affinity_matrix(graph, temperature=temperature) if affinity is None else affinity
    if S.shape != (graph.n, graph.n):
        raise ValidationError(f"affinity has shape {S.shape}; expected ({graph.n}, {graph.n}) like the graph")
    n, C = Y.shape
    if positive_share is not None:
        positive_share = np.asarray(positive_share, dtype=np.float64)
        if positive_share.shape != (C,) or not ((positive_share > 0) & (positive_share < 1)).all():
            raise ValidationError(f"positive_share must be ({C},) shares strictly between 0 and 1, one per class")
    use_head = X is not None and head_weight != 0 and (Y >= 0).any()
    raw, reached = propagate_multilabel(S, Y, n_iter=n_iter, share=positive_share)
    key = _fold_keys(Y)
    decided = np.flatnonzero(key >= 0)

    def fit_predict(_key_hidden, hold):  # (m, C or 2C) raw scores of ``hold`` without their decisions
        Yh = Y.copy()
        Yh[hold] = -1
        P = propagate_multilabel(S, Yh, n_iter=n_iter, share=positive_share)[0][hold]
        return np.hstack([P, _embedding_heads(X, Yh, hold)]) if use_head else P

    rows, Q = heldout_proba(key, decided, 2 * C if use_head else C, fit_predict, folds=folds, seed=seed)
    w = 0.0
    if use_head:
        Qp, Qh = Q[:, :C], Q[:, C:]
        weights = HEAD_WEIGHTS if head_weight == "auto" else (float(head_weight),)
        D = Y[rows]
        # the likeliest weight, each mixture calibrated on the held-out decisions first
        w = min(weights, key=lambda v: _nll(fit_calibration((1 - v) * Qp + v * Qh, D)((1 - v) * Qp + v * Qh), D))
        if w > 0:
            raw = (1 - w) * raw + w * _embedding_heads(X, Y)
            reached = np.ones(n, bool)  # the head reaches every item
        Q = (1 - w) * Qp + w * Qh
    cal = fit_calibration(Q, Y[rows])
    scores = cal(raw)
    scores = np.where(Y >= 0, Y.astype(np.float32), scores).astype(np.float32)  # decided pairs: the decision
    H = cal(Q) if len(rows) else np.zeros((0, C), np.float32)
    thresholds = share_thresholds(scores, Y, reached, _positive_share(Y) if positive_share is None else positive_share)
    return MultiLabelPrediction(scores=scores, reached=reached, raw=raw.astype(np.float32), calibration=cal,
                                heldout_rows=rows.astype(np.int64), heldout_scores=H,
                                heldout_decisions=Y[rows].copy(), thresholds=thresholds, head_weight=float(w))


# --------------------------------------------------------------------------- certification


@dataclass
class ClassBar:
    """One class's auto-labeling bars: accept "applies" at ``score >= upper``, "does not apply"
    at ``score <= lower``; None = that side cannot be certified (``reason`` says why and what
    would change it). The precision fields describe the "applies" side; ``negative_*`` the other."""

    cls: int
    upper: float | None
    lower: float | None
    checked: int                      # held-out decisions of this class (both values)
    precision_estimate: float         # "applies" side: share of held-out decisions >= upper that apply
    precision_lower_bound: float      # its one-sided lower bound (0 when not certified)
    more_needed: int | None           # "applies" side: about this many more randomly labeled items
    reason: str
    negative_precision_estimate: float = float("nan")
    negative_precision_lower_bound: float = 0.0
    negative_more_needed: int | None = None
    name: str = ""

    def to_dict(self) -> dict:
        f = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {"class": self.cls, "name": self.name, "upper": f(self.upper), "lower": f(self.lower),
                "checked": self.checked, "precision_estimate": f(self.precision_estimate),
                "precision_lower_bound": f(self.precision_lower_bound), "more_needed": self.more_needed,
                "negative_precision_estimate": f(self.negative_precision_estimate),
                "negative_precision_lower_bound": f(self.negative_precision_lower_bound),
                "negative_more_needed": self.negative_more_needed, "reason": self.reason}


@dataclass
class _Side:
    bar: float | None
    k: int
    m: int
    lower_bound: float
    more_items: int | None
    sentence: str


def _certify_side(conf_checks: np.ndarray, correct: np.ndarray, conf_pool: np.ndarray, *, what: str,
                  name: str, target: float, level: float) -> _Side:
    """The loosest bar on ``conf`` (higher = more sure of ``what``) whose held-out checks pass.

    ``conf_checks`` (m,) / ``correct`` (m,) the held-out decisions; ``conf_pool`` the undecided
    pairs the bar would apply to (coverage is measured on them, as loop.certify does)."""
    need_n = min_verified_count(target, level)
    both = np.r_[conf_pool, conf_checks]
    cov = coverage_of(both, np.r_[np.ones(conf_pool.size, bool), np.zeros(conf_checks.size, bool)])
    cov = cov[conf_pool.size:]  # (m,) share of the undecided pairs at least as sure as each check
    # every held-out decision counts as drawn from the whole population (region 1)
    rho, k, m, lb = _largest_region(cov, np.ones_like(cov), correct, target=target, level=level, min_count=need_n)
    if rho > 0:
        bar = float(conf_checks[cov <= rho + 1e-12].min())
        return _Side(bar, k, m, lb, None, "")
    # not certified: how far is the region the calibration expects to reach the target?
    t = candidate_threshold(conf_pool, target_precision=target) if conf_pool.size else math.inf
    share = float((conf_pool >= t).mean()) if conf_pool.size else 0.0  # a random new item lands there this often
    if math.isfinite(t):
        inside = conf_checks >= t
        kc, mc = int(correct[inside].sum()), int(inside.sum())
        need = more_needed(kc, mc, target_precision=target, confidence_level=level, cap=2000)
        if need is None:
            return _Side(None, kc, mc, 0.0, None,
                         f"class {name}: {mc} verified decisions where '{what}' would be accepted, {kc} right: "
                         f"they do not reach {target:.0%}; label more items and refresh")
        if share * conf_pool.size >= need:  # the region holds enough items to check
            items = int(math.ceil(need / share))
            return _Side(None, kc, mc, 0.0, items,
                         f"class {name}: {mc} verified decisions where '{what}' would be accepted, at least "
                         f"{mc + need} are needed for {target:.0%} — label about {items} more items at random")
    m_all = int(conf_checks.size)
    if m_all < need_n:  # whatever the predictions, fewer decisions than any certificate needs
        return _Side(None, 0, 0, 0.0, need_n - m_all,
                     f"class {name}: {m_all} verified decisions, at least {need_n} are needed to accept "
                     f"'{what}' at {target:.0%} — label at least {need_n - m_all} more items")
    return _Side(None, 0, 0, 0.0, None,
                 f"class {name}: no undecided item is expected to be '{what}' with {target:.0%} precision "
                 "yet; label more items and refresh")


def certify_multilabel(pred: MultiLabelPrediction, Y, *, target_precision: float = DEFAULT_TARGET,
                       level: float = DEFAULT_LEVEL, random_rows: np.ndarray | None = None,
                       class_names: list[str] | None = None) -> list[ClassBar]:
    """Per class, the bars that held-out human decisions certify at ``target_precision``.

    ``random_rows``: (n,) bool, items whose decisions were drawn uniformly at random; only their
    decisions count (default: every held-out decision, honest when labels were not chosen actively).
    """
    Y = _check_prediction(pred, Y)
    for label, v in (("target_precision", target_precision), ("level", level)):
        if not 0.0 < float(v) < 1.0:
            raise ValidationError(f"{label} must be strictly between 0 and 1, got {v!r}")
    n, C = Y.shape
    if class_names is not None and len(class_names) != C:
        raise ValidationError(f"class_names has {len(class_names)} names for {C} classes")
    rows = pred.heldout_rows
    keep = np.ones(rows.size, bool)
    if random_rows is not None:
        rr = np.asarray(random_rows, dtype=bool)
        if rr.shape != (n,):
            raise ValidationError(f"random_rows must be a ({n},) bool array, one entry per item")
        keep = rr[rows]
    H = pred.heldout_scores[keep].astype(np.float64)  # (m, C)
    D = pred.heldout_decisions[keep]
    bars = []
    for c in range(C):
        name = class_names[c] if class_names is not None else str(c)
        dec = D[:, c] >= 0
        h, d = H[dec, c], D[dec, c]
        pool = pred.scores[(Y[:, c] < 0) & pred.reached, c].astype(np.float64)
        up = _certify_side(h, d == 1, pool, what="applies", name=name, target=target_precision, level=level)
        lo = _certify_side(1.0 - h, d == 0, 1.0 - pool, what="does not apply", name=name,
                           target=target_precision, level=level)
        reason = "; ".join(s for s in (up.sentence, lo.sentence) if s) or (
            f"class {name}: both sides certified on {int(dec.sum())} held-out decisions")
        bars.append(ClassBar(
            cls=c, name=name, upper=up.bar, lower=None if lo.bar is None else 1.0 - lo.bar, checked=int(dec.sum()),
            precision_estimate=up.k / up.m if up.m and up.bar is not None else float("nan"),
            precision_lower_bound=up.lower_bound, more_needed=up.more_items, reason=reason,
            negative_precision_estimate=lo.k / lo.m if lo.m and lo.bar is not None else float("nan"),
            negative_precision_lower_bound=lo.lower_bound, negative_more_needed=lo.more_items))
    return bars


def accepted_pairs(pred: MultiLabelPrediction, Y, bars: list[ClassBar]) -> np.ndarray:
    """(m, 3) int64 rows ``(item_row, class, value)`` the machine may decide (value 1 applies,
    0 does not): undecided pairs (Y == -1) of reached items past their class's bar."""
    Y = _check_prediction(pred, Y)
    out = []
    for b in bars:
        c = b.cls
        if not 0 <= c < Y.shape[1]:
            raise ValidationError(f"a bar names class {c}, but the prediction has {Y.shape[1]} classes")
        s = pred.scores[:, c]
        open_ = (Y[:, c] < 0) & pred.reached
        yes = open_ & (s >= b.upper) if b.upper is not None else np.zeros_like(open_)
        no = open_ & (s <= b.lower) if b.lower is not None else np.zeros_like(open_)
        both = yes & no  # bars that overlap decide nothing there
        for mask, v in ((yes & ~both, 1), (no & ~both, 0)):
            r = np.flatnonzero(mask)
            out.append(np.column_stack([r, np.full(r.size, c), np.full(r.size, v)]))
    if not out:
        return np.zeros((0, 3), np.int64)
    return np.concatenate(out).astype(np.int64)


# --------------------------------------------------------------------------- active learning


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return -(p * np.log(p) + (1 - p) * np.log1p(-p))


def choose_multilabel(pred: MultiLabelPrediction, Y, n: int, *, X: np.ndarray | None = None, seed: int = 0,
                      bars: list[ClassBar] | None = None) -> np.ndarray:
    """``n`` item rows for people to label next, most useful first (fewer when fewer items have
    an undecided pair): the summed binary entropy of each item's undecided pairs (pairs a bar
    in ``bars`` would accept count 0), one per k-means cluster of the top ``DIVERSITY_FACTOR * n``
    when embeddings ``X`` (n, d) are given. Items whose every class is decided are never returned."""
    Y = _check_prediction(pred, Y)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValidationError(f"n must be a whole number of items >= 1, got {n!r}")
    if X is not None and np.asarray(X).shape[0] != Y.shape[0]:
        raise ValidationError(f"X has {np.asarray(X).shape[0]} rows but there are {Y.shape[0]} items")
    open_pairs = Y < 0  # (n, C)
    if bars is not None and bars:
        acc = accepted_pairs(pred, Y, bars)
        open_pairs = open_pairs.copy()
        open_pairs[acc[:, 0], acc[:, 1]] = False
    U = _binary_entropy(pred.scores) * open_pairs  # (n, C) uncertainty of the pairs still open
    score = U.sum(axis=1)  # (n,)
    eligible = np.flatnonzero((Y < 0).any(axis=1))  # some class undecided
    if eligible.size == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(seed)
    order = eligible[np.lexsort((rng.random(eligible.size), -score[eligible]))]  # best first, ties random
    if X is None or order.size <= n:
        return order[:n].astype(np.int64)
    from ..select.base import Selection, validate_inputs
    from ..select.diversity import diversify

    inputs = validate_inputs(strategy="multilabel", n=int(n), labeled=np.flatnonzero(~(Y < 0).any(axis=1)),
                             unlabeled=eligible, embeddings=np.asarray(X), seed=seed)

    def base(inp):  # the top inp.n by summed entropy
        top = order[:inp.n]
        return Selection(top, score[top], ["uncertain classes"] * top.size, "multilabel-entropy")

    return diversify(base, inputs, factor=DIVERSITY_FACTOR).indices.astype(np.int64)


# --------------------------------------------------------------------------- audit


def audit_multilabel(pred: MultiLabelPrediction, Y, *, label_accuracy: float | np.ndarray = DEFAULT_LABEL_ACCURACY
                     ) -> np.ndarray:
    """(m, 3) float64 rows ``(item_row, class, p_wrong)``, p_wrong descending, for the human
    decisions the held-out prediction disagrees with (it gives the other value more than even odds).

    With q = the held-out P(the other value) and a = ``label_accuracy`` (a number, or (n,) per
    item: P(a person's decision is right), e.g. from gold items),
    ``p_wrong = q (1 - a) / (q (1 - a) + (1 - q) a)``: Bayes with the prior that people are usually right."""
    Y = _check_prediction(pred, Y)
    n = Y.shape[0]
    a = np.broadcast_to(np.asarray(label_accuracy, dtype=np.float64), (n,)) if np.ndim(label_accuracy) == 0 \
        else np.asarray(label_accuracy, dtype=np.float64)
    if a.shape != (n,) or ((a <= 0) | (a >= 1)).any():
        raise ValidationError(f"label_accuracy must be a probability in (0, 1) or ({n},) of them")
    rows = pred.heldout_rows
    D = Y[rows]  # the decisions as they are now (an edited decision is audited as it stands)
    r, c = np.nonzero(D >= 0)
    p = np.clip(pred.heldout_scores[r, c].astype(np.float64), _EPS, 1 - _EPS)
    q = np.where(D[r, c] == 1, 1.0 - p, p)  # (m,) held-out P(the other value)
    ai = a[rows[r]]
    p_wrong = q * (1 - ai) / (q * (1 - ai) + (1 - q) * ai)
    flag = q > 0.5
    out = np.column_stack([rows[r][flag], c[flag], p_wrong[flag]]).astype(np.float64)
    return out[np.argsort(-out[:, 2], kind="stable")] if out.size else np.zeros((0, 3))

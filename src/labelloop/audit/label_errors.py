"""Suspected label errors: which given labels disagree with the data, and what they should be.

Two signals, both computed WITHOUT the item's own label, so they are evidence about it:

- graph: the given labels spread over the kNN graph without clamping
  (``LabelPropagation(alpha=...)``, Y <- alpha S Y + (1 - alpha) Y0), read out from the
  neighbours only: ``q_i = normalise((S F)_i)``, i.e. the fixed point minus the item's own
  ``(1 - alpha) Y0_i`` term (at the fixed point S F = (F - (1 - alpha) Y0) / alpha).
- classifier: out-of-fold probabilities of a head trained on the embeddings (k-fold logistic
  regression), with confident learning (Northcutt et al. 2021, "Confident Learning: Estimating
  Uncertainty in Dataset Labels") written here: per-class thresholds, confident joint, noise
  rates. (cleanlab is AGPL; it is only ever imported by the benchmark, never here.)

Combined (:func:`audit_labels`): ``p = (q + p_clf) / 2`` estimates P(given label = c | x)
from everything but the item's label. The confident joint of ``p`` estimates the noise matrix
``N[c, l] = P(given l | true c)``; then per item

    pi_i  = project(sharpen(p_i, beta) N^-1)          # P(true = c | x): undo the label noise
    post_i(c) ∝ pi_i(c) N[c, g_i]                      # Bayes with the given label g_i
    flag  <=> argmax post_i != g_i ;  score_i = 1 - post_i(g_i)

``beta`` (the sharpness of p) is chosen by maximum likelihood of the given labels,
``sum_i log sum_c pi_i(c) N[c, g_i]``, so the rule adapts to the noise level and to how
separable the classes are (benchmarks/results/label_noise.md has the measurements behind
every default here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from labelloop.errors import ValidationError
from labelloop.graph import GRAPH_K, KnnGraph

__all__ = [
    "LabelIssue",
    "AuditResult",
    "ConfidentJoint",
    "graph_label_distribution",
    "out_of_fold_probabilities",
    "confident_joint",
    "confident_learning_issues",
    "noise_aware_posterior",
    "audit_labels",
    "LabelAudit",
    "smooth_labels",
    "decoy_scores_of",
    "two_groups_p_wrong",
]

#: graph signal defaults, benchmarks/label_noise.py (digits + Fashion-MNIST, 10-80 % noise):
#: k = 10 as Bai et al.; T = 0.05 is smoother than the paper's 0.01-0.02 (better with noisy seeds); alpha = 0.9 keeps
#: the neighbourhood local; 20 steps as Bai et al.
# GRAPH_K = 10 neighbours used (the shared graph is truncated to this if it is larger): set in
# labelloop.graph, which sizes the shared graph by it
GRAPH_TEMPERATURE = 0.05
GRAPH_ALPHA = 0.9
GRAPH_STEPS = 20
#: weight of the full (class-pair) noise matrix against the symmetric one with the same noise
#: rate; 1.0 fits class-pair flips best, 0.0 uniform noise; 0.75 measured best over both.
NOISE_MATRIX_SHRINKAGE = 0.75
#: sharpness exponents tried by the maximum-likelihood calibration, 2^-2 .. 2^4.
CALIBRATION_BETAS = tuple(float(b) for b in 2.0 ** np.linspace(-2, 4, 25))
#: smoothing: the self term weighs (1 - alpha) * trust against the neighbours. 0.95 measured
#: best on average and in the worst case over 10-80 % symmetric and 40 % class-pair noise
#: (0.9 keeps more of the given labels at low noise but collapses at 80 %; 0.99 oversmooths
#: at 10-50 % on Fashion-MNIST), benchmarks/results/label_noise.md.
SMOOTH_ALPHA = 0.95

#: human labels' P(wrong) is calibrated on planted decoy labels (``decoy_scores_of``): this
#: share of them per round, at most MAX_DECOYS in all, from MIN_CALIBRATION_LABELS human labels on
DECOY_SHARE = 0.05
MAX_DECOYS = 1000
MIN_CALIBRATION_LABELS = 10
#: items x rounds of the decoy audits (each round one more graph propagation): 20 rounds up to
#: 100,000 items, 2 from 1M
DECOY_ITEM_BUDGET = 2_000_000

_FLOOR = 1e-4  # smallest probability kept after undoing the noise (then renormalised)


# --------------------------------------------------------------------------- validation


def _check_labels(labels: np.ndarray, n: int, n_classes: int | None) -> tuple[np.ndarray, int]:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValidationError(f"labels must have shape ({n},), one per item; got {y.shape}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
            raise ValidationError("labels must be integer class ids (-1 = no label)")
    y = y.astype(np.int64)
    if n_classes is None:
        if not (y >= 0).any():
            raise ValidationError("no item has a label: pass n_classes= or label some items")
        n_classes = int(y.max()) + 1
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValidationError(f"n_classes must be an integer >= 2; got {n_classes!r}")
    bad = (y < -1) | (y >= n_classes)
    if bad.any():
        raise ValidationError(
            f"labels hold class id {int(y[bad][0])}; ids must be -1 (no label) or in [0, {n_classes})"
        )
    return y, int(n_classes)


def _check_probs(P: np.ndarray, n: int, C: int, what: str) -> np.ndarray:
    P = np.asarray(P, dtype=np.float64)
    if P.shape != (n, C):
        raise ValidationError(f"{what} must have shape ({n}, {C}); got {P.shape}")
    if not np.all(np.isfinite(P)) or (P < 0).any():
        raise ValidationError(f"{what} must be finite and non-negative")
    s = P.sum(axis=1, keepdims=True)  # (n, 1)
    return np.where(s > 0, P / np.where(s > 0, s, 1.0), 1.0 / C)


def _truncate(graph: KnnGraph, k: int | None) -> KnnGraph:
    if not isinstance(graph, KnnGraph):
        raise ValidationError(f"graph must be a KnnGraph; got {type(graph).__name__}")
    if k is None or k >= graph.k:
        return graph
    return graph.truncate(k)


def _normalise_rows(A: np.ndarray) -> np.ndarray:
    s = A.sum(axis=1, keepdims=True)
    return np.where(s > 0, A / np.where(s > 0, s, 1.0), 1.0 / A.shape[1])


# --------------------------------------------------------------------------- graph signal


def graph_label_distribution(
    graph: KnnGraph,
    labels: np.ndarray,
    n_classes: int | None = None,
    *,
    temperature: float = GRAPH_TEMPERATURE,
    alpha: float = GRAPH_ALPHA,
    n_iter: int = GRAPH_STEPS,
    exclude_self: bool = True,
    sample_weight: np.ndarray | None = None,
    k: int | None = GRAPH_K,
) -> np.ndarray:
    """Class distribution per item from the given labels spread over the graph, unclamped.

    ``exclude_self=True`` reads the distribution from the neighbours only, ``(S F)_i``, so an
    item's own label does not vote for itself; ``False`` returns the spreading result ``F``
    itself (own label as a prior of weight ``1 - alpha``). Returns (n, C) float64, rows sum
    to 1 (uniform where no label is within reach). ``k``: neighbours used (None: all of the graph's).
    """
    from labelloop.propagate import LabelPropagation, affinity_matrix

    graph = _truncate(graph, k)
    y, C = _check_labels(labels, graph.n, n_classes)
    S = affinity_matrix(graph, temperature=temperature)  # (n, n)
    lp = LabelPropagation(temperature=temperature, alpha=alpha, n_iter=n_iter, class_mass=False)
    lp.fit(S, y, n_classes=C, sample_weight=sample_weight)
    if not exclude_self:
        return lp.label_distributions_.astype(np.float64)
    # neighbours' vote: (S F)_i = (F_i - (1 - alpha) Y0_i) / alpha at the fixed point
    Q = np.asarray(S @ lp.Y_, dtype=np.float64)  # (n, C)
    return _normalise_rows(np.maximum(Q, 0.0))


# --------------------------------------------------------------------------- classifier signal


def out_of_fold_probabilities(
    embeddings: np.ndarray,
    labels: np.ndarray,
    n_classes: int | None = None,
    *,
    n_folds: int = 5,  # cleanlab's default cross-validation
    seed: int = 0,
    max_iter: int = 1000,
) -> np.ndarray:
    """Out-of-fold P(label | x) from k-fold logistic regression on the labeled items.

    Every labeled item is predicted by a model that never saw it; unlabeled items (-1) are
    predicted by the average of the fold models. Folds come from
    :func:`labelloop.loop.heldout.fold_ids` (stratified). Returns (n, C) float64.
    """
    from sklearn.linear_model import LogisticRegression

    from ..loop.heldout import fold_ids

    X = np.asarray(embeddings)
    if X.ndim != 2:
        raise ValidationError(f"embeddings must be a 2-D array (n, dim); got shape {X.shape}")
    y, C = _check_labels(labels, X.shape[0], n_classes)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise ValidationError(f"n_folds must be an integer >= 2; got {n_folds!r}")
    lab = np.flatnonzero(y >= 0)
    if lab.size < n_folds:
        raise ValidationError(f"{lab.size} labeled items cannot make {n_folds} folds; pass fewer n_folds")
    # the loop's one k-fold helper, stratified: each class dealt over the folds; a class with a
    # single label is never held out (it is predicted like the unlabeled items)
    fid = fold_ids(y[lab], n_folds, seed=seed, keep_one_per_class=True)
    P = np.zeros((X.shape[0], C))  # (n, C)
    rest = np.concatenate([np.flatnonzero(y < 0), lab[fid < 0]])  # averaged over the fold models
    for f in range(n_folds):
        te, tr = lab[fid == f], lab[fid != f]
        classes = np.unique(y[tr])
        if classes.size == 1:  # a fold with one class: that class is certain
            P[te, classes[0]] = 1.0
            if rest.size:
                P[rest, classes[0]] += 1.0 / n_folds
            continue
        model = LogisticRegression(max_iter=max_iter).fit(X[tr], y[tr])
        if te.size:
            P[np.ix_(te, model.classes_)] = model.predict_proba(X[te])
        if rest.size:
            P[np.ix_(rest, model.classes_)] += model.predict_proba(X[rest]) / n_folds
    return P


@dataclass
class ConfidentJoint:
    """Confident learning counts (Northcutt et al. 2021) for labels ``g`` and probabilities p."""

    thresholds: np.ndarray  # (C,) t_j = mean p_ij over items labeled j (inf: class has none)
    counts: np.ndarray  # (C, C) [given, true] raw confident counts
    joint: np.ndarray  # (C, C) [given, true] calibrated: row g sums to the number labeled g
    noise_matrix: np.ndarray  # (C, C) [true, given] P(given | true), rows sum to 1
    noise_rate: float  # estimated share of wrong labels, 1 - trace(joint) / n

    def symmetric_noise_matrix(self) -> np.ndarray:
        """The uniform-noise matrix with the same noise rate: 1 - eps on the diagonal."""
        C = self.joint.shape[0]
        eps = min(max(self.noise_rate, 0.0), 1.0 - 1.0 / C)
        return np.full((C, C), eps / (C - 1)) + np.eye(C) * (1.0 - eps - eps / (C - 1))


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray, *, smoothing: float = 1e-3) -> ConfidentJoint:
    """Per-class thresholds, confident joint and noise matrix of ``labels`` given ``pred_probs``.

    ``t_j = mean_{i: g_i = j} p_ij``; item i is confidently class ``j* = argmax_{j: p_ij >= t_j}
    p_ij`` (not counted if no class reaches its threshold); ``counts[g_i, j*] += 1``; each row
    is rescaled to the number of items with that given label. Items with label -1 are ignored.
    ``noise_matrix[c, l] ∝ joint[l, c] + smoothing``.
    """
    y = np.asarray(labels, dtype=np.int64)
    P = np.asarray(pred_probs, dtype=np.float64)
    C = P.shape[1]
    lab = y >= 0
    y, P = y[lab], P[lab]
    n_per = np.bincount(y, minlength=C).astype(np.float64)  # (C,)
    sums = np.zeros(C)
    np.add.at(sums, y, P[np.arange(len(y)), y])
    thresholds = np.where(n_per > 0, sums / np.maximum(n_per, 1), np.inf)  # (C,)
    above = P >= thresholds[None, :] - 1e-12  # (n, C) tolerate float rounding at the mean
    j_star = np.where(above, P, -np.inf).argmax(axis=1)  # (n,)
    has = above.any(axis=1)
    counts = np.zeros((C, C))  # (C, C) [given, true]
    np.add.at(counts, (y[has], j_star[has]), 1.0)
    row = counts.sum(axis=1, keepdims=True)  # (C, 1)
    joint = np.where(row > 0, counts / np.maximum(row, 1) * n_per[:, None], 0.0)
    # a label with no confident item at all: assume it is right (diagonal)
    empty = (row[:, 0] == 0) & (n_per > 0)
    joint[empty, empty.nonzero()[0]] = n_per[empty]
    N = joint.T + smoothing  # (C, C) [true, given]
    N /= N.sum(axis=1, keepdims=True)
    n = max(float(n_per.sum()), 1.0)
    return ConfidentJoint(thresholds, counts, joint, N, float(1.0 - np.trace(joint) / n))


def confident_learning_issues(
    labels: np.ndarray, pred_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Confident learning on one probability source: (flag mask, normalized-margin score).

    Prune by noise rate (Northcutt et al. 2021, sec. 3.2): for every off-diagonal cell
    (given i, true j) of the calibrated confident joint, flag the ``round(joint[i, j])`` items
    labeled i with the largest margin ``p_j - p_i``; an item whose argmax is its given label is
    never flagged. The score is ``max_{c != g} p_c - p_g`` (higher = more suspicious).
    """
    y = np.asarray(labels, dtype=np.int64)
    P = np.asarray(pred_probs, dtype=np.float64)
    n, C = P.shape
    cj = confident_joint(y, P)
    flags = np.zeros(n, dtype=bool)
    for i in range(C):
        members = np.flatnonzero(y == i)
        if members.size == 0:
            continue
        for j in range(C):
            k = int(round(cj.joint[i, j]))
            if i == j or k == 0:
                continue
            margin = P[members, j] - P[members, i]  # (m,)
            top = members[np.argsort(-margin, kind="stable")[:k]]
            flags[top] = True
    flags &= P.argmax(axis=1) != y
    flags &= y >= 0
    other = P.copy()
    lab = np.flatnonzero(y >= 0)
    other[lab, y[lab]] = -np.inf
    score = np.where(y >= 0, other.max(axis=1) - P[np.arange(n), np.maximum(y, 0)], np.nan)
    return flags, score


# --------------------------------------------------------------------------- combination


def _sharpen(P: np.ndarray, beta: float) -> np.ndarray:
    # p_c^beta / sum_c' p_c'^beta, in log space
    L = beta * np.log(np.maximum(P, 1e-12))  # (n, C)
    L -= L.max(axis=1, keepdims=True)
    E = np.exp(L)
    return E / E.sum(axis=1, keepdims=True)


def _undo_noise(P: np.ndarray, N_inv: np.ndarray) -> np.ndarray:
    # P(given | x) = P(true | x) N  =>  P(true | x) = P(given | x) N^-1, projected to the simplex
    return _normalise_rows(np.maximum(P @ N_inv, _FLOOR))


def noise_aware_posterior(
    labels: np.ndarray,
    probs: np.ndarray,
    noise_matrix: np.ndarray,
    *,
    betas: Iterable[float] = CALIBRATION_BETAS,
    label_accuracy: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """P(true class | x, given label) per labeled item, and the calibrated sharpness beta.

    ``label_accuracy``: (n,) prior probability that each given label is right (NaN: none).
    Where it is given, the item's own likelihood is that prior instead of the dataset's
    estimated noise matrix: ``P(given g | true c) = r`` if c = g, else ``(1 - r) / (C - 1)``;
    people are usually right, and a noise rate estimated from the data (12.5 % on clean labels
    in one case) would otherwise make correct human labels look like certain errors.

    ``probs`` estimate P(given label | x) without the item's own label; ``noise_matrix`` is
    ``N[c, l] = P(given l | true c)``. See the module docstring for the formulas. Rows of
    unlabeled items are ``project(probs N^-1)`` (no given label to combine).
    """
    y = np.asarray(labels, dtype=np.int64)
    P = np.asarray(probs, dtype=np.float64)
    N = np.asarray(noise_matrix, dtype=np.float64)
    N_inv = np.linalg.pinv(N)  # (C, C)
    lab = np.flatnonzero(y >= 0)
    like = N[:, y[lab]].T  # (m, C) N[c, g_i]
    best = (-np.inf, 1.0, None)
    for beta in betas:
        pi = _undo_noise(_sharpen(P[lab], beta), N_inv)  # (m, C)
        # log-likelihood of the given labels: sum_i log sum_c pi_i(c) N[c, g_i]
        ll = float(np.log(np.maximum((pi * like).sum(axis=1), 1e-300)).sum())
        if ll > best[0]:
            best = (ll, float(beta), pi)
    _, beta, pi_lab = best
    post = _undo_noise(_sharpen(P, beta), N_inv)  # (n, C)
    if lab.size:
        if label_accuracy is not None:
            r = np.asarray(label_accuracy, dtype=np.float64)[lab]  # (m,)
            has = np.isfinite(r)
            C = N.shape[0]
            prior_like = np.where(np.arange(C)[None, :] == y[lab][:, None], r[:, None],
                                  (1.0 - r[:, None]) / max(C - 1, 1))  # (m, C)
            like = np.where(has[:, None], prior_like, like)
        post[lab] = _normalise_rows(pi_lab * like)  # post_i(c) ∝ pi_i(c) P(given g_i | true c)
    return post, beta


# --------------------------------------------------------------------------- calibration


def decoy_scores_of(labels: np.ndarray, rows: np.ndarray, n_classes: int, score: Callable[[np.ndarray], np.ndarray],
                    *, seed: int = 0, share: float = DECOY_SHARE, max_decoys: int = MAX_DECOYS,
                    max_rounds: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Scores of planted wrong labels: ``(planted rows, their scores)``.

    In rounds, a share ``share`` of ``rows`` (at most ``max_decoys`` in all, each once) gets a
    uniformly drawn OTHER class and ``score(labels_with_decoys) -> (n,)`` is read at those rows.
    ``max_rounds`` caps the number of ``score`` calls (larger rounds then). A planted label
    passes through everything a real wrong label does (its echo in the graph,
    the confident joint, the calibrated sharpness), so its scores sample the score distribution
    of a wrong label on THIS dataset with THIS model."""
    rng = np.random.default_rng(seed)
    rows = rng.permutation(np.asarray(rows, dtype=np.int64))[:max_decoys]
    per_round = max(1, int(round(share * rows.size)))
    if max_rounds is not None:
        per_round = max(per_round, -(-rows.size // max(int(max_rounds), 1)))
    y = np.asarray(labels, dtype=np.int64)
    out = []
    for start in range(0, rows.size, per_round):
        batch = rows[start:start + per_round]
        yy = y.copy()
        yy[batch] = (y[batch] + rng.integers(1, n_classes, batch.size)) % n_classes
        out.append(np.asarray(score(yy))[batch])
    return rows, (np.concatenate(out) if out else np.zeros(0))


def two_groups_p_wrong(scores: np.ndarray, label_accuracy: np.ndarray, decoy_scores: np.ndarray) -> np.ndarray:
    """(m,) P(label wrong | its score): the two-groups rule (Efron 2008, local false discovery
    rate) with the wrong labels' score density f0 sampled by planted decoys.

    The observed scores have density ``f = r f1 + (1 - r) f0``; an item's P(wrong) is
    ``(1 - r_i) f0(s) / f(s)``, clipped to [0, 1]. The ratio f0 / f comes from a weighted
    isotonic regression (non-decreasing in the score) of "is a decoy" on the pooled scores,
    the decoys weighted to the same total as the observed labels: ``q = f0 / (f0 + f)``.
    Where correct labels often score like wrong ones (a weak model), f is large wherever f0
    is, and no label reaches a high P(wrong) on the model's say-so alone."""
    from sklearn.isotonic import IsotonicRegression

    s = np.asarray(scores, dtype=np.float64)
    d = np.asarray(decoy_scores, dtype=np.float64)
    r = np.asarray(label_accuracy, dtype=np.float64)
    if s.size == 0 or d.size == 0:
        return np.clip(s, 0.0, 1.0)
    z = np.concatenate([s, d])
    t = np.concatenate([np.zeros(s.size), np.ones(d.size)])
    w = np.concatenate([np.ones(s.size), np.full(d.size, s.size / d.size)])
    q = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(z, t, sample_weight=w).predict(s)
    ratio = q / np.maximum(1.0 - q, 1e-12)  # f0(s) / f(s)
    return np.clip((1.0 - r) * ratio, 0.0, 1.0)


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class LabelIssue:
    """One suspected label error. ``fingerprint`` identifies the evidence a person reviewed."""

    item: int
    given_label: int
    suggested_label: int
    score: float  # P(given label is wrong) under the combined model, in [0, 1]
    graph_score: float  # 1 - graph (neighbours') probability of the given label
    classifier_score: float  # 1 - out-of-fold classifier probability of the given label; NaN if none
    evidence: tuple[int, ...]  # nearest neighbours whose given label differs from this item's
    evidence_labels: tuple[int, ...]  # their given labels

    @property
    def fingerprint(self) -> tuple[int, int]:
        """``(given_label, suggested_label)``: the same flag again means the same evidence."""
        return (self.given_label, self.suggested_label)

    def as_dict(self) -> dict:
        return {
            "item": self.item,
            "given_label": self.given_label,
            "suggested_label": self.suggested_label,
            "score": self.score,
            "graph_score": self.graph_score,
            "classifier_score": self.classifier_score,
            "evidence": list(self.evidence),
            "evidence_labels": list(self.evidence_labels),
        }


@dataclass
class AuditResult:
    """Everything :func:`audit_labels` computed; ``issues`` is what a person should review."""

    issues: list[LabelIssue]  # flagged, most suspicious first, confirmed (item, label) pairs left out
    scores: np.ndarray  # (n,) P(given label wrong) per item; NaN for unlabeled items
    flagged: np.ndarray  # (n,) bool, before removing confirmed pairs
    suggested: np.ndarray  # (n,) argmax of the posterior (a label for unlabeled items too)
    posterior: np.ndarray  # (n, C) P(true class | everything)
    graph_proba: np.ndarray  # (n, C) neighbours' distribution of given labels
    classifier_proba: np.ndarray | None  # (n, C) out-of-fold probabilities, None without a head
    noise_matrix: np.ndarray  # (C, C) [true, given] estimate used
    noise_rate: float  # estimated share of wrong given labels
    beta: float  # calibrated sharpness
    n_confirmed_skipped: int = 0
    params: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- the audit


def _confirmed_pairs(confirmed) -> set[tuple[int, int]]:
    if confirmed is None:
        return set()
    if isinstance(confirmed, Mapping):
        items = confirmed.items()
    else:
        items = confirmed
    out = set()
    for pair in items:
        try:
            item, label = pair
            out.add((int(item), int(label)))
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"confirmed must hold (item, given_label) pairs or be a {{item: given_label}} dict; got {pair!r}"
            ) from exc
    return out


def _evidence(graph: KnnGraph, y: np.ndarray, i: int, n_evidence: int) -> tuple[tuple, tuple]:
    nbrs = graph.indices[i]  # (k,) most similar first
    nl = y[nbrs]
    keep = (nl >= 0) & (nl != y[i]) & (nbrs != i)
    nbrs, nl = nbrs[keep][:n_evidence], nl[keep][:n_evidence]
    return tuple(int(j) for j in nbrs), tuple(int(c) for c in nl)


def audit_labels(
    embeddings: np.ndarray | None,
    graph: KnnGraph,
    labels: np.ndarray,
    n_classes: int | None = None,
    *,
    confirmed: Iterable[tuple[int, int]] | Mapping[int, int] | None = None,
    classifier: str | np.ndarray = "logreg",
    temperature: float = GRAPH_TEMPERATURE,
    alpha: float = GRAPH_ALPHA,
    n_iter: int = GRAPH_STEPS,
    shrinkage: float = NOISE_MATRIX_SHRINKAGE,
    n_folds: int = 5,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    n_evidence: int = 10,
    k: int | None = GRAPH_K,
    label_accuracy: np.ndarray | None = None,
) -> AuditResult:
    """Find given labels that look wrong (see the module docstring for the method).

    ``embeddings``: (n, d) (L2-normalised) for the classifier head; may be None with
    ``classifier="none"``. ``labels``: (n,) given labels, -1 = none (those items still carry
    the graph but are not audited). ``classifier``: "logreg" (k-fold logistic regression),
    "none" (graph only, cheapest), or a precomputed (n, C) array of out-of-fold probabilities.
    ``confirmed``: (item, given_label) pairs a person already confirmed; such an item is not
    flagged again while its given label is unchanged (a flag's ``fingerprint`` records the
    given and suggested label it was raised with).
    """
    graph = _truncate(graph, k)
    n = graph.n
    y, C = _check_labels(labels, n, n_classes)
    if not 0.0 <= shrinkage <= 1.0:
        raise ValidationError(f"shrinkage must be in [0, 1]; got {shrinkage}")
    done = _confirmed_pairs(confirmed)
    Q = graph_label_distribution(
        graph, y, C, temperature=temperature, alpha=alpha, n_iter=n_iter, sample_weight=sample_weight, k=None
    )  # (n, C)
    if isinstance(classifier, str):
        if classifier == "none":
            P_clf = None
        elif classifier == "logreg":
            if embeddings is None:
                raise ValidationError('classifier="logreg" needs embeddings; pass them or classifier="none"')
            X = np.asarray(embeddings)
            if X.ndim != 2 or X.shape[0] != n:
                raise ValidationError(f"embeddings must have shape ({n}, dim) like the graph; got {X.shape}")
            P_clf = out_of_fold_probabilities(X, y, C, n_folds=n_folds, seed=seed)
        else:
            raise ValidationError(
                f'unknown classifier {classifier!r}; use "logreg", "none" or an (n, C) probability array'
            )
    else:
        P_clf = _check_probs(classifier, n, C, "classifier probabilities")
    if label_accuracy is not None:
        label_accuracy = np.asarray(label_accuracy, dtype=np.float64)
        if label_accuracy.shape != (n,) or (np.isfinite(label_accuracy)
                                             & ((label_accuracy <= 0) | (label_accuracy >= 1))).any():
            raise ValidationError(f"label_accuracy must be ({n},) probabilities in (0, 1) or NaN")

    def posterior(yy: np.ndarray, QQ: np.ndarray):
        # p = (q + p_clf) / 2: both estimate P(given label | x) without item i's own label
        P = QQ if P_clf is None else 0.5 * (QQ + P_clf)  # (n, C)
        cj = confident_joint(yy, P)
        N = shrinkage * cj.noise_matrix + (1.0 - shrinkage) * cj.symmetric_noise_matrix()  # (C, C)
        return (*noise_aware_posterior(yy, P, N, label_accuracy=label_accuracy), N, cj)  # (n, C), beta, ...

    post, beta, N, cj = posterior(y, Q)
    lab = y >= 0
    rows = np.arange(n)
    g = np.maximum(y, 0)
    suggested = post.argmax(axis=1)
    scores = np.where(lab, 1.0 - post[rows, g], np.nan)
    flagged = lab & (suggested != y)
    n_decoys = 0
    human = lab & np.isfinite(label_accuracy) if label_accuracy is not None else np.zeros(n, bool)
    if human.sum() >= MIN_CALIBRATION_LABELS:
        # P(wrong) calibrated on decoys: the same audit with wrong labels planted among the human ones
        def decoy_scores(yy: np.ndarray) -> np.ndarray:
            QQ = graph_label_distribution(graph, yy, C, temperature=temperature, alpha=alpha, n_iter=n_iter,
                                          sample_weight=sample_weight, k=None)
            pp = posterior(yy, QQ)[0]
            return 1.0 - pp[rows, np.maximum(yy, 0)]

        rounds = int(np.clip(DECOY_ITEM_BUDGET // n, 2, round(1 / DECOY_SHARE)))  # large graphs: fewer rounds
        planted, s0 = decoy_scores_of(y, np.flatnonzero(human), C, decoy_scores, seed=seed, max_rounds=rounds)
        n_decoys = planted.size
        # never more certain than the model itself: on a strong model a lone correct label among
        # decoy-like scores would otherwise get the density ratio of one point
        p_wrong = np.minimum(two_groups_p_wrong(scores[human], label_accuracy[human], s0), scores[human])  # (m,)
        h = np.flatnonzero(human)
        # the posterior rescaled to the calibrated P(wrong), the other classes in their proportions
        rest = post[h].copy()
        rest[np.arange(h.size), y[h]] = 0.0
        post[h] = _normalise_rows(rest) * p_wrong[:, None]
        post[h, y[h]] = 1.0 - p_wrong
        rest[np.arange(h.size), y[h]] = -1.0
        suggested[h] = np.where(p_wrong > 0.5, rest.argmax(axis=1), post[h].argmax(axis=1))
        scores[h] = p_wrong
        flagged[h] = p_wrong > 0.5
    graph_score = 1.0 - Q[rows, g]
    clf_score = 1.0 - P_clf[rows, g] if P_clf is not None else np.full(n, np.nan)
    order = np.flatnonzero(flagged)
    order = order[np.argsort(-scores[order], kind="stable")]
    issues, skipped = [], 0
    for i in order:
        if (int(i), int(y[i])) in done:
            skipped += 1
            continue
        ev, ev_labels = _evidence(graph, y, int(i), n_evidence)
        issues.append(
            LabelIssue(
                item=int(i),
                given_label=int(y[i]),
                suggested_label=int(suggested[i]),
                score=float(scores[i]),
                graph_score=float(graph_score[i]),
                classifier_score=float(clf_score[i]),
                evidence=ev,
                evidence_labels=ev_labels,
            )
        )
    return AuditResult(
        issues=issues,
        scores=scores,
        flagged=flagged,
        suggested=suggested,
        posterior=post,
        graph_proba=Q,
        classifier_proba=P_clf,
        noise_matrix=N,
        noise_rate=cj.noise_rate,
        beta=beta,
        n_confirmed_skipped=skipped,
        params={
            "classifier": classifier if isinstance(classifier, str) else "precomputed",
            "temperature": temperature,
            "alpha": alpha,
            "n_iter": n_iter,
            "shrinkage": shrinkage,
            "n_folds": n_folds,
            "seed": seed,
            "k": graph.k,
            "decoys": n_decoys,
        },
    )


class LabelAudit:
    """Configuration for :func:`audit_labels`: ``LabelAudit(classifier="none").run(X, graph, y)``."""

    def __init__(
        self,
        *,
        classifier: str = "logreg",
        temperature: float = GRAPH_TEMPERATURE,
        alpha: float = GRAPH_ALPHA,
        n_iter: int = GRAPH_STEPS,
        shrinkage: float = NOISE_MATRIX_SHRINKAGE,
        n_folds: int = 5,
        seed: int = 0,
        n_evidence: int = 10,
        k: int | None = GRAPH_K,
    ) -> None:
        self.classifier = classifier
        self.temperature = temperature
        self.alpha = alpha
        self.n_iter = n_iter
        self.shrinkage = shrinkage
        self.n_folds = n_folds
        self.seed = seed
        self.n_evidence = n_evidence
        self.k = k

    def run(
        self,
        embeddings: np.ndarray | None,
        graph: KnnGraph,
        labels: np.ndarray,
        n_classes: int | None = None,
        *,
        confirmed: Iterable[tuple[int, int]] | Mapping[int, int] | None = None,
        sample_weight: np.ndarray | None = None,
    ) -> AuditResult:
        return audit_labels(
            embeddings, graph, labels, n_classes,
            confirmed=confirmed, classifier=self.classifier, temperature=self.temperature,
            alpha=self.alpha, n_iter=self.n_iter, shrinkage=self.shrinkage,
            n_folds=self.n_folds, seed=self.seed, sample_weight=sample_weight,
            n_evidence=self.n_evidence, k=self.k,
        )


# --------------------------------------------------------------------------- robust labels


def smooth_labels(
    graph: KnnGraph,
    noisy_labels: np.ndarray,
    trust: np.ndarray | None = None,
    *,
    n_classes: int | None = None,
    temperature: float = GRAPH_TEMPERATURE,
    alpha: float = SMOOTH_ALPHA,
    n_iter: int = GRAPH_STEPS,
    k: int | None = GRAPH_K,
) -> np.ndarray:
    """Label distributions robust to label noise: the spreading variant, trust as sample weight.

    ``Y <- alpha S Y + (1 - alpha) Y0`` with ``Y0_i = trust_i * onehot(label_i)``: imported
    labels soft (trust ~1), human labels high (e.g. 100-1000: their own term outweighs the
    neighbourhood). Items labeled -1 get a distribution from their neighbours. Returns (n, C)
    float64 rows summing to 1 (argmax = the smoothed label). At low noise the noise-aware
    ``audit_labels(...).posterior`` keeps more correct labels (benchmarks/label_noise.py).
    """
    from labelloop.propagate import LabelPropagation

    graph = _truncate(graph, k)
    y, C = _check_labels(noisy_labels, graph.n, n_classes)
    if trust is not None:
        trust = np.asarray(trust, dtype=np.float64)
        if trust.shape != (graph.n,) or not np.all(np.isfinite(trust)) or (trust < 0).any():
            raise ValidationError(f"trust must be ({graph.n},) finite and >= 0; got shape {trust.shape}")
    lp = LabelPropagation(temperature=temperature, alpha=alpha, n_iter=n_iter, class_mass=False)
    lp.fit(graph, y, n_classes=C, sample_weight=trust)
    return lp.label_distributions_.astype(np.float64)

"""How well do the current embeddings separate the classes the humans labeled?

Four views of the labeled items, each cheap and usable with a handful of labels:

- cross-validated propagation accuracy: hide a fold of the labels, propagate the rest over
  the kNN graph as the loop does, score the hidden ones (Wilson interval) -- the verdict
  uses this one when a graph is given, since it predicts what the loop will achieve;
- leave-one-out kNN accuracy: each labeled item is predicted from its nearest *other*
  labeled items (cosine, similarity-weighted vote), with a Wilson interval;
- graph homophily: among kNN-graph edges joining two labeled items, the share joining the
  same label (compared with the share expected if labels were unrelated to the graph);
- silhouette of the labeled items under cosine distance.

:func:`diagnose` turns them into a verdict and one sentence of advice.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ValidationError

__all__ = [
    "Diagnosis",
    "diagnose",
    "wilson_interval",
    "loo_knn_accuracy",
    "graph_loo_knn_accuracy",
    "label_homophily",
    "propagation_cv_accuracy",
    "head_helps",
    "GOOD_ACCURACY",
    "POOR_ACCURACY",
    "MIN_CHECKED",
]

# Thresholds on the verdict's accuracy. Anchors measured in ASSETS.md / DESIGN.md:
# digits, raw pixels: 10-NN 0.981 -> propagation 0.888 / 0.964 at 1 / 5 labels per class;
# digits, ImageNet EfficientNet-Lite0: 10-NN 0.874 -> LabelSpreading 0.526 / 0.701.
GOOD_ACCURACY = 0.90
POOR_ACCURACY = 0.80
MIN_CHECKED = 10        # fewer checkable labeled items than this: no verdict


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927); ``(0, 1)`` when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValidationError(f"successes must be in 0..n={n}, got {successes}")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    # centre = (p + z^2 / 2n) / (1 + z^2 / n);  half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2 / n)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact at the ends (the closed form gives 0 and 1 there, up to rounding)
    return (0.0 if successes == 0 else lo), (1.0 if successes == n else hi)


def _unit(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def _checkable(y_lab: np.ndarray) -> np.ndarray:
    """Labeled items whose class has another labeled item (the others cannot be predicted)."""
    _, inv, counts = np.unique(y_lab, return_inverse=True, return_counts=True)
    return counts[inv] >= 2


def loo_knn_accuracy(X: np.ndarray, y: np.ndarray, *, k: int = 10, max_queries: int = 5000,
                     seed: int = 0) -> tuple[int, int]:
    """Leave-one-out kNN among the labeled items: ``(correct, checked)``.

    Each labeled item whose class has >= 2 labels is predicted by a cosine-similarity-weighted
    vote of its ``k`` most similar other labeled items. ``y``: ``(n,)``, -1 = unlabeled.
    At most ``max_queries`` items (a seeded random subset) are checked."""
    lab = np.flatnonzero(y >= 0)
    if lab.size < 2:
        return 0, 0
    Z = _unit(X[lab])                                                   # (L, d)
    y_lab = y[lab]
    queries = np.flatnonzero(_checkable(y_lab))
    if queries.size > max_queries:
        queries = np.sort(np.random.default_rng(seed).choice(queries, max_queries, replace=False))
    kk = min(k, lab.size - 1)
    classes, y_idx = np.unique(y_lab, return_inverse=True)
    correct = 0
    for lo in range(0, queries.size, 1024):
        q = queries[lo : lo + 1024]
        S = Z[q] @ Z.T                                                  # (b, L) cosine
        S[np.arange(q.size), q] = -np.inf                               # leave the item out
        nb = np.argpartition(-S, kk - 1, axis=1)[:, :kk]                # (b, kk)
        w = np.take_along_axis(S, nb, axis=1)
        votes = np.zeros((q.size, classes.size))                        # (b, C)
        # score_c = sum of similarities of the neighbours labeled c
        np.add.at(votes, (np.repeat(np.arange(q.size), kk), y_idx[nb].ravel()),
                  np.maximum(w, 0).ravel() + 1e-6)
        correct += int((votes.argmax(1) == y_idx[q]).sum())
    return correct, int(queries.size)


def graph_loo_knn_accuracy(graph, y: np.ndarray) -> tuple[int, int]:
    """Leave-one-out kNN on the graph alone: each labeled item (class with >= 2 labels) is
    predicted by a similarity-weighted vote of its labeled graph neighbours; items with no
    labeled neighbour are not counted. Returns ``(correct, checked)``."""
    idx, sim = np.asarray(graph.indices), np.asarray(graph.similarities, dtype=np.float64)
    lab = np.flatnonzero(y >= 0)
    if lab.size < 2:
        return 0, 0
    classes, y_idx_lab = np.unique(y[lab], return_inverse=True)
    y_idx = np.full(y.shape[0], -1)
    y_idx[lab] = y_idx_lab
    q = lab[_checkable(y[lab])]
    nb = idx[q]                                                         # (b, k)
    nb_lab = np.where(nb >= 0, y_idx[np.clip(nb, 0, None)], -1)         # -1: unlabeled / padding
    has = (nb_lab >= 0).any(1)
    votes = np.zeros((q.size, classes.size))
    rows = np.repeat(np.arange(q.size), nb.shape[1])
    keep = nb_lab.ravel() >= 0
    np.add.at(votes, (rows[keep], nb_lab.ravel()[keep]), np.maximum(sim[q].ravel()[keep], 0) + 1e-6)
    pred = votes.argmax(1)
    return int((pred[has] == y_idx[q][has]).sum()), int(has.sum())


def propagation_cv_accuracy(graph, y: np.ndarray, *, folds: int = 10, temperature: float | str = "auto",
                            seed: int = 0, embeddings: np.ndarray | None = None,
                            head_weight: float = 0.5) -> tuple[int, ...]:
    """Cross-validated label propagation on the graph, through the loop's one k-fold helper
    (:func:`labelloop.loop.heldout_proba`): the labeled items of classes with >= 2 labels are
    dealt over ``folds`` folds, each fold's labels hidden in turn, the rest propagated
    (:class:`~labelloop.propagate.LabelPropagation` with the refresh's defaults) and the hidden
    items predicted. Items no label reaches count as wrong. Returns ``(correct, checked)``;
    ``folds`` >= the number of labeled items makes it leave-one-out.

    With ``embeddings``, also scores the refresh's ``head_weight`` setting on the same folds:
    propagation averaged with a classifier head (:func:`~labelloop.adapt.finetune.fit_head`)
    fitted on the same visible labels. Returns ``(correct, checked, correct_with_head)``."""
    from ..loop import heldout_proba, mix_head
    from ..propagate import LabelPropagation, affinity_matrix
    from .finetune import fit_head

    with_head = embeddings is not None
    lab = np.flatnonzero(y >= 0)
    if lab.size < 2 or not _checkable(y[lab]).any():
        return (0, 0, 0) if with_head else (0, 0)
    S = affinity_matrix(graph, temperature=temperature)
    Z = _unit(embeddings) if with_head else None
    c = int(y.max()) + 1
    head_P: dict[int, np.ndarray] = {}

    def fit_predict(y_f, rows):
        lp = LabelPropagation(temperature=temperature).fit(S, y_f, n_classes=c)
        P = lp.predict_proba()[rows] * lp.reached_[rows, None]  # (m, c); unreached: all zero
        if with_head:
            H = fit_head(Z, y_f, n_classes=c, seed=seed).predict_proba(Z[rows])   # (m, c)
            for r, p_mix in zip(rows, mix_head(P, H, head_weight)):
                head_P[int(r)] = p_mix
        return P

    rows, P = heldout_proba(y, lab, c, fit_predict, folds=folds, seed=seed)
    hit = (P.argmax(1) == y[rows]) & (P.max(1) > 0)
    if not with_head:
        return int(hit.sum()), int(rows.size)
    mixed = np.array([head_P[int(r)].argmax() for r in rows]) == y[rows]
    return int(hit.sum()), int(rows.size), int(mixed.sum())


def label_homophily(graph, y: np.ndarray) -> tuple[int, int]:
    """``(same, total)``: undirected kNN-graph edges joining two labeled items, and how many
    of them join the same label."""
    idx = np.asarray(graph.indices)
    n, k = idx.shape
    src = np.repeat(np.arange(n), k)
    dst = idx.ravel()
    ok = (dst >= 0) & (dst != src)
    src, dst = src[ok], dst[ok]
    both = (y[src] >= 0) & (y[dst] >= 0)
    a, b = np.minimum(src[both], dst[both]), np.maximum(src[both], dst[both])
    pairs = np.unique(a.astype(np.int64) * n + b)                       # undirected, deduplicated
    a, b = pairs // n, pairs % n
    return int((y[a] == y[b]).sum()), int(pairs.size)


@dataclass
class Diagnosis:
    n_items: int
    n_labeled: int
    n_classes: int                        # classes with at least one label
    min_labels_per_class: int
    loo_method: str                       # "embeddings" | "graph"
    loo_k: int                            # neighbours voting (embeddings method)
    loo_checked: int                      # labeled items the LOO accuracy is measured on
    loo_accuracy: float | None
    loo_interval: tuple[float, float]     # Wilson, ``confidence``
    confidence: float
    chance_accuracy: float | None         # always guessing the most common label
    propagation_accuracy: float | None    # cross-validated propagation on the graph
    propagation_interval: tuple[float, float]
    propagation_checked: int
    propagation_scope: str | None         # which labels were scored (see ``representative``)
    propagation_with_head_accuracy: float | None  # the same folds, head averaged in (head_weight 0.5)
    homophily: float | None
    homophily_edges: int
    homophily_expected: float | None      # same-label share if labels ignored the graph
    silhouette: float | None
    verdict: str                          # "good" | "fair" | "poor" | "too few labels"
    advice: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["loo_interval"] = list(self.loo_interval)
        d["propagation_interval"] = list(self.propagation_interval)
        return d

    def summary(self) -> str:
        """A few plain lines for the CLI."""
        def f(v):
            return "n/a" if v is None else f"{v:.3f}"
        lo, hi = self.loo_interval
        lines = [
            f"labeled items:     {self.n_labeled} of {self.n_items} in {self.n_classes} classes "
            f"(fewest in a class: {self.min_labels_per_class})",
            f"LOO kNN accuracy:  {f(self.loo_accuracy)}  ({self.confidence:.0%} interval "
            f"{lo:.3f}-{hi:.3f}, {self.loo_checked} checked; chance {f(self.chance_accuracy)})",
            f"propagation (CV):  {f(self.propagation_accuracy)}  ({self.confidence:.0%} interval "
            f"{self.propagation_interval[0]:.3f}-{self.propagation_interval[1]:.3f}, "
            f"{self.propagation_checked} checked: {self.propagation_scope})",
            f"  with the head:   {f(self.propagation_with_head_accuracy)}  (propagation averaged "
            f"with a classifier head on the embeddings, same folds)",
            f"graph homophily:   {f(self.homophily)}  ({self.homophily_edges} labeled edges; "
            f"unrelated labels would give {f(self.homophily_expected)})",
            f"silhouette:        {f(self.silhouette)}",
            f"verdict:           {self.verdict}",
            self.advice,
        ]
        return "\n".join(lines)


def diagnose(graph, labels: np.ndarray, embeddings: np.ndarray | None = None, *, k: int = 10,
             folds: int = 10, confidence: float = 0.95, max_silhouette: int = 5000,
             seed: int = 0, representative: np.ndarray | None = None, modality: str = "image") -> Diagnosis:
    """Diagnose the embeddings of a project from its human labels.

    ``graph``: the project's :class:`~labelloop.graph.KnnGraph` (or None when only
    embeddings are at hand); ``labels``: ``(n,)`` int, -1 = unlabeled; ``embeddings``:
    ``(n, d)``, used for the LOO accuracy and the silhouette when given (LOO falls back to the
    graph otherwise). ``k``: neighbours voting in the LOO kNN (Bai et al.: 10), capped at the
    median number of other labeled items per class. ``folds``: cross-validation folds of the
    propagation estimate (each a propagation over the whole graph). ``representative``:
    ``(n,)`` bool, the labeled items a random sample would have given (not picked by active
    learning); when at least :data:`MIN_CHECKED` of them can be checked, the propagation
    estimate uses only those, as seeds and as test items -- what propagation reaches from a
    random sample of that size (active learning's labels usually do better) -- otherwise all.
    ``modality``: what the advice may suggest (``adapt`` trains image backbones only).
    """
    y = np.asarray(labels)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise ValidationError(f"labels must be a 1-d integer array (-1 = unlabeled), got {y.dtype} {y.shape}")
    n = y.shape[0]
    if graph is None and embeddings is None:
        raise ValidationError("diagnose needs the kNN graph or the embeddings (run labelloop embed first)")
    if graph is not None and np.asarray(graph.indices).shape[0] != n:
        raise ValidationError(f"graph has {np.asarray(graph.indices).shape[0]} items but labels has {n}")
    if embeddings is not None and np.asarray(embeddings).shape[0] != n:
        raise ValidationError(f"embeddings have {np.asarray(embeddings).shape[0]} rows but labels has {n}")
    if not 0 < confidence < 1:
        raise ValidationError(f"confidence must be in (0, 1), got {confidence}")
    if k < 1:
        raise ValidationError(f"k must be >= 1, got {k}")

    lab = np.flatnonzero(y >= 0)
    classes, counts = np.unique(y[lab], return_counts=True)
    n_classes = int(classes.size)
    min_per = int(counts.min()) if n_classes else 0

    # --- LOO kNN accuracy. With few labels per class a wide vote is swamped by other
    # classes (5 labels per class and k = 10: at least 6 votes are wrong by construction),
    # so k is capped at the median number of *other* labeled items of a class.
    k_used = int(max(1, min(k, np.median(counts) - 1))) if n_classes else k
    if embeddings is not None:
        correct, checked = loo_knn_accuracy(np.asarray(embeddings), y, k=k_used, seed=seed)
        method = "embeddings"
    else:
        correct, checked = graph_loo_knn_accuracy(graph, y)
        method = "graph"
    acc = correct / checked if checked else None
    interval = wilson_interval(correct, checked, confidence)
    chance = float(counts.max() / counts.sum()) if n_classes else None

    # --- cross-validated propagation: what the loop will actually do with these labels
    p_acc, p_checked, p_int, scope, h = None, 0, (0.0, 1.0), None, []
    if graph is not None and n_classes >= 2:
        p_correct, p_checked, scope = 0, 0, "all labels"
        cv = dict(folds=folds, seed=seed, embeddings=embeddings)
        if representative is not None:
            # only the representative labels, as seeds and as test items: active learning's
            # labels crowd the boundaries around the others, so hiding a random label among
            # them scores it against its (other-class) queried neighbours -- pessimistic
            # (demo project: 0.86 against 0.995 on the unlabeled items)
            y_rep = np.where(np.asarray(representative, dtype=bool), y, -1)
            p_correct, p_checked, *h = propagation_cv_accuracy(graph, y_rep, **cv)
            scope = "labels not chosen by active learning"
        if p_checked < MIN_CHECKED:
            p_correct, p_checked, *h = propagation_cv_accuracy(graph, y, **cv)
            scope = "all labels" if representative is None else \
                "all labels (too few not chosen by active learning: may be pessimistic)"
        p_acc = p_correct / p_checked if p_checked else None
        p_int = wilson_interval(p_correct, p_checked, confidence)
    head_acc = h[0] / p_checked if h and p_checked else None

    # --- homophily
    homo, edges, expected = None, 0, None
    if graph is not None and n_classes:
        same, edges = label_homophily(graph, y)
        homo = same / edges if edges else None
        p = counts / counts.sum()
        expected = float((p * p).sum())                    # P(two random labels agree)

    # --- silhouette (cosine) on labeled items
    sil = None
    if embeddings is not None and 2 <= n_classes <= lab.size - 1:
        from sklearn.metrics import silhouette_score

        Z = _unit(np.asarray(embeddings)[lab])
        size = min(max_silhouette, lab.size)
        sil = float(silhouette_score(Z, y[lab], metric="cosine",
                                     sample_size=size if size < lab.size else None, random_state=seed))

    # the verdict follows the propagation estimate when there is a graph, else the LOO kNN
    if p_acc is not None:
        v_acc, v_int, v_n, v_what = p_acc, p_int, p_checked, "cross-validated propagation accuracy"
    else:
        v_acc, v_int, v_n, v_what = acc, interval, checked, "leave-one-out kNN accuracy"
    verdict, advice = _advise(v_acc, v_int, v_n, v_what, n_classes, confidence, homo, expected, modality)
    if head_acc is not None and verdict != "too few labels" and head_helps(p_correct, h[0], p_checked):
        advice += (f" Averaging a classifier head into the predictions scored {head_acc:.2f} against "
                   f"{p_acc:.2f} on the same folds: refresh averages it in by itself when its own "
                   "held-out check agrees (head_weight auto); `labelloop config head_weight 0.5` forces it.")
    return Diagnosis(
        n_items=int(n), n_labeled=int(lab.size), n_classes=n_classes, min_labels_per_class=min_per,
        loo_method=method, loo_k=k_used, loo_checked=checked, loo_accuracy=acc, loo_interval=interval,
        confidence=confidence, chance_accuracy=chance, propagation_accuracy=p_acc,
        propagation_interval=p_int, propagation_checked=p_checked, propagation_scope=scope,
        propagation_with_head_accuracy=head_acc, homophily=homo, homophily_edges=edges,
        homophily_expected=expected, silhouette=sil, verdict=verdict, advice=advice,
    )


def head_helps(correct: int, correct_with_head: int, checked: int) -> bool:
    """Whether averaging in the head is a clear gain, not noise: at least 2 more hidden labels
    right and at least 2 percentage points (label_efficiency.md: +1.4 to +2.8 points where it
    helped on EfficientNet features, -1.1 on digits pixels)."""
    gain = correct_with_head - correct
    return checked > 0 and gain >= 2 and gain / checked >= 0.02


def _advise(acc, interval, checked, what, n_classes, confidence, homo, expected, modality="image"
            ) -> tuple[str, str]:
    if n_classes < 2:
        return "too few labels", ("Label items of at least two classes (2-3 per class) before the "
                                  "embeddings can be judged.")
    if acc is None or checked < MIN_CHECKED:
        need = max(0, 3 * n_classes - checked)
        return "too few labels", (
            f"Only {checked} labeled items can be checked; label about {need} more "
            f"(2-3 per class) for a diagnosis.")
    lo, hi = interval
    band = f"{what} {acc:.2f}, {confidence:.0%} interval {lo:.2f}-{hi:.2f} from {checked} labels"
    unsure = ""
    if (lo < GOOD_ACCURACY <= hi) or (lo < POOR_ACCURACY <= hi):
        unsure = " This is uncertain: label more items to narrow it."
    graph_note = ""
    if homo is not None and expected is not None and homo < max(expected, 0.5):
        graph_note = f" Only {homo:.0%} of graph edges between labeled items join the same label."
    if acc >= GOOD_ACCURACY:
        return "good", (f"Features separate your classes well ({band}): keep labeling; label "
                        f"propagation should do well.{unsure}")
    if modality == "text":
        # `adapt` trains image backbones only: for texts, another backbone or more labels
        fix = ("try another text backbone (`labelloop backbones --modality text` lists them; "
               "`labelloop embed --backbone ID`, then `labelloop refresh`) and compare with "
               "`labelloop diagnose`, or label more items per class")
    elif acc >= POOR_ACCURACY:
        fix = "try `labelloop adapt` and compare with `labelloop diagnose` afterwards"
    else:
        fix = "try `labelloop adapt` to train the backbone on your own images, then embed again"
    if acc >= POOR_ACCURACY:
        return "fair", f"Features separate your classes only fairly ({band}): {fix}.{graph_note}{unsure}"
    return "poor", f"Features separate your classes poorly ({band}): {fix}.{graph_note}{unsure}"

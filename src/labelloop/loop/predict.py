"""From propagated distributions to the predictions the loop acts on.

    P_raw = (1 - w) P_propagation + w P_head        (w = ``head_weight``; 0 = propagation only)
    P     = calibrate(P_raw)                         (power map fitted on held-out human labels)

The held-out distributions of the human labels come from the same computation with each fold's
labels hidden (:mod:`labelloop.loop.heldout`); they are returned calibrated, so auto-labeling,
the accuracy estimate and ``diagnose`` read the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .calibrate import Calibrator, expected_calibration_error, fit_calibrator, prediction_weights
from .heldout import heldout_proba

__all__ = ["Prediction", "mix_head", "predict", "heldout_predictions", "random_prior", "class_prior",
           "choose_head_weight", "AUTO_HEAD_WEIGHT", "calibrated_predictions", "embedding_head",
           "MIN_RANDOM_FOR_PRIOR"]

#: labels drawn uniformly at random needed before their class shares become the class prior
MIN_RANDOM_FOR_PRIOR = 30


def class_prior(y: np.ndarray, n_classes: int, *, drawn: np.ndarray, chosen: np.ndarray
                ) -> tuple[np.ndarray | None, str]:
    """The class shares class-mass normalisation should aim for, from the labels ``y`` (n,):

    1. the shares among labels drawn uniformly at random (``drawn``, (n,) bool) once there are
       MIN_RANDOM_FOR_PRIOR of them (:func:`random_prior`): unbiased;
    2. else the add-one smoothed shares among the labels no query strategy chose (``chosen``
       (n,) bool marks those that one did): margin sampling piles labels on the classes whose
       boundaries are hard, and their share of the labels says nothing about their share of the
       data (digits: margin sampling needed 66 labels for 95 % with the shares of all labels);
    3. None when every label was chosen by a strategy (then all labels' shares are used).

    Returns ``(q, source)``, source "random", "labels" or "none".
    """
    q = random_prior(y[drawn], n_classes)
    if q is not None:
        return q, "random"
    rep = y[(y >= 0) & ~chosen]
    if rep.size == 0:
        return None, "none"
    q = np.bincount(rep, minlength=n_classes)[:n_classes] + 1.0
    return q / q.sum(), "labels"


def random_prior(labels: np.ndarray, n_classes: int, *, min_count: int = MIN_RANDOM_FOR_PRIOR) -> np.ndarray | None:
    """(C,) add-one smoothed class shares among labels drawn uniformly at random (the random
    share of ``auto``, ``random`` queries): an unbiased estimate of the classes' true shares,
    which a few labels per class are not. None below ``min_count`` such labels; then
    propagation normalises class mass to the shares among all labels
    (:func:`labelloop.propagate.class_mass_normalise`)."""
    labels = np.asarray(labels, dtype=np.int64)
    labels = labels[labels >= 0]
    if labels.size < min_count:
        return None
    q = np.bincount(labels, minlength=n_classes)[:n_classes] + 1.0
    return q / q.sum()


def mix_head(P: np.ndarray, P_head: np.ndarray, weight: float) -> np.ndarray:
    """(1 - weight) P + weight P_head: the classifier head as a second opinion."""
    return (1.0 - weight) * np.asarray(P) + weight * np.asarray(P_head)


@dataclass
class Prediction:
    proba: np.ndarray           # (n, C) calibrated class distributions
    reached: np.ndarray         # (n,) bool
    calibrator: Calibrator
    heldout_rows: np.ndarray    # (m,) rows of the human labels scored held out
    heldout_proba: np.ndarray   # (m, C) their calibrated held-out distributions

    def heldout_ece(self, y: np.ndarray) -> float | None:
        """Calibrated held-out ECE, weighted like the calibration (None without held-out items)."""
        if len(self.heldout_rows) < 1:
            return None
        t = y[self.heldout_rows]
        pred = self.heldout_proba.argmax(1)
        w = prediction_weights(t, self.proba.argmax(1), self.proba.shape[1])
        return expected_calibration_error(self.heldout_proba.max(1), pred == t, weights=w)


def heldout_predictions(y_human: np.ndarray, n_classes: int,
                        propagate: Callable[[np.ndarray], np.ndarray],
                        head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, *,
                        seed: int = 0, score: np.ndarray | None = None):
    """``(rows, Q_propagation, Q_head)``: uncalibrated held-out distributions (m, C) of the human
    labels (of the rows where ``score`` (n,) bool is True, if given: e.g. only labels no query
    strategy chose), from the propagation and from the head (None without ``head``).

    ``propagate(y_hidden)``: (n, C) propagation with those human labels hidden (-1);
    ``head(y_hidden, rows)``: (m, C) head probabilities of ``rows`` fitted without them."""
    labeled = np.flatnonzero((y_human >= 0) if score is None else (y_human >= 0) & score)
    heads: list[np.ndarray] = []

    def fit_predict(y_f, rows):
        if head is not None:
            heads.append(np.asarray(head(y_f, rows), np.float32))
        return propagate(y_f)[rows]

    rows, Q = heldout_proba(y_human, labeled, n_classes, fit_predict, seed=seed)
    return rows, Q, (np.concatenate(heads) if heads else None)


#: ``head_weight="auto"``: the mixture replaces propagation alone only if it gets this many more
#: held-out labels right, and at least this share more (diagnose's rule for its advice,
#: benchmarks/results/head_advice.md)
AUTO_HEAD_WEIGHT = 0.5
AUTO_HEAD_MIN_GAIN = (2, 0.02)


def choose_head_weight(y_human: np.ndarray, rows: np.ndarray, Q_prop: np.ndarray, Q_head: np.ndarray | None,
                       weights: np.ndarray | None = None) -> float:
    """``head_weight="auto"``: AUTO_HEAD_WEIGHT where averaging the classifier head in gets clearly
    more held-out human labels right than propagation alone (weak graphs: texts with weak
    features, benchmarks/results/robustness.md), else 0."""
    if Q_head is None or len(rows) == 0:
        return 0.0
    t = y_human[rows]
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    right_prop = (Q_prop.argmax(1) == t).astype(np.float64)
    right_mix = (mix_head(Q_prop, Q_head, AUTO_HEAD_WEIGHT).argmax(1) == t).astype(np.float64)
    gain_items = float(((right_mix - right_prop) * w).sum() / w.mean())
    gain_share = float(((right_mix - right_prop) * w).sum() / w.sum())
    return AUTO_HEAD_WEIGHT if gain_items >= AUTO_HEAD_MIN_GAIN[0] and gain_share >= AUTO_HEAD_MIN_GAIN[1] else 0.0


def predict(P_raw: np.ndarray, reached: np.ndarray, y_human: np.ndarray, heldout: tuple[np.ndarray, np.ndarray],
            *, calibrator: Calibrator | None = None) -> Prediction:
    """Calibrate ``P_raw`` (n, C) with a power map fitted on ``heldout`` = (rows, (m, C)) of the
    human labels ``y_human``, or with the given ``calibrator`` (a warm refresh reuses the last)."""
    rows, Q = heldout
    C = P_raw.shape[1]
    if calibrator is None:
        w = prediction_weights(y_human[rows], P_raw.argmax(1), C) if len(rows) else None
        calibrator = fit_calibrator(Q, y_human[rows], weights=w)
    return Prediction(calibrator(P_raw), np.asarray(reached, bool), calibrator, rows,
                      calibrator(Q) if len(rows) else np.zeros((0, C), np.float32))


#: rows of the embeddings the classifier head predicts at a time (64k x 384 float32: 100 MB)
HEAD_CHUNK = 65_536


def embedding_head(X: np.ndarray, n_classes: int, *, normalised: bool = True
                   ) -> Callable[[np.ndarray, np.ndarray | None], np.ndarray]:
    """``head(y, rows)``: (m, C) probabilities of the refresh's classifier head on the
    L2-normalised embeddings ``X``, fitted on the labels ``y``, for ``rows`` (all items when
    None): cosine prototypes up to 5 labels per class (as ``adapt.finetune.fit_head``), then a
    multinomial logistic regression (lbfgs, closed enough to be cheap: ~20 ms for 100 labels,
    where the torch head ``labelloop train`` uses took ~1 s per fit; a refresh fits it six times).
    Only the labeled rows and ``rows`` of ``X`` are read, :data:`HEAD_CHUNK` rows at a time, so
    ``X`` may be memory-mapped; ``normalised=False``: rows are normalised as they are read."""
    from threadpoolctl import threadpool_limits

    from ..adapt.finetune import PrototypeClassifier, choose_schedule
    from ..graph import normalize_rows

    def read(sel) -> np.ndarray:
        return X[sel] if normalised else normalize_rows(X[sel])

    def head(y: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:  # (m, C)
        rows = np.arange(len(X)) if rows is None else np.asarray(rows)
        lab = np.flatnonzero(y >= 0)
        present = np.unique(y[lab])
        Xl, yl = read(lab), y[lab]
        with threadpool_limits(1, user_api="blas"):  # small fits: threads only contend
            if choose_schedule(y) == "prototype" or present.size < 2:
                model = PrototypeClassifier(n_classes=n_classes).fit(Xl, yl)
                cols = slice(None)
            else:
                from sklearn.linear_model import LogisticRegression

                model = LogisticRegression(max_iter=300).fit(Xl, yl)
                cols = model.classes_
            P = np.zeros((len(rows), n_classes), np.float32)
            for lo in range(0, len(rows), HEAD_CHUNK):
                part = rows[lo:lo + HEAD_CHUNK]
                whole = lo == 0 and len(part) == len(X) and normalised
                P[lo:lo + HEAD_CHUNK, cols] = model.predict_proba(X if whole else read(part))
            return P

    return head


def calibrated_predictions(P: np.ndarray, H: np.ndarray | None, reached: np.ndarray, y_human: np.ndarray,
                           propagate: Callable[[np.ndarray], np.ndarray],
                           head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, *,
                           head_weight: float | str = "auto", score: np.ndarray | None = None,
                           seed: int = 0) -> tuple[Prediction, float]:
    """The refresh's predictions from propagation ``P`` (n, C): the classifier head's ``H``
    (n, C) averaged in at ``head_weight`` (``"auto"``: :func:`choose_head_weight` on the held-out
    human labels ``y_human``), then calibrated on the same held-out labels.
    ``propagate(y_hidden)`` re-runs the propagation with some human labels hidden and
    ``head(y_hidden, rows)`` refits the head without them (see :func:`embedding_head`).
    Returns ``(prediction, the head weight used)``. ``Project.refresh``, ``simulate`` and the
    benchmarks all come through here."""
    from .calibrate import prediction_weights

    C = P.shape[1]
    use_head = H is not None and head is not None and head_weight != 0
    rows, Q_prop, Q_head = heldout_predictions(y_human, C, propagate, head if use_head else None,
                                               score=score, seed=seed)
    if not use_head:
        hw = 0.0
    elif head_weight == "auto":
        w = prediction_weights(y_human[rows], P.argmax(1), C) if len(rows) else None
        hw = choose_head_weight(y_human, rows, Q_prop, Q_head, weights=w)
    else:
        hw = float(head_weight)
    if hw > 0:
        Q = mix_head(Q_prop, Q_head, hw) if Q_head is not None else Q_prop
        P = mix_head(P, H, hw)
        reached = np.ones(len(P), bool)  # the head reaches every item
    else:
        Q = Q_prop
    return predict(P, reached, y_human, (rows, Q)), hw

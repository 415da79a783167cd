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
                        head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
                        head_weight: float = 0.0, *, seed: int = 0, score: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, (m, C)) uncalibrated held-out distributions of the human labels (of the rows where
    ``score`` (n,) bool is True, if given: e.g. only labels no query strategy chose).

    ``propagate(y_hidden)``: (n, C) propagation with those human labels hidden (-1);
    ``head(y_hidden, rows)``: (m, C) head probabilities of ``rows`` fitted without them."""
    labeled = np.flatnonzero((y_human >= 0) if score is None else (y_human >= 0) & score)

    def fit_predict(y_f, rows):
        P = propagate(y_f)[rows]
        if head is not None and head_weight > 0:
            P = mix_head(P, head(y_f, rows), head_weight)
        return P

    return heldout_proba(y_human, labeled, n_classes, fit_predict, seed=seed)


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

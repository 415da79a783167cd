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
           "choose_head_weight", "AUTO_HEAD_WEIGHTS", "calibrated_predictions", "embedding_head",
           "MIN_RANDOM_FOR_PRIOR", "choose_class_prior", "prior_candidates", "AUTO_PRIOR_CANDIDATES",
           "AUTO_PRIOR_MIN_GAIN", "HEDGE_PRIOR", "MIN_HELDOUT_FOR_PRIOR"]

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
    class_prior: str | None = None  # the class prior chosen on held-out labels (None: not chosen)

    def heldout_ece(self, y: np.ndarray, label: np.ndarray | None = None) -> float | None:
        """Calibrated held-out ECE, weighted like the calibration (None without held-out items).
        ``label``: the (n,) argmax of ``proba`` where the caller has it already (a refresh's
        prediction summary; at 1M items the argmax over (n, C) is 0.05-0.2 CPU-s)."""
        if len(self.heldout_rows) < 1:
            return None
        t = y[self.heldout_rows]
        pred = self.heldout_proba.argmax(1)
        w = prediction_weights(t, self.proba.argmax(1) if label is None else label, self.proba.shape[1])
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


#: ``head_weight="auto"``: the head weights compared on the held-out human labels (0: propagation alone)
AUTO_HEAD_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: ``head_weight="auto"``: a weight replaces propagation alone only if it gets a share
#: :data:`AUTO_HEAD_MIN_RIGHT` more held-out labels right (weighted) and its calibrated held-out
#: log-likelihood is higher by more than this many standard errors of the paired per-label
#: difference: a mixture that only hedges raises the likelihood without changing a decision
#: (taking it cost 0.004-0.005 on digits at 2 labels per class, and +1 of 100 held-out labels
#: right cost 0.003 on digits at 10), one that only flattens gains nothing after calibration.
#: 0: any likelihood gain, the decisions carrying the evidence. Measured on
#: benchmarks/robustness.py's cells, 10 seeds (results/prediction_variants_head.md): at 1 standard
#: error the likelihood, whose differences are dominated by a few confidently wrong held-out
#: labels, kept the head out of Rotten Tomatoes MiniLM at 5 and 10 labels per class in seeds where
#: it got more held-out labels right (logistic regression 0.06-0.1 more accurate than propagation
#: there); at 0 four text cells rose by 0.016-0.046 (Rotten Tomatoes and its plot set, MiniLM, at
#: 5 and 10 labels per class), none of the 60 fell by more than 0.01.
#: (Before the 1-standard-error bar: a fixed 0.5 for +2 held-out labels right and +2 %, which
#: never took the head in on that set at 10 labels per class, results/robustness_accuracy_prop3.md.)
AUTO_HEAD_MIN_Z = 0.0
#: ... and the share of held-out labels it must get right beyond propagation alone (the share
#: diagnose's advice asks for, benchmarks/results/head_advice.md)
AUTO_HEAD_MIN_RIGHT = 0.02


def choose_head_weight(y_human: np.ndarray, rows: np.ndarray, Q_prop: np.ndarray, Q_head: np.ndarray | None,
                       weights: np.ndarray | None = None, *, grid=AUTO_HEAD_WEIGHTS,
                       min_z: float = AUTO_HEAD_MIN_Z, min_right: float = AUTO_HEAD_MIN_RIGHT) -> float:
    """``head_weight="auto"``: the weight of :data:`AUTO_HEAD_WEIGHTS` at which averaging the
    classifier head into the propagation (:func:`mix_head`) gives the held-out human labels
    ``y_human[rows]`` the highest log-likelihood after calibration (:func:`fit_calibrator`, so a
    mixture that only flattens gains nothing), among the weights that beat propagation alone
    (by more than ``min_z`` standard errors of the paired difference, :data:`AUTO_HEAD_MIN_Z`:
    0, any gain) and get a share ``min_right`` more held-out labels right; else 0. ``weights``:
    (m,) of the held-out labels (their classes weighted to the population's shares,
    :func:`prediction_weights`).
    Where the graph is weak the head carries the prediction (texts with weak features,
    benchmarks/results/robustness.md); on a good graph the head only costs accuracy and the
    held-out labels keep it out. Cost: a power-map fit on the m held-out labels per weight."""
    if Q_head is None or len(rows) < 2:
        return 0.0
    t = np.asarray(y_human)[rows]
    w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    idx = np.arange(len(t))

    def scored(wt):  # per-label calibrated log-likelihood, weighted share right
        Q = mix_head(Q_prop, Q_head, wt)
        P = fit_calibrator(Q, t, weights=w)(Q)
        return np.log(np.maximum(P[idx, t], 1e-6)), float((w * (Q.argmax(1) == t)).sum())

    ll0, right0 = scored(0.0)
    best, best_ll = 0.0, float((w * ll0).sum())
    for wt in grid:
        if wt <= 0:
            continue
        ll, right = scored(wt)
        gain, se = paired_gain(ll - ll0, w)
        if gain > min_z * se and right >= right0 + min_right and best_ll < float((w * ll).sum()):
            best, best_ll = float(wt), float((w * ll).sum())
    return best


#: ``class_prior="auto"``: the class priors compared on held-out human labels, the first the default
AUTO_PRIOR_CANDIDATES = ("labels", "estimated")
#: ``class_prior="auto"``: another prior replaces the default only if it raises the weighted,
#: calibrated held-out log-likelihood by this many nats per held-out label. Measured on
#: benchmarks/robustness.py's cells: on the balanced image sets the gain of "estimated" stayed
#: below 0.08 (where it would have cost up to 0.02 accuracy); where it was right on the
#: imbalanced texts it was mostly 0.15-0.6; 0.05 let it cost 0.01-0.02 on Fashion-MNIST.
AUTO_PRIOR_MIN_GAIN = 0.1
#: ... or a smaller gain that is positive and at least this many standard errors of the paired
#: per-label difference under both class shares: many held-out labels agreeing on a small gain
#: (WordNet nouns, 26 imbalanced classes: "estimated" 0.01-0.03 more accurate at 5-20 labels per
#: class, 0.01-0.02 nats per label at z 2-5, never 0.1). The hub set's flip stays out: under the
#: default's shares its gain is 0.00-0.01 at z <= 0.5 (benchmarks/results/robustness_accuracy.md).
AUTO_PRIOR_MIN_Z = 2.0
#: ``class_prior="auto"`` with fewer held-out human labels than this (one or two labels per
#: class: a binary project with 2 per class holds out 4): they cannot tell the priors apart, so
#: the choice hedges, :data:`HEDGE_PRIOR`.
MIN_HELDOUT_FOR_PRIOR = 10
#: the hedge: the mean of the distributions under "labels" and under "estimated". Neither prior
#: is safe without evidence: "labels" assumes the classes are as balanced as the labels (1 per
#: class: 50/50 on an 8 % minority, 0.59 accuracy on the Rotten Tomatoes plot set with MiniLM),
#: "estimated" can hand a hub minority most items (the hub set of tests/test_loop.py). The mean
#: keeps most of the better one's accuracy at 1-2 labels per class on the texts of
#: benchmarks/robustness.py and costs 0.00-0.02 on the balanced image sets
#: (results/robustness_accuracy.md). It is no cure for a hub minority: on the hub set at 2 labels
#: per class it predicts the minority almost everywhere (0.15 accuracy, "labels" 0.41). A veto
#: by the few held-out labels (the default when the hedge got fewer of them right) caught 3 of 6
#: hub seeds there but was a coin flip on real data: on the 14 cells of benchmarks/robustness.py
#: at 2 labels per class (10 seeds) it fired 23 times, the default more accurate in 7, mean
#: -0.05 accuracy (Rotten Tomatoes plot MiniLM -0.19 in 4 of 4; results/prediction_variants_head.md).
HEDGE_PRIOR = "mixed"


def prior_candidates(Y: np.ndarray, y: np.ndarray, n_classes: int, names=(*AUTO_PRIOR_CANDIDATES, HEDGE_PRIOR), *,
                     shares: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """{prior: (n, C)} the raw propagation ``Y`` (``LabelPropagation.Y_``) class-mass normalised to
    each candidate prior, the shares taken from the labels ``y``: what
    :func:`calibrated_predictions` chooses from (``"mixed"``: the mean of the "labels" and
    "estimated" distributions, :data:`HEDGE_PRIOR`). The held-out propagations pass the full
    label vector as ``y``, not the fold's: hiding one of two labels of a class must not halve
    that class's prior (it made every held-out minority label look wrong under "estimated").
    ``shares``: (C,) label shares to start from instead of ``y``'s (:func:`class_prior`'s)."""
    from ..propagate import class_distributions

    base = [k for k in names if k != HEDGE_PRIOR]
    if HEDGE_PRIOR in names:
        base += [k for k in AUTO_PRIOR_CANDIDATES if k not in base]
    out = {k: class_distributions(Y, y, n_classes, k, shares=shares)[0] for k in base}
    if HEDGE_PRIOR in names:
        out[HEDGE_PRIOR] = np.mean([out[k] for k in AUTO_PRIOR_CANDIDATES], axis=0, dtype=np.float32)
    return {k: out[k] for k in names}


def paired_gain(d: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """``(gain, standard error)`` of the (m,) paired per-label differences ``d`` (e.g. in
    log-likelihood) under weights ``w`` summing to 1: the evidence rule of the head weight and
    the class prior (a gain counts when it is ``min_z`` standard errors clear)."""
    gain = float((w * d).sum())
    return gain, float(np.sqrt((w ** 2 * (d - gain) ** 2).sum()))


def choose_class_prior(y_human: np.ndarray, rows: np.ndarray, Q: dict[str, np.ndarray],
                       population: dict[str, np.ndarray], *, min_gain: float = AUTO_PRIOR_MIN_GAIN,
                       min_z: float = AUTO_PRIOR_MIN_Z) -> str:
    """``class_prior="auto"``: which class prior (a key of ``Q``; the first is the default) the
    held-out human labels support.

    ``Q[name]``: (m, C) held-out distributions of the human labels ``y_human[rows]`` under that
    prior; ``population[name]``: (n,) the labels it predicts for every item. With fewer than
    :data:`MIN_HELDOUT_FOR_PRIOR` held-out labels they cannot decide: :data:`HEDGE_PRIOR` where
    it is a candidate, else the default (no veto by those few labels either: see
    :data:`HEDGE_PRIOR`). Otherwise the hedge is not a candidate. Human labels are
    usually a few per class whatever the classes' true shares, so the held-out labels are
    weighted to the population's class shares (:func:`prediction_weights`), and each candidate
    is scored by the log-likelihood after it is calibrated (:func:`fit_calibrator`: a prior
    that only sharpens or flattens gains nothing). The challenger with the largest gain wins if
    it gains at least ``min_gain`` nats per label under both its own and the default's class
    shares, or a positive gain of at least ``min_z`` standard errors of the paired per-label
    difference under both (:data:`AUTO_PRIOR_MIN_Z`).

    Why both (benchmarks/results/prediction_variants_priors.md): at 5 labels per class the
    plot-vs-review MiniLM set (8 % minority; "estimated" 0.94 accurate, "labels" 0.72) and the
    hub set of tests/test_loop.py ("estimated" 0.14, "labels" 0.45) give the held-out labels the
    same evidence: a gain of 0.2-0.5 nats per label under the challenger's shares (plot 0.47-0.50
    in 2 of 3 seeds, hub 0.21-0.43 in 3 of 4) and one within a standard error of 0 under the
    default's (plot +0.05 to +0.08, hub -0.02 to +0.01), and the classifier head's predicted
    shares lean the challenger's way in both. Weighting by the
    challenger's shares alone took the hub flip in 3 of 4 seeds (plot set at 5 per class 0.761 ->
    0.837). Also measured there and worse: the "estimated" shares from EM prior adjustment
    (Saerens et al. 2002; 8 cells below LabelSpreading instead of 5), class-mass normalisation
    softened to the power 0.5 (11); no normalisation as a third candidate changed nothing (5).
    """
    names = list(Q)
    if len(rows) < MIN_HELDOUT_FOR_PRIOR:
        return HEDGE_PRIOR if HEDGE_PRIOR in names else names[0]
    names = [k for k in names if k != HEDGE_PRIOR]
    default = names[0]
    if len(names) < 2:
        return default
    t = np.asarray(y_human)[rows]
    C = Q[default].shape[1]
    idx = np.arange(len(t))

    def loglik(Qk, w):  # (m,) per-label log-likelihood of t after the power map fitted on it
        P = fit_calibrator(Qk, t, weights=w)(Qk)
        return np.log(np.maximum(P[idx, t], 1e-6))

    best, best_gain = default, -np.inf
    for name in names[1:]:
        # the held-out labels weighted to the class shares the challenger predicts AND to those the
        # default predicts: it must win under both. Weighted by its own shares alone, a prior that
        # hands a class most items weights that class's held-out labels up and wins by it (the hub
        # set of tests/test_loop.py: "estimated" chosen in 3 of 4 seeds at 0.14 accuracy, "labels"
        # 0.45); shares corrected by the held-out confusion (Lipton et al. 2018) were too noisy
        # from 5 held-out labels per class.
        gains, clear = [], []
        for w in (prediction_weights(t, population[k], C) for k in (name, default)):
            g, se = paired_gain(loglik(Q[name], w) - loglik(Q[default], w), w / w.sum())
            gains.append(g)
            clear.append(g > 0 and g >= min_z * se)
        # a large gain, or a smaller one the held-out labels show clearly (many labels agreeing)
        if (min(gains) >= min_gain or all(clear)) and min(gains) > best_gain:
            best, best_gain = name, min(gains)
    return best


def predict(P_raw: np.ndarray, reached: np.ndarray, y_human: np.ndarray, heldout: tuple[np.ndarray, np.ndarray],
            *, calibrator: Calibrator | None = None, heldout_calibrated: bool = False,
            overwrite: bool = False) -> Prediction:
    """Calibrate ``P_raw`` (n, C) with a power map and a top-label map fitted on ``heldout`` =
    (rows, (m, C)) of the human labels ``y_human``, or with the given ``calibrator`` (a warm
    refresh reuses the last; ``heldout_calibrated``: its held-out distributions, stored
    calibrated, are not mapped a second time). ``overwrite``: ``P_raw``'s memory may hold the
    calibrated result (the caller no longer needs it: no new (n, C) array, 40 MB at 1M items)."""
    rows, Q = heldout
    C = P_raw.shape[1]
    if calibrator is None:
        w = prediction_weights(y_human[rows], P_raw.argmax(1), C) if len(rows) else None
        calibrator = fit_calibrator(Q, y_human[rows], weights=w, top_label=True)
    elif heldout_calibrated:
        return Prediction(calibrator(P_raw, overwrite=overwrite), np.asarray(reached, bool), calibrator, rows,
                          np.asarray(Q, np.float32))
    return Prediction(calibrator(P_raw, overwrite=overwrite), np.asarray(reached, bool), calibrator, rows,
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


def calibrated_predictions(P: np.ndarray | dict[str, np.ndarray], H: np.ndarray | None, reached: np.ndarray,
                           y_human: np.ndarray, propagate: Callable[[np.ndarray], np.ndarray | dict[str, np.ndarray]],
                           head: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None, *,
                           head_weight: float | str = "auto", score: np.ndarray | None = None,
                           seed: int = 0, calibrator: Calibrator | None = None) -> tuple[Prediction, float]:
    """The refresh's predictions from propagation ``P`` (n, C): the classifier head's ``H``
    (n, C) averaged in at ``head_weight`` (``"auto"``: :func:`choose_head_weight` on the held-out
    human labels ``y_human``), then calibrated on the same held-out labels.
    ``propagate(y_hidden)`` re-runs the propagation with some human labels hidden and
    ``head(y_hidden, rows)`` refits the head without them (see :func:`embedding_head`).
    ``P`` may be a dict {class prior: (n, C)} of one propagation under several class priors
    (``propagate.class_distributions``, the default first), ``propagate`` then returning the
    same dict: the prior is chosen on the held-out labels (:func:`choose_class_prior`) and
    recorded in ``prediction.class_prior``. ``calibrator``: apply this one instead of fitting one
    (``Calibrator(1.0, 0, None, None)``: the uncalibrated distributions, benchmarks/calibration.py).
    Returns ``(prediction, the head weight used)``. ``Project.refresh``, ``simulate`` and the
    benchmarks all come through here."""
    from .calibrate import prediction_weights

    names = list(P) if isinstance(P, dict) else None
    C = (P[names[0]] if names else P).shape[1]
    prop = propagate
    if names:  # the candidates side by side, (n, K*C), so the folds run each propagation once
        def prop(y_f):
            D = propagate(y_f)
            return np.concatenate([np.asarray(D[k], np.float32) for k in names], axis=1)
    use_head = H is not None and head is not None and head_weight != 0
    rows, Q_prop, Q_head = heldout_predictions(y_human, C * len(names or [0]), prop, head if use_head else None,
                                               score=score, seed=seed)
    Qs = {}
    if names:  # the default prior first: the head weight is chosen on it, as without candidates
        Qs = {k: Q_prop[:, i * C:(i + 1) * C] for i, k in enumerate(names)}
        Ps, P, Q_prop = P, P[names[0]], Qs[names[0]]
    if not use_head:
        hw = 0.0
    elif head_weight == "auto":
        w = prediction_weights(y_human[rows], P.argmax(1), C) if len(rows) else None
        hw = choose_head_weight(y_human, rows, Q_prop, Q_head, weights=w)
    else:
        hw = float(head_weight)

    def mix(A, B):
        return mix_head(A, B, hw) if hw > 0 and B is not None else A

    chosen = None
    if names:  # then the prior, each candidate with that head weight (choosing the head weight per
        # prior by its own predicted class shares let a skewed prior talk the head out of the mix)
        chosen = choose_class_prior(y_human, rows, {k: mix(Qs[k], Q_head) for k in names},
                                    {k: mix(Ps[k], H).argmax(1) for k in names})
        if chosen == names[0] and hw > 0 and head_weight == "auto":
            # a head weight chosen on a poor default prior (the label shares on an 8 % minority)
            # can make the priors indistinguishable (at weight 1 they all give the head): the
            # prior on propagation alone, then the head weight on that prior, same held-out weights
            hw_default = hw
            hw = 0.0
            chosen = choose_class_prior(y_human, rows, Qs, {k: Ps[k].argmax(1) for k in names})
            hw = hw_default if chosen == names[0] else choose_head_weight(y_human, rows, Qs[chosen], Q_head, weights=w)
        P, Q_prop = Ps[chosen], Qs[chosen]
    Q, P = mix(Q_prop, Q_head), mix(P, H)
    if hw > 0:
        reached = np.ones(len(P), bool)  # the head reaches every item
    pred = predict(P, reached, y_human, (rows, Q), calibrator=calibrator)
    pred.class_prior = chosen
    return pred, hw

"""Annotator quality: consensus, Dawid–Skene, agreement (Cohen / Fleiss kappa), routing.

Everything works on a long table of annotations, one row per (item, annotator, label); item
and annotator ids may be any hashable (ints, strings), labels are class indices
``0 .. n_classes-1``. :func:`as_annotations` turns rows into an :class:`Annotations` table of
integer codes once; every other function accepts either form.

References: Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using
the EM algorithm"; Cohen (1960); Fleiss (1971), "Measuring nominal scale agreement among many
raters".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from labelloop.errors import ValidationError

__all__ = [
    "Annotations",
    "as_annotations",
    "Consensus",
    "majority_vote",
    "DawidSkeneResult",
    "dawid_skene",
    "cohen_kappa",
    "pairwise_cohen_kappa",
    "fleiss_kappa",
    "fleiss_kappa_from_annotations",
    "AnnotatorStats",
    "annotator_confusion",
    "annotator_report",
    "consensus_sample",
    "honeypot_schedule",
]


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Annotations:
    """A long annotation table as integer codes.

    ``item[r]`` / ``annotator[r]`` index into ``item_ids`` / ``annotator_ids`` (first-seen order);
    ``label[r]`` is the class index the annotator gave.
    """

    item_ids: list  # distinct item ids, first-seen order
    annotator_ids: list  # distinct annotator ids, first-seen order
    item: np.ndarray  # (m,) int64 code into item_ids
    annotator: np.ndarray  # (m,) int64 code into annotator_ids
    label: np.ndarray  # (m,) int64 class index
    n_classes: int

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_annotators(self) -> int:
        return len(self.annotator_ids)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def counts(self) -> np.ndarray:
        """Votes per item and class, ``(n_items, n_classes)`` int64."""
        counts = np.zeros((self.n_items, self.n_classes), dtype=np.int64)  # (n_items, C)
        np.add.at(counts, (self.item, self.label), 1)
        return counts


def _codes(values: Sequence[Hashable]) -> tuple[list, np.ndarray]:
    index: dict = {}
    codes = np.empty(len(values), dtype=np.int64)
    for r, v in enumerate(values):
        codes[r] = index.setdefault(v, len(index))
    return list(index), codes


def as_annotations(
    annotations: Annotations | Iterable[tuple[Hashable, Hashable, int]],
    *,
    n_classes: int | None = None,
) -> Annotations:
    """Rows ``(item, annotator, label)`` as an :class:`Annotations` table (no-op if it is one).

    ``n_classes`` defaults to ``max(label) + 1``. An annotator labelling the same item twice
    keeps only the last row (a later annotation supersedes an earlier one).
    """
    if isinstance(annotations, Annotations):
        if n_classes is not None and n_classes != annotations.n_classes:
            if n_classes < annotations.n_classes:
                raise ValidationError(
                    f"n_classes={n_classes} is smaller than the table's {annotations.n_classes}"
                )
            return Annotations(
                annotations.item_ids, annotations.annotator_ids, annotations.item,
                annotations.annotator, annotations.label, int(n_classes),
            )
        return annotations
    rows = list(annotations)
    for r, row in enumerate(rows):
        if not isinstance(row, (tuple, list)) or len(row) != 3:
            raise ValidationError(
                f"annotation row {r} is {row!r}; every row must be (item, annotator, label)"
            )
    # last row wins for a repeated (item, annotator)
    latest: dict[tuple, int] = {}
    for r, (it, an, _) in enumerate(rows):
        latest[(it, an)] = r
    keep = sorted(latest.values())
    rows = [rows[r] for r in keep]
    labels = np.empty(len(rows), dtype=np.int64)
    for r, (_, _, lab) in enumerate(rows):
        if isinstance(lab, bool) or not isinstance(lab, (int, np.integer)) or lab < 0:
            raise ValidationError(
                f"annotation row {r} has label {lab!r}; labels must be class indices >= 0"
            )
        labels[r] = lab
    if n_classes is None:
        n_classes = int(labels.max()) + 1 if len(labels) else 0
    elif len(labels) and labels.max() >= n_classes:
        raise ValidationError(
            f"label {int(labels.max())} is out of range for n_classes={n_classes}; "
            f"pass n_classes >= {int(labels.max()) + 1}"
        )
    item_ids, item = _codes([row[0] for row in rows])
    annotator_ids, annotator = _codes([row[1] for row in rows])
    return Annotations(item_ids, annotator_ids, item, annotator, labels, int(n_classes))


# --------------------------------------------------------------------------- consensus


@dataclass
class Consensus:
    """Majority vote per item (``item_ids`` order)."""

    item_ids: list
    labels: np.ndarray  # (n_items,) int64 winning class
    agreement: np.ndarray  # (n_items,) float64 share of votes for the winner
    n_votes: np.ndarray  # (n_items,) int64 annotations per item
    tied: np.ndarray  # (n_items,) bool: several classes had the top count; tie broken as documented
    tie_break: str = "global frequency, then lowest class index"

    def as_dict(self) -> dict:
        """``{item_id: label}``."""
        return dict(zip(self.item_ids, self.labels.tolist()))


def _vote(counts: np.ndarray, class_order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winner per row of ``counts`` with ties broken by ``class_order`` (lower rank wins)."""
    top = counts.max(axis=1, keepdims=True)  # (n, 1)
    is_top = counts == top  # (n, C)
    rank = np.where(is_top, class_order[None, :], np.iinfo(np.int64).max)  # (n, C)
    winner = rank.argmin(axis=1)  # (n,)
    tied = is_top.sum(axis=1) > 1  # (n,)
    return winner, tied


def _class_order(counts: np.ndarray) -> np.ndarray:
    """Rank of every class: more votes overall first, then lower index (deterministic)."""
    totals = counts.sum(axis=0)  # (C,)
    order = np.lexsort((np.arange(len(totals)), -totals))  # classes, best first
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank


def majority_vote(
    annotations: Annotations | Iterable[tuple[Hashable, Hashable, int]],
    *,
    n_classes: int | None = None,
) -> Consensus:
    """Most frequent label per item.

    Ties are broken deterministically toward the class with more annotations in the whole
    table, then the lower class index; tied items are reported in ``Consensus.tied``.
    """
    ann = as_annotations(annotations, n_classes=n_classes)
    counts = ann.counts()  # (n_items, C)
    winner, tied = _vote(counts, _class_order(counts))
    n_votes = counts.sum(axis=1)  # (n_items,)
    agreement = counts[np.arange(ann.n_items), winner] / np.maximum(n_votes, 1)
    return Consensus(list(ann.item_ids), winner, agreement.astype(np.float64), n_votes, tied)


# --------------------------------------------------------------------------- Dawid–Skene


@dataclass
class DawidSkeneResult:
    """Fitted Dawid–Skene model."""

    item_ids: list
    annotator_ids: list
    posteriors: np.ndarray  # (n_items, C) P(true class | annotations), rows sum to 1
    labels: np.ndarray  # (n_items,) argmax of posteriors
    confusion: np.ndarray  # (n_annotators, C, C): [a, true c, given l] = P(a says l | truth c)
    priors: np.ndarray  # (C,) class priors
    n_iter: int
    converged: bool
    log_likelihood: list[float] = field(default_factory=list)  # per iteration, marginal log p(labels)

    def annotator_accuracy(self) -> np.ndarray:
        """Expected accuracy per annotator under the class priors, ``sum_c pi_c theta[a,c,c]``."""
        diag = np.diagonal(self.confusion, axis1=1, axis2=2)  # (n_annotators, C)
        return diag @ self.priors


def _ds_m_step(
    ann: Annotations, T: np.ndarray, smoothing: float
) -> tuple[np.ndarray, np.ndarray]:
    C = ann.n_classes
    # pi_c = (sum_i T_ic + s) / (n + C s)
    priors = T.sum(axis=0) + smoothing  # (C,)
    priors /= priors.sum()
    # theta[a, c, l] = (sum_{rows of a with label l} T_ic + s) / (sum_l ... )
    theta = np.full((ann.n_annotators, C, C), smoothing, dtype=np.float64)  # (A, C, C)
    np.add.at(theta, (ann.annotator, slice(None), ann.label), T[ann.item])
    norm = theta.sum(axis=2, keepdims=True)  # (A, C, 1)
    theta = np.divide(theta, norm, out=np.full_like(theta, 1.0 / C), where=norm > 0)
    return priors, theta


def _ds_e_step(
    ann: Annotations, priors: np.ndarray, theta: np.ndarray
) -> tuple[np.ndarray, float]:
    tiny = np.finfo(np.float64).tiny
    # log T_ic = log pi_c + sum_{rows r of i} log theta[a_r, c, l_r]   (then normalise)
    log_t = np.tile(np.log(np.maximum(priors, tiny)), (ann.n_items, 1))  # (n_items, C)
    np.add.at(log_t, ann.item, np.log(np.maximum(theta[ann.annotator, :, ann.label], tiny)))
    top = log_t.max(axis=1, keepdims=True)  # (n_items, 1)
    log_z = top[:, 0] + np.log(np.exp(log_t - top).sum(axis=1))  # (n_items,) log p(labels of i)
    T = np.exp(log_t - log_z[:, None])  # (n_items, C)
    return T, float(log_z.sum())


def dawid_skene(
    annotations: Annotations | Iterable[tuple[Hashable, Hashable, int]],
    *,
    n_classes: int | None = None,
    max_iter: int = 1000,  # EM converges linearly: ~150-200 iterations on a 4-annotator crowd
    tol: float = 1e-5,
    smoothing: float = 0.01,
) -> DawidSkeneResult:
    """Dawid–Skene EM: per-annotator confusion matrices, class priors, item posteriors.

    Initialised from the majority-vote shares of every item (soft votes), then alternates the
    M-step (priors and confusions from the posteriors, plus ``smoothing`` pseudo-counts so an
    unseen (class, label) pair is not impossible) and the E-step (Bayes' rule per item) until
    the largest change of any posterior is below ``tol`` or ``max_iter`` iterations ran
    (a ``RuntimeWarning`` then, not an error).
    """
    ann = as_annotations(annotations, n_classes=n_classes)
    if max_iter < 1:
        raise ValidationError(f"max_iter must be >= 1; got {max_iter}")
    if not tol > 0:
        raise ValidationError(f"tol must be > 0; got {tol}")
    if not smoothing >= 0:
        raise ValidationError(f"smoothing must be >= 0; got {smoothing}")
    if len(ann) == 0:
        raise ValidationError("no annotations: Dawid–Skene needs at least one (item, annotator, label)")
    counts = ann.counts().astype(np.float64)  # (n_items, C)
    T = counts / counts.sum(axis=1, keepdims=True)  # (n_items, C) majority-vote init
    history: list[float] = []
    converged = False
    it = 0
    for it in range(1, max_iter + 1):
        priors, theta = _ds_m_step(ann, T, smoothing)
        T_new, ll = _ds_e_step(ann, priors, theta)
        history.append(ll)
        delta = float(np.abs(T_new - T).max())
        T = T_new
        if delta < tol:
            converged = True
            break
    if not converged:
        warnings.warn(
            f"Dawid–Skene did not converge in {max_iter} iterations (tol={tol}); "
            "raise max_iter or tol",
            RuntimeWarning,
            stacklevel=2,
        )
    return DawidSkeneResult(
        item_ids=list(ann.item_ids),
        annotator_ids=list(ann.annotator_ids),
        posteriors=T,
        labels=T.argmax(axis=1),
        confusion=theta,
        priors=priors,
        n_iter=it,
        converged=converged,
        log_likelihood=history,
    )


# --------------------------------------------------------------------------- agreement


def cohen_kappa(a: Sequence[int], b: Sequence[int], *, n_classes: int | None = None) -> float:
    """Cohen's kappa between two raters' labels of the same items.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and
    ``p_e = sum_c p_a(c) p_b(c)`` the agreement expected from the two marginals.
    NaN when ``p_e == 1`` (both raters always gave the same single class: kappa is undefined).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValidationError(f"cohen_kappa needs two 1-D label arrays of equal length; got {a.shape} and {b.shape}")
    if len(a) == 0:
        return float("nan")
    if min(a.min(), b.min()) < 0:
        raise ValidationError("cohen_kappa labels must be class indices >= 0")
    C = int(max(a.max(), b.max()) + 1) if n_classes is None else int(n_classes)
    table = np.zeros((C, C), dtype=np.float64)  # (C, C) joint counts
    np.add.at(table, (a, b), 1)
    table /= table.sum()
    p_o = float(np.trace(table))
    p_e = float(table.sum(axis=1) @ table.sum(axis=0))
    if math.isclose(p_e, 1.0):
        return float("nan")
    return (p_o - p_e) / (1.0 - p_e)


def pairwise_cohen_kappa(
    annotations: Annotations | Iterable[tuple[Hashable, Hashable, int]],
    *,
    n_classes: int | None = None,
    min_shared: int = 1,
) -> dict[tuple, tuple[float, int]]:
    """Cohen's kappa for every pair of annotators on the items both labeled.

    Returns ``{(annotator_a, annotator_b): (kappa, n_shared)}`` for pairs with at least
    ``min_shared`` shared items (``a`` before ``b`` in first-seen order).
    """
    ann = as_annotations(annotations, n_classes=n_classes)
    # label[annotator, item] with -1 where absent
    grid = np.full((ann.n_annotators, ann.n_items), -1, dtype=np.int64)  # (A, n_items)
    grid[ann.annotator, ann.item] = ann.label
    out: dict[tuple, tuple[float, int]] = {}
    for i, j in combinations(range(ann.n_annotators), 2):
        shared = (grid[i] >= 0) & (grid[j] >= 0)
        n_shared = int(shared.sum())
        if n_shared >= max(min_shared, 1):
            kappa = cohen_kappa(grid[i, shared], grid[j, shared], n_classes=ann.n_classes)
            out[(ann.annotator_ids[i], ann.annotator_ids[j])] = (kappa, n_shared)
    return out


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from a ``(n_items, n_classes)`` table of rater counts.

    ``P_i = (sum_j n_ij^2 - n_i) / (n_i (n_i - 1))``, ``P_bar = mean_i P_i``,
    ``p_j = sum_i n_ij / sum_i n_i``, ``P_e = sum_j p_j^2``, ``kappa = (P_bar - P_e) / (1 - P_e)``.
    With the same number of raters per item this is Fleiss (1971) exactly. With unequal numbers
    every item's ``P_i`` uses its own ``n_i`` and ``p_j`` pools all ratings (the usual
    generalisation); items with fewer than 2 ratings carry no agreement information and are
    dropped. NaN when ``P_e == 1`` (every rating is the same class).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2:
        raise ValidationError(f"fleiss_kappa needs a 2-D (items, classes) count table; got shape {counts.shape}")
    if (counts < 0).any():
        raise ValidationError("fleiss_kappa counts must be >= 0")
    n_i = counts.sum(axis=1)  # (n_items,)
    keep = n_i >= 2
    counts, n_i = counts[keep], n_i[keep]
    if len(counts) == 0:
        return float("nan")
    P_i = ((counts**2).sum(axis=1) - n_i) / (n_i * (n_i - 1))  # (n_items,)
    P_bar = float(P_i.mean())
    p_j = counts.sum(axis=0) / n_i.sum()  # (C,)
    P_e = float((p_j**2).sum())
    if math.isclose(P_e, 1.0):
        return float("nan")
    return (P_bar - P_e) / (1.0 - P_e)


def fleiss_kappa_from_annotations(
    annotations: Annotations | Iterable[tuple[Hashable, Hashable, int]],
    *,
    n_classes: int | None = None,
) -> float:
    """Fleiss' kappa over all items of the table (see :func:`fleiss_kappa` for unequal raters)."""
    ann = as_annotations(annotations, n_classes=n_classes)
    return fleiss_kappa(ann.counts())


# --------------------------------------------------------------------------- per annotator


@dataclass
class AnnotatorStats:
    """Quality figures of one annotator."""

    annotator: Hashable
    n_annotations: int
    n_gold: int  # annotations on gold items
    gold_accuracy: float  # NaN without gold items
    n_compared: int  # annotations on items some other annotator also labeled
    consensus_accuracy: float  # vs. the majority vote of the OTHER annotators; NaN if none
    confusion: np.ndarray  # (C, C) rows: reference (gold if any, else others' consensus), cols: given


def _reference_array(ann: Annotations, reference: Mapping[Hashable, int] | None) -> np.ndarray:
    ref = np.full(ann.n_items, -1, dtype=np.int64)  # (n_items,)
    if reference:
        pos = {it: i for i, it in enumerate(ann.item_ids)}
        for it, lab in reference.items():
            if it in pos:
                if isinstance(lab, bool) or not isinstance(lab, (int, np.integer)) or not 0 <= lab < ann.n_classes:
                    raise ValidationError(
                        f"gold label {lab!r} for item {it!r} is not a class index in [0, {ann.n_classes})"
                    )
                ref[pos[it]] = lab
    return ref


def annotator_confusion(
    annotations: Annotations | Iterable[tuple[Hashable, Hashable, int]],
    reference: Mapping[Hashable, int],
    *,
    n_classes: int | None = None,
) -> dict[Hashable, np.ndarray]:
    """Per annotator, counts ``[reference label, given label]`` over items with a reference."""
    ann = as_annotations(annotations, n_classes=n_classes)
    ref = _reference_array(ann, reference)
    C = ann.n_classes
    conf = np.zeros((ann.n_annotators, C, C), dtype=np.int64)  # (A, C, C)
    rows = ref[ann.item] >= 0
    np.add.at(conf, (ann.annotator[rows], ref[ann.item[rows]], ann.label[rows]), 1)
    return dict(zip(ann.annotator_ids, conf))


def annotator_report(
    annotations: Annotations | Iterable[tuple[Hashable, Hashable, int]],
    *,
    gold: Mapping[Hashable, int] | None = None,
    n_classes: int | None = None,
) -> list[AnnotatorStats]:
    """Accuracy of every annotator against gold items and against the others' consensus.

    The consensus an annotator is compared with leaves that annotator's own vote out (otherwise
    a sole rater would agree with itself); ties among the others are broken as in
    :func:`majority_vote`. The confusion matrix is against gold where the annotator has gold
    items, else against that leave-one-out consensus.
    """
    ann = as_annotations(annotations, n_classes=n_classes)
    C = ann.n_classes
    gold_ref = _reference_array(ann, gold)
    counts = ann.counts()  # (n_items, C)
    class_order = _class_order(counts)
    # leave-one-out counts for every row: the item's votes minus this row's own vote
    loo = counts[ann.item].copy()  # (m, C)
    loo[np.arange(len(ann)), ann.label] -= 1
    has_others = loo.sum(axis=1) > 0  # (m,)
    loo_winner, _ = _vote(loo, class_order)  # (m,)
    stats = []
    for a, aid in enumerate(ann.annotator_ids):
        rows = ann.annotator == a
        lab = ann.label[rows]
        g = gold_ref[ann.item[rows]]
        on_gold = g >= 0
        others = has_others[rows]
        cons = loo_winner[rows]
        conf = np.zeros((C, C), dtype=np.int64)  # (C, C)
        if on_gold.any():
            np.add.at(conf, (g[on_gold], lab[on_gold]), 1)
        else:
            np.add.at(conf, (cons[others], lab[others]), 1)
        stats.append(
            AnnotatorStats(
                annotator=aid,
                n_annotations=int(rows.sum()),
                n_gold=int(on_gold.sum()),
                gold_accuracy=float((lab[on_gold] == g[on_gold]).mean()) if on_gold.any() else float("nan"),
                n_compared=int(others.sum()),
                consensus_accuracy=float((lab[others] == cons[others]).mean()) if others.any() else float("nan"),
                confusion=conf,
            )
        )
    return stats


# --------------------------------------------------------------------------- routing


def consensus_sample(
    item_ids: Sequence[Hashable],
    fraction: float,
    times: int,
    annotators: Sequence[Hashable],
    seed: int = 0,
) -> dict[Hashable, list]:
    """Route items to annotators: a random ``fraction`` of items to ``times`` distinct annotators,
    every other item to one, keeping the queues as even as possible.

    Returns ``{annotator: [item, ...]}`` (every annotator present, queues in random order).
    Each item goes to the ``times`` (or 1) currently least-loaded annotators, ties broken at
    random, so queue lengths never differ by more than one; an item never appears twice in
    one queue.
    """
    items = list(item_ids)
    people = list(annotators)
    if len(set(people)) != len(people):
        raise ValidationError("annotators contains duplicates; pass each annotator once")
    if not 0.0 <= fraction <= 1.0:
        raise ValidationError(f"fraction must be in [0, 1]; got {fraction}")
    if isinstance(times, bool) or not isinstance(times, (int, np.integer)) or times < 1:
        raise ValidationError(f"times must be a positive integer; got {times!r}")
    if not people:
        raise ValidationError("annotators is empty; pass at least one annotator")
    if times > len(people) and fraction > 0:
        raise ValidationError(
            f"times={times} distinct annotators requested but only {len(people)} given; "
            f"pass times <= {len(people)} or more annotators"
        )
    rng = np.random.default_rng(seed)
    n = len(items)
    n_multi = int(round(fraction * n))
    order = rng.permutation(n)
    multi = np.zeros(n, dtype=bool)
    multi[order[:n_multi]] = True
    load = np.zeros(len(people), dtype=np.int64)
    queues: dict[Hashable, list] = {p: [] for p in people}
    for i in order:
        need = times if multi[i] else 1
        # least loaded first, random among equals
        pick = np.lexsort((rng.random(len(people)), load))[:need]
        for p in pick:
            queues[people[p]].append(items[i])
            load[p] += 1
    for p in people:
        perm = rng.permutation(len(queues[p]))
        queues[p] = [queues[p][j] for j in perm]
    return queues


def honeypot_schedule(
    queue: Sequence[Hashable],
    gold_items: Sequence[Hashable],
    rate: float,
    *,
    seed: int = 0,
    already_seen: Iterable[Hashable] = (),
) -> list[tuple[Hashable, bool]]:
    """Mix gold items into an annotator's queue so they make up ``rate`` of the result.

    Returns ``[(item, is_gold), ...]``: ``round(len(queue) * rate / (1 - rate))`` gold items
    spread evenly (each in a random slot of its own stretch of the queue), gold items the
    annotator has not seen first, none repeated until all were used; gold items that are also
    in the queue are not duplicated as gold.
    """
    if not 0.0 <= rate < 1.0:
        raise ValidationError(f"honeypot rate must be in [0, 1); got {rate}")
    queue = list(queue)
    in_queue = set(queue)
    seen = set(already_seen)
    pool = [g for g in dict.fromkeys(gold_items) if g not in in_queue]
    n_gold = int(round(len(queue) * rate / (1.0 - rate)))
    if n_gold == 0 or not pool:
        return [(it, False) for it in queue]
    rng = np.random.default_rng(seed)
    fresh = [g for g in pool if g not in seen]
    stale = [g for g in pool if g in seen]
    ordered = [fresh[j] for j in rng.permutation(len(fresh))] + [stale[j] for j in rng.permutation(len(stale))]
    picks = [ordered[j % len(ordered)] for j in range(n_gold)]
    # gold g goes after queue position slot[g]: one random slot inside each of n_gold equal stretches
    edges = np.linspace(0, len(queue), n_gold + 1)
    slots = [int(rng.integers(int(lo), max(int(hi), int(lo) + 1))) for lo, hi in zip(edges[:-1], edges[1:])]
    out: list[tuple[Hashable, bool]] = []
    g = 0
    for pos in range(len(queue) + 1):
        while g < n_gold and slots[g] == pos:
            out.append((picks[g], True))
            g += 1
        if pos < len(queue):
            out.append((queue[pos], False))
    return out

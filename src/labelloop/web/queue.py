"""The labeling queue: which item an annotator sees next.

Two orders are kept per refresh, so the queue is fresh at once and good soon after:

- ``order`` (:func:`confidence_order`): every unlabeled item by increasing confidence, made in
  milliseconds right after each refresh and published with its predictions (its first
  ``ConfidenceOrder.HEAD`` ids sorted at once, the rest when a request walks past them);
- a :class:`Ranking` (:func:`rank`): the loop's decision (:func:`labelloop.loop.choose`, the
  same call as ``labelloop next``): the query strategy's ``n_top`` picks among a bounded pool
  of candidates, the random share (20 % for ``auto``) drawn from every unlabeled item, and,
  while auto-labeling waits for random checks by people (:meth:`Project.checks_wanted`), the
  ``verify`` items that certify it. Some strategies cluster the embeddings and take seconds,
  so this runs on its own thread and is swapped in when ready; until then the previous
  ranking (minus what got labeled) is used. Each ranking is recorded as query runs
  (:meth:`Project.record_query`), so labels given here count exactly like ``labelloop next``
  + ``labelloop label`` for certification and ``diagnose``.

A multi-label project ranks with the loop's own call: :func:`rank_multilabel` runs
:meth:`Project.next` (``choose_multilabel``: the most uncertain undecided classes, diverse,
plus its random share; before the first refresh its cold-start choice) without recording it,
once per refresh on the ranker thread; what gets served is recorded as for single-label items.

Serving a request (:class:`LabelQueue`) is cheap: walk the verify items, then the strategy's
picks with a random item whenever the served share of random ones falls below the ranking's
``explore`` share, then ``order``; drop items labeled since, reserved for another annotator,
or skipped, and reserve what is handed out. Items assigned to the annotator (consensus
routing, gold honeypots: the ``assignments`` table) come first, without the machine's guess,
so annotators judge them independently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from ..store import Store
from .multilabel import decided_among, is_multilabel, open_count

__all__ = ["Snapshot", "Ranking", "RankInputs", "MultiLabelRank", "ConfidenceOrder", "confidence_order", "rank", "rank_multilabel",
           "LabelQueue", "QueueEntry", "DEFAULT_STRATEGY"]

DEFAULT_STRATEGY = "auto"   # labelloop.select: typicality at the cold start, then margin + diversity
N_TOP = 50                  # items the strategy ranks per refresh (the rest follow by confidence):
                            # more than a team labels between two refreshes; auto's diversity
                            # step clusters 10 x N_TOP candidates, so cost grows with it
POOL = 4000                 # candidates shown to the strategy: half least confident, half random
RESERVE_SECONDS = 300.0     # an item handed to one annotator is not shown to another for this long
_CHUNK = 64                 # candidates checked against the store per query
_EMPTY = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class Ranking:
    """One ranking batch: what the loop chose for one set of predictions."""

    run_id: int | None                    # the refresh run it ranked (None: before the first)
    strategy: str                         # as reported by the strategy
    picks: np.ndarray = field(default_factory=lambda: _EMPTY)    # strategy's picks, best first
    random: np.ndarray = field(default_factory=lambda: _EMPTY)   # the random share
    verify: np.ndarray = field(default_factory=lambda: _EMPTY)   # checks auto-labeling waits for
    reasons: dict[int, str] = field(default_factory=dict)
    explore: float = 0.0                  # share of served ranked items to draw from ``random``
    # what Project.record_query records of each item when it is served: guess, confidence,
    # coverage (of the predictions ranked) and kind
    chosen: dict[int, dict] = field(default_factory=dict)
    seed: int = 0
    labeled: int = 0                      # labeled items when it was ranked
    details: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.picks) + len(self.random) + len(self.verify)


@dataclass
class Snapshot:
    """What the queue knows after one refresh; replaced as a whole, never mutated."""

    run_id: int | None
    item_ids: np.ndarray            # (n,) ascending item ids: row order of the arrays below
    classes: list[str]
    label: np.ndarray               # (n,) column into ``classes``
    confidence: np.ndarray          # (n,) max class probability
    order: "ConfidenceOrder"        # (m,) unlabeled item ids, least confident first
    ranking: Ranking | None = None  # the latest ranking (possibly of older predictions)
    applied_annotation_id: int = 0  # every annotation with an id <= this is in the predictions
    created: float = field(default_factory=time.time)
    summary: dict = field(default_factory=dict)
    tail_reason: str = "item order (no prediction yet)"   # why items past the ranking and ``order`` come

    @classmethod
    def empty(cls, applied_annotation_id: int = 0) -> "Snapshot":
        return cls(None, _EMPTY, [], _EMPTY, np.zeros(0, dtype=np.float32), ConfidenceOrder.empty(),
                   applied_annotation_id=applied_annotation_id)

    def with_ranking(self, ranking: Ranking | None) -> "Snapshot":
        return replace(self, ranking=ranking)

    @property
    def ranked_run(self) -> int | None:
        return None if self.ranking is None else self.ranking.run_id

    def guess(self, item_id: int) -> tuple[str, float] | None:
        """(predicted class, confidence) of ``item_id``, None if it has no prediction."""
        r = int(np.searchsorted(self.item_ids, item_id))
        if r >= len(self.item_ids) or self.item_ids[r] != item_id:
            return None
        return self.classes[int(self.label[r])], float(self.confidence[r])

    def to_dict(self) -> dict:
        rk = self.ranking
        # what actually orders the queue while the strategy has not ranked anything yet
        strategy = rk.strategy if rk is not None else \
            ("lowest confidence" if len(self.order) else "item order")
        return {"run": self.run_id, "strategy": strategy, "strategy_run": None if rk is None else rk.run_id,
                "predicted": int(len(self.item_ids)), "ranked": 0 if rk is None else len(rk),
                "random_share": 0.0 if rk is None else rk.explore,
                "verify": 0 if rk is None else int(len(rk.verify)),
                "applied_annotation_id": self.applied_annotation_id, "created": self.created}


class ConfidenceOrder:
    """Unlabeled item ids, least confident first (stable on ties): the first ``head`` of them
    sorted when made (a partition and a small sort: milliseconds at 1M items, where a full sort
    takes 0.1-0.2 s before the new predictions could be shown), the rest sorted the first time
    a request walks past the head. Iterating yields numpy chunks."""

    HEAD = 4096
    CHUNK = 1024

    def __init__(self, item_ids: np.ndarray, confidence: np.ndarray | None, pool: np.ndarray | None,
                 head: int = HEAD):
        self._ids, self._conf = item_ids, confidence
        self._rows = _EMPTY if pool is None else np.flatnonzero(pool)   # (U,) pool rows, ascending
        self._full: np.ndarray | None = None
        self._lock = threading.Lock()
        self.head = self._first(min(head, len(self._rows)))

    @classmethod
    def empty(cls) -> "ConfidenceOrder":
        return cls(_EMPTY, None, None)

    def __len__(self) -> int:
        return len(self._rows)

    def _first(self, k: int) -> np.ndarray:
        """The first ``k`` ids of the stable order: every row below the k-th smallest confidence,
        then rows equal to it in row order, then sorted (stably, so ties stay in row order)."""
        rows = self._rows
        if k == len(rows):
            return self.full()
        c = self._conf[rows]
        kth = np.partition(c, k - 1)[k - 1] if k else -np.inf
        below = np.flatnonzero(c < kth)
        sel = np.concatenate([below, np.flatnonzero(c == kth)[:k - len(below)]]) if k else below
        sel.sort()
        return self._ids[rows[sel[np.argsort(c[sel], kind="stable")]]]

    def full(self) -> np.ndarray:
        """Every id in order (sorted once, then kept)."""
        with self._lock:
            if self._full is None:
                rows = self._rows
                self._full = self._ids[rows[np.argsort(self._conf[rows], kind="stable")]] if len(rows) else _EMPTY
            return self._full

    def __iter__(self) -> Iterator[np.ndarray]:
        for s in range(0, len(self.head), self.CHUNK):
            yield self.head[s:s + self.CHUNK]
        if len(self.head) < len(self):
            rest = self.full()
            for s in range(len(self.head), len(rest), self.CHUNK):
                yield rest[s:s + self.CHUNK]


def confidence_order(item_ids: np.ndarray, confidence: np.ndarray, pool: np.ndarray) -> ConfidenceOrder:
    """Item ids of the ``pool`` rows (bool mask), least confident first (stable on ties)."""
    return ConfidenceOrder(item_ids, confidence, pool)


@dataclass
class RankInputs:
    """Everything one ranking needs, gathered by the refresher thread."""

    run_id: int | None
    item_ids: np.ndarray                # (n,)
    pool: np.ndarray                    # (n,) bool: unlabeled and askable
    labeled: np.ndarray                 # (n,) bool
    labels: np.ndarray | None           # (L,) class index of each labeled row, or None
    proba: np.ndarray | None            # (n, C) or None before the first refresh
    confidence: np.ndarray | None       # (n,)
    classes: list[str]
    embeddings: np.ndarray | None = None
    graph: object | None = None
    seed: int = 0
    reached: np.ndarray | None = None   # (n,) bool: propagation reached the item
    eligible: np.ndarray | None = None  # (n,) bool: auto-labeling may label it (Project._eligible)
    checks: dict | None = None          # Project.checks_wanted(): verify items to serve first
    rule_votes: np.ndarray | None = None  # (n, C) active rules' votes (Project.rule_matrices)
    rule_proba: np.ndarray | None = None  # (n, C) their label model; zero rows: no vote


def rank(strategy: str, inp: RankInputs, *, n_top: int = N_TOP, pool_size: int = POOL) -> Ranking:
    """The loop's choice (:func:`labelloop.loop.choose`) for one set of predictions: verify
    items first when auto-labeling waits for them, then the strategy's ``n_top`` picks among
    at most ``pool_size`` candidates (the least confident half and a random half of the
    unlabeled items, so cost does not grow with the project) with the strategy's random share
    drawn from every unlabeled item. What gets served of it is recorded as it is served
    (:meth:`LabelQueue.next_items`, :meth:`Refresher.record_served`). With the rules' votes,
    the items where they conflict join the candidates (``conflict``, ``auto`` rank them first)."""
    from ..loop import choose, coverage_of, default_explore
    from ..select import rule_conflicts

    unl = np.flatnonzero(inp.pool)                                # (U,)
    if unl.size == 0:
        return Ranking(inp.run_id, strategy)
    cand = unl
    rules = {}
    if inp.rule_votes is not None and inp.proba is not None:
        rules = dict(rule_votes=inp.rule_votes, rule_proba=inp.rule_proba)
    if unl.size > pool_size:
        rng = np.random.default_rng(inp.seed)
        half = pool_size // 2 if inp.confidence is not None else 0
        low = unl[np.argpartition(inp.confidence[unl], half)[:half]] if half else unl[:0]
        rest = np.setdiff1d(unl, low, assume_unique=True)
        cand = np.sort(np.concatenate([low, rng.choice(rest, pool_size - half, replace=False)]))
        if rules:   # every conflict is a candidate (at most another pool_size of them)
            split, disagree = rule_conflicts(inp.proba[unl], inp.rule_votes[unl],
                                             None if inp.rule_proba is None else inp.rule_proba[unl])
            conflicts = unl[split | disagree]
            if conflicts.size > pool_size:
                conflicts = rng.choice(conflicts, pool_size, replace=False)
            cand = np.union1d(cand, conflicts)
    lab_rows = np.flatnonzero(inp.labeled)
    coverage = None
    if inp.proba is not None and inp.eligible is not None:
        coverage = coverage_of(inp.confidence, inp.eligible)     # (n,) as Project.next records it
    class_names = list(inp.classes) if inp.proba is not None else None
    choices, details = [], {}
    checks = inp.checks or {}
    if checks.get("more_needed", 0) > 0 and inp.proba is not None:
        ver = choose("verify", min(int(checks["more_needed"]), n_top), labeled=lab_rows, unlabeled=unl,
                     probabilities=inp.proba, seed=inp.seed, target_precision=checks["target_precision"],
                     verify_eligible=inp.eligible, certified_coverage=checks.get("certified_coverage", 0.0),
                     pending_coverage=checks.get("pending_coverage", 0.0), verify_heldout=checks.get("heldout"))
        choices.append(ver)
        details["verify"] = ver.details
        unl, cand = np.setdiff1d(unl, ver.rows), np.setdiff1d(cand, ver.rows)   # asked once
    explore = default_explore(strategy) if inp.proba is not None else 0.0
    if unl.size:
        with _one_thread():   # background work: leave the other cores to the requests
            choices.append(choose(
                strategy, min(n_top, int(cand.size)), labeled=lab_rows, unlabeled=unl, candidates=cand,
                probabilities=inp.proba, graph=inp.graph, embeddings=inp.embeddings, labels=inp.labels,
                class_names=class_names, seed=inp.seed, explore=explore, **rules))
        details |= choices[-1].details
    chosen, reasons, by_kind = {}, {}, {"strategy": [], "random": [], "verify": []}
    for c in choices:
        for r, kind, why, region in zip(c.rows.tolist(), c.kinds, c.reasons, c.regions):
            item = int(inp.item_ids[r])
            guess = conf = cov = None
            if coverage is not None and (inp.reached is None or inp.reached[r]):
                guess = inp.classes[int(inp.proba[r].argmax())]
                conf, cov = float(inp.confidence[r]), float(coverage[r])
            chosen[item] = {"guess": guess, "confidence": conf, "coverage": cov, "kind": kind, "region": region}
            reasons[item] = why
            by_kind[kind].append(item)
    arr = {k: np.array(v, dtype=np.int64) for k, v in by_kind.items()}
    return Ranking(inp.run_id, choices[-1].strategy if choices else strategy, arr["strategy"], arr["random"],
                   arr["verify"], reasons, explore, chosen, inp.seed, int(len(lab_rows)), details)


@dataclass(frozen=True)
class MultiLabelRank:
    """A ranking job of a multi-label project: the refresh whose scores :meth:`Project.next` ranks
    (None: before the first) and its seed."""

    run_id: int | None
    seed: int = 0


def rank_multilabel(project, job: MultiLabelRank, *, n_top: int = N_TOP) -> Ranking:
    """What ``labelloop next`` would ask of a multi-label ``project`` (:meth:`Project.next`,
    not recorded here: :meth:`Refresher.record_served` records what gets served), as a
    :class:`Ranking`: its uncertainty picks, then its random share (served at the share
    ``Project.next`` draws), with its reasons."""
    from ..loop import default_explore

    n = min(n_top, open_count(project.store))   # Project.next refuses to ask for more than are open
    if n < 1:
        return Ranking(job.run_id, "multilabel")
    with _one_thread():
        rows = project.next(n, seed=job.seed, record=False)
    by_kind: dict[str, list[int]] = {"strategy": [], "random": []}
    for o in rows:
        by_kind["random" if o["kind"] == "random" else "strategy"].append(int(o["item"]))
    chosen = {int(o["item"]): {"guess": o["guess"], "confidence": o["confidence"], "coverage": None,
                               "kind": o["kind"], "region": None} for o in rows}
    scored = job.run_id is not None
    return Ranking(job.run_id, "multilabel" if scored else "auto (cold start)",
                   np.array(by_kind["strategy"], dtype=np.int64), np.array(by_kind["random"], dtype=np.int64),
                   reasons={int(o["item"]): o["reason"] for o in rows},
                   explore=default_explore("auto") if scored and by_kind["random"] else 0.0,
                   chosen=chosen, seed=job.seed)


def _one_thread():
    """Limit BLAS / OpenMP (k-means) to one thread, if threadpoolctl is there (it comes
    with scikit-learn); a no-op context otherwise."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1)


@dataclass
class QueueEntry:
    item_id: int
    reason: str
    assigned: str | None = None   # "consensus" | "gold" when it came from the assignments table
    kind: str | None = None       # "verify" | "strategy" | "random" when it came from the ranking


class LabelQueue:
    """Hands out items to annotators: assignments first, then the ranking, then item order.
    Thread-safe; the reservations, skips and the served random share live in memory only."""

    def __init__(self, *, reserve_seconds: float = RESERVE_SECONDS):
        self.reserve_seconds = reserve_seconds
        self._lock = threading.Lock()     # guards the dicts below
        self._serve = threading.Lock()    # one hand-out at a time
        self._reserved: dict[int, tuple[str, float]] = {}
        self._skipped: dict[str, set[int]] = {}
        self._served = {"strategy": 0, "random": 0}   # ranked items handed out, by kind

    # ------------------------------------------------------------ reservations
    def _free_for(self, item_id: int, user: str, now: float) -> bool:
        r = self._reserved.get(item_id)
        return r is None or r[0] == user or r[1] < now

    def release(self, item_id: int) -> None:
        with self._lock:
            self._reserved.pop(int(item_id), None)

    def release_held(self, user: str, item_ids: Iterable[int]) -> int:
        """Free the items ``user`` holds among ``item_ids`` for everyone (a page that replaced
        its prefetched items); another annotator's reservations stay. How many were freed."""
        with self._lock:
            mine = [int(i) for i in item_ids if self._reserved.get(int(i), ("",))[0] == user]
            for i in mine:
                self._reserved.pop(i, None)
        return len(mine)

    def skip(self, user: str, item_id: int) -> None:
        with self._lock:
            self._skipped.setdefault(user, set()).add(int(item_id))
            self._reserved.pop(int(item_id), None)

    def unskip(self, user: str, item_id: int) -> None:
        with self._lock:
            self._skipped.get(user, set()).discard(int(item_id))

    # ------------------------------------------------------------------ serving
    def next_items(self, store: Store, snapshot: Snapshot, user: str, n: int,
                   exclude: Iterable[int] = ()) -> list[QueueEntry]:
        """Up to ``n`` items for ``user``, reserved for them; ``exclude``: ids the client holds.
        Choosing and reserving is one critical section, so two annotators never get one item."""
        with self._serve:
            return self._next_items(store, snapshot, user, n, exclude)

    def _next_items(self, store: Store, snapshot: Snapshot, user: str, n: int,
                    exclude: Iterable[int]) -> list[QueueEntry]:
        exclude = {int(i) for i in exclude}
        out: list[QueueEntry] = []
        for item_id, reason in store.open_assignments(user):
            if len(out) >= n:
                break
            if item_id not in exclude:
                out.append(QueueEntry(item_id, "assigned to you", reason))
        if len(out) < n:
            out += self._general(store, snapshot, user, n - len(out), exclude | {e.item_id for e in out})
        now = time.time()
        with self._lock:
            for e in out:
                self._reserved[e.item_id] = (user, now + self.reserve_seconds)
                if e.kind in self._served:
                    self._served[e.kind] += 1
            if len(self._reserved) > 10_000:  # forget expired reservations now and then
                self._reserved = {i: r for i, r in self._reserved.items() if r[1] >= now}
        return out

    def _candidates(self, store: Store, snapshot: Snapshot) -> Iterator[QueueEntry]:
        """Entries in asking order: the verify items, the strategy's picks interleaved with
        the random share, the confidence order, then items without a prediction (none yet,
        or imported after the refresh)."""
        seen: set[int] = set()
        rk = snapshot.ranking
        if rk is not None:
            for i in rk.verify.tolist():
                seen.add(i)
                yield QueueEntry(i, rk.reasons.get(i, "random check: certifies auto-labeling"), kind="verify")
            with self._lock:
                served = dict(self._served)
            picks, rnd = iter(rk.picks.tolist()), iter(rk.random.tolist())
            while True:
                # a random item whenever the served share of them falls below ``explore``
                want_random = served["random"] + 1 <= rk.explore * (served["random"] + served["strategy"] + 1) + 1e-9
                i = next(rnd, None) if want_random else None
                kind = "random"
                if i is None:
                    i, kind = next(picks, None), "strategy"
                if i is None:
                    i, kind = next(rnd, None), "random"
                if i is None:
                    break
                served[kind] += 1
                seen.add(i)
                yield QueueEntry(i, rk.reasons.get(i, rk.strategy), kind=kind)
        reason = "low confidence" if snapshot.run_id else "item order"
        for chunk in snapshot.order:   # numpy chunks: a request reads only the start of 1M ids
            for i in chunk.tolist():
                if i not in seen:
                    yield QueueEntry(i, reason)
        last = 0
        predicted = snapshot.item_ids
        while True:
            ids = np.array(store.item_ids_after(last, 512), dtype=np.int64)
            if not len(ids):
                return
            last = int(ids[-1])
            if len(predicted):
                pos = np.minimum(np.searchsorted(predicted, ids), len(predicted) - 1)
                ids = ids[predicted[pos] != ids]
            for i in ids.tolist():
                if i not in seen:
                    yield QueueEntry(i, snapshot.tail_reason)

    def _general(self, store: Store, snapshot: Snapshot, user: str, n: int, exclude: set[int]) -> list[QueueEntry]:
        out: list[QueueEntry] = []
        now = time.time()
        batch: list[QueueEntry] = []
        with self._lock:
            skipped = set(self._skipped.get(user, ()))
        for cand in self._candidates(store, snapshot):
            i = cand.item_id
            if i in exclude or i in skipped:
                continue
            with self._lock:
                free = self._free_for(i, user, now)
            if not free:
                continue
            batch.append(cand)
            if len(batch) >= max(_CHUNK, 2 * n):
                out += self._keep_unlabeled(store, batch, n - len(out))
                batch = []
                if len(out) >= n:
                    return out
        if batch:
            out += self._keep_unlabeled(store, batch, n - len(out))
        return out

    @staticmethod
    def _keep_unlabeled(store: Store, batch: list[QueueEntry], n: int) -> list[QueueEntry]:
        ids = [e.item_id for e in batch]
        if is_multilabel(store):   # decisions per class, not labels
            drop = decided_among(store, ids) | store.gold_among(ids)
        else:
            drop = store.labeled_among(ids) | store.gold_among(ids)
        return [e for e in batch if e.item_id not in drop][:n]

"""The labeling queue: which item an annotator sees next.

Two orders are kept per refresh, so the queue is fresh at once and good soon after:

- ``order`` (:func:`confidence_order`): every unlabeled item by increasing confidence, made in
  milliseconds right after each refresh and published with its predictions;
- ``top`` (:func:`strategy_top`): the project's query strategy (``labelloop.select``, default
  ``auto``) picks the ``n_top`` most useful items from a bounded pool of candidates. Some
  strategies cluster the embeddings and take seconds, so this runs on its own thread and is
  swapped in when ready; until then the previous ``top`` (minus what got labeled) is used.

Serving a request (:class:`LabelQueue`) is cheap: walk ``top`` then ``order``, drop items
labeled since, reserved for another annotator, or skipped, and reserve what is handed out.
Items assigned to the annotator (consensus routing, gold honeypots: the ``assignments`` table)
come first, without the machine's guess, so annotators judge them independently.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..store import Store

__all__ = ["Snapshot", "RankInputs", "confidence_order", "strategy_top", "LabelQueue", "QueueEntry",
           "labeled_among", "DEFAULT_STRATEGY"]

DEFAULT_STRATEGY = "auto"   # labelloop.select: typicality at the cold start, then margin + diversity
N_TOP = 50                  # items the strategy ranks per refresh (the rest follow by confidence):
                            # more than a team labels between two refreshes; auto's diversity
                            # step clusters 10 x N_TOP candidates, so cost grows with it
POOL = 4000                 # candidates shown to the strategy: half least confident, half random
RESERVE_SECONDS = 300.0     # an item handed to one annotator is not shown to another for this long
_CHUNK = 64                 # candidates checked against the store per query


@dataclass
class Snapshot:
    """What the queue knows after one refresh; replaced as a whole, never mutated."""

    run_id: int | None
    item_ids: np.ndarray            # (n,) ascending item ids: row order of the arrays below
    classes: list[str]
    label: np.ndarray               # (n,) column into ``classes``
    confidence: np.ndarray          # (n,) max class probability
    order: np.ndarray               # (m,) unlabeled item ids, least confident first
    top: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # strategy's picks
    reasons: dict[int, str] = field(default_factory=dict)
    strategy: str = "item order"
    top_run: int | None = None      # the refresh run the strategy ranked
    applied_annotation_id: int = 0  # every annotation with an id <= this is in the predictions
    created: float = field(default_factory=time.time)
    summary: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, applied_annotation_id: int = 0) -> "Snapshot":
        z = np.zeros(0, dtype=np.int64)
        return cls(None, z, [], z, np.zeros(0, dtype=np.float32), z, applied_annotation_id=applied_annotation_id)

    def with_top(self, top: np.ndarray, reasons: dict[int, str], strategy: str, top_run: int | None) -> "Snapshot":
        return replace(self, top=np.asarray(top, dtype=np.int64), reasons=reasons, strategy=strategy,
                       top_run=top_run)

    def guess(self, item_id: int) -> tuple[str, float] | None:
        """(predicted class, confidence) of ``item_id``, None if it has no prediction."""
        r = int(np.searchsorted(self.item_ids, item_id))
        if r >= len(self.item_ids) or self.item_ids[r] != item_id:
            return None
        return self.classes[int(self.label[r])], float(self.confidence[r])

    def to_dict(self) -> dict:
        # what actually orders the queue while the strategy has not ranked anything yet
        strategy = self.strategy if len(self.top) or self.top_run is not None else \
            ("lowest confidence" if self.run_id is not None else "item order")
        return {"run": self.run_id, "strategy": strategy, "strategy_run": self.top_run,
                "predicted": int(len(self.item_ids)), "ranked": int(len(self.top)),
                "applied_annotation_id": self.applied_annotation_id, "created": self.created}


def confidence_order(item_ids: np.ndarray, confidence: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """Item ids of the ``pool`` rows (bool mask), least confident first (stable on ties)."""
    rows = np.flatnonzero(pool)                                   # (U,)
    return item_ids[rows[np.argsort(confidence[rows], kind="stable")]]


@dataclass
class RankInputs:
    """Everything one strategy query needs, gathered by the refresher thread."""

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


def strategy_top(strategy: str, inp: RankInputs, *, n_top: int = N_TOP, pool_size: int = POOL
                 ) -> tuple[np.ndarray, dict[int, str], str]:
    """The strategy's ``n_top`` picks among at most ``pool_size`` candidates (the least
    confident half and a random half of the unlabeled items, so cost does not grow with the
    project). Returns (item ids, {item id: reason}, strategy name as reported)."""
    from ..select import get_strategy

    unl = np.flatnonzero(inp.pool)                                # (U,)
    if unl.size == 0:
        return np.zeros(0, dtype=np.int64), {}, strategy
    cand = unl
    if unl.size > pool_size:
        rng = np.random.default_rng(inp.seed)
        half = pool_size // 2 if inp.confidence is not None else 0
        low = unl[np.argpartition(inp.confidence[unl], half)[:half]] if half else unl[:0]
        rest = np.setdiff1d(unl, low, assume_unique=True)
        cand = np.sort(np.concatenate([low, rng.choice(rest, pool_size - half, replace=False)]))
    lab_rows = np.flatnonzero(inp.labeled)
    with _one_thread():   # background work: leave the other cores to the requests
        sel = get_strategy(strategy).select(
            n=min(n_top, int(cand.size)), labeled=lab_rows, unlabeled=cand, probabilities=inp.proba,
            graph=inp.graph, embeddings=inp.embeddings, labels=inp.labels,
            class_names=list(inp.classes) if inp.proba is not None else None, seed=inp.seed)
    top = inp.item_ids[np.asarray(sel.indices, dtype=np.int64)]
    return top, {int(i): why for i, why in zip(top, sel.reasons)}, sel.strategy


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


def labeled_among(store: Store, ids: Sequence[int]) -> set[int]:
    """Items among ``ids`` that currently have a human or imported label (withdrawals respected)."""
    if not ids:
        return set()
    q = ",".join("?" * len(ids))
    rows = store.conn.execute(
        "SELECT DISTINCT a.item_id FROM annotations a JOIN ("
        "  SELECT item_id, source, COALESCE(annotator, '') AS who, MAX(id) AS last FROM annotations"
        f"  WHERE item_id IN ({q}) AND source IN ('human', 'import') GROUP BY item_id, source, who"
        ") l ON a.id = l.last WHERE a.class_id IS NOT NULL", [int(i) for i in ids]).fetchall()
    return {r[0] for r in rows}


class LabelQueue:
    """Hands out items to annotators: assignments first, then the ranking, then item order.
    Thread-safe; the reservations and skips live in memory only."""

    def __init__(self, *, reserve_seconds: float = RESERVE_SECONDS):
        self.reserve_seconds = reserve_seconds
        self._lock = threading.Lock()     # guards the two dicts below
        self._serve = threading.Lock()    # one hand-out at a time
        self._reserved: dict[int, tuple[str, float]] = {}
        self._skipped: dict[str, set[int]] = {}

    # ------------------------------------------------------------ reservations
    def _free_for(self, item_id: int, user: str, now: float) -> bool:
        r = self._reserved.get(item_id)
        return r is None or r[0] == user or r[1] < now

    def release(self, item_id: int) -> None:
        with self._lock:
            self._reserved.pop(int(item_id), None)

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
        for item_id, reason in store.conn.execute(
                "SELECT item_id, reason FROM assignments WHERE annotator = ? AND done IS NULL ORDER BY id",
                (user,)).fetchall():
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
            if len(self._reserved) > 10_000:  # forget expired reservations now and then
                self._reserved = {i: r for i, r in self._reserved.items() if r[1] >= now}
        return out

    def _candidates(self, store: Store, snapshot: Snapshot):
        """(item id, reason) in asking order: the strategy's picks, the confidence order,
        then items without a prediction (none yet, or imported after the refresh)."""
        seen: set[int] = set()
        for i in snapshot.top:
            i = int(i)
            seen.add(i)
            yield i, snapshot.reasons.get(i, snapshot.strategy)
        for i in snapshot.order:
            i = int(i)
            if i not in seen:
                yield i, "low confidence" if snapshot.run_id else "item order"
        last = 0
        predicted = snapshot.item_ids
        while True:
            rows = store.conn.execute("SELECT id FROM items WHERE id > ? ORDER BY id LIMIT 512",
                                      (last,)).fetchall()
            if not rows:
                return
            ids = np.array([r[0] for r in rows], dtype=np.int64)
            last = int(ids[-1])
            if len(predicted):
                pos = np.minimum(np.searchsorted(predicted, ids), len(predicted) - 1)
                ids = ids[predicted[pos] != ids]
            for i in ids:
                if int(i) not in seen:
                    yield int(i), "item order (no prediction yet)"

    def _general(self, store: Store, snapshot: Snapshot, user: str, n: int, exclude: set[int]) -> list[QueueEntry]:
        out: list[QueueEntry] = []
        now = time.time()
        batch: list[tuple[int, str]] = []
        with self._lock:
            skipped = set(self._skipped.get(user, ()))
        for cand in self._candidates(store, snapshot):
            i = cand[0]
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
    def _keep_unlabeled(store: Store, batch: list[tuple[int, str]], n: int) -> list[QueueEntry]:
        ids = [i for i, _ in batch]
        drop = labeled_among(store, ids)
        q = ",".join("?" * len(ids))
        drop |= {r[0] for r in store.conn.execute(f"SELECT item_id FROM gold WHERE item_id IN ({q})", ids)}
        return [QueueEntry(i, why) for i, why in batch if i not in drop][:n]

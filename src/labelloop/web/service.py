"""The server's process model: one writer thread, read-only readers, one background refresher.

- :class:`Writer`: the only thread that writes what requests ask for (labels, classes, users,
  sessions, reviews). A request hands it a function and waits for the result, so writes are
  serialised in arrival order and never collide.
- :class:`Readers`: one read-only connection per request thread. SQLite in WAL mode lets
  readers see the last committed state without ever blocking the writer.
- :class:`Refresher`: owns THE one :class:`labelloop.Project` of the process, whose in-memory
  propagation state makes each refresh a warm start. Label commits call :meth:`request`;
  requests arriving while a refresh runs are coalesced into one more refresh. After each
  refresh it publishes a new :class:`~labelloop.web.queue.Snapshot` (an atomic reference
  swap); a second thread ranks the unlabeled items with the query strategy. The refresh's own
  run records also go through the writer; its predictions are array files it writes itself.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import logging
import os
import queue as _queue
import sys
import threading
import time
import traceback
from dataclasses import replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LabelloopError, NotReadyError
from ..project import Project
from ..store import Store
from .queue import (N_TOP, MultiLabelRank, QueueEntry, RankInputs, Ranking, Snapshot, confidence_order, rank,
                    rank_multilabel)

log = logging.getLogger("labelloop.web")

#: the longest a refresh waits, once its predictions are published, for the requests they
#: woke (``/api/queue?after=``) to build their pages before it stores its arrays: the
#: page a person waits for gets the CPU first
ANSWER_WAIT = 0.05

#: how much nicer than the rest of the server the ranker thread runs (Linux): a ranking that is
#: under way when a label arrives yields the CPU to the refresh of that label
RANKER_NICE = 10


def lower_thread_priority(by: int) -> None:
    """Make the calling thread ``by`` nicer (Linux only: there a thread has a nice value of its
    own, set through its thread id; elsewhere that id would name another process)."""
    if sys.platform != "linux" or by <= 0:
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + by))
    except OSError as exc:   # e.g. a sandbox without setpriority: run at the server's priority
        log.debug("cannot lower the ranker's priority: %s", exc)


def thread_schedstat() -> tuple[float, float] | None:
    """(seconds on a CPU, seconds runnable but waiting for one) of the calling thread so far
    (Linux's schedstat; None elsewhere). Wall time past both was spent blocked: on the GIL, a
    lock, the writer, the disk."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run_ns, wait_ns = f.read().split()[:2]
        return int(run_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return None


__all__ = ["Writer", "Readers", "Refresher", "writer_project"]


class Writer:
    """A thread with its own read-write store; ``call(fn)`` runs ``fn(store)`` there.

    Jobs run one at a time: requests' jobs first, in arrival order; ``background`` jobs (bulk
    writes) only when no request job waits, so a label never queues
    behind bulk writes."""

    _FOREGROUND, _BACKGROUND, _STOP = 0, 1, 2

    def __init__(self, root: Path):
        self.root = Path(root)
        self._jobs: _queue.PriorityQueue = _queue.PriorityQueue()
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="labelloop-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            store = Store(self.root)
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            while True:
                _, _, job = self._jobs.get()
                if job is None:
                    return
                fn, fut = job
                if not fut.set_running_or_notify_cancel():
                    continue
                try:
                    fut.set_result(fn(store))
                except BaseException as exc:  # handed to the waiting request
                    store.rollback_if_open()
                    fut.set_exception(exc)
        finally:
            store.close()

    def submit(self, fn: Callable[[Store], Any], *, background: bool = False) -> concurrent.futures.Future:
        if self._thread is None:
            self.start()
        fut: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((self._BACKGROUND if background else self._FOREGROUND, next(self._seq), (fn, fut)))
        return fut

    def call(self, fn: Callable[[Store], Any], timeout: float = 120.0) -> Any:
        return self.submit(fn).result(timeout)

    def drain(self, timeout: float = 300.0) -> None:
        """Wait until every job queued so far, background ones included, is done."""
        self.submit(lambda s: None, background=True).result(timeout)

    def stop(self) -> None:
        """Finish every queued job (background ones too), then stop."""
        if self._thread is not None:
            self._jobs.put((self._STOP, next(self._seq), None))
            self._thread.join(timeout=120)
            self._thread = None


class Readers:
    """A read-only :class:`Project` per thread (its ``.store`` answers SQL reads)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[Project] = []

    def project(self) -> Project:
        p = getattr(self._local, "project", None)
        if p is None:
            p = Project(self.root, readonly=True)
            self._local.project = p
            with self._lock:
                self._open.append(p)
        return p

    def store(self) -> Store:
        return self.project().store

    def close(self) -> None:
        with self._lock:
            for p in self._open:
                try:
                    p.close()
                except Exception:  # noqa: BLE001 - closing a connection of another thread at exit
                    pass
            self._open.clear()


class WriterStore(Store):
    """The refresher's store: it reads on its own connection, but the writes a refresh makes
    (its run; its predictions are array files) run on the server's writer thread like every
    other write."""

    def __init__(self, root: Path, writer: Writer):
        super().__init__(root)
        self._writer = writer

    def start_run(self, kind: str, params: dict, inputs: dict | None = None) -> int:
        return self._writer.call(lambda s: Store.start_run(s, kind, params, inputs))

    def finish_run(self, run_id: int, summary: dict | None = None, *, status: str = "done") -> None:
        self._writer.call(lambda s: Store.finish_run(s, run_id, summary, status=status))


def writer_project(root: Path, writer: Writer | None) -> Project:
    """The refresher's :class:`Project`: with a ``writer``, its writes go through the server's
    writer thread (:class:`WriterStore`). Embeddings, graph and predictions stay in memory
    between refreshes by themselves (:data:`labelloop.project.MEMO`)."""
    p = Project(root)
    if writer is not None:
        p.store.close()
        p.store = WriterStore(p.root, writer)
    return p


class Refresher:
    """Background refreshes of the one Project, coalesced; the queue orders after each.

    Two threads: the refresher (owns the Project: refresh, predictions, a cheap confidence
    order published at once) and the ranker (the query strategy, which may take seconds,
    swapped into the published snapshot when done; only the newest request is ranked)."""

    def __init__(self, root: Path, *, strategy: str, enabled: bool = True, debounce: float = 0.05,
                 max_delay: float = 1.0, n_top: int = N_TOP, writer: Writer | None = None,
                 rank_interval: float = 1.0):
        self.root = Path(root)
        self.writer = writer
        # start a ranking at most this often: the strategy (k-means for diversity or
        # typicality) takes seconds of CPU that requests on the same cores would wait for
        self.rank_interval = rank_interval
        self.strategy = strategy
        self.enabled = enabled
        # a label after a pause refreshes at once; labels during a refresh (a burst) are
        # refreshed together once they pause this long ...
        self.debounce = debounce
        self.max_delay = max_delay    # ... but never longer than this after the first request
        self.n_top = n_top
        self.project: Project | None = None   # the refresher thread's (the ranker only records through it)
        self._ranker_project: Project | None = None   # the ranker thread's own, read-only (multi-label)
        self._snapshot = Snapshot.empty()
        self._cond = threading.Condition()
        self._requested = False
        self._requests = 0   # request() calls since the current (or last) refresh began
        self._first_request: float | None = None   # monotonic time of the first of them
        self._waiters: list[tuple[int, concurrent.futures.Future]] = []   # (annotation id, until published)
        self._answering: set[concurrent.futures.Future] = set()   # woken by a publish, page not built yet
        self.answer_wait = ANSWER_WAIT
        self._woken: set[concurrent.futures.Future] = set()   # by the last publish (refresher thread)
        self._rank_job: RankInputs | MultiLabelRank | None = None
        self._stop = False
        self._threads: list[threading.Thread] = []
        self.status: dict[str, Any] = {"state": "starting", "detail": None, "refreshes": 0,
                                       "last_seconds": None, "last_visible_cpu_seconds": None, "last_drain_steps": None,
                                       "last_visible": None,
                                       "ranking": "idle", "rank_detail": None,
                                       "last_rank_seconds": None}

    # ------------------------------------------------------------------ public
    @property
    def snapshot(self) -> Snapshot:
        return self._snapshot

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [threading.Thread(target=self._run, name="labelloop-refresher", daemon=True),
                         threading.Thread(target=self._rank_loop, name="labelloop-ranker", daemon=True)]
        for t in self._threads:
            t.start()

    def request(self) -> None:
        """Ask for a refresh; returns at once."""
        with self._cond:
            self._requested = True
            self._requests += 1
            if self._first_request is None:
                self._first_request = time.monotonic()
            self._cond.notify_all()

    def when_applied(self, annotation_id: int) -> concurrent.futures.Future:
        """A future that turns True as soon as a published snapshot includes ``annotation_id``
        (at once if the current one does; False when the refresher stops first). A request
        awaits it instead of polling: nothing runs until the refresher publishes. Cancel it
        when giving up."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if self._snapshot.applied_annotation_id >= annotation_id:
                fut.set_result(True)
            elif self._stop:
                fut.set_result(False)
            else:
                self._waiters = [w for w in self._waiters if not w[1].done()] + [(annotation_id, fut)]
        return fut

    def answered(self, fut: concurrent.futures.Future) -> None:
        """The request that awaited ``fut`` (:meth:`when_applied`) has built its answer: a
        refresh that woke it goes on storing its arrays."""
        with self._cond:
            if fut in self._answering:
                self._answering.discard(fut)
                self._cond.notify_all()

    def wait_applied(self, annotation_id: int, timeout: float = 30.0) -> bool:
        """Block until the published snapshot includes ``annotation_id`` (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._snapshot.applied_annotation_id < annotation_id:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def wait_ranked(self, timeout: float = 60.0) -> bool:
        """Block until the strategy has ranked the latest predictions (tests, benchmarks)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self.status["state"] == "starting" or self._rank_job is not None
                   or self.status["ranking"] == "running"
                   or self._snapshot.ranked_run != self._snapshot.run_id):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            waiters, self._waiters = self._waiters, []
            self._cond.notify_all()
        for _, fut in waiters:
            if fut.set_running_or_notify_cancel():
                fut.set_result(False)
        for t in self._threads:
            t.join(timeout=60)
        self._threads = []
        if self.project is not None:
            self.project.close()
            self.project = None

    # ------------------------------------------------------------------ refresher thread
    def _run(self) -> None:
        try:
            self.project = writer_project(self.root, self.writer)
        except LabelloopError as exc:
            self._set_status("error", str(exc))
            return
        self._publish_last(self._max_annotation())
        if not self.enabled:
            self._set_status("disabled", "started with refresh off")
            return
        with self._cond:
            self._requested = True  # load the warm state and catch up with labels made offline
        idle_since = 0.0   # when the last refresh ended
        while True:
            with self._cond:
                while not self._requested and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
            first = time.monotonic()
            # a label after a pause refreshes at once, and so does the one label that came
            # during the last refresh; several that came during it (a burst) are coalesced: wait
            # until it pauses for debounce, at most max_delay
            while True:
                with self._cond:
                    self._requested = False
                    if first - idle_since > self.debounce or self._requests <= 1:
                        break
                    quiet_until = time.monotonic() + self.debounce   # (other notifications do not end it)
                    while not self._requested and not self._stop and (left := quiet_until - time.monotonic()) > 0:
                        self._cond.wait(left)
                    if self._stop:
                        return
                    if not self._requested or time.monotonic() - first >= self.max_delay:
                        self._requested = False
                        break
            with self._cond:
                self._requests = 0   # every request so far is read by this refresh
                asked, self._first_request = self._first_request, None
            self._refresh_once(asked)
            idle_since = time.monotonic()

    def _set_status(self, state: str | None = None, detail: str | None = None, **extra) -> None:
        with self._cond:
            if state is not None:
                self.status.update(state=state, detail=detail)
            self.status.update(extra)
            self._cond.notify_all()

    def _max_annotation(self) -> int:
        return self.project.store.last_annotation_id()

    def _refresh_once(self, asked: float | None = None) -> None:
        """One refresh; ``asked``: when the first label it reads asked for it (monotonic)."""
        p = self.project
        started = time.monotonic()
        applied = self._max_annotation()   # every annotation up to here is read by this refresh
        self._set_status("running")
        t0, c0, s0 = time.perf_counter(), time.thread_time(), thread_schedstat()
        visible: list[float] = []
        rank_jobs: list[Callable[[], None]] = []

        def publish(run_id: int) -> None:   # the new predictions, before the refresh stores them
            snap, rank_job = self._snapshot_of_last_predictions(applied)
            self._publish(snap)
            visible.append(time.thread_time() - c0)   # this thread's CPU until they were visible
            self._note_visible(asked, started, t0, s0)
            self._let_them_answer()
            rank_jobs.append(rank_job)   # (the ranker waits for this refresh anyway)

        try:
            # a warm update's drain past its error bound waits until the predictions are shown
            summary = p.refresh(on_predictions=publish, drain=False)   # (a multi-label refresh does not call it)
        except NotReadyError as exc:
            self._publish_last(applied)
            self._set_status("not_ready", str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a failed refresh must not kill the server
            log.error("refresh failed:\n%s", traceback.format_exc())
            self._set_status("error", f"{type(exc).__name__}: {exc}")
            return
        if visible:   # shown already: the run's summary, now that it is done
            with self._cond:
                if self._snapshot.run_id == summary.get("run"):
                    self._snapshot = replace(self._snapshot, summary=dict(summary))
            for rank_job in rank_jobs:
                rank_job()
        else:
            self._publish_last(applied, summary=summary)
            visible.append(time.thread_time() - c0)
            self._note_visible(asked, started, t0, s0)
            self._let_them_answer()
        visible_cpu = visible[0]
        if not self._requested:   # (labels waiting: they refresh first, the status after them)
            try:   # precompute what /api/status and the dashboard read, memoised per set of items and
                p.status()   # per prediction run (item ids, the embedding check, confidence figures)
            except LabelloopError as exc:
                log.warning("cannot precompute the status: %s", exc)
        self._set_status("idle", None, refreshes=self.status["refreshes"] + 1,
                         last_seconds=round(time.perf_counter() - t0, 4),
                         last_visible_cpu_seconds=round(visible_cpu, 4))
        try:   # then the drain, until the next label asks for a refresh (it starts from the drained state)
            drained = p.drain(stop=lambda: self._requested or self._stop)
        except Exception:  # noqa: BLE001 - the next refresh starts from the undrained state
            log.error("drain failed:\n%s", traceback.format_exc())
            drained = 0
        self._set_status(last_drain_steps=drained)

    def _note_visible(self, asked: float | None, started: float, t0: float,
                      s0: tuple[float, float] | None) -> None:
        """Where the time from a label's request to its predictions being shown went (status
        ``last_visible``): ``queued_s`` before the refresh started (a refresh or drain under way,
        the debounce), then the refresh's wall ``refresh_s``: ``on_cpu_s`` running,
        ``runqueue_s`` runnable but waiting for a core (the machine's load), ``blocked_s`` the
        rest (the GIL, a lock, the writer, the disk). Linux; elsewhere only the walls."""
        wall = time.perf_counter() - t0
        got = {"queued_s": None if asked is None else round(started - asked, 4), "refresh_s": round(wall, 4)}
        s1 = thread_schedstat()
        if s0 is not None and s1 is not None:
            on_cpu, runq = s1[0] - s0[0], s1[1] - s0[1]
            got |= {"on_cpu_s": round(on_cpu, 4), "runqueue_s": round(runq, 4),
                    "blocked_s": round(max(0.0, wall - on_cpu - runq), 4)}
        self._set_status(last_visible=got)

    def _publish(self, snap: Snapshot) -> None:
        """Swap in new predictions; the strategy's picks are taken from the snapshot being
        replaced (the ranker may have updated it while these predictions were made). Requests
        waiting for them are woken (:meth:`_let_them_answer` then gives them time to answer)."""
        with self._cond:
            cur = self._snapshot
            snap = snap.with_ranking(cur.ranking)
            snap.applied_annotation_id = max(snap.applied_annotation_id, cur.applied_annotation_id)
            self._snapshot = snap
            done = [f for a, f in self._waiters if a <= snap.applied_annotation_id]
            self._waiters = [(a, f) for a, f in self._waiters if a > snap.applied_annotation_id and not f.done()]
            woken = {f for f in done if not f.done()}
            self._answering |= woken
            self._cond.notify_all()
        for fut in done:   # (outside the lock: a waiter's callbacks run here)
            if fut.set_running_or_notify_cancel():
                fut.set_result(True)
            else:
                self.answered(fut)   # given up already
        self._woken = woken

    def _let_them_answer(self) -> None:
        """Wait until the requests the last publish woke have sent their pages (at most
        ``answer_wait``): the refresher thread, before it goes on storing what it published."""
        woken, self._woken = self._woken, set()
        if woken:
            with self._cond:
                self._cond.wait_for(lambda: self._stop or not (woken & self._answering), timeout=self.answer_wait)
                self._answering -= woken

    def _publish_last(self, applied: int, *, summary: dict | None = None) -> None:
        """Publish the latest stored predictions and queue their ranking job."""
        snap, rank_job = self._snapshot_of_last_predictions(applied, summary=summary)
        self._publish(snap)
        rank_job()

    def _snapshot_of_last_predictions(self, applied: int, *,
                                      summary: dict | None = None) -> tuple[Snapshot, Callable[[], None]]:
        """The latest stored predictions with a confidence order, and a function that queues
        the ranking job for the strategy (its result lands in whichever snapshot is current
        then). Only the snapshot stands between a label and its predictions being shown: what
        the ranking alone needs (embeddings, graph, the dashboard's map, checks, rules) is
        gathered by that function, called after the publish."""
        p = self.project
        if p.task == "multilabel":
            return self._multilabel_snapshot(applied, summary)
        try:
            pred = p.predictions()
        except (LabelloopError, OSError) as exc:
            log.warning("cannot read the last predictions: %s", exc)
            pred = None
        if pred is not None:
            ids = pred.item_ids
        else:   # no predictions yet: the ranking's cold start (typicality) over the embedded items
            try:
                ids = p.embeddings()[0]
            except LabelloopError:
                return Snapshot.empty(applied), lambda: None
        y = p.label_vector(ids, sources=("human", "import", "machine"))   # (n,) -1: nobody labeled it
        gold = p.store.gold_item_ids()
        labeled = y >= 0
        pool = ~labeled & ~np.isin(ids, gold)
        if pred is None:
            snap = Snapshot.empty(applied)
        else:
            snap = Snapshot(int(pred.run_id), ids, list(pred.classes), pred.label, pred.confidence,
                            confidence_order(ids, pred.confidence, pool), applied_annotation_id=applied,
                            summary=dict(summary or {}))
        return snap, lambda: self._queue_rank_job(snap, pred, ids, y, pool)

    def _queue_rank_job(self, snap: Snapshot, pred, ids: np.ndarray, y: np.ndarray, pool: np.ndarray) -> None:
        """Gather what the strategy needs for ``pred`` (None: before the first refresh) and hand
        it to the ranker thread."""
        p = self.project
        try:
            emb = p.embeddings()[1]
            graph = p.graph()[1]
            p.embedding_map()   # the dashboard's map, computed here rather than on a page load
        except LabelloopError:
            return   # not embedded yet: the confidence order serves
        if len(emb) != len(ids):
            return   # items added since the predictions: the next refresh ranks them
        labeled = y >= 0
        job = RankInputs(None, ids, pool, labeled, None, None, None, [], emb, graph, seed=0)
        if pred is not None:
            labels = y[labeled]
            if labels.size and labels.max() >= pred.proba.shape[1]:
                labels = None   # a class added after the last refresh
            try:
                checks = p.checks_wanted(pred) if len(pred.classes) == len(p.classes) else None
            except LabelloopError as exc:
                log.warning("cannot tell which checks auto-labeling needs: %s", exc)
                checks = None
            try:   # what the rules say: conflict ranks by it, auto after its cold start
                rules = p.rule_matrices(ids)
            except LabelloopError as exc:   # e.g. a python rule fails on a new item
                log.warning("cannot read the rules' votes for the queue: %s", exc)
                rules = None
            if rules is not None and rules[0].shape != pred.proba.shape:
                rules = None   # a class added after the last refresh
            job = replace(job, run_id=snap.run_id, labels=labels, proba=pred.proba, confidence=pred.confidence,
                          classes=list(pred.classes), seed=int(snap.run_id), reached=pred.reached,
                          eligible=p.autolabel_eligible(pred), checks=checks,
                          **dict(zip(("rule_votes", "rule_proba"), rules or (None, None))))
        self._submit_rank(job)

    def _multilabel_snapshot(self, applied: int, summary: dict | None) -> tuple[Snapshot, Callable[[], None]]:
        """A multi-label project's snapshot: no single-label predictions; the ranker asks
        :meth:`Project.next` (:func:`rank_multilabel`) for the last refresh's scores."""
        p = self.project
        try:
            scores = p.multilabel_scores()
        except (LabelloopError, OSError) as exc:
            log.warning("cannot read the last scores: %s", exc)
            scores = None
        snap = Snapshot.empty(applied)
        run_id = None if scores is None else int(scores.run_id)
        if run_id is not None:
            snap = replace(snap, run_id=run_id, summary=dict(summary or {}),
                           tail_reason=f"item order (after the {self.n_top} the loop ranked at the last refresh)")

        def rank_job() -> None:
            try:   # the ranker's Project.next reads them from memory (MEMO)
                p.embeddings()
                p.graph()
            except LabelloopError:
                return   # not embedded yet: item order
            self._submit_rank(MultiLabelRank(run_id, seed=run_id or 0))
        return snap, rank_job

    # ------------------------------------------------------------------ ranker thread
    def _submit_rank(self, job: RankInputs) -> None:
        with self._cond:
            self._rank_job = job    # a newer job replaces one not yet started
            self._cond.notify_all()

    def _refresh_due(self) -> bool:
        """A refresh is asked for or running (under ``_cond``; never with refresh off)."""
        return self.enabled and (self._requested or self.status["state"] == "running")

    def _rank_loop(self) -> None:
        lower_thread_priority(RANKER_NICE)
        while True:
            with self._cond:
                while self._rank_job is None and not self._stop:
                    self._cond.wait()
                # a refresh is due or running: it would wait for the CPU (and the GIL) this
                # ranking takes, and publishes a newer job; so wait for it, at most rank_interval
                self._cond.wait_for(lambda: self._stop or not self._refresh_due(), timeout=self.rank_interval)
                if self._stop:
                    if self._ranker_project is not None:
                        self._ranker_project.close()
                        self._ranker_project = None
                    return
                job, self._rank_job = self._rank_job, None
                self.status["ranking"] = "running"
            t0 = time.perf_counter()
            detail = None
            try:
                ranking = self._rank(job)
            except LabelloopError as exc:   # e.g. the pool ran dry: the confidence order serves
                ranking, detail = Ranking(job.run_id, "least confidence"), str(exc)
            except Exception as exc:  # noqa: BLE001 - a failed ranking must not kill the server
                log.error("ranking failed:\n%s", traceback.format_exc())
                ranking, detail = Ranking(job.run_id, "least confidence"), f"{type(exc).__name__}: {exc}"
            with self._cond:
                cur = self._snapshot
                if cur.run_id == job.run_id or cur.ranking is None or (job.run_id or 0) >= (cur.ranked_run or 0):
                    self._snapshot = cur.with_ranking(ranking)
                self.status.update(ranking="idle", rank_detail=detail,
                                   last_rank_seconds=round(time.perf_counter() - t0, 4))
                self._cond.notify_all()
                rest = self.rank_interval - (time.perf_counter() - t0)
                if rest > 0:
                    self._cond.wait_for(lambda: self._stop, timeout=rest)

    def _rank(self, job: RankInputs | MultiLabelRank) -> Ranking:
        if isinstance(job, MultiLabelRank):
            if self._ranker_project is None:
                self._ranker_project = Project(self.root, readonly=True)
            return rank_multilabel(self._ranker_project, job, n_top=self.n_top)
        return rank(self.strategy, job, n_top=self.n_top)

    def record_served(self, annotator: str, entries: list[QueueEntry], ranking: Ranking | None) -> None:
        """Record the ranked items just handed to ``annotator`` as query runs, as ``labelloop
        next`` records the batch it shows (verify checks in a ``verify`` run of their own): the
        random and verify ones with the machine's guess and coverage of the predictions ranked,
        which certification compares the person's label with; the strategy's picks as actively
        chosen. One job queued on the writer, not waited for: the page goes out without it, and
        it still commits before any label this page leads to (the writer runs jobs in order)."""
        if ranking is None or self.project is None:
            return
        served = [e for e in entries if e.kind is not None and e.item_id in ranking.chosen]
        records = []
        for verify in (True, False):
            group = [e for e in served if (e.kind == "verify") == verify]
            if not group:
                continue
            details = ranking.details.get("verify", {}) if verify else \
                {k: v for k, v in ranking.details.items() if k != "verify"}
            records.append((("verify" if verify else ranking.strategy, len(group), ranking.seed,
                             [{"item": e.item_id, **ranking.chosen[e.item_id]} for e in group]),
                            dict(annotator=annotator, labeled=ranking.labeled, prediction_run=ranking.run_id,
                                 details=details)))
        if not records:
            return

        def record(store: Store) -> list[int]:
            p = Project.on_store(store)
            return [p.record_query(*args, **kw) for args, kw in records]

        if self.writer is None:
            record(self.project.store)
            return
        self.writer.submit(record).add_done_callback(_log_failure("recording the served queue"))


def _log_failure(what: str) -> Callable[[concurrent.futures.Future], None]:
    """A done-callback that logs the exception of a job nobody waits for."""
    def check(fut: concurrent.futures.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            exc = fut.exception()
            log.error("%s failed:\n%s", what, "".join(traceback.format_exception(exc)))
    return check

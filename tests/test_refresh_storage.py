"""What a refresh stores and reads: the graph found from the item ids, the affinity stored
beside it, predictions as array files per run (older runs: rows in the predictions table)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """300 digits embedded with pixels, 3 human labels per class, one full refresh done."""
    from labelloop.web.testing import digits_project

    root = tmp_path_factory.mktemp("refresh") / "proj"
    p, _, truth = digits_project(root, n=300)
    p.set_setting("head_weight", 0)   # propagation only: nothing else reads the vectors
    cid = p.store.class_ids()
    by_class: dict[str, list[int]] = {}
    for i, c in sorted(truth.items()):
        by_class.setdefault(c, []).append(i)
    p.store.add_annotations([(i, cid[c]) for c, ids in by_class.items() for i in ids[:3]],
                            source="human", annotator="t")
    p.refresh()
    p.close()
    return root, truth, by_class


def _label_more(p, by_class):
    cid = p.store.class_ids()
    p.store.add_annotations([(ids[3], cid[c]) for c, ids in by_class.items()], source="human", annotator="t")


def test_warm_refresh_in_a_new_process_reads_neither_vectors_nor_graph(labeled, tmp_path):
    """The same warm refresh on two copies, one without its embedding files and graph file
    (only the stored affinity and the last run's state left), gives the same predictions."""
    from labelloop import Project
    from labelloop.project import MEMO

    root, _, by_class = labeled
    runs = {}
    for name in ("with_files", "without"):
        path = tmp_path / name
        shutil.copytree(root, path)
        if name == "without":
            shutil.rmtree(path / "arrays" / "embeddings")
            for g in (path / "arrays" / "graphs").glob("*.npz"):
                g.unlink()
            assert any((path / "arrays" / "graphs").glob("*-S-k*"))   # the stored affinity stays
        MEMO.clear()   # as a new process
        with Project(path) as p:
            _label_more(p, by_class)
            s = p.refresh()
            assert s["warm"]
            runs[name] = p.predictions()
    a, b = runs["with_files"], runs["without"]
    for field in ("item_ids", "proba", "label", "confidence", "reached"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field


def test_stored_affinity_equals_the_graphs(labeled, tmp_path):
    from labelloop import Project
    from labelloop.project import MEMO
    from labelloop.propagate import affinity_matrix

    root, _, _ = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    MEMO.clear()
    with Project(path) as p:
        ids, S = p.affinity()
        want = affinity_matrix(p.propagation_graph()[1], temperature=p.setting("temperature"))
        assert np.array_equal(ids, p.store.item_ids())
        assert (S.tocsr() != want).nnz == 0 and S.shape == want.shape
        p.set_setting("temperature", 0.05)   # another temperature: another stored matrix
        _, S2 = p.affinity()
        assert (S2.tocsr() != affinity_matrix(p.propagation_graph()[1], temperature=0.05)).nnz == 0


def test_locality_order_is_stored_with_the_affinity_and_a_full_refresh_is_unchanged(labeled, tmp_path, monkeypatch):
    """From LOCALITY_MIN_ROWS rows the affinity's reverse Cuthill-McKee order is stored beside it
    on its first load (also for an affinity stored before), the next process reads it, and a
    full refresh on it gives the predictions of one without it."""
    import labelloop.csr as csr
    from labelloop import Project
    from labelloop.project import MEMO

    root, _, by_class = labeled
    got = {}
    for name, rows in (("plain", 10**9), ("ordered", 100)):
        monkeypatch.setattr(csr, "LOCALITY_MIN_ROWS", rows)
        path = tmp_path / name
        shutil.copytree(root, path)
        MEMO.clear()   # as a new process
        with Project(path) as p:
            _, S = p.affinity()
            order = next((path / "arrays" / "graphs").glob("*-S-k*")) / "order"
            assert order.exists() == (name == "ordered")
            if name == "ordered":
                perm, inverse, Sp = S.ordered()
                MEMO.clear()
                again = p.affinity()[1].ordered()   # read back, not made again
                np.testing.assert_array_equal(again[0], perm)
                assert isinstance(again[0], np.memmap) or isinstance(again[0].base, np.memmap)
            _label_more(p, by_class)
            p.refresh(full=True)
            got[name] = p.predictions()
    a, b = got["plain"], got["ordered"]
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_allclose(a.proba, b.proba, rtol=1e-4, atol=1e-6)


def test_a_drained_state_is_stored_in_the_locality_order_and_a_new_process_warm_starts_from_it(
        labeled, tmp_path, monkeypatch):
    """A warm refresh whose drain swept S in locality order stores its state in that order
    (state_Y_ordered.npy: not reordered back); the next refresh in a new process warm-starts from
    it and gives the predictions the same refresh gives in the process that holds the state."""
    import labelloop.csr as csr
    from labelloop import Project
    from labelloop.project import MEMO, STATE_Y_FILES

    root, _, by_class = labeled
    monkeypatch.setattr(csr, "LOCALITY_MIN_ROWS", 100)
    path, copy = tmp_path / "held", tmp_path / "new_process"
    shutil.copytree(root, path)
    MEMO.clear()

    def label(p, k):
        cid = p.store.class_ids()
        p.store.add_annotations([(ids[k], cid[c]) for c, ids in by_class.items()], source="human", annotator="t")

    with Project(path) as p:
        p.set_setting("class_prior", "labels")   # "auto" compares priors on the state in the items' order
        p.refresh(full=True)
        label(p, 4)
        growth, steps = p._lp.residual_growth, p._lp.drain_steps
        p._lp.residual_growth, p._lp.drain_steps = 0.0, 2   # past the bound: the update drains
        s = p.refresh()
        assert s["warm"] and s["drain_steps"] == 2
        p._lp.residual_growth, p._lp.drain_steps = growth, steps
        d = p.store.run_dir(s["run"])
        assert (d / STATE_Y_FILES[True]).exists() and not (d / STATE_Y_FILES[False]).exists()
        shutil.copytree(path, copy)
        label(p, 5)
        held = p.refresh()
        assert held["warm"]
        want = p.predictions()
    MEMO.clear()   # as a new process
    with Project(copy) as p:
        label(p, 5)
        s = p.refresh()
        assert s["warm"] and s["warm_updates"] == held["warm_updates"], (s, held)
        got = p.predictions()
    np.testing.assert_array_equal(got.label, want.label)
    np.testing.assert_allclose(got.proba, want.proba, rtol=1e-4, atol=1e-6)


def test_predictions_are_array_files_and_older_runs_read_reached_from_rows(labeled, tmp_path):
    """A refresh writes no prediction row; a run stored before the arrays existed (its
    reached flags in the predictions table) still reads back, summary recomputed."""
    from labelloop import Project
    from labelloop.project import MEMO

    root, _, _ = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    MEMO.clear()
    with Project(path) as p:
        fresh = p.predictions()
        assert p.store.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0] == 0
        d = p.store.run_dir(fresh.run_id)
        for a in ("label", "confidence", "margin", "entropy", "reached"):
            (d / f"{a}.npy").unlink()
        reached = np.ones(len(fresh.item_ids), dtype=bool)
        reached[:5] = False   # rows as an older version wrote them
        with p.store.transaction() as c:
            c.executemany("INSERT INTO predictions (run_id, item_id, class_id, confidence, margin, entropy, "
                          "reached) VALUES (?, ?, NULL, 0, 0, 0, ?)",
                          [(fresh.run_id, int(i), int(r)) for i, r in zip(fresh.item_ids, reached)])
    MEMO.clear()
    with Project(path) as p:
        old = p.predictions()
        assert old.run_id == fresh.run_id
        assert np.array_equal(old.reached, reached)
        for a in ("label", "confidence", "margin", "entropy", "proba"):
            assert np.array_equal(getattr(old, a), getattr(fresh, a)), a


def test_items_key_changes_when_items_are_added(tmp_path):
    from labelloop import Project

    with Project.init(tmp_path / "p", modality="text") as p:
        assert p.store.items_key() == 0
        p.store.add_items([{"text": "a", "content_hash": "h1", "modality": "text"}])
        k1 = p.store.items_key()
        p.store.add_items([{"text": "b", "content_hash": "h2", "modality": "text"}])
        assert p.store.items_key() != k1
        assert np.array_equal(p.item_ids(), p.store.item_ids())


def test_numba_cache_dir_is_writable_and_follows_the_environment(tmp_path, monkeypatch):
    from labelloop.graph import numba_cache_dir

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "n"))
    assert numba_cache_dir() == tmp_path / "n"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert numba_cache_dir() == tmp_path / "x" / "labelloop" / "numba"


#: run in a new process: a warm refresh after new labels, then which heavy modules it imported
_FRESH_REFRESH = """
import json, sys
from labelloop import Project
Project.RECALIBRATE_MAX_ITEMS = 100   # as above 50k items: the last calibration is reused
with Project(sys.argv[1]) as p:
    s = p.refresh()
print(json.dumps({"warm": s["warm"], "drained": s["drain_steps"] > 0 or s["refit"],
                  "scipy": "scipy.sparse" in sys.modules,
                  "sklearn": "sklearn" in sys.modules, "torch": "torch" in sys.modules}))
"""


def test_warm_refresh_in_a_new_process_imports_no_scipy(labeled, tmp_path, monkeypatch):
    """A warm refresh in a new process, its drain's full steps included, never imports
    scipy.sparse (0.15-0.25 CPU-s of a refresh): its products run scipy's compiled kernels loaded
    alone (labelloop.csr.kernels). Its predictions equal those of the same refresh in a process
    that has scipy loaded. (Both reuse the last calibration, as a warm refresh does above
    RECALIBRATE_MAX_ITEMS items.) The products themselves:
    tests/test_propagate.py::test_row_products_without_scipy_equal_scipys."""
    import json
    import os
    import subprocess
    import sys

    from labelloop import Project
    from labelloop.project import MEMO

    root, _, by_class = labeled
    monkeypatch.setattr(Project, "RECALIBRATE_MAX_ITEMS", 100)
    got = {}
    for name in ("fresh", "here"):
        path = tmp_path / name
        shutil.copytree(root, path)
        with Project(path) as p:
            _label_more(p, by_class)
        if name == "fresh":
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
            out = subprocess.run([sys.executable, "-c", _FRESH_REFRESH, str(path)], env=env, check=True,
                                 capture_output=True, text=True).stdout
            info = json.loads(out.strip().splitlines()[-1])
            assert info["warm"]
            assert info["drained"], info   # full steps past the warm update's error bound too
            assert not (info["scipy"] or info["sklearn"] or info["torch"]), info
        else:
            import scipy.sparse  # noqa: F401  (loaded: the kernels come from its usual import)

            MEMO.clear()
            with Project(path) as p:
                assert p.refresh()["warm"]
        MEMO.clear()
        with Project(path) as p:
            got[name] = p.predictions()
    a, b = got["fresh"], got["here"]
    assert np.array_equal(a.item_ids, b.item_ids) and np.array_equal(a.label, b.label)
    np.testing.assert_allclose(a.proba, b.proba, atol=1e-5)


def test_refresh_shows_its_predictions_before_storing_them(labeled, tmp_path):
    """``refresh(on_predictions=...)`` (what a server publishes from): inside the callback the
    Project's predictions are the new ones, the run is not finished yet; afterwards it is."""
    from labelloop import Project
    from labelloop.project import MEMO

    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    MEMO.clear()
    seen = []
    with Project(path) as p:
        before = p.store.last_run_id("refresh")
        _label_more(p, by_class)

        def shown(run_id):
            pred = p.predictions()
            seen.append((run_id, pred.run_id, p.store.last_run_id("refresh"), pred.label.copy()))

        s = p.refresh(on_predictions=shown)
        assert len(seen) == 1
        run_id, pred_run, finished, label = seen[0]
        assert run_id == pred_run == s["run"] and finished == before
        assert p.store.last_run_id("refresh") == s["run"]
        assert np.array_equal(label, p.predictions().label)


def test_server_refreshes_a_label_after_a_pause_at_once(labeled, tmp_path):
    """The server's refresher: a label after a pause is refreshed at once, not after the burst
    debounce (here 60 s, longer than the wait allowed); the published snapshot covers it and
    holds the run's summary once the run is done."""
    from labelloop.store import Store
    from labelloop.web.service import Refresher, Writer

    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    writer = Writer(path)
    writer.start()
    r = Refresher(path, strategy="least-confidence", writer=writer, debounce=60.0, max_delay=120.0)
    r.start()
    try:
        assert r.wait_ranked(120)
        first = r.snapshot.run_id
        with Store(path, readonly=True) as st:
            cid = st.class_ids()
        c, ids = next(iter(by_class.items()))
        aid = writer.call(lambda s: s.add_annotations([(ids[5], cid[c])], source="human", annotator="t"))
        with Store(path, readonly=True) as st:
            aid = st.last_annotation_id()
        r.request()
        assert r.wait_applied(aid, timeout=45.0)   # well under the 60 s debounce
        snap = r.snapshot
        assert snap.run_id is not None and snap.run_id > first
        deadline = time.monotonic() + 60
        while r.status["state"] != "idle" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.snapshot.summary.get("run") == snap.run_id and r.status["last_visible_cpu_seconds"] > 0
    finally:
        r.stop()
        writer.stop()


def test_warm_refresh_reuses_the_calibration_without_mapping_held_out_scores_twice(labeled, tmp_path, monkeypatch):
    """Above RECALIBRATE_MAX_ITEMS a warm refresh reuses the last calibrator. The held-out
    distributions it stores were calibrated already: mapped again they sharpened with every warm
    refresh (a power of beta^k after k of them), and the accuracy estimate and autolabel read them."""
    from labelloop import Project
    from labelloop.loop.calibrate import Calibrator

    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    monkeypatch.setattr(Project, "RECALIBRATE_MAX_ITEMS", 100)
    with Project(path) as p:
        first = p.predictions()
        d0 = p.store.run_dir(first.run_id)
        Q0, cal0 = np.load(d0 / "heldout_proba.npy"), Calibrator.from_dict(first.calibration)
        assert len(Q0) and cal0.beta != 1.0
        for _ in range(2):
            _label_more(p, by_class)
            assert p.refresh()["warm"]
            pred = p.predictions()
            assert Calibrator.from_dict(pred.calibration) == cal0
            np.testing.assert_allclose(np.load(p.store.run_dir(pred.run_id) / "heldout_proba.npy"), Q0, atol=1e-6)


@pytest.mark.parametrize("class_prior", ["auto", "none"])   # "none": an update rewrites only the rows it changed
def test_warm_refresh_makes_its_distributions_and_state_in_the_run_files_and_keeps_no_map_of_them(
        labeled, tmp_path, monkeypatch, class_prior):
    """A warm refresh that reuses the last calibration calibrates the propagation's distributions
    in place: they are made in the run's ``proba`` file (memory-mapped under a temporary name,
    then renamed), not in a new array written there; the state it warm-started from (read from
    the last run's file memory-mapped) is updated in the file this run stores it in. The
    propagation writes into neither afterwards: the next refresh, in the same process, leaves
    the finished run's files as they were; a new process reads what the refresh saw and
    warm-starts from its state."""
    from labelloop import Project
    from labelloop.project import MEMO, STATE_Y_FILES
    from labelloop.propagate import LabelPropagation

    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    if class_prior != "auto":
        with Project(path) as p:
            p.set_setting("class_prior", class_prior)
            p.refresh()   # a full refresh with that setting
    monkeypatch.setattr(Project, "RECALIBRATE_MAX_ITEMS", 100)
    # within the error bound: no drain, whose steps on a graph this small (no locality order)
    # make a new array, stored as such
    monkeypatch.setattr(LabelPropagation, "residual_exceeded", lambda self: False)
    saved = []
    save = np.save
    monkeypatch.setattr(np, "save", lambda f, *a, **k: (saved.append(Path(f).name), save(f, *a, **k))[1])
    MEMO.clear()   # as a new process
    with Project(path) as p:
        _label_more(p, by_class)
        assert p.refresh()["warm"]
        pred = p.predictions()
        d = p.store.run_dir(pred.run_id)
        state_name = next(f for f in STATE_Y_FILES.values() if (d / f).exists())
        assert "proba.npy" not in saved and state_name not in saved   # not written from other arrays
        assert not list(d.glob("*.part.npy"))
        files = {f: np.load(d / f) for f in ("proba.npy", state_name)}
        np.testing.assert_array_equal(files["proba.npy"], pred.proba)
        np.testing.assert_allclose(files["proba.npy"].sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(files[state_name], p._lp.state()[0])
        assert not isinstance(p._lp.__dict__.get("label_distributions_"), np.memmap)
        assert not p._lp.state()[0].flags.writeable
        p.store.add_annotations([(by_class[c][4], p.store.class_ids()[c]) for c in list(by_class)[:2]],
                                source="human", annotator="t")
        assert p.refresh()["warm"]
        for f, a in files.items():   # the finished run's files unchanged
            np.testing.assert_array_equal(np.load(d / f), a)
        last = p.predictions()
    MEMO.clear()   # as a new process
    with Project(path) as q:
        np.testing.assert_array_equal(q.predictions().proba, last.proba)
        np.testing.assert_array_equal(q.predictions().label, last.label)
        _label_more(q, by_class)
        assert q.refresh()["warm"]


def test_a_server_refresh_keeps_its_arrays_in_its_own_memory_and_prunes_once_they_are_shown(labeled, tmp_path,
                                                                                           monkeypatch):
    """A refresh that shows its predictions before storing them (a server's, ``on_predictions``)
    makes its distributions and state in its own memory, which a long-running process reuses
    refresh after refresh (no map of a run file; the state stays writable: no copy before the
    next update), and deletes the run folder it replaces once they are shown."""
    from labelloop import Project
    from labelloop.project import MEMO, _RunFile

    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    monkeypatch.setattr(Project, "RECALIBRATE_MAX_ITEMS", 100)
    monkeypatch.setattr(_RunFile, "create", lambda self, shape: pytest.fail("a server's refresh mapped a run file"))
    MEMO.clear()
    runs_dir = path / "arrays" / "runs"
    shown = []
    with Project(path) as p:
        for k in range(3, 3 + Project.KEEP_REFRESH_RUNS):
            cid = p.store.class_ids()
            p.store.add_annotations([(ids[k], cid[c]) for c, ids in by_class.items()], source="human", annotator="t")
            s = p.refresh(on_predictions=lambda run: shown.append(sorted(int(d.name) for d in runs_dir.iterdir())),
                          drain=False)
            assert s["warm"]
            assert p._lp.state()[0].flags.writeable
            assert not isinstance(p._lp.__dict__.get("label_distributions_"), np.memmap)
            d = p.store.run_dir(s["run"])
            assert not list(d.glob("*.part.npy"))
            np.testing.assert_array_equal(np.load(d / "proba.npy"), p.predictions().proba)
        runs = p.store.run_ids("refresh")
        assert shown[-1] == runs[-Project.KEEP_REFRESH_RUNS - 1:]   # the oldest still there when shown ...
        assert sorted(int(d.name) for d in runs_dir.iterdir()) == runs[-Project.KEEP_REFRESH_RUNS:]   # ... then gone


def test_refresh_can_leave_its_drain_to_a_later_call(labeled, tmp_path, monkeypatch):
    """``refresh(drain=False)`` (a server's) runs no full steps past the warm update's error
    bound; :meth:`Project.drain` runs them afterwards (at most the propagation's ``drain_steps``,
    none once ``stop()`` says so) and the next warm refresh starts from the drained state."""
    import labelloop.propagate as propagate
    from labelloop import Project
    from labelloop.project import MEMO

    monkeypatch.setattr(propagate, "DEFERRED_DRAIN_LIMIT", 1e9)   # the residual forced below is far past it
    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    MEMO.clear()
    with Project(path) as p:
        p.refresh()   # warm: this process holds the propagation state
        assert p.drain() == 0   # within its bound: nothing to drain
        p._lp.residual_fit_ /= 100   # as if the last full fit had converged 100x further: past the bound
        _label_more(p, by_class)
        s = p.refresh(drain=False)
        assert s["warm"] and s["drain_steps"] == 0 and s["residual"] > 1.5 * s["residual_fit"]
        assert p.drain(stop=lambda: True) == 0
        Y = p._lp.Y_.copy()
        assert p.drain(max_steps=3) == 3 and not np.array_equal(p._lp.Y_, Y)
        assert p._lp.residual_ < s["residual"]
        p.store.add_annotations([(by_class[c][4], p.store.class_ids()[c]) for c in list(by_class)[:2]],
                                source="human", annotator="t")
        s2 = p.refresh(drain=False)   # warm from the drained state; the steps since the fit counted
        assert s2["warm"] and s2["drained"] == 3
        # then up to a full fit's work (n_iter steps in all): the bound is met, or that level
        # becomes the new baseline
        assert 0 < p.drain() <= p.setting("n_iter") - 3 and not p._lp.residual_exceeded()


def test_server_refresher_drains_after_showing_and_a_new_label_stops_it(labeled, tmp_path, monkeypatch):
    """The refresher publishes a warm refresh's predictions before any drain past the error
    bound, then drains (``last_drain_steps``) unless a refresh is already asked for again."""
    import labelloop.propagate as propagate
    from labelloop import Project
    from labelloop.web.service import Refresher

    monkeypatch.setattr(propagate, "DEFERRED_DRAIN_LIMIT", 1e9)   # the residual forced below is far past it
    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    r = Refresher(path, strategy="least-confidence")   # its refresh steps run here, no threads
    r.project = Project(path)
    try:
        r._refresh_once()   # warm state loaded, within its bound
        assert r.status["last_drain_steps"] == 0
        cid = r.project.store.class_ids()
        for k, more in enumerate((True, False)):
            r.project._lp.residual_fit_ /= 100   # as if the last full fit had converged further
            r.project.store.add_annotations([(ids[4 + k], cid[c]) for c, ids in by_class.items()],
                                            source="human", annotator="t")
            r._requested = more   # another label came while this refresh ran
            r._refresh_once()
            assert r.snapshot.summary["drain_steps"] == 0 and r.snapshot.summary["warm"]
            assert (r.status["last_drain_steps"] == 0) == more
    finally:
        r.project.close()



def test_predicted_labels_are_stored_in_the_smallest_integer_type_and_read_back(labeled, tmp_path):
    """``label.npy`` and ``state_y.npy`` hold int8 for 10 classes (1 MB at 1M items, not int64's
    8 MB); a new process reads the predictions back as the refresh made them and warm-starts."""
    from labelloop import Project
    from labelloop.project import MEMO

    root, _, by_class = labeled
    path = tmp_path / "p"
    shutil.copytree(root, path)
    MEMO.clear()
    with Project(path) as p:
        _label_more(p, by_class)
        s = p.refresh()
        made = p.predictions()
        d = p.store.run_dir(s["run"])
    assert np.load(d / "label.npy").dtype == np.int8 and np.load(d / "state_y.npy").dtype == np.int8
    MEMO.clear()
    with Project(path) as p:
        back = p.predictions()
        for field in ("proba", "label", "confidence", "margin", "entropy", "reached"):
            assert np.array_equal(getattr(back, field), getattr(made, field)), field
        assert np.array_equal(back.label, back.proba.argmax(1))
        _label_more(p, {c: ids[1:] for c, ids in by_class.items()})
        assert p.refresh()["warm"]   # from the stored state

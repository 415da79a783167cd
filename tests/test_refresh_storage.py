"""What a refresh stores and reads: the graph found from the item ids, the affinity stored
beside it, predictions as array files per run (older runs: rows in the predictions table)."""

from __future__ import annotations

import shutil

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
        assert (S != want).nnz == 0 and S.shape == want.shape
        p.set_setting("temperature", 0.05)   # another temperature: another stored matrix
        _, S2 = p.affinity()
        assert (S2 != affinity_matrix(p.propagation_graph()[1], temperature=0.05)).nnz == 0


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

"""A project that grows: items added to an embedded project extend the stored kNN graph
instead of rebuilding it (``Project.graph`` -> ``graph.extend_knn_graph``) until a rebuild is
due; refresh run folders are pruned to the newest few; vectors are read memory-mapped."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("each_db")   # every test on SQLite and on PostgreSQL


def _batches(tmp_path, sizes):
    """Folders of digit PNGs, one per batch, ``sizes`` images each (distinct images)."""
    from labelloop.datasets import load_dataset, write_image_folder

    ds = load_dataset("digits", n=sum(sizes), seed=0)
    every = tmp_path / "all"
    paths = write_image_folder(ds, every)
    out, lo = [], 0
    for b, size in enumerate(sizes):
        folder = tmp_path / f"batch{b}"
        for q in paths[lo:lo + size]:
            dst = folder / q.relative_to(every)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(q, dst)
        out.append(folder)
        lo += size
    return out, ds.class_names


def test_refresh_after_a_new_batch_extends_the_graph_then_rebuilds_past_the_bound(tmp_path, project_factory):
    from labelloop.graph import REBUILD_AFTER_ADDED, build_knn_graph

    folders, classes = _batches(tmp_path, [200, 40, 80])
    assert 40 <= REBUILD_AFTER_ADDED * 200 < 120   # batch 1 is extended, batch 2 passes the bound
    p = project_factory(classes=classes)
    p.import_(folders[0])
    p.embed("pixels")
    p.graph()
    first = p.store.last_run("graph")
    assert first["summary"]["full_n"] == 200 and "extends" not in first["inputs"]
    cid = p.store.class_ids()
    p.store.add_annotations([(i, cid[classes[i % len(classes)]]) for i in range(1, 31)], source="human", annotator="t")
    p.refresh()

    p.import_(folders[1], batch="week-2")
    p.embed("pixels")
    p.refresh()   # the new items need a graph: the update path
    second = p.store.last_run("graph")
    assert second["inputs"]["extends"] == first["inputs"]["fingerprint"]
    # the superseded graph and the affinity stored beside it are gone; the new graph's stays
    stored = sorted(f.name for f in (p.root / "arrays" / "graphs").iterdir())
    assert stored and all(f.startswith(second["inputs"]["fingerprint"]) for f in stored), stored
    assert any("-S-" in f for f in stored)
    assert second["summary"].items() >= {"n": 240, "added": 40, "full_n": 200}.items()
    ids, g = p.graph()
    _, X = p.embeddings()
    want = build_knn_graph(X, g.k, method="exact")   # below the exact threshold: exact either way
    np.testing.assert_allclose(g.similarities, want.similarities, atol=1e-5)
    assert np.mean([len(set(a) & set(b)) / g.k for a, b in zip(g.indices, want.indices)]) > 0.999
    assert len(p.predictions().item_ids) == 240

    p.import_(folders[2], batch="week-3")
    p.embed("pixels")
    p.graph()   # 120 added since the full build of 200: more than the bound, so a full rebuild
    third = p.store.last_run("graph")
    assert "extends" not in third["inputs"] and third["summary"]["full_n"] == 320


def test_refresh_prunes_old_run_folders_but_keeps_what_is_referenced(tmp_path, project_factory, monkeypatch):
    from labelloop import Project
    from labelloop.project import _RunFile

    folders, classes = _batches(tmp_path, [120])
    p = project_factory(classes=classes)
    p.import_(folders[0])
    p.embed("pixels")
    cid = p.store.class_ids()
    p.set_setting("head_weight", 0)
    runs_dir = p.root / "arrays" / "runs"
    refreshes, written = [], {}
    create = _RunFile.create

    def creating(self, shape):   # the folders there when a refresh makes its predictions
        written[int(self.path.parent.name)] = sorted(int(d.name) for d in runs_dir.iterdir())
        return create(self, shape)

    monkeypatch.setattr(_RunFile, "create", creating)
    for r in range(6):
        p.store.add_annotations([(i, cid[classes[i % len(classes)]]) for i in range(1 + 3 * r, 4 + 3 * r)],
                                source="human", annotator="t")
        refreshes.append(p.refresh()["run"])
        if r == 1:
            p.autolabel(target_precision=0.5)   # accepts from refresh 1: its folder stays
            referenced = p.store.last_run("autolabel")["inputs"]["prediction_run"]
    assert referenced == refreshes[1]
    kept = sorted(int(d.name) for d in runs_dir.iterdir() if int(d.name) in refreshes)
    assert kept == [refreshes[1], *refreshes[-Project.KEEP_REFRESH_RUNS:]]
    # the folder a refresh's own replaces is gone before it makes its arrays (in the memory
    # that folder's files held): then only its own, the two before it and autolabel's are there
    assert written[refreshes[-1]] == [refreshes[1], *refreshes[-Project.KEEP_REFRESH_RUNS:]]
    # what readers use still works: the newest predictions, a warm start from the last state
    assert p.predictions().run_id == refreshes[-1]
    p.store.add_annotations([(100, cid[classes[0]])], source="human", annotator="t")
    assert p.refresh()["warm"]


def test_vectors_are_one_memory_mapped_file_per_set_of_items(tmp_path, project_factory):
    folders, classes = _batches(tmp_path, [60, 20])
    p = project_factory(classes=classes)
    p.import_(folders[0])
    p.embed("pixels")
    ids, X = p.embeddings()
    assert isinstance(X, np.memmap) and not X.flags.writeable and X.shape[0] == len(ids) == 60
    files = list((p.root / "arrays" / "vectors").glob("*.npy"))
    assert len(files) == 1
    p.import_(folders[1])
    p.embed("pixels")
    ids2, X2 = p.embeddings()
    assert len(ids2) == 80 and np.array_equal(np.asarray(X2[:60]), np.asarray(X))
    assert [f.name for f in (p.root / "arrays" / "vectors").glob("*.npy")] != [files[0].name]
    assert len(list((p.root / "arrays" / "vectors").glob("*.npy"))) == 1
    # the same vectors as the embedding cache holds
    want = p.store.load_embeddings(p.store.get_meta("backbone")["cache_id"],
                                   [it.content_hash for it in p.store.items()])
    assert np.array_equal(np.asarray(X2), want)

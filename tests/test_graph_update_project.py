"""Items added to an embedded project: the stored kNN graph is extended, not rebuilt
(``Project.graph`` -> ``graph.extend_knn_graph``), until a rebuild is due."""

from __future__ import annotations

import shutil

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

    folders, classes = _batches(tmp_path, [200, 40, 40])
    assert 40 <= REBUILD_AFTER_ADDED * 200 < 80   # batch 1 is extended, batch 2 passes the bound
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
    assert second["summary"].items() >= {"n": 240, "added": 40, "full_n": 200}.items()
    ids, g = p.graph()
    _, X = p.embeddings()
    want = build_knn_graph(X, g.k, method="exact")   # below the exact threshold: exact either way
    np.testing.assert_allclose(g.similarities, want.similarities, atol=1e-5)
    assert np.mean([len(set(a) & set(b)) / g.k for a, b in zip(g.indices, want.indices)]) > 0.999
    assert len(p.predictions().item_ids) == 240

    p.import_(folders[2], batch="week-3")
    p.embed("pixels")
    p.graph()   # 80 added since the full build of 200: more than the bound, so a full rebuild
    third = p.store.last_run("graph")
    assert "extends" not in third["inputs"] and third["summary"]["full_n"] == 280

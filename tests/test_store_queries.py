"""Store methods the web server polls, checked against hand-made rows."""

from __future__ import annotations

import time

import numpy as np

import pytest

from labelloop.store import MAX_ID, Store

pytestmark = pytest.mark.usefixtures("each_db")   # every test on SQLite and on PostgreSQL


def _store(tmp_path) -> Store:
    s = Store(tmp_path / "p", create=True)
    s.add_items([{"content_hash": f"h{i}", "modality": "text", "text": f"t{i}"} for i in range(5)])
    s.add_classes(["a", "b"])
    return s


def test_counts_a_server_polls(tmp_path):
    s = _store(tmp_path)
    cid = s.class_ids()
    assert s.last_annotation_id() == 0 and s.unlabeled_count() == 5 and not s.has_source("machine")
    s.add_annotations([(1, cid["a"]), (2, cid["b"])], source="human", annotator="x")
    s.add_annotations([(3, cid["a"])], source="machine")
    s.add_annotations([(2, None)], source="human", annotator="x")   # withdrawn: still counted as given
    assert s.last_annotation_id() == 4
    assert s.unlabeled_count() == 2
    assert s.has_source("machine") and not s.has_source("import")
    assert s.has_item(5) and not s.has_item(6) and not s.has_item(0)
    assert not s.has_item(MAX_ID) and not s.has_item(2**63) and not s.has_item(-(2**70))   # no OverflowError
    with s.transaction() as c:
        c.executemany("INSERT INTO gold (item_id, class_id, added) VALUES (?, ?, ?)",
                      [(4, cid["a"], time.time()), (2, cid["b"], time.time())])
        c.execute("INSERT INTO audit_confirmations (item_id, class_id, annotator, created) VALUES (1, ?, 'x', 0)",
                  (cid["a"],))
    assert np.array_equal(s.gold_item_ids(), [2, 4])
    assert s.audit_confirmation_count() == 1
    s.close()


def test_guidelines_are_kept_in_the_meta_table(tmp_path):
    s = _store(tmp_path)
    assert s.guidelines() == {"text": "", "updated": None, "by": None}
    before = time.time()
    s.set_guidelines("# Hi", by="boss")
    g = s.guidelines()
    assert g["text"] == "# Hi" and g["by"] == "boss" and g["updated"] >= before
    s.close()
    with Store(tmp_path / "p", readonly=True) as r:   # stored, not held in memory
        assert r.guidelines()["text"] == "# Hi"


def test_memo_keeps_the_new_predictions_and_the_last_finished_ones(tmp_path):
    """A server's refresher puts run 2 while request threads still read run 1 (its rows are
    being written): neither may evict the other, or each request reloads from disk."""
    from labelloop.project import Memo

    m, loads = Memo(), []

    def load(run):
        loads.append(run)
        return f"pred{run}"

    m.put(tmp_path, "predictions", 2, "pred2")
    assert m.get(tmp_path, "predictions", 1, lambda: load(1)) == "pred1"
    assert m.get(tmp_path, "predictions", 2, lambda: load(2)) == "pred2"
    assert m.get(tmp_path, "predictions", 1, lambda: load(1)) == "pred1"
    assert loads == [1]
    m.put(tmp_path, "predictions", 3, "pred3")   # the first stored (run 2) goes
    assert m.get(tmp_path, "predictions", 2, lambda: load(2)) == "pred2" and loads == [1, 2]
    m.put(tmp_path, "graph", "a", "A")
    m.put(tmp_path, "graph", "b", "B")           # one slot: the old graph is not kept
    assert m.get(tmp_path, "graph", "a", lambda: "A2") == "A2"
    assert m.get(tmp_path, "item_ids", 1, lambda: None) is None   # None is a value too
    assert m.get(tmp_path, "item_ids", 1, lambda: load("again")) is None and loads == [1, 2]

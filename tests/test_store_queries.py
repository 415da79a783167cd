"""Store methods the web server polls, checked against hand-made rows."""

from __future__ import annotations

import time

import numpy as np

from labelloop.store import MAX_ID, Store


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

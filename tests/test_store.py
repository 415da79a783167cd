import sqlite3

import numpy as np
import pytest

from labelloop.errors import ProjectError, UnknownClassError, UnknownItemError, ValidationError
from labelloop.store import MIGRATIONS, Store

pytestmark = pytest.mark.usefixtures("each_db")   # every test on SQLite and on PostgreSQL


def integrity_errors() -> tuple:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.IntegrityError,)
    return (sqlite3.IntegrityError, psycopg.IntegrityError)


def test_missing_project_names_the_fix(tmp_path):
    with pytest.raises(ProjectError, match="labelloop init"):
        Store(tmp_path / "nope")


def test_schema_is_migrated_once_and_recorded(tmp_path):
    s = Store(tmp_path, create=True)
    assert s.schema_version() == max(v for v, _, _ in MIGRATIONS)
    s.close()
    s = Store(tmp_path)  # reopening applies nothing twice
    rows = s.conn.execute("SELECT version FROM migrations").fetchall()
    assert [r[0] for r in rows] == [v for v, _, _ in MIGRATIONS]
    if s.dialect == "sqlite":
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def _items(n, prefix="t"):
    return [dict(content_hash=f"{prefix}{i}", modality="text", text=f"text {i}", external_id=f"{prefix}{i}")
            for i in range(n)]


def test_annotations_are_append_only_and_current_label_is_latest(tmp_path):
    s = Store(tmp_path, create=True)
    ids = s.add_items(_items(3))
    s.add_classes(["a", "b"])
    a, b = s.class_id("a"), s.class_id("b")
    s.add_annotations([(ids[0], a), (ids[1], a)], source="human", annotator="x")
    s.add_annotations([(ids[0], b)], source="human", annotator="x")  # a correction
    assert s.latest_labels("human") == {ids[0]: b, ids[1]: a}
    assert len(s.annotations("human")) == 3  # nothing overwritten
    s.add_annotations([(ids[1], None)], source="human", annotator="x")  # withdrawn
    assert s.latest_labels("human") == {ids[0]: b}
    s.close()


def test_several_annotators_vote(tmp_path):
    s = Store(tmp_path, create=True)
    (i,) = s.add_items(_items(1))
    s.add_classes(["a", "b"])
    a, b = s.class_id("a"), s.class_id("b")
    s.add_annotations([(i, a)], source="human", annotator="x")
    s.add_annotations([(i, a)], source="human", annotator="y")
    s.add_annotations([(i, b)], source="human", annotator="z")
    assert s.latest_labels("human") == {i: a}  # 2 votes to 1
    s.add_annotations([(i, b)], source="human", annotator="y")  # y changes its mind
    assert s.latest_labels("human") == {i: b}


def test_reinsert_same_content_adds_nothing(tmp_path):
    s = Store(tmp_path, create=True)
    first = s.add_items(_items(3))
    again = s.add_items(_items(3))
    assert all(i is not None for i in first) and again == [None, None, None]
    assert s.item_count() == 3


def test_failed_transaction_loses_nothing(tmp_path):
    s = Store(tmp_path, create=True)
    s.add_items(_items(2))
    with pytest.raises(integrity_errors()):
        s.add_annotations([(1, 999)], source="human")  # no such class: foreign key
    assert s.annotations() == [] and s.item_count() == 2


def test_resolve_item_by_every_kind_of_reference(tmp_path):
    s = Store(tmp_path, create=True)
    ids = s.add_items([
        dict(content_hash="h1", modality="image", external_id="cat/a.jpg", uri="/data/cat/a.jpg"),
        dict(content_hash="h2", modality="image", external_id="dog/a.jpg", uri="/data/dog/a.jpg"),
        dict(content_hash="h3", modality="image", external_id="dog/b.jpg", uri="/data/dog/b.jpg"),
    ])
    assert s.resolve_item("cat/a.jpg") == ids[0]
    assert s.resolve_item("/data/dog/a.jpg") == ids[1]
    assert s.resolve_item(str(ids[2])) == ids[2]
    assert s.resolve_item("b.jpg") == ids[2]
    with pytest.raises(UnknownItemError, match="matches 2 files"):
        s.resolve_item("a.jpg")
    with pytest.raises(UnknownItemError, match="no item matches"):
        s.resolve_item("zebra.jpg")
    with pytest.raises(UnknownClassError, match="unknown class"):
        s.class_id("zebra")
    with pytest.raises(ValidationError):
        s.add_classes(["  "])


def test_embedding_chunks_round_trip_in_requested_order(tmp_path):
    s = Store(tmp_path, create=True)
    rng = np.random.default_rng(0)
    v1, v2 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(2, 4)).astype(np.float32)
    s.add_embedding_chunk("bb", ["a", "b", "c"], v1)
    s.add_embedding_chunk("bb", ["d", "e"], v2)
    out = s.load_embeddings("bb", ["e", "a", "c"])
    np.testing.assert_array_equal(out, np.stack([v2[1], v1[0], v1[2]]))
    assert s.embedded_hashes("bb") == set("abcde")
    with pytest.raises(ValidationError, match="labelloop embed"):
        s.load_embeddings("bb", ["zz"])


def test_runs_are_recorded_with_parameters(tmp_path):
    s = Store(tmp_path, create=True)
    r = s.start_run("refresh", {"k": 10})
    s.finish_run(r, {"items": 5})
    (run,) = s.runs("refresh")
    assert run["params"] == {"k": 10} and run["summary"] == {"items": 5} and run["status"] == "done"

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


def test_remembered_latest_labels_follow_every_append_from_any_connection(tmp_path):
    """latest_labels is remembered per source and caught up with the annotations appended since
    (on SQLite): after random votes, corrections and withdrawals by several annotators and
    sources, written through this store and through another connection, it equals the labels
    read from the table; labels handed out earlier do not change, and the arrays say the same."""
    s = Store(tmp_path, create=True)
    ids = s.add_items(_items(12))
    s.add_classes(["a", "b", "c"])
    classes = [s.class_id(n) for n in "abc"]
    other = Store(tmp_path)
    rng = np.random.default_rng(0)
    for step in range(40):
        source = ["human", "import", "machine"][rng.integers(3)]
        rows = [(int(ids[rng.integers(12)]), None if rng.random() < 0.15 else classes[rng.integers(3)])
                for _ in range(int(rng.integers(1, 4)))]
        before = {src: s.latest_labels(src) for src in ("human", "import", "machine")}
        frozen = {src: dict(m) for src, m in before.items()}
        (s if step % 3 else other).add_annotations(rows, source=source, annotator=f"a{rng.integers(3)}")
        for src in ("human", "import", "machine"):
            truth = s._read_latest(src)
            assert dict(s.latest_labels(src)) == truth, (step, src)
            k, v = s.latest_label_arrays(src)
            assert dict(zip(k.tolist(), v.tolist())) == truth
            assert dict(before[src]) == frozen[src]   # what a caller holds stays as it was
    k, v = s.latest_label_arrays("machine")
    with pytest.raises(ValueError):
        v[:1] = classes[0]   # read-only: they are shared
    assert (np.diff(k) > 0).all()   # item ids ascending
    other.close()
    s.close()


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


def test_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    """Eight stores (connections) write at once: BEGIN IMMEDIATE's one writer at a time holds
    on both databases, so overlapping imports store each item once, ids have no gaps, and
    every annotation id handed back is a distinct stored row."""
    import threading

    Store(tmp_path, create=True).close()
    errors, returned = [], []
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            with Store(tmp_path) as s:
                for batch in range(5):   # every writer imports the same 40 items, in another order
                    rows = _items(40)[::(1 if w % 2 else -1)]
                    s.add_items(rows[batch * 8:(batch + 1) * 8] + rows)
                cid = s.class_id("c", create=True) if w == 0 else None
                while cid is None:
                    cid = s.class_ids().get("c")
                ids = s.add_human_labels([(i, cid) for i in range(1, 41)], annotator=f"w{w}")
                with lock:
                    returned.extend(ids)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with Store(tmp_path) as s:
        assert s.item_count() == 40 and list(s.item_ids()) == list(range(1, 41))
        stored = [r[0] for r in s.conn.execute("SELECT id FROM annotations ORDER BY id").fetchall()]
        assert sorted(returned) == stored == list(range(1, 8 * 40 + 1))
        assert {r[0] for r in s.conn.execute("SELECT COUNT(*) FROM annotations GROUP BY annotator")} == {40}


def test_sqlite_dialect_is_translated_for_postgresql():
    """The statements the store writes once, in SQLite's dialect, as PostgreSQL runs them."""
    from labelloop.store import _pg_translate

    def pg(sql, params=True):
        return " ".join(_pg_translate(sql, params)[0].split())

    assert pg("SELECT id FROM t WHERE a = ? AND b LIKE ? ESCAPE '\\' AND c = '50%?'") == \
        "SELECT id FROM t WHERE a = %s AND b ILIKE %s ESCAPE '\\' AND c = '50%%?'"
    assert pg("UPDATE r SET v = MAX(v, ?) WHERE id = (SELECT MAX(id) FROM r)") == \
        "UPDATE r SET v = GREATEST(v, %s) WHERE id = (SELECT MAX(id) FROM r)"
    assert pg("SELECT CAST(IFNULL(x, 0) AS REAL), CAST(y AS INTEGER) FROM t WHERE INSTR(s, 'REAL') > 0") == \
        "SELECT CAST(COALESCE(x, 0) AS DOUBLE PRECISION), CAST(y AS BIGINT) FROM t WHERE STRPOS(s, 'REAL') > 0"
    assert pg("INSERT OR IGNORE INTO a (x, y) VALUES (?, ?)") == \
        "INSERT INTO a (x, y) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    ddl = pg("CREATE TABLE v (rule_id INTEGER NOT NULL, w REAL, -- it's a comment; ?\n"
             "PRIMARY KEY (rule_id)) WITHOUT ROWID", params=False)
    assert ddl == "CREATE TABLE v (rule_id BIGINT NOT NULL, w DOUBLE PRECISION, PRIMARY KEY (rule_id))"
    ddl = pg("CREATE TABLE k (id INTEGER PRIMARY KEY, n TEXT)", params=False)
    assert ddl.startswith("CREATE TABLE k (id BIGINT PRIMARY KEY, n TEXT); CREATE OR REPLACE FUNCTION k_rowid()")
    assert _pg_translate("INSERT INTO items (text) VALUES (?)", True)[1]          # RETURNING id is added
    assert not _pg_translate("INSERT INTO t (x) VALUES (?) RETURNING x", True)[1]


def test_a_database_address_never_holds_a_password(tmp_path, monkeypatch):
    pytest.importorskip("psycopg")
    from labelloop.store import check_database_address

    for url in ("postgresql://u:secret@127.0.0.1:5432/db", "postgresql://u@127.0.0.1/db?password=secret"):
        with pytest.raises(ValidationError, match="PGPASSWORD"):
            Store(tmp_path / "p", create=True, db=url)
    assert not (tmp_path / "p" / "database").exists()
    with pytest.raises(ValidationError, match="postgresql://"):
        check_database_address("mysql://u@h/db")
    assert check_database_address("env:TEAM_DB") == "env:TEAM_DB"


def test_a_project_can_keep_its_database_url_in_an_environment_variable(tmp_path, monkeypatch, each_db):
    import os

    url = os.environ.get("LABELLOOP_DB")
    if url is None:
        pytest.skip("an address for PostgreSQL projects only")
    monkeypatch.delenv("LABELLOOP_DB")
    monkeypatch.setenv("TEAM_DB", url)
    Store(tmp_path / "p", create=True, db="env:TEAM_DB").close()
    assert (tmp_path / "p" / "database").read_text().strip() == "env:TEAM_DB"
    with Store(tmp_path / "p") as s:
        assert s.dialect == "postgresql" and s.schema_version() == max(v for v, _, _ in MIGRATIONS)
    monkeypatch.delenv("TEAM_DB")
    with pytest.raises(ProjectError, match=r"\$TEAM_DB"):
        Store(tmp_path / "p")


def test_a_new_portable_migration_applies_to_an_existing_project(tmp_path, monkeypatch):
    """What a later migration may use (ADD COLUMN, a table with an INTEGER PRIMARY KEY, REAL,
    references, an index, INSERT OR IGNORE) runs unchanged on both databases."""
    from labelloop import store as store_mod

    Store(tmp_path, create=True).close()
    later = (99, "a later migration", """
        ALTER TABLE annotations ADD COLUMN later_batch INTEGER;
        CREATE TABLE later_marks (
            id      INTEGER PRIMARY KEY,
            item_id INTEGER NOT NULL REFERENCES items(id),
            x REAL NOT NULL, score REAL,
            UNIQUE (item_id, x)
        );
        CREATE INDEX later_marks_by_item ON later_marks (item_id);
        """)
    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS + [later])
    with Store(tmp_path) as s:
        assert s.schema_version() == 99
        (i,) = s.add_items(_items(1))
        with s.transaction() as c:
            first = c.execute("INSERT INTO later_marks (item_id, x, score) VALUES (?, ?, ?)", (i, 0.1, 1 / 3)).lastrowid
            c.execute("INSERT OR IGNORE INTO later_marks (item_id, x) VALUES (?, ?)", (i, 0.1))   # a duplicate: ignored
            second = c.execute("INSERT INTO later_marks (item_id, x) VALUES (?, ?)", (i, 0.2)).lastrowid
        assert (first, second) == (1, 2)
        assert s.conn.execute("SELECT score FROM later_marks WHERE id = 1").fetchone()[0] == 1 / 3   # double precision
        s.add_annotations([(i, None)], source="human")
        assert dict(s.annotations()[0])["later_batch"] is None


def test_a_writer_waits_for_the_other_and_then_gives_up_clearly(tmp_path, monkeypatch, db_backend):
    """While one store holds the write lock, another's write waits (BEGIN IMMEDIATE on both
    databases) and, past the timeout, fails with a clear error; the waiting store stays usable."""
    if db_backend == "sqlite":
        pytest.skip("SQLite's busy timeout is sqlite3's own (30 s); this checks the PostgreSQL lock")
    a, b = Store(tmp_path, create=True), Store(tmp_path)
    b.conn.raw.execute("SET lock_timeout = '200ms'")
    with a.transaction():
        with pytest.raises(ProjectError, match="busy"):
            b.add_classes(["x"])
    b.add_classes(["x"])
    assert b.classes() == ["x"]
    a.close()
    b.close()

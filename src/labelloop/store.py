"""The project store: one SQLite database (WAL) plus array files beside it.

A project is a folder::

    myproj/
      labelloop.db              items, classes, annotations, runs, embeddings index
      arrays/embeddings/<backbone cache id>/<chunk>.npy    embedding chunks
      arrays/runs/<run id>/...  large outputs of a run (a refresh's predictions as array files)

The store knows nothing about machine learning: it keeps rows and arrays. Annotations are
append-only; an item's current label is computed from them (see :meth:`Store.current_labels`).
Every schema change is a numbered migration recorded in the ``migrations`` table.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ProjectError, ReadOnlyError, UnknownClassError, UnknownItemError, ValidationError

DB_NAME = "labelloop.db"
SOURCES = ("human", "import", "machine")
MAX_ID = 2**63 - 1   # the largest SQLite INTEGER: every row id is at most this

# Append-only: never edit a migration that has shipped; add a new one.
MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "initial schema",
        """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE items (
            id           INTEGER PRIMARY KEY,
            external_id  TEXT UNIQUE,              -- id column of a table, or path relative to the import root
            uri          TEXT,                     -- absolute path of an image
            text         TEXT,                     -- content of a text item
            content_hash TEXT NOT NULL UNIQUE,     -- sha256 of the bytes / text: re-import adds nothing
            modality     TEXT NOT NULL CHECK (modality IN ('image', 'text')),
            added        REAL NOT NULL
        );
        CREATE TABLE classes (
            id    INTEGER PRIMARY KEY,
            name  TEXT NOT NULL UNIQUE,
            added REAL NOT NULL
        );
        CREATE TABLE runs (
            id       INTEGER PRIMARY KEY,
            kind     TEXT NOT NULL,                -- import, embed, refresh, query, autolabel, ...
            params   TEXT NOT NULL,                -- JSON
            inputs   TEXT,                         -- JSON: what it read (fingerprints)
            started  REAL NOT NULL,
            finished REAL,
            status   TEXT NOT NULL DEFAULT 'running',   -- running | done | failed | interrupted
            summary  TEXT                          -- JSON
        );
        CREATE TABLE annotations (
            id         INTEGER PRIMARY KEY,
            item_id    INTEGER NOT NULL REFERENCES items(id),
            class_id   INTEGER REFERENCES classes(id),   -- NULL: the source withdraws its label
            source     TEXT NOT NULL CHECK (source IN ('human', 'import', 'machine')),
            annotator  TEXT,
            created    REAL NOT NULL,
            run_id     INTEGER REFERENCES runs(id),
            confidence REAL
        );
        CREATE INDEX annotations_by_item ON annotations (item_id, source, id);
        CREATE TABLE predictions (
            run_id     INTEGER NOT NULL REFERENCES runs(id),
            item_id    INTEGER NOT NULL REFERENCES items(id),
            class_id   INTEGER REFERENCES classes(id),
            confidence REAL NOT NULL,
            margin     REAL NOT NULL,
            entropy    REAL NOT NULL,
            reached    INTEGER NOT NULL,
            PRIMARY KEY (run_id, item_id)
        ) WITHOUT ROWID;
        CREATE TABLE embeddings (
            backbone     TEXT NOT NULL,            -- backbone cache id
            content_hash TEXT NOT NULL,
            chunk        TEXT NOT NULL,            -- file arrays/embeddings/<backbone>/<chunk>.npy
            row          INTEGER NOT NULL,
            PRIMARY KEY (backbone, content_hash)
        ) WITHOUT ROWID;
        """,
    ),
    (
        2,
        "gold items, users, assignments, audit confirmations",
        """
        CREATE TABLE gold (
            item_id  INTEGER PRIMARY KEY REFERENCES items(id),
            class_id INTEGER NOT NULL REFERENCES classes(id),   -- the known-true label
            added    REAL NOT NULL
        );
        CREATE TABLE users (
            id            INTEGER PRIMARY KEY,
            name          TEXT NOT NULL UNIQUE,
            role          TEXT NOT NULL CHECK (role IN ('admin', 'reviewer', 'annotator')),
            password_hash TEXT,                    -- scrypt, salted
            token_hash    TEXT,                    -- sha256 of an API token
            created       REAL NOT NULL,
            active        INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE assignments (                 -- consensus routing and gold honeypots
            id        INTEGER PRIMARY KEY,
            item_id   INTEGER NOT NULL REFERENCES items(id),
            annotator TEXT NOT NULL,
            reason    TEXT NOT NULL,               -- consensus | gold
            created   REAL NOT NULL,
            done      REAL,
            UNIQUE (item_id, annotator)
        );
        CREATE TABLE audit_confirmations (         -- a person kept this label despite the flag
            item_id   INTEGER NOT NULL REFERENCES items(id),
            class_id  INTEGER NOT NULL REFERENCES classes(id),
            evidence  TEXT,
            annotator TEXT,
            created   REAL NOT NULL,
            PRIMARY KEY (item_id, class_id)
        );
        """,
    ),
    (
        3,
        "web sessions, idempotent web submissions, annotations by annotator",
        """
        CREATE TABLE sessions (                    -- web logins: the cookie / bearer holds the token
            token_hash TEXT PRIMARY KEY,           -- sha256 of the session token
            user_id    INTEGER NOT NULL REFERENCES users(id),
            csrf       TEXT NOT NULL,              -- echoed by form posts and X-CSRF-Token headers
            created    REAL NOT NULL,
            expires    REAL NOT NULL
        );
        CREATE TABLE submissions (                 -- idempotency keys: a retried submission is stored once
            user_id  INTEGER NOT NULL REFERENCES users(id),
            key      TEXT NOT NULL,
            response TEXT NOT NULL,                -- JSON answer given the first time
            created  REAL NOT NULL,
            PRIMARY KEY (user_id, key)
        );
        CREATE INDEX annotations_by_annotator ON annotations (annotator, source, id);
        """,
    ),
    (
        4,
        "item metadata, labeling functions (rules) and their votes",
        """
        ALTER TABLE items ADD COLUMN meta TEXT;     -- JSON object: the table's other columns at import
        CREATE TABLE rules (                       -- labeling functions: noisy annotators of their own
            id          INTEGER PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            kind        TEXT NOT NULL CHECK (kind IN ('contains', 'where', 'python')),
            definition  TEXT NOT NULL,             -- JSON: keywords / expression / source + function
            class_id    INTEGER REFERENCES classes(id),   -- the label it gives (NULL: a python rule returns it)
            author      TEXT,
            created     REAL NOT NULL,
            active      INTEGER NOT NULL DEFAULT 1,
            changed_by  TEXT,                      -- who last switched it on / off, and when
            changed     REAL,
            votes_through INTEGER NOT NULL DEFAULT 0   -- items with id <= this have been evaluated
        );
        CREATE TABLE rule_votes (                  -- kept apart from annotations: never a human label
            rule_id  INTEGER NOT NULL REFERENCES rules(id),
            item_id  INTEGER NOT NULL REFERENCES items(id),
            class_id INTEGER NOT NULL REFERENCES classes(id),
            PRIMARY KEY (rule_id, item_id)
        ) WITHOUT ROWID;
        """,
    ),
    (
        5,
        "the batch each item came in",
        """
        ALTER TABLE items ADD COLUMN batch TEXT;    -- `import --batch NAME` (NULL: imported without one)
        CREATE INDEX items_by_batch ON items (batch, id);
        """,
    ),
    (
        7,
        "boxes of detection projects (append-only)",
        """
        CREATE TABLE boxes (                       -- append-only: an edit or a deletion is a new row
            id         INTEGER PRIMARY KEY,
            item_id    INTEGER NOT NULL REFERENCES items(id),
            x          REAL NOT NULL,              -- top-left corner, width, height in image pixels
            y          REAL NOT NULL,
            w          REAL NOT NULL,
            h          REAL NOT NULL,
            class_id   INTEGER REFERENCES classes(id),  -- NULL: withdraws the box it replaces
            source     TEXT NOT NULL CHECK (source IN ('human', 'import', 'machine')),
            annotator  TEXT,
            score      REAL,                       -- the detector's score (machine boxes)
            run_id     INTEGER REFERENCES runs(id),
            replaces   INTEGER REFERENCES boxes(id),   -- the box this row edits or withdraws
            created    REAL NOT NULL
        );
        CREATE INDEX boxes_by_item ON boxes (item_id, source, id);
        CREATE INDEX boxes_by_replaces ON boxes (replaces)
        """,
    ),
    (
        8,
        "per-class decisions of multi-label projects (append-only)",
        """
        CREATE TABLE class_decisions (             -- append-only: a changed mind is a new row
            id         INTEGER PRIMARY KEY,
            item_id    INTEGER NOT NULL REFERENCES items(id),
            class_id   INTEGER NOT NULL REFERENCES classes(id),
            value      INTEGER CHECK (value IN (0, 1)),   -- 1 applies, 0 does not, NULL withdraws the source's
            source     TEXT NOT NULL CHECK (source IN ('human', 'import', 'machine')),
            annotator  TEXT,
            run_id     INTEGER REFERENCES runs(id),
            confidence REAL,                       -- the calibrated score (machine decisions)
            created    REAL NOT NULL
        );
        CREATE INDEX class_decisions_by_item ON class_decisions (item_id, class_id, source, id)
        """,
    ),
    (
        9,
        "whole-image reviews of detection projects (append-only)",
        """
        CREATE TABLE box_reviews (                 -- an image's boxes in effect are its complete set
            id         INTEGER PRIMARY KEY,
            item_id    INTEGER NOT NULL REFERENCES items(id),
            source     TEXT NOT NULL CHECK (source IN ('human', 'machine')),  -- machine: auto-accepted
            annotator  TEXT,
            run_id     INTEGER REFERENCES runs(id),   -- the autolabel run of a machine review
            created    REAL NOT NULL
        );
        CREATE INDEX box_reviews_by_item ON box_reviews (item_id, source)
        """,
    ),
]

#: how items imported without ``--batch`` (NULL, and every item of a project made before
#: batches existed) are named in reports and selected with ``--batch``; no batch may take it
UNBATCHED = "unbatched"


def _label_arrays(labels: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(item ids ascending, their class ids), read-only int64 arrays of ``labels``."""
    k = np.fromiter(labels.keys(), dtype=np.int64, count=len(labels))
    v = np.fromiter(labels.values(), dtype=np.int64, count=len(labels))
    order = np.argsort(k, kind="stable")
    k, v = k[order], v[order]
    k.flags.writeable = v.flags.writeable = False
    return k, v


def _merge_labels(k: np.ndarray, v: np.ndarray, changes: dict[int, int | None]) -> tuple[np.ndarray, np.ndarray]:
    """New arrays: ``(k, v)`` (item ids ascending, class ids) with ``changes`` applied, item id
    -> its class id now, or None for no label. O(len(k)) copies, no sort of the whole."""
    items = np.fromiter(changes.keys(), dtype=np.int64, count=len(changes))
    cls = np.fromiter((-1 if c is None else c for c in changes.values()), dtype=np.int64, count=len(changes))
    order = np.argsort(items)
    items, cls = items[order], cls[order]
    pos = np.searchsorted(k, items)
    present = pos < len(k)
    present[present] = k[pos[present]] == items[present]
    v = v.copy()
    change = present & (cls >= 0)
    v[pos[change]] = cls[change]
    keep = np.ones(len(k), bool)
    keep[pos[present & (cls < 0)]] = False   # withdrawn
    k, v = k[keep], v[keep]
    add = ~present & (cls >= 0)
    at = np.searchsorted(k, items[add])
    k, v = np.insert(k, at, items[add]), np.insert(v, at, cls[add])
    k.flags.writeable = v.flags.writeable = False
    return k, v


@dataclass(frozen=True)
class Item:
    id: int
    external_id: str | None
    uri: str | None
    text: str | None
    content_hash: str
    modality: str

    @property
    def display(self) -> str:
        return self.external_id or self.uri or f"#{self.id}"

    def snippet(self, width: int = 60) -> str:
        """At most ``width`` characters a person recognises the item by: an image's path with
        its file name kept (cut on the left), a text's id and first words (cut on the right)."""
        if self.modality == "image":
            s = self.display
            return s if len(s) <= width else "…" + s[-(width - 1):]
        text = " ".join((self.text or "").split())
        s = f"{self.external_id}: {text}" if self.external_id else text
        return s if len(s) <= width else s[: width - 1] + "…"


def _now() -> float:
    return time.time()


class Store:
    """Rows and arrays of one project folder. One writer at a time; readers never block it."""

    def __init__(self, root: str | os.PathLike, *, create: bool = False, readonly: bool = False,
                 db: str | None = None):
        """Open the project at ``root``; ``create`` makes a new one there, in the PostgreSQL
        database ``db`` (see :func:`check_database_address`; default ``$LABELLOOP_DB``) or
        else in an SQLite file."""
        self.root = Path(root).resolve()
        self.readonly = readonly
        self._new_batch: str | None = None   # the batch new items join (:meth:`new_items_batch`)
        # :meth:`latest_label_arrays` remembered: source -> (the newest annotation id read, arrays)
        self._latest: dict[str, tuple[int, tuple[np.ndarray, np.ndarray]]] = {}
        self._latest_lock = threading.Lock()
        address = None
        if (self.root / DATABASE_FILE).exists():
            address = (self.root / DATABASE_FILE).read_text(encoding="utf-8").strip()
        db_file = self.root / DB_NAME
        if address is None and create and not db_file.exists():
            db = db if db is not None else (os.environ.get("LABELLOOP_DB") or None)
            address = check_database_address(db) if db else None
        if address is None and not db_file.exists() and not create:
            raise ProjectError(
                f"no labelloop project at {self.root} (no {DB_NAME}); "
                f"create one with: labelloop init -p {self.root} --modality image|text"
            )
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        self.dialect = "sqlite" if address is None else "postgresql"
        if address is not None:
            self.conn = _PgConnection(_database_url(address), readonly=readonly)
            if not readonly:
                self._migrate()
            if create and not (self.root / DATABASE_FILE).exists():
                (self.root / DATABASE_FILE).write_text(address + "\n", encoding="utf-8")
            return
        if readonly:
            self.conn = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, check_same_thread=False)
        else:
            self.conn = sqlite3.connect(db_file, check_same_thread=False, timeout=30)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self._migrate()

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _migrate(self) -> None:
        """Apply the migrations not yet applied, each once even when several processes open
        a new project at the same time (checked again under the write lock)."""
        create = ("CREATE TABLE IF NOT EXISTS migrations "
                  "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
        if self.dialect == "sqlite":
            self.conn.execute(create)
        elif self.conn.execute("SELECT to_regclass('migrations')").fetchone()[0] is None:
            with self.transaction() as c:
                c.execute(create)
        if {r[0] for r in self.conn.execute("SELECT version FROM migrations")} >= {m[0] for m in MIGRATIONS}:
            return
        for version, name, sql in MIGRATIONS:
            with self.transaction() as c:
                if c.execute("SELECT 1 FROM migrations WHERE version = ?", (version,)).fetchone():
                    continue
                for statement in sql.split(";"):
                    if statement.strip():
                        c.execute(statement)
                c.execute(
                    "INSERT INTO migrations (version, name, applied) VALUES (?, ?, ?)",
                    (version, name, _now()),
                )

    def schema_version(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(version), 0) FROM migrations").fetchone()[0]

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception: one writer at a time."""
        if self.readonly:
            raise ReadOnlyError(f"this connection to the project at {self.root} is read-only")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # ---------------------------------------------------------------------- meta
    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set_meta(self, key: str, value) -> None:
        with self.transaction() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    # ---------------------------------------------------------------- guidelines
    def guidelines(self) -> dict:
        """The project's labeling guidelines: ``{"text", "updated", "by"}`` (text "" before
        anyone wrote them). Kept in the meta table; a new text replaces the old one."""
        found = self.get_meta("guidelines")
        return found if isinstance(found, dict) else {"text": "", "updated": None, "by": None}

    def set_guidelines(self, text: str, *, by: str | None) -> dict:
        """Store ``text`` (checked by the caller) as the guidelines, written by ``by``."""
        value = {"text": text, "updated": _now(), "by": by}
        self.set_meta("guidelines", value)
        return value

    # --------------------------------------------------------------------- items
    def add_items(self, rows: Sequence[dict]) -> list[int | None]:
        """Insert items in one transaction; returns each row's new id, or None for a row whose
        content hash is already stored (re-import adds nothing). One batched insert, not a
        statement per row: on PostgreSQL every statement is a round trip to the server."""
        now = _now()
        with self.transaction() as c:
            seen = set(self.existing_hashes(r["content_hash"] for r in rows))   # under the write lock
            ids: list[int | None] = []
            fresh = []
            last = int(c.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0])
            for r in rows:
                if r["content_hash"] in seen:
                    ids.append(None)
                    continue
                seen.add(r["content_hash"])
                fresh.append(r)
                ids.append(last + len(fresh))   # the rowid rule: MAX(id) + 1, in insertion order
            c.executemany(
                "INSERT INTO items (id, external_id, uri, text, content_hash, modality, added, meta, batch) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(last + k, r.get("external_id"), r.get("uri"), r.get("text"), r["content_hash"], r["modality"],
                  now, json.dumps(r["meta"], ensure_ascii=False) if r.get("meta") else None,
                  r.get("batch", self._new_batch))
                 for k, r in enumerate(fresh, 1)])
        return ids

    @contextmanager
    def new_items_batch(self, batch: str | None) -> Iterator[None]:
        """Items :meth:`add_items` stores inside this block join ``batch`` (a valid name,
        :func:`validate_batch_name`, or None): every import path carries it without knowing it."""
        before, self._new_batch = self._new_batch, batch
        try:
            yield
        finally:
            self._new_batch = before

    def item_batches(self) -> tuple[np.ndarray, list[str | None]]:
        """(item ids ascending (n,), the batch of each, None for items imported without one)."""
        cur = self.conn.cursor()
        cur.row_factory = None
        rows = cur.execute("SELECT id, batch FROM items ORDER BY id").fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64), [r[1] for r in rows]

    def batches(self) -> list[dict]:
        """Every batch in the order it arrived (by its first item): name (None: imported
        without --batch), items, first item id, when its first item was added."""
        return [{"name": b, "items": int(n), "first_item": int(first), "added": float(added)}
                for b, n, first, added in self.conn.execute(
                    "SELECT batch, COUNT(*), MIN(id), MIN(added) FROM items GROUP BY batch ORDER BY MIN(id)")]

    def existing_hashes(self, hashes: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        hashes = list(hashes)
        for start in range(0, len(hashes), 500):
            part = hashes[start : start + 500]
            q = f"SELECT content_hash, id FROM items WHERE content_hash IN ({','.join('?' * len(part))})"
            out.update({h: i for h, i in self.conn.execute(q, part)})
        return out

    def existing_external_ids(self, ext: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        ext = list(ext)
        for start in range(0, len(ext), 500):
            part = ext[start : start + 500]
            q = f"SELECT external_id, id FROM items WHERE external_id IN ({','.join('?' * len(part))})"
            out.update({e: i for e, i in self.conn.execute(q, part)})
        return out

    def item_count(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]

    def item_ids(self) -> np.ndarray:
        """All item ids in ascending order: the row order of every per-item array."""
        cur = self.conn.cursor()
        cur.row_factory = None   # plain tuples, not a sqlite3.Row per item
        rows = cur.execute("SELECT id FROM items ORDER BY id").fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1)

    def items(self, ids: Sequence[int] | None = None) -> list[Item]:
        if ids is None:
            cur = self.conn.execute("SELECT * FROM items ORDER BY id")
            return [self._item(r) for r in cur]
        by_id: dict[int, Item] = {}
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i <= MAX_ID:   # SQLite would raise OverflowError
                raise UnknownItemError(f"no item with id {i} in this project (ids are 1 to {MAX_ID})")
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            q = f"SELECT * FROM items WHERE id IN ({','.join('?' * len(part))})"
            by_id.update({r["id"]: self._item(r) for r in self.conn.execute(q, part)})
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise UnknownItemError(f"no item with id {missing[0]} in this project")
        return [by_id[i] for i in ids]

    @staticmethod
    def _item(r: sqlite3.Row) -> Item:
        return Item(r["id"], r["external_id"], r["uri"], r["text"], r["content_hash"], r["modality"])

    def resolve_item(self, ref: str | int) -> int:
        """An item reference as a user writes it: the item id, its external id, the path it was
        imported from, or a file name that is unique in the project."""
        ref_s = str(ref).strip()
        if not ref_s:
            raise UnknownItemError("empty item reference: give an item id, external id or file name")
        c = self.conn
        for q in (
            "SELECT id FROM items WHERE external_id = ?",
            "SELECT id FROM items WHERE uri = ?",
        ):
            row = c.execute(q, (ref_s,)).fetchone()
            if row:
                return row[0]
        if ref_s.isdigit():
            row = c.execute("SELECT id FROM items WHERE id = ?", (int(ref_s),)).fetchone()
            if row:
                return row[0]
        if "/" not in ref_s and "\\" not in ref_s:
            rows = c.execute(
                "SELECT id FROM items WHERE uri LIKE ? ESCAPE '\\' OR external_id LIKE ? ESCAPE '\\'",
                ("%/" + _like_escape(ref_s), "%/" + _like_escape(ref_s)),
            ).fetchall()
            if len(rows) == 1:
                return rows[0][0]
            if len(rows) > 1:
                raise UnknownItemError(
                    f"item reference {ref_s!r} matches {len(rows)} files; "
                    "use the item id or the path relative to the import folder"
                )
        raise UnknownItemError(
            f"no item matches {ref_s!r}: use an item id, an external id, or a file name "
            "(see `labelloop export` for the ids)"
        )

    # ------------------------------------------------------------------- classes
    def classes(self) -> list[str]:
        """Class names in creation order; a class's index in this list is its column in every
        probability array."""
        return [r[0] for r in self.conn.execute("SELECT name FROM classes ORDER BY id")]

    def class_ids(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT name, id FROM classes ORDER BY id")}

    def add_classes(self, names: Iterable[str]) -> list[str]:
        """Add the names not yet present; returns the ones added."""
        added = []
        existing = set(self.classes())
        with self.transaction() as c:
            for name in names:
                name = validate_class_name(name)
                if name in existing:
                    continue
                c.execute("INSERT INTO classes (name, added) VALUES (?, ?)", (name, _now()))
                existing.add(name)
                added.append(name)
        return added

    def class_id(self, name: str, *, create: bool = False) -> int:
        row = self.conn.execute("SELECT id FROM classes WHERE name = ?", (name,)).fetchone()
        if row:
            return row[0]
        if create:
            self.add_classes([name])
            return self.class_id(name)
        raise UnknownClassError(
            f"unknown class {name!r}; known classes: {', '.join(self.classes()) or '(none)'}. "
            "Add it with `labelloop init --classes` or label with --new-classes"
        )

    # --------------------------------------------------------------- annotations
    def add_annotations(self, rows: Sequence[tuple[int, int | None]], *, source: str,
                        annotator: str | None = None, run_id: int | None = None,
                        confidences: Sequence[float] | None = None) -> int:
        """Append (item_id, class_id) annotations in one transaction; class_id None withdraws
        the source's label. Returns the number of rows appended."""
        conf = _confidences(source, confidences, len(rows))
        now = _now()
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO annotations (item_id, class_id, source, annotator, created, run_id, confidence) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(int(i), None if k is None else int(k), source, annotator, now, run_id, cf)
                 for (i, k), cf in zip(rows, conf)],
            )
        return len(rows)

    def annotations(self, source: str | None = None) -> list[sqlite3.Row]:
        q = "SELECT * FROM annotations"
        args: tuple = ()
        if source:
            q += " WHERE source = ?"
            args = (source,)
        return self.conn.execute(q + " ORDER BY id", args).fetchall()

    def latest_labels(self, source: str) -> dict[int, int]:
        """item_id -> class_id of the latest annotation of this source (withdrawn ones dropped),
        by item id. For human labels with several annotators, each annotator's latest label
        votes and ties go to the most recent vote. Made from :meth:`latest_label_arrays`."""
        k, v = self.latest_label_arrays(source)
        return dict(zip(k.tolist(), v.tolist()))

    def latest_label_arrays(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`latest_labels` as two read-only (m,) int64 arrays, the item ids ascending and
        their class ids: what :meth:`labelloop.Project.label_vector` maps onto the items.

        On SQLite, outside a transaction, remembered per source and caught up with only the
        annotations added since (annotations are only ever appended, and SQLite commits them
        one writer at a time, so every id up to the newest committed one is committed): the
        whole table was read into a dict on every call, and a refresh, the server's snapshot
        and status read it a dozen times (measured: 150-250 ms per read with 60,000 machine
        labels in a 100k project; benchmarks/latest_labels.py). Arrays, not a dict: 16 bytes
        a label where a dict of ints held ~190 (116 MB for 600,000 machine labels, in every
        store a server holds). PostgreSQL hands out ids before the commit, in any order, so
        there it is read every time."""
        if self.dialect != "sqlite" or self.conn.in_transaction:
            return _label_arrays(self._read_latest(source))
        top = self.last_annotation_id()   # (first: the labels read next are at least this new)
        with self._latest_lock:
            seen, arrays = self._latest.get(source, (None, None))
            if seen == top:
                return arrays
            if seen is None or seen > top:
                arrays = _label_arrays(self._read_latest(source))
            elif new := self.conn.execute("SELECT item_id, class_id FROM annotations WHERE id > ? AND source = ? "
                                          "ORDER BY id", (seen, source)).fetchall():
                if source == "human":   # the votes of the items labeled since, counted again
                    touched = sorted({i for i, _ in new})
                    fresh = self._read_latest(source, items=touched)
                    changes = {i: fresh.get(i) for i in touched}
                else:   # an item's newest annotation is its label (None: withdrawn)
                    changes = dict(new)
                arrays = _merge_labels(*arrays, changes)
            self._latest[source] = (top, arrays)
            return arrays

    def _read_latest(self, source: str, items: Sequence[int] | None = None) -> dict[int, int]:
        """:meth:`latest_labels` read from the table (of ``items`` only, when given)."""
        if items is not None:
            out: dict[int, int] = {}
            for a in range(0, len(items), 500):
                chunk = list(items[a:a + 500])
                out.update(self._read_latest_where(source, f" AND item_id IN ({','.join('?' * len(chunk))})", chunk))
            return out
        return self._read_latest_where(source, "", [])

    def _read_latest_where(self, source: str, where: str, args: list) -> dict[int, int]:
        if source == "human":
            rows = self.conn.execute(
                "SELECT a.item_id, a.class_id, a.id FROM annotations a JOIN ("
                "  SELECT item_id, COALESCE(annotator, '') AS who, MAX(id) AS last"
                f"  FROM annotations WHERE source = 'human'{where} GROUP BY item_id, who"
                ") l ON a.id = l.last WHERE a.class_id IS NOT NULL ORDER BY a.item_id", args
            ).fetchall()
            votes: dict[int, dict[int, tuple[int, int]]] = {}
            for item_id, class_id, ann_id in rows:
                n, last = votes.setdefault(item_id, {}).get(class_id, (0, 0))
                votes[item_id][class_id] = (n + 1, max(last, ann_id))
            return {i: max(v.items(), key=lambda kv: kv[1])[0] for i, v in votes.items()}
        rows = self.conn.execute(
            "SELECT a.item_id, a.class_id FROM annotations a JOIN ("
            f"  SELECT item_id, MAX(id) AS last FROM annotations WHERE source = ?{where} GROUP BY item_id"
            ") l ON a.id = l.last WHERE a.class_id IS NOT NULL",
            [source, *args],
        ).fetchall()
        return {i: k for i, k in rows}

    # ---------------------------------------------------- counts a server polls
    def has_item(self, item_id: int) -> bool:
        """Whether an item with this id exists (ids out of SQLite's range never do)."""
        if not 0 <= int(item_id) <= MAX_ID:
            return False
        return self.conn.execute("SELECT 1 FROM items WHERE id = ?", (int(item_id),)).fetchone() is not None

    def last_annotation_id(self) -> int:
        """The id of the newest annotation (0 if none): it changes whenever a label does."""
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM annotations").fetchone()[0])

    def has_source(self, source: str) -> bool:
        """Whether any annotation of ``source`` (human, import, machine) exists."""
        return self.conn.execute("SELECT 1 FROM annotations WHERE source = ? LIMIT 1", (source,)).fetchone() is not None

    def unlabeled_count(self) -> int:
        """Items no source has ever given a class (withdrawn labels still count as given)."""
        n = self.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        done = self.conn.execute(
            "SELECT COUNT(DISTINCT item_id) FROM annotations WHERE class_id IS NOT NULL").fetchone()[0]
        return max(int(n) - int(done), 0)

    def gold_item_ids(self) -> np.ndarray:
        """Ids of the gold (known-true) items, ascending."""
        return np.fromiter((r[0] for r in self.conn.execute("SELECT item_id FROM gold ORDER BY item_id")),
                           dtype=np.int64)

    def audit_confirmation_count(self) -> int:
        """How many labels people kept although the audit flagged them."""
        return int(self.conn.execute("SELECT COUNT(*) FROM audit_confirmations").fetchone()[0])

    # ---------------------------------------------------------------------- runs
    def start_run(self, kind: str, params: dict, inputs: dict | None = None) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO runs (kind, params, inputs, started) VALUES (?, ?, ?, ?)",
                (kind, json.dumps(params, sort_keys=True), json.dumps(inputs or {}, sort_keys=True),
                 _now()),
            )
        return cur.lastrowid

    def finish_run(self, run_id: int, summary: dict | None = None, *, status: str = "done") -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE runs SET finished = ?, status = ?, summary = ? WHERE id = ?",
                (_now(), status, json.dumps(summary or {}, sort_keys=True), run_id),
            )

    def runs(self, kind: str | None = None, *, status: str | None = "done") -> list[dict]:
        q, args = "SELECT * FROM runs WHERE 1=1", []
        if kind:
            q += " AND kind = ?"
            args.append(kind)
        if status:
            q += " AND status = ?"
            args.append(status)
        return [self._run(r) for r in self.conn.execute(q + " ORDER BY id", args)]

    def run_ids(self, kind: str, statuses: Sequence[str] = ("done",)) -> list[int]:
        """Ids of the runs of ``kind`` with one of ``statuses``, ascending (no JSON parsed)."""
        q = ",".join("?" * len(statuses))
        return [int(r[0]) for r in self.conn.execute(
            f"SELECT id FROM runs WHERE kind = ? AND status IN ({q}) ORDER BY id", (kind, *statuses))]

    def run(self, run_id: int) -> dict | None:
        """One run by id (any status), None if there is none."""
        row = self.conn.execute("SELECT * FROM runs WHERE id = ?", (int(run_id),)).fetchone()
        return None if row is None else self._run(row)

    @staticmethod
    def _run(row: sqlite3.Row) -> dict:
        d = dict(row)
        for key in ("params", "inputs", "summary"):
            d[key] = json.loads(d[key]) if d[key] else {}
        return d

    def last_run(self, kind: str) -> dict | None:
        """The newest finished run of ``kind`` (one row parsed, not every run's JSON)."""
        row = self.conn.execute("SELECT * FROM runs WHERE kind = ? AND status = 'done' ORDER BY id DESC LIMIT 1",
                                (kind,)).fetchone()
        return None if row is None else self._run(row)

    def run_dir(self, run_id: int) -> Path:
        d = self.root / "arrays" / "runs" / str(run_id)
        d.mkdir(parents=True, exist_ok=True)
        return d

    # --------------------------------------------------------------- predictions
    # A refresh's predictions are array files in its run folder (Project.refresh), not a row
    # per item per refresh (1M rows took 7 s to insert). Runs stored before that have rows in
    # the ``predictions`` table; their ``reached`` flags are read from there.
    def prediction_reached(self, run_id: int, n: int) -> np.ndarray:
        """(n,) ``reached`` of an older run's prediction rows in item order (all True when the
        run has no n rows)."""
        rows = self.conn.execute("SELECT reached FROM predictions WHERE run_id = ? ORDER BY item_id",
                                 (int(run_id),)).fetchall()
        return np.array([r[0] for r in rows], dtype=bool) if len(rows) == n else np.ones(n, dtype=bool)

    # ---------------------------------------------------------------- embeddings
    def embedding_dir(self, backbone: str) -> Path:
        d = self.root / "arrays" / "embeddings" / _safe_name(backbone)
        d.mkdir(parents=True, exist_ok=True)
        return d

    def embedded_hashes(self, backbone: str) -> set[str]:
        return {r[0] for r in self.conn.execute(
            "SELECT content_hash FROM embeddings WHERE backbone = ?", (backbone,))}

    def add_embedding_chunk(self, backbone: str, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Write one batch of vectors to its own file first, then index it in one transaction:
        an interrupt leaves at worst an unindexed file, never an index pointing at nothing."""
        chunk = uuid.uuid4().hex[:16]
        path = self.embedding_dir(backbone) / f"{chunk}.npy"
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, np.ascontiguousarray(vectors, dtype=np.float32))
        os.replace(tmp, path)
        with self.transaction() as c:
            c.executemany(
                "INSERT OR REPLACE INTO embeddings (backbone, content_hash, chunk, row) VALUES (?, ?, ?, ?)",
                [(backbone, h, chunk, r) for r, h in enumerate(hashes)],
            )

    def load_embeddings(self, backbone: str, hashes: Sequence[str], *, out_path: Path | None = None) -> np.ndarray:
        """Vectors for these content hashes, in this order; missing ones raise. With
        ``out_path``: written into that ``.npy`` file (float32, chunk by chunk, never all in
        memory) and returned memory-mapped read-only."""
        where: dict[str, tuple[str, int]] = {
            h: (ch, row) for h, ch, row in self.conn.execute(
                "SELECT content_hash, chunk, row FROM embeddings WHERE backbone = ?", (backbone,))
        }
        missing = [h for h in hashes if h not in where]
        if missing:
            raise ValidationError(
                f"{len(missing)} items have no {backbone!r} embedding; run `labelloop embed --backbone {backbone}`"
            )
        folder = self.embedding_dir(backbone)
        by_chunk: dict[str, list[tuple[int, int]]] = {}
        for pos, h in enumerate(hashes):
            ch, row = where[h]
            by_chunk.setdefault(ch, []).append((pos, row))
        out: np.ndarray | None = None
        for ch, pairs in by_chunk.items():
            arr = np.load(folder / f"{ch}.npy", mmap_mode="r")
            if out is None and out_path is not None:
                out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32,
                                                shape=(len(hashes), arr.shape[1]))  # (n, d)
            elif out is None:
                out = np.empty((len(hashes), arr.shape[1]), dtype=np.float32)  # (n, d)
            pos, rows = np.array(pairs).T
            out[pos] = arr[rows]
        if out is None:
            return np.empty((0, 0), dtype=np.float32)
        if out_path is not None:
            out.flush()
            del out
            return np.load(out_path, mmap_mode="r")
        return out

    def embedding_backbones(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute(
            "SELECT backbone, COUNT(*) FROM embeddings GROUP BY backbone")}

    # ------------------------------------------------------------- queries of the web app
    # Everything the web server reads or writes beyond the methods above, so that no SQL
    # lives outside this module (tests/test_web_api.py checks src/labelloop/web/).
    def rollback_if_open(self) -> None:
        """Roll back a transaction a failed job left open (the writer thread's safety net)."""
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")

    def last_run_id(self, kind: str) -> int | None:
        """Id of the newest finished run of ``kind`` (no JSON parsed: cheap to poll)."""
        row = self.conn.execute("SELECT MAX(id) FROM runs WHERE kind = ? AND status = 'done'", (kind,)).fetchone()
        return row[0]

    def items_key(self) -> int:
        """The largest item id (0 without items): items are only ever added, with ascending ids,
        so it changes whenever items are added and identifies the set of items. One index
        lookup (a COUNT(*) scans every row: 90 ms at 1M items, and this is asked per request)."""
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0])

    def item_ids_after(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` item ids above ``after``, ascending (walking every item in pages)."""
        return [r[0] for r in self.conn.execute("SELECT id FROM items WHERE id > ? ORDER BY id LIMIT ?",
                                                (int(after), int(limit)))]

    def class_id_of(self, name: str) -> int | None:
        """The id of class ``name``, None if there is no such class."""
        row = self.conn.execute("SELECT id FROM classes WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def labeled_among(self, ids: Sequence[int]) -> set[int]:
        """Items among ``ids`` with a human or imported label in effect (withdrawals respected)."""
        if not ids:
            return set()
        q = ",".join("?" * len(ids))
        rows = self.conn.execute(
            "SELECT DISTINCT a.item_id FROM annotations a JOIN ("
            "  SELECT item_id, source, COALESCE(annotator, '') AS who, MAX(id) AS last FROM annotations"
            f"  WHERE item_id IN ({q}) AND source IN ('human', 'import') GROUP BY item_id, source, who"
            ") l ON a.id = l.last WHERE a.class_id IS NOT NULL", [int(i) for i in ids]).fetchall()
        return {r[0] for r in rows}

    def gold_among(self, ids: Sequence[int]) -> set[int]:
        """Gold items among ``ids``."""
        if not ids:
            return set()
        q = ",".join("?" * len(ids))
        return {r[0] for r in self.conn.execute(f"SELECT item_id FROM gold WHERE item_id IN ({q})",
                                                [int(i) for i in ids])}

    def open_assignments(self, annotator: str) -> list[tuple[int, str]]:
        """(item_id, reason) of the items assigned to ``annotator`` not done yet, oldest first."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT item_id, reason FROM assignments WHERE annotator = ? AND done IS NULL ORDER BY id",
            (annotator,))]

    def annotator_labels(self, *, exclude: str | None = None) -> list[tuple[int, str | None, int]]:
        """(item_id, annotator, class_id) of each annotator's human label in effect (their
        latest, not withdrawn), oldest first; labels given without a name have annotator None."""
        rows = self.conn.execute(
            "SELECT a.item_id, a.annotator, a.class_id FROM annotations a JOIN ("
            "  SELECT item_id, COALESCE(annotator, '') AS who, MAX(id) AS last FROM annotations"
            "  WHERE source = 'human' GROUP BY item_id, who"
            ") l ON a.id = l.last WHERE a.class_id IS NOT NULL ORDER BY a.id").fetchall()
        return [(int(i), who, int(k)) for i, who, k in rows if exclude is None or who != exclude]

    def add_audit_confirmations(self, rows: Iterable[tuple[int, int]], *, evidence: str | None,
                                annotator: str | None) -> None:
        """A person kept these (item_id, class_id) labels although the audit flagged them."""
        now = _now()
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO audit_confirmations (item_id, class_id, evidence, annotator, "
                          "created) VALUES (?, ?, ?, ?, ?)", [(int(i), int(k), evidence, annotator, now)
                                                               for i, k in rows])

    def machine_labels_page(self, *, lo: float, hi: float, class_name: str | None, descending: bool,
                            limit: int, offset: int) -> tuple[int, list[tuple[int, str, float]]]:
        """Accepted machine labels in effect of items no person labeled, with confidence in
        [lo, hi] (and of ``class_name``): (how many, one page of (item_id, class, confidence))."""
        where = ["a.class_id IS NOT NULL", "COALESCE(a.confidence, 0) >= ?", "COALESCE(a.confidence, 0) <= ?",
                 # no human label in effect (any annotator's latest human row with a class)
                 "NOT EXISTS (SELECT 1 FROM annotations h WHERE h.item_id = a.item_id AND h.source = 'human' "
                 "AND h.class_id IS NOT NULL AND h.id = (SELECT MAX(h2.id) FROM annotations h2 WHERE "
                 "h2.item_id = h.item_id AND h2.source = 'human' AND COALESCE(h2.annotator, '') = "
                 "COALESCE(h.annotator, '')))"]
        args: list = [float(lo), float(hi)]
        if class_name:
            where.append("c.name = ?")
            args.append(class_name)
        sql = ("FROM annotations a JOIN (SELECT item_id, MAX(id) AS last FROM annotations WHERE source = 'machine' "
               "GROUP BY item_id) l ON a.id = l.last JOIN classes c ON c.id = a.class_id WHERE " + " AND ".join(where))
        total = self.conn.execute("SELECT COUNT(*) " + sql, args).fetchone()[0]
        direction = "DESC" if descending else "ASC"
        rows = [(int(i), name, float(cf)) for i, name, cf in self.conn.execute(
            f"SELECT a.item_id, c.name, COALESCE(a.confidence, 0) {sql} "
            f"ORDER BY COALESCE(a.confidence, 0) {direction}, a.item_id LIMIT ? OFFSET ?",
            args + [int(limit), int(offset)])]
        return int(total), rows

    # web labels: appended with the idempotency record of the request in one transaction
    def submission(self, user_id: int, key: str) -> dict | None:
        """The answer first given to ``user_id``'s submission ``key``, None if new."""
        row = self.conn.execute("SELECT response FROM submissions WHERE user_id = ? AND key = ?",
                                (user_id, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def add_human_labels(self, rows: Sequence[tuple[int, int | None]], *, annotator: str,
                         assignments: str | None = None,
                         respond: Callable[[list[int]], dict] | None = None,
                         remember: tuple[int, str] | None = None) -> dict | list[int]:
        """Append ``annotator``'s (item_id, class_id) human annotations (class None withdraws)
        in one transaction. ``assignments``: "done" marks the items' open assignments of
        ``annotator`` done, "reopen" reopens them. ``respond(annotation ids)`` makes the
        answer, stored under ``remember`` = (user id, idempotency key) in the same
        transaction; returned (the annotation ids without ``respond``)."""
        now = _now()
        with self.transaction() as c:
            ids = [c.execute("INSERT INTO annotations (item_id, class_id, source, annotator, created, run_id, "
                             "confidence) VALUES (?, ?, 'human', ?, ?, NULL, NULL)",
                             (int(i), None if k is None else int(k), annotator, now)).lastrowid
                   for i, k in rows]
            if assignments == "done":
                c.executemany("UPDATE assignments SET done = ? WHERE item_id = ? AND annotator = ? AND done IS NULL",
                              [(now, int(i), annotator) for i, _ in rows])
            elif assignments == "reopen":
                c.executemany("UPDATE assignments SET done = NULL WHERE item_id = ? AND annotator = ?",
                              [(int(i), annotator) for i, _ in rows])
            out = respond(ids) if respond is not None else ids
            if remember is not None and remember[1] is not None:
                c.execute("INSERT INTO submissions (user_id, key, response, created) VALUES (?, ?, ?, ?)",
                          (remember[0], remember[1], json.dumps(out), now))
        return out

    def last_label_in_effect(self, annotator: str) -> tuple[int, int, str] | None:
        """(annotation id, item_id, class name) of ``annotator``'s most recent human label
        still in effect, None if there is none."""
        row = self.conn.execute(
            "SELECT a.id, a.item_id, c.name FROM annotations a JOIN ("
            "  SELECT item_id, MAX(id) AS last FROM annotations WHERE annotator = ? AND source = 'human'"
            "  GROUP BY item_id) l ON a.id = l.last JOIN classes c ON c.id = a.class_id "
            "ORDER BY a.id DESC LIMIT 1", (annotator,)).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), row[2])

    # users and their web sessions (see labelloop.web.auth: it hashes, this stores)
    def user(self, name: str, *, active_only: bool = False) -> sqlite3.Row | None:
        q = "SELECT * FROM users WHERE name = ?" + (" AND active = 1" if active_only else "")
        return self.conn.execute(q, (name,)).fetchone()

    def users(self, *, role: str | None = None, active_only: bool = False) -> list[sqlite3.Row]:
        q, args = "SELECT * FROM users WHERE 1=1", []
        if role:
            q += " AND role = ?"
            args.append(role)
        if active_only:
            q += " AND active = 1"
        return self.conn.execute(q + " ORDER BY id", args).fetchall()

    def add_user(self, name: str, role: str, *, password_hash: str | None, token_hash: str | None) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO users (name, role, password_hash, token_hash, created) VALUES (?, ?, ?, ?, ?)",
                      (name, role, password_hash, token_hash, _now()))

    def set_user_password(self, user_id: int, password_hash: str) -> None:
        """New password hash; the user's sessions end."""
        with self.transaction() as c:
            c.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            c.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def set_user_token(self, user_id: int, token_hash: str) -> None:
        with self.transaction() as c:
            c.execute("UPDATE users SET token_hash = ? WHERE id = ?", (token_hash, user_id))

    def set_user_active(self, user_id: int, active: bool) -> None:
        """(De)activate a user; deactivating ends their sessions."""
        with self.transaction() as c:
            c.execute("UPDATE users SET active = ? WHERE id = ?", (int(active), user_id))
            if not active:
                c.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))

    def session_user(self, token_hash: str) -> sqlite3.Row | None:
        """The active user (with the session's ``csrf``) of an unexpired session."""
        return self.conn.execute(
            "SELECT u.*, s.csrf AS csrf FROM sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.token_hash = ? AND s.expires > ? AND u.active = 1", (token_hash, _now())).fetchone()

    def token_user(self, token_hash: str) -> sqlite3.Row | None:
        """The active user whose API token has this hash."""
        return self.conn.execute("SELECT * FROM users WHERE token_hash = ? AND active = 1", (token_hash,)).fetchone()

    def add_session(self, token_hash: str, user_id: int, csrf: str, ttl: float) -> None:
        """A new session; expired ones are purged."""
        now = _now()
        with self.transaction() as c:
            c.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            c.execute("INSERT INTO sessions (token_hash, user_id, csrf, created, expires) VALUES (?, ?, ?, ?, ?)",
                      (token_hash, user_id, csrf, now, now + ttl))

    def delete_session(self, token_hash: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

    # ----------------------------------------------------- labeling functions (rules)
    def add_rule(self, name: str, kind: str, definition: dict, class_id: int | None, *,
                 author: str | None) -> int:
        """A new rule (active); its name must be new: a rule's definition is never edited."""
        if self.rule(name) is not None:
            raise ValidationError(
                f"a rule named {name!r} exists already; choose another name, or switch the old one "
                f"off with `labelloop rules off {name}` and add the new definition under a new name")
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO rules (name, kind, definition, class_id, author, created) VALUES (?, ?, ?, ?, ?, ?)",
                (name, kind, json.dumps(definition, ensure_ascii=False), class_id, author, _now()))
        return int(cur.lastrowid)

    def rules(self, *, active_only: bool = False) -> list[dict]:
        """Every rule, oldest first: id, name, kind, definition (dict), class (name or None),
        author, created, active, changed_by, changed, votes_through."""
        q = ("SELECT r.*, c.name AS class FROM rules r LEFT JOIN classes c ON c.id = r.class_id"
             + (" WHERE r.active = 1" if active_only else "") + " ORDER BY r.id")
        out = []
        for r in self.conn.execute(q):
            d = dict(r)
            d["definition"] = json.loads(d["definition"])
            d["active"] = bool(d["active"])
            out.append(d)
        return out

    def rule(self, name: str) -> dict | None:
        return next((r for r in self.rules() if r["name"] == name), None)

    def set_rule_active(self, name: str, active: bool, *, by: str | None) -> None:
        with self.transaction() as c:
            c.execute("UPDATE rules SET active = ?, changed_by = ?, changed = ? WHERE name = ?",
                      (int(active), by, _now(), name))

    def add_rule_votes(self, rule_id: int, votes: Sequence[tuple[int, int]], *, through: int) -> None:
        """Append (item_id, class_id) votes of a rule on items evaluated up to id ``through``."""
        with self.transaction() as c:
            c.executemany("INSERT OR REPLACE INTO rule_votes (rule_id, item_id, class_id) VALUES (?, ?, ?)",
                          [(rule_id, int(i), int(k)) for i, k in votes])
            c.execute("UPDATE rules SET votes_through = MAX(votes_through, ?) WHERE id = ?", (int(through), rule_id))

    def rule_votes(self, *, active_only: bool = True) -> list[tuple[int, int, int]]:
        """(rule_id, item_id, class_id) of every vote, by rule then item."""
        q = ("SELECT v.rule_id, v.item_id, v.class_id FROM rule_votes v JOIN rules r ON r.id = v.rule_id"
             + (" WHERE r.active = 1" if active_only else "") + " ORDER BY v.rule_id, v.item_id")
        cur = self.conn.cursor()
        cur.row_factory = None
        return cur.execute(q).fetchall()

    def rule_inputs(self, after: int = 0) -> list[dict]:
        """What a rule sees of every item with id > ``after``: id, external_id, uri, text,
        modality and meta (the dict of columns kept at import, empty if none)."""
        rows = self.conn.execute(
            "SELECT id, external_id, uri, text, modality, meta FROM items WHERE id > ? ORDER BY id", (int(after),))
        return [dict(r) | {"meta": json.loads(r["meta"]) if r["meta"] else {}} for r in rows]

    def max_item_id(self) -> int:
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()[0])

    # --------------------------------------------------------------------- boxes
    BOX_COLUMNS = ("item_id", "x", "y", "w", "h", "class_id", "source", "annotator", "score", "run_id",
                   "replaces")

    def add_boxes(self, rows: Sequence[dict]) -> list[int]:
        """Append box rows (keys of :attr:`BOX_COLUMNS`; missing ones are NULL) in one
        transaction; returns their ids. A row with ``replaces`` edits (class set) or withdraws
        (class NULL) that box; the caller has checked items, classes and geometry."""
        for r in rows:
            if r["source"] not in SOURCES:
                raise ValidationError(f"box source must be one of {', '.join(SOURCES)}, got {r['source']!r}")
        now = _now()
        ids = []
        with self.transaction() as c:
            for r in rows:
                cur = c.execute(
                    "INSERT INTO boxes (item_id, x, y, w, h, class_id, source, annotator, score, run_id, replaces, "
                    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*(r.get(k) for k in self.BOX_COLUMNS), now))
                ids.append(cur.lastrowid)
        return ids

    def current_boxes(self, *, sources: Sequence[str] = SOURCES,
                      item_ids: Sequence[int] | None = None) -> list[dict]:
        """Boxes in effect: rows with a class that no later row replaces, oldest first."""
        q = ("SELECT b.id, b.item_id, b.x, b.y, b.w, b.h, b.class_id, b.source, b.annotator, b.score, "
             "b.run_id, b.created FROM boxes b WHERE b.class_id IS NOT NULL "
             "AND NOT EXISTS (SELECT 1 FROM boxes r WHERE r.replaces = b.id) "
             f"AND b.source IN ({', '.join('?' * len(sources))})")
        if item_ids is None:
            return [dict(r) for r in self.conn.execute(q + " ORDER BY b.id", list(sources))]
        ids = [int(i) for i in item_ids]
        out: list[dict] = []
        for start in range(0, len(ids), 500):   # stay under SQLite's bound-parameter limit
            part = ids[start:start + 500]
            out += [dict(r) for r in self.conn.execute(
                q + f" AND b.item_id IN ({', '.join('?' * len(part))})", [*sources, *part])]
        return sorted(out, key=lambda r: r["id"])

    # ------------------------------------------------- multi-label class decisions
    def add_class_decisions(self, rows: Sequence[tuple[int, int, int | None]], *, source: str,
                            annotator: str | None = None, run_id: int | None = None,
                            confidences: Sequence[float | None] | None = None,
                            annotators: Sequence[str | None] | None = None) -> int:
        """Append (item_id, class_id, value) decisions of a multi-label project in one
        transaction: value 1 the class applies, 0 it does not, None withdraws the source's
        decision. ``annotators``: one per row (an undo restoring others' decisions), else
        ``annotator`` for all. The caller has checked items and classes. Returns the rows appended."""
        conf = _confidences(source, confidences, len(rows))
        who = list(annotators) if annotators is not None else [annotator] * len(rows)
        now = _now()
        with self.transaction() as c:
            c.executemany(
                "INSERT INTO class_decisions (item_id, class_id, value, source, annotator, run_id, confidence, "
                "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(int(i), int(k), None if v is None else int(v), source, a, run_id,
                  None if cf is None else float(cf), now) for (i, k, v), cf, a in zip(rows, conf, who)])
        return len(rows)

    def last_class_decision_in_effect(self, annotator: str) -> int | None:
        """The item of ``annotator``'s most recent human class decision still in effect (the
        latest human row of its item and class, not a withdrawal), None if there is none."""
        row = self.conn.execute(
            "SELECT d.item_id FROM class_decisions d JOIN ("
            "  SELECT item_id, class_id, MAX(id) AS last FROM class_decisions WHERE source = 'human'"
            "  GROUP BY item_id, class_id) l ON d.id = l.last "
            "WHERE d.annotator = ? AND d.value IS NOT NULL ORDER BY d.id DESC LIMIT 1", (annotator,)).fetchone()
        return None if row is None else int(row[0])

    def class_decisions(self, *, sources: Sequence[str] = SOURCES, item_ids: Sequence[int] | None = None
                        ) -> list[tuple[int, int, int, str, float | None]]:
        """(item_id, class_id, value, source, confidence) of each source's decision in effect
        per (item, class): its latest row, unless that row withdraws it."""
        sources = [s for s in sources if s in SOURCES]
        if not sources:
            return []
        marks = ", ".join("?" * len(sources))
        q = ("SELECT d.item_id, d.class_id, d.value, d.source, d.confidence FROM class_decisions d JOIN ("
             "  SELECT item_id, class_id, source, MAX(id) AS last FROM class_decisions"
             f"  WHERE source IN ({marks}){{items}} GROUP BY item_id, class_id, source"
             ") l ON d.id = l.last WHERE d.value IS NOT NULL")
        if item_ids is None:
            parts = [([], "")]
        else:
            ids = [int(i) for i in item_ids]
            parts = [(ids[s:s + 500], f" AND item_id IN ({', '.join('?' * len(ids[s:s + 500]))})")
                     for s in range(0, len(ids), 500)]   # stay under SQLite's bound-parameter limit
        out = []
        for part, cond in parts:
            out += [(int(i), int(k), int(v), src, cf) for i, k, v, src, cf in self.conn.execute(
                q.format(items=cond) + " ORDER BY d.id", [*sources, *part])]
        return out

    def class_decision_rows(self, item_id: int) -> list[dict]:
        """Every decision row of one item, oldest first (the history behind its decisions)."""
        return [dict(r) for r in self.conn.execute(
            "SELECT d.id, d.item_id, c.name AS class, d.value, d.source, d.annotator, d.run_id, d.confidence, "
            "d.created FROM class_decisions d JOIN classes c ON c.id = d.class_id WHERE d.item_id = ? "
            "ORDER BY d.id", (int(item_id),))]

    def last_class_decision_id(self) -> int:
        """The id of the newest class decision (0 if none): it changes whenever one does."""
        return int(self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM class_decisions").fetchone()[0])

    def box(self, box_id: int) -> dict | None:
        row = self.conn.execute("SELECT * FROM boxes WHERE id = ?", (int(box_id),)).fetchone()
        return None if row is None else dict(row)

    def box_replaced(self, box_id: int) -> bool:
        return self.conn.execute("SELECT 1 FROM boxes WHERE replaces = ? LIMIT 1", (int(box_id),)).fetchone() is not None

    def add_box_reviews(self, item_ids: Sequence[int], *, source: str, annotator: str | None,
                        run_id: int | None = None) -> None:
        """Record that these images' boxes in effect are complete (``human``: a person checked
        them, possibly finding none; ``machine``: auto-accepted by an autolabel run)."""
        now = _now()
        with self.transaction() as c:
            c.executemany("INSERT INTO box_reviews (item_id, source, annotator, run_id, created) VALUES (?, ?, ?, ?, ?)",
                          [(int(i), source, annotator, run_id, now) for i in item_ids])

    def box_review_times(self, source: str) -> dict[int, float]:
        """item_id -> when the image was first reviewed by ``source``: a box_reviews row, or
        (human) the first box row a person wrote on it (drawn, edited or deleted)."""
        q = "SELECT item_id, MIN(created) FROM box_reviews WHERE source = ? GROUP BY item_id"
        out = {int(i): float(t) for i, t in self.conn.execute(q, (source,))}
        if source == "human":
            for i, t in self.conn.execute("SELECT item_id, MIN(created) FROM boxes WHERE source = 'human' "
                                          "GROUP BY item_id"):
                out[int(i)] = min(float(t), out.get(int(i), float(t)))
        return out

    def run_boxes(self, run_ids: Sequence[int]) -> list[dict]:
        """Every box row (with a class) these runs wrote, also those later edited or withdrawn:
        what a prelabel run proposed, as it proposed it."""
        ids = [int(r) for r in run_ids]
        out: list[dict] = []
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            out += [dict(r) for r in self.conn.execute(
                "SELECT id, item_id, x, y, w, h, class_id, score, run_id FROM boxes WHERE class_id IS NOT NULL "
                f"AND run_id IN ({', '.join('?' * len(part))}) ORDER BY id", part)]
        return out


def _confidences(source: str, confidences: Sequence[float | None] | None, n: int) -> list:
    """The confidences of ``n`` appended rows (None each without them), once ``source`` is checked."""
    if source not in SOURCES:
        raise ValidationError(f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    return list(confidences) if confidences is not None else [None] * n


def full_decision(item_id: int, applies: Iterable[str], class_ids: dict[str, int]) -> list[tuple[int, int, int]]:
    """A full multi-label decision for one item: (item_id, class_id, value) for every class of
    ``class_ids`` (name -> id), 1 for the names in ``applies``, 0 for the others."""
    applies = set(applies)
    return [(int(item_id), cid, int(name in applies)) for name, cid in class_ids.items()]


def validate_class_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"class name must be a non-empty string, got {name!r}")
    name = name.strip()
    if len(name) > 200:
        raise ValidationError(f"class name {name[:40]!r}... has {len(name)} characters; at most 200")
    for pos, ch in enumerate(name):
        if _is_control(ch):
            raise ValidationError(
                f"class name {name[:40]!r} has the control character U+{ord(ch):04X} at position {pos + 1}; "
                "class names are one line of visible text: remove it")
    return name


def validate_batch_name(name: str) -> str:
    """A batch name as ``import --batch`` takes it: one line of visible text, at most 100
    characters, not the reserved :data:`UNBATCHED`."""
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"batch name must be a non-empty string, e.g. --batch week-48; got {name!r}")
    name = name.strip()
    if len(name) > 100:
        raise ValidationError(f"batch name {name[:40]!r}... has {len(name)} characters; at most 100")
    if any(_is_control(ch) for ch in name):
        raise ValidationError(f"batch name {name[:40]!r} has a control character; use one line of visible text")
    if name == UNBATCHED:
        raise ValidationError(f"{UNBATCHED!r} names the items imported without --batch; choose another batch name")
    return name


def _is_control(ch: str) -> bool:
    """Control, format (zero-width, bidi overrides) and line / paragraph separator characters;
    the zero-width (non-)joiners that some scripts and emoji need are allowed."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\u200c\u200d"


@functools.cache
def class_name_pattern() -> str:
    """A regular expression (the same in Python, JSON Schema and Rust) a valid class name
    matches: a visible character and none of :func:`_is_control`'s (Basic Multilingual Plane;
    the few such characters beyond it are refused by :func:`validate_class_name` only)."""
    ranges: list[list[int]] = []
    for cp in range(0x10000):
        if 0xD800 <= cp <= 0xDFFF or not _is_control(chr(cp)):
            continue
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    bad = "".join(f"\\u{a:04x}" if a == b else f"\\u{a:04x}-\\u{b:04x}" for a, b in ranges)
    return f"^[^{bad}]*[^\\s{bad}][^{bad}]*$"



def _safe_name(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in s)


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ------------------------------------------------------------------------ PostgreSQL
# A project whose folder holds DATABASE_FILE keeps its rows in PostgreSQL instead of
# labelloop.db; the arrays stay in the folder. The store's SQL is written once, in SQLite's
# dialect; :class:`_PgConnection` translates the few SQLite-isms per statement (cached), so a
# new portable statement works on both unchanged:
#   ?                        -> %s (and a literal % -> %%)
#   BEGIN IMMEDIATE          -> BEGIN + a transaction-scoped advisory lock: one writer at a
#                               time, readers never blocked (read committed, as WAL readers)
#   INSERT OR IGNORE         -> INSERT ... ON CONFLICT DO NOTHING
#   INSERT OR REPLACE        -> INSERT ... ON CONFLICT (primary key) DO UPDATE SET the other columns
#   MAX(a, b) / MIN(a, b)    -> GREATEST(a, b) / LEAST(a, b)
#   LIKE                     -> ILIKE (SQLite's LIKE ignores ASCII case)
#   IFNULL( / INSTR(         -> COALESCE( / STRPOS(
#   INTEGER -> BIGINT (a row id is 64-bit on both: MAX_ID), REAL -> DOUBLE PRECISION, in
#        columns and CASTs
#   DDL: WITHOUT ROWID dropped; col INTEGER PRIMARY KEY gets SQLite's rowid rule (a NULL id
#        becomes MAX(id) + 1 in a BEFORE INSERT trigger: no gaps, explicit ids allowed)
# Not translated (write them portably): booleans used as numbers (SUM(a = b): use
# SUM(CASE WHEN a = b THEN 1 ELSE 0 END)), ROUND(double, n), GROUP_CONCAT, bare columns in
# GROUP BY, NULLs' place in ORDER BY (first in SQLite, last in PostgreSQL), "..." as a string.
#   INSERT into a table with an ``id`` column -> ... RETURNING id (cursor.lastrowid)
# Rows answer r["name"], r[0] and dict(r) like sqlite3.Row; NUMERIC results (SUM, AVG of
# integers) come back as int or float, Python bools are stored as 0 / 1 as in SQLite.

DATABASE_FILE = "database"   # a PostgreSQL project's database address: a URL without password, or env:VAR
URL_SCHEMES = ("postgresql://", "postgres://")


def is_project(root: str | os.PathLike) -> bool:
    """Whether ``root`` holds a labelloop project (SQLite or PostgreSQL)."""
    root = Path(root)
    return (root / DB_NAME).exists() or (root / DATABASE_FILE).exists()


def check_database_address(address: str) -> str:
    """``address`` as ``init --db`` takes it: a postgresql:// URL without a password, or
    env:VAR naming an environment variable that holds the URL (password allowed there)."""
    address = address.strip()
    if address.startswith("env:"):
        name = address[4:]
        if not name or not all(ch.isalnum() or ch == "_" for ch in name):
            raise ValidationError(f"--db {address!r}: after env: give the name of an environment variable")
        return address
    if not address.startswith(URL_SCHEMES):
        raise ValidationError(f"--db {address!r}: give a postgresql://user@host:port/dbname URL or env:VAR "
                              "(leave --db out for the embedded SQLite database)")
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise _missing_driver() from None
    try:
        parts = conninfo_to_dict(address)
    except Exception as exc:   # psycopg.ProgrammingError: not a valid URL
        raise ValidationError(f"--db: not a valid PostgreSQL URL ({exc})") from None
    if parts.get("password"):
        raise ValidationError(
            "--db holds a password, which would be written into the project folder; leave it out and use "
            "PGPASSWORD or ~/.pgpass, or put the whole URL in an environment variable and pass --db env:VAR")
    return address


def _missing_driver() -> Exception:
    from .errors import MissingDependencyError

    return MissingDependencyError.for_extra("psycopg", "postgres")


def _database_url(address: str) -> str:
    """The URL to connect to: ``address`` itself, or the value of env:VAR."""
    if address.startswith("env:"):
        url = os.environ.get(address[4:], "").strip()
        if not url:
            raise ProjectError(f"this project's database address is in ${address[4:]}, which is not set; "
                               f"export {address[4:]}=postgresql://user@host:port/dbname")
        return url
    return address


def _redacted(url: str) -> str:
    """``url`` without a password, to show in messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(url)
        if "password" in parts:
            parts["password"] = "***"
        return make_conninfo(**parts)
    except Exception:  # noqa: BLE001 - only for a message
        return "(the URL)"


class _Row(tuple):
    """A result row: ``r[0]``, ``r["name"]``, ``dict(r)`` (the names of sqlite3.Row)."""

    __slots__ = ()
    _index: dict[str, int] = {}

    def __getitem__(self, key):
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def _pg_row_factory(cursor):
    desc = cursor.description
    if desc is None:
        return tuple
    index: dict[str, int] = {}
    for i, col in enumerate(desc):
        index.setdefault(col.name, i)
    cls = type("Row", (_Row,), {"_index": index, "__slots__": ()})
    return cls


_LIT = "\x00"   # marks a string literal taken out while a statement is rewritten


@functools.lru_cache(maxsize=4096)
def _pg_translate(sql: str, params: bool) -> tuple[str, bool, bool, str | None]:
    """(PostgreSQL statement, is an INSERT without RETURNING, is INSERT OR REPLACE, its
    table) of one SQLite statement; ``params``: placeholders are bound."""
    import re

    literals: list[str] = []
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:   # take out literals and comments: rewriting must not touch them
        ch = sql[i]
        if ch in "'\"":
            j = i + 1
            while j < n:
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            literals.append(sql[i:j + 1])
            out.append(f"{_LIT}{len(literals) - 1}{_LIT}")
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            i = n if j < 0 else j
            out.append(" ")
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            i = n if j < 0 else j + 2
            out.append(" ")
        else:
            out.append(ch)
            i += 1
    code = "".join(out)
    head = code.lstrip()[:40].upper()
    ddl = head.startswith(("CREATE TABLE", "ALTER TABLE"))
    rowid = None
    if ddl:
        table = re.match(r"\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)", code, flags=re.I)
        key = re.search(r"[(,]\s*(\w+)\s+INTEGER\s+PRIMARY\s+KEY\b", code, flags=re.I)
        if table and key:   # SQLite's rowid alias: NULL -> MAX + 1, no gaps (writers hold the lock)
            t, c = table.group(1), key.group(1)
            rowid = (f"CREATE OR REPLACE FUNCTION {t}_rowid() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
                     f"IF NEW.{c} IS NULL THEN SELECT COALESCE(MAX({c}), 0) + 1 INTO NEW.{c} FROM {t}; END IF; "
                     f"RETURN NEW; END $f$; CREATE TRIGGER {t}_rowid BEFORE INSERT ON {t} "
                     f"FOR EACH ROW EXECUTE FUNCTION {t}_rowid()")
        code = re.sub(r"\bBLOB\b", "BYTEA", code, flags=re.I)
        code = re.sub(r"\)\s*WITHOUT\s+ROWID\s*$", ")", code.rstrip(), flags=re.I)
        code = re.sub(r"\bAUTOINCREMENT\b", "", code, flags=re.I)
        if rowid and re.search(r"\bIF\s+NOT\s+EXISTS\b", code, flags=re.I):
            rowid = rowid.replace("CREATE TRIGGER", f"DROP TRIGGER IF EXISTS {t}_rowid ON {t}; CREATE TRIGGER")
    code = re.sub(r"\bINTEGER\b", "BIGINT", code, flags=re.I)              # columns and CASTs
    code = re.sub(r"\bREAL\b", "DOUBLE PRECISION", code, flags=re.I)
    code = re.sub(r"\bIFNULL\s*\(", "COALESCE(", code, flags=re.I)
    code = re.sub(r"\bINSTR\s*\(", "STRPOS(", code, flags=re.I)
    code = re.sub(r"\bLIKE\b", "ILIKE", code, flags=re.I)
    code = _greatest_least(code)
    ignore = re.match(r"\s*INSERT\s+OR\s+IGNORE\s+INTO\b", code, flags=re.I)
    replace = re.match(r"\s*INSERT\s+OR\s+REPLACE\s+INTO\s+(\w+)", code, flags=re.I)
    table = None
    if ignore:
        code = "INSERT INTO" + code[ignore.end():].rstrip() + " ON CONFLICT DO NOTHING"
    elif replace:
        table = replace.group(1).lower()
        code = "INSERT INTO" + code[replace.end() - len(replace.group(1)) - 1:]
    insert = re.match(r"\s*INSERT\s+INTO\s+\w+", code, flags=re.I) is not None \
        and re.search(r"\bRETURNING\b", code, flags=re.I) is None
    if params:
        code = code.replace("%", "%%").replace("?", "%s")
        literals = [lit.replace("%", "%%") for lit in literals]
    code = re.sub(f"{_LIT}(\\d+){_LIT}", lambda m: literals[int(m.group(1))], code)
    if rowid:
        code = code.rstrip() + "; " + rowid
    return code, insert, bool(replace), table


def _greatest_least(code: str) -> str:
    """MAX(a, b, ...) / MIN(a, b, ...) (SQLite's scalar forms) -> GREATEST / LEAST; the
    one-argument aggregates stay."""
    import re

    pos = 0
    while True:
        m = re.compile(r"\b(MAX|MIN)\s*\(", re.I).search(code, pos)
        if not m:
            return code
        depth, j, comma = 1, m.end(), False
        while j < len(code) and depth:
            if code[j] == "(":
                depth += 1
            elif code[j] == ")":
                depth -= 1
            elif code[j] == "," and depth == 1:
                comma = True
            j += 1
        if comma:
            name = "GREATEST" if m.group(1).upper() == "MAX" else "LEAST"
            code = code[:m.start()] + name + code[m.start() + len(m.group(1)):]
        pos = m.start() + 1


class _PgCursor:
    """The part of sqlite3.Cursor the store uses, on a psycopg cursor."""

    def __init__(self, conn: "_PgConnection"):
        self._conn = conn
        self._cur = conn.raw.cursor()
        self.lastrowid: int | None = None

    @property
    def row_factory(self):
        return self._cur.row_factory

    @row_factory.setter
    def row_factory(self, factory) -> None:
        from psycopg.rows import tuple_row

        self._cur.row_factory = _pg_row_factory if factory is not None else tuple_row

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    @property
    def description(self):
        return self._cur.description

    def execute(self, sql: str, params=None) -> "_PgCursor":
        if sql.strip().upper() == "BEGIN IMMEDIATE":   # one round trip
            import psycopg

            try:
                self._cur.execute(f"BEGIN; SELECT pg_advisory_xact_lock({int(self._conn.lock_key)})")
            except psycopg.errors.LockNotAvailable:
                self._cur.execute("ROLLBACK")
                raise ProjectError("the project's database is busy: another writer held it for 30 s; "
                                   "try again when it is done") from None
            return self
        q, insert, _, _ = self._conn.translate(sql, params is not None)
        returning = insert and self._conn.has_id_column(q)
        if returning:
            q += " RETURNING id"
        with _nul_refused():
            self._cur.execute(q, None if params is None else list(params))
        if returning:
            rows = self._cur.fetchall()
            self.lastrowid = rows[-1][0] if rows else None
        return self

    def executemany(self, sql: str, seq) -> "_PgCursor":
        q, _, _, _ = self._conn.translate(sql, True)
        with _nul_refused():
            self._cur.executemany(q, [list(p) for p in seq])
        return self

    def fetchone(self):
        return self._cur.fetchone()

    def fetchall(self) -> list:
        return self._cur.fetchall()

    def fetchmany(self, size: int = 1) -> list:
        return self._cur.fetchmany(size)

    def __iter__(self):
        return iter(self._cur.fetchall() if self._cur.description is not None else [])


@contextmanager
def _nul_refused():
    """SQLite stores a text with a NUL character, PostgreSQL cannot: a clear error, nothing stored."""
    import psycopg

    try:
        yield
    except psycopg.DataError as exc:
        if "NUL" not in str(exc):
            raise
        raise ValidationError("a text holds the NUL character (\\x00), which PostgreSQL cannot store; remove it "
                              "from the input and try again (nothing of this write was stored)") from None


class _PgConnection:
    """The part of sqlite3.Connection the store uses, on PostgreSQL (autocommit: statements
    outside ``BEGIN IMMEDIATE ... COMMIT`` see the latest committed state)."""

    def __init__(self, url: str, *, readonly: bool):
        try:
            import psycopg
        except ImportError:
            raise _missing_driver() from None
        from psycopg.adapt import Dumper, Loader

        class NumericLoader(Loader):   # SUM / AVG of integers: int or float as in SQLite
            def load(self, data):
                s = bytes(data).decode()
                return int(s) if s.lstrip("-").isdigit() else float(s)

        class BoolDumper(Dumper):     # no boolean columns: flags are INTEGER 0 / 1 as in SQLite
            oid = psycopg.adapters.types["int8"].oid

            def dump(self, obj):
                return b"1" if obj else b"0"

        try:
            self.raw = psycopg.connect(url, autocommit=True, row_factory=_pg_row_factory, connect_timeout=15)
        except psycopg.Error as exc:
            raise ProjectError(f"cannot connect to the project's PostgreSQL database {_redacted(url)}: "
                               f"{str(exc).strip()}") from None
        self.raw.adapters.register_loader("numeric", NumericLoader)
        self.raw.adapters.register_dumper(bool, BoolDumper)
        # ESCAPE '\' is one backslash; a writer waits for the write lock at most 30 s, as
        # SQLite's busy_timeout; the web app's readers cannot write
        self.raw.execute("SET standard_conforming_strings = on; SET lock_timeout = '30s'"
                         + ("; SET default_transaction_read_only = on" if readonly else ""))
        db, schema = self.raw.execute("SELECT current_database(), current_schema()").fetchone()
        # writers of this database (and schema) take this lock: SQLite's one writer at a time
        self.lock_key = int.from_bytes(__import__("hashlib").sha256(
            f"labelloop:{db}:{schema}".encode()).digest()[:8], "big", signed=True)
        self._columns: dict[str, set[str]] = {}
        self._keys: dict[str, list[str]] = {}

    # sqlite3.Connection's interface
    def cursor(self) -> _PgCursor:
        return _PgCursor(self)

    def execute(self, sql: str, params=None) -> _PgCursor:
        return self.cursor().execute(sql, params)

    def executemany(self, sql: str, seq) -> _PgCursor:
        return self.cursor().executemany(sql, seq)

    @property
    def in_transaction(self) -> bool:
        from psycopg.pq import TransactionStatus

        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def commit(self) -> None:
        if self.in_transaction:
            self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.raw.execute("ROLLBACK")

    def close(self) -> None:
        self.raw.close()

    def __del__(self) -> None:   # an unclosed store goes quietly, as an sqlite3 connection does
        raw = getattr(self, "raw", None)
        if raw is not None and not raw.closed:
            try:
                raw.close()
            except Exception:  # noqa: BLE001 - at interpreter exit
                pass

    # the translation, with what it needs to know of the tables
    def translate(self, sql: str, params: bool) -> tuple[str, bool, bool, str | None]:
        q, insert, replace, table = _pg_translate(sql, params)
        if replace:
            cols = _insert_columns(q)
            key = self.primary_key(table)
            rest = [c for c in cols if c not in key]
            q = q.rstrip() + f" ON CONFLICT ({', '.join(key)}) " + (
                "DO UPDATE SET " + ", ".join(f"{c} = EXCLUDED.{c}" for c in rest) if rest else "DO NOTHING")
        return q, insert, replace, table

    def _catalog(self, sql: str, table: str) -> list[str]:
        cur = self.raw.cursor()
        return [r[0] for r in cur.execute(sql, (table,)).fetchall()]

    def has_id_column(self, q: str) -> bool:
        import re

        table = re.match(r"\s*INSERT\s+INTO\s+(\w+)", q, flags=re.I).group(1).lower()
        if table not in self._columns:
            cols = set(self._catalog("SELECT column_name FROM information_schema.columns "
                                     "WHERE table_schema = current_schema() AND table_name = %s", table))
            if not cols:
                return False
            self._columns[table] = cols
        return "id" in self._columns[table]

    def primary_key(self, table: str) -> list[str]:
        if table not in self._keys:
            self._keys[table] = self._catalog(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
                "ORDER BY array_position(i.indkey, a.attnum)", table)
        if not self._keys[table]:
            raise ProjectError(f"INSERT OR REPLACE INTO {table}: the table has no primary key")
        return self._keys[table]


def _insert_columns(q: str) -> list[str]:
    import re

    m = re.match(r"\s*INSERT\s+INTO\s+\w+\s*\(([^)]*)\)", q, flags=re.I)
    if not m:
        raise ProjectError("INSERT OR REPLACE needs its column list on PostgreSQL")
    return [c.strip().lower() for c in m.group(1).split(",")]

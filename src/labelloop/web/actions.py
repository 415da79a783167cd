"""Writes the web app makes, each a function of the writer's store (see ``service.Writer``).

Each validates everything before it writes and writes in one transaction, so a rejected
request changes nothing. A submission may carry an idempotency ``key``: a retried request
with the same key returns the first answer and writes nothing again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from ..errors import NotReadyError, UnknownClassError, UnknownItemError, ValidationError
from ..store import Store
from .auth import User

__all__ = ["label_item", "undo_last", "review_labels", "add_class", "confirm_label", "item_exists"]

_MAX_KEY = 100


def item_exists(store: Store, item_id: int) -> None:
    if not store.has_item(item_id):
        raise UnknownItemError(f"no item with id {item_id} in this project")


def _class_id(store: Store, name: str) -> int:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("label must be a class name, got an empty value")
    row = store.conn.execute("SELECT id FROM classes WHERE name = ?", (name.strip(),)).fetchone()
    if row is None:
        known = ", ".join(store.classes()) or "(none)"
        raise UnknownClassError(f"unknown class {name!r}; known classes: {known}. Add it first "
                                "(the + class field on the labeling page, or POST /api/classes)")
    return row[0]


def _previous(store: Store, user: User, key: str | None) -> dict | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY:
        raise ValidationError(f"key must be a string of 1 to {_MAX_KEY} characters")
    row = store.conn.execute("SELECT response FROM submissions WHERE user_id = ? AND key = ?",
                             (user.id, key)).fetchone()
    return None if row is None else json.loads(row[0]) | {"repeated": True}


def _remember(c, user: User, key: str | None, response: dict) -> None:
    if key is not None:
        c.execute("INSERT INTO submissions (user_id, key, response, created) VALUES (?, ?, ?, ?)",
                  (user.id, key, json.dumps(response), time.time()))


def _append(c, item_id: int, class_id: int | None, annotator: str) -> int:
    """One human annotation row (the same columns ``Store.add_annotations`` writes)."""
    cur = c.execute(
        "INSERT INTO annotations (item_id, class_id, source, annotator, created, run_id, confidence) "
        "VALUES (?, ?, 'human', ?, ?, NULL, NULL)", (int(item_id), class_id, annotator, time.time()))
    return cur.lastrowid


def label_item(store: Store, user: User, item_id: int, label: str, key: str | None = None) -> dict:
    """Append ``user``'s label for one item; marks a matching assignment done."""
    prev = _previous(store, user, key)
    if prev is not None:
        return prev
    item_exists(store, item_id)
    class_id = _class_id(store, label)
    with store.transaction() as c:
        ann = _append(c, item_id, class_id, user.name)
        c.execute("UPDATE assignments SET done = ? WHERE item_id = ? AND annotator = ? AND done IS NULL",
                  (time.time(), int(item_id), user.name))
        out = {"ok": True, "annotation": ann, "item": int(item_id), "label": label.strip(), "repeated": False}
        _remember(c, user, key, out)
    return out


def undo_last(store: Store, user: User, key: str | None = None) -> dict:
    """Withdraw ``user``'s most recent label that is still in effect (append-only: a row with
    no class). Reopens its assignment, if any. Raises NotReadyError when there is none."""
    prev = _previous(store, user, key)
    if prev is not None:
        return prev
    row = store.conn.execute(
        "SELECT a.id, a.item_id, c.name FROM annotations a JOIN ("
        "  SELECT item_id, MAX(id) AS last FROM annotations WHERE annotator = ? AND source = 'human'"
        "  GROUP BY item_id) l ON a.id = l.last JOIN classes c ON c.id = a.class_id "
        "ORDER BY a.id DESC LIMIT 1", (user.name,)).fetchone()
    if row is None:
        raise NotReadyError(f"nothing to undo: {user.name} has no label in effect")
    ann_id, item_id, name = row
    with store.transaction() as c:
        withdrawal = _append(c, item_id, None, user.name)
        c.execute("UPDATE assignments SET done = NULL WHERE item_id = ? AND annotator = ?", (item_id, user.name))
        out = {"ok": True, "item": item_id, "withdrawn": name, "undone_annotation": ann_id,
               "annotation": withdrawal, "repeated": False}
        _remember(c, user, key, out)
    return out


def review_labels(store: Store, user: User, decisions: Sequence[tuple[int, str]], key: str | None = None) -> dict:
    """Human labels by a reviewer for many items at once (accepting or fixing machine labels)."""
    prev = _previous(store, user, key)
    if prev is not None:
        return prev
    if not decisions:
        raise ValidationError("no items selected: tick the items to accept or fix")
    rows = []
    for item_id, label in decisions:
        item_exists(store, item_id)
        rows.append((int(item_id), _class_id(store, label)))
    with store.transaction() as c:
        first = None
        for item_id, class_id in rows:
            a = _append(c, item_id, class_id, user.name)
            first = first or a
        out = {"ok": True, "appended": len(rows), "first_annotation": first, "last_annotation": a,
               "repeated": False}
        _remember(c, user, key, out)
    return out


def add_class(store: Store, name: str) -> dict:
    added = store.add_classes([name])
    return {"ok": True, "added": added, "classes": store.classes()}


def confirm_label(store: Store, user: User, item_id: int, label: str, evidence: str | None = None) -> dict:
    """Audit: a person keeps this label although it was flagged (``audit_confirmations``)."""
    item_exists(store, item_id)
    class_id = _class_id(store, label)
    with store.transaction() as c:
        c.execute("INSERT OR REPLACE INTO audit_confirmations (item_id, class_id, evidence, annotator, created) "
                  "VALUES (?, ?, ?, ?, ?)", (int(item_id), class_id, evidence, user.name, time.time()))
    return {"ok": True, "item": int(item_id), "label": label}

"""Writes the web app makes, each a function of the writer's store (see ``service.Writer``).

Each validates everything before it writes and writes in one transaction, so a rejected
request changes nothing. A submission may carry an idempotency ``key``: a retried request
with the same key returns the first answer and writes nothing again.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import NotReadyError, UnknownClassError, UnknownItemError, ValidationError
from ..project import Project
from ..store import Store
from .auth import User

__all__ = ["label_item", "undo_last", "review_labels", "add_class", "confirm_label", "item_exists",
           "set_guidelines", "set_rule_active", "find_novel", "add_class_from_cluster", "MAX_GUIDELINES"]

_MAX_KEY = 100
MAX_GUIDELINES = 20_000   # characters: a few pages of text; the queue page shows them in full


def item_exists(store: Store, item_id: int) -> None:
    if not store.has_item(item_id):
        raise UnknownItemError(f"no item with id {item_id} in this project")


def _class_id(store: Store, name: str) -> int:
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("label must be a class name, got an empty value")
    class_id = store.class_id_of(name.strip())
    if class_id is None:
        known = ", ".join(store.classes()) or "(none)"
        raise UnknownClassError(f"unknown class {name!r}; known classes: {known}. Add it first "
                                "(the + class field on the labeling page, or POST /api/classes)")
    return class_id


def _previous(store: Store, user: User, key: str | None) -> dict | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 0 < len(key) <= _MAX_KEY:
        raise ValidationError(f"key must be a string of 1 to {_MAX_KEY} characters")
    first = store.submission(user.id, key)
    return None if first is None else first | {"repeated": True}


def label_item(store: Store, user: User, item_id: int, label: str, key: str | None = None) -> dict:
    """Append ``user``'s label for one item; marks a matching assignment done."""
    prev = _previous(store, user, key)
    if prev is not None:
        return prev
    item_exists(store, item_id)
    class_id = _class_id(store, label)
    return store.add_human_labels(
        [(item_id, class_id)], annotator=user.name, assignments="done", remember=(user.id, key),
        respond=lambda ann: {"ok": True, "annotation": ann[0], "item": int(item_id), "label": label.strip(),
                             "repeated": False})


def undo_last(store: Store, user: User, key: str | None = None) -> dict:
    """Withdraw ``user``'s most recent label that is still in effect (append-only: a row with
    no class). Reopens its assignment, if any. Raises NotReadyError when there is none."""
    prev = _previous(store, user, key)
    if prev is not None:
        return prev
    last = store.last_label_in_effect(user.name)
    if last is None:
        raise NotReadyError(f"nothing to undo: {user.name} has no label in effect")
    ann_id, item_id, name = last
    return store.add_human_labels(
        [(item_id, None)], annotator=user.name, assignments="reopen", remember=(user.id, key),
        respond=lambda ann: {"ok": True, "item": item_id, "withdrawn": name, "undone_annotation": ann_id,
                             "annotation": ann[0], "repeated": False})


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
    return store.add_human_labels(
        rows, annotator=user.name, remember=(user.id, key),
        respond=lambda ann: {"ok": True, "appended": len(rows), "first_annotation": ann[0],
                             "last_annotation": ann[-1], "repeated": False})


def add_class(store: Store, name: str) -> dict:
    added = store.add_classes([name])
    return {"ok": True, "added": added, "classes": store.classes()}


def confirm_label(store: Store, user: User, item_id: int, label: str, evidence: str | None = None) -> dict:
    """Audit: a person keeps this label although it was flagged (``audit_confirmations``)."""
    item_exists(store, item_id)
    class_id = _class_id(store, label)
    store.add_audit_confirmations([(item_id, class_id)], evidence=evidence, annotator=user.name)
    return {"ok": True, "item": int(item_id), "label": label}


def set_guidelines(store: Store, user: User, text: str) -> dict:
    """Replace the labeling guidelines (Markdown or plain text) with ``text``; "" clears them."""
    if not isinstance(text, str):
        raise ValidationError("text must be a string of Markdown or plain text")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > MAX_GUIDELINES:
        raise ValidationError(f"the guidelines are {len(text):,} characters long; at most {MAX_GUIDELINES:,} "
                              "fit: shorten them or link to a longer document")
    bad = next((ch for ch in text if ch not in "\n\t" and (ord(ch) < 32 or ord(ch) == 127)), None)
    if bad is not None:
        raise ValidationError(f"the guidelines contain the control character U+{ord(bad):04X}: "
                              "use plain text (newlines and tabs are fine)")
    return store.set_guidelines(text.strip("\n"), by=user.name)


def set_rule_active(store: Store, user: User, name: str, active: bool) -> dict:
    """Switch a labeling function on or off (:meth:`Project.set_rule_active`, by ``user``)."""
    return Project.on_store(store).set_rule_active(name, active, by=user.name)


def find_novel(store: Store, user: User, batch: str | None) -> dict:
    """Look for candidate new classes (:meth:`Project.novel`, recorded as a run)."""
    return Project.on_store(store).novel(batch=batch or None)


def add_class_from_cluster(store: Store, user: User, cluster: int, name: str) -> dict:
    """Add class ``name`` for a cluster of the last novel run; its examples are queued for a
    person, nothing is labeled (:meth:`Project.add_class_from_cluster`)."""
    return Project.on_store(store).add_class_from_cluster(name, cluster, annotator=user.name)

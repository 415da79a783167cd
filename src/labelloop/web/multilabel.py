"""The labeling queue of multi-label projects: which items are still open, the machine's
per-class suggestions, and a person's decision (the set of classes that apply, possibly none).

An item is open while some class has no decision in effect from a person, an import or
auto-labeling (as :meth:`Project.next` counts it); a person's decision covers every class
(:meth:`Project.label_classes`: 1 for the classes toggled on, 0 for the others)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..project import LABEL_SOURCES, Project
from ..store import Store
from .auth import User

__all__ = ["is_multilabel", "decided_among", "open_count", "suggestions", "decide", "undo", "SUGGEST_AT"]

SUGGEST_AT = 0.5   # a class is pre-set as a suggestion when its calibrated score reaches this


def is_multilabel(store: Store) -> bool:
    return store.get_meta("task", "classification") == "multilabel"


def decided_among(store: Store, ids: Iterable[int]) -> set[int]:
    """The items of ``ids`` every class of which has a decision in effect."""
    ids = list(ids)
    n_classes = len(store.classes())
    got = Project.on_store(store).class_decisions(ids, sources=LABEL_SOURCES) if ids else {}
    return {i for i, per in got.items() if len(per) >= n_classes}


def open_count(store: Store) -> int:
    """Items with at least one class no one has decided."""
    n_classes = len(store.classes())
    got = Project.on_store(store).class_decisions(None, sources=LABEL_SOURCES)
    return len(store.item_ids()) - sum(len(per) >= n_classes for per in got.values())


def suggestions(project: Project, ids: Sequence[int]) -> dict[int, dict[str, float]]:
    """item id -> {class: calibrated score} of the last refresh ({} for an item before one)."""
    return {i: {c: round(s, 4) for c, s in per.items()} for i, per in project.class_scores(ids).items()}


def decide(store: Store, user: User, item_id: int, classes: Sequence[str]) -> dict:
    """``user``'s full decision for one item (:meth:`Project.label_classes`); ``classes``: the
    ones that apply ([] = none does). Sending the same decision again changes nothing."""
    Project.on_store(store).label_classes(int(item_id), list(classes), annotator=user.name)
    return {"ok": True, "item": int(item_id), "classes": sorted(set(classes), key=store.classes().index)}


def undo(store: Store, user: User) -> dict:
    """Undo ``user``'s most recent decision in effect (:meth:`Project.undo_class_decision`):
    the item gets back the decisions it had before, or is open again."""
    out = Project.on_store(store).undo_class_decision(user.name)
    return {"ok": True, "item": out["item"], "classes": out["classes"], "withdrawn": out["withdrawn"]}

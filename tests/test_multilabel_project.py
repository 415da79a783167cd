"""Multi-label projects (issue 12): the per-(item, class) decisions of migration 8, the Project
API (label_classes, class_decisions, class_scores), the loop on a small real text set, the CLI
through the real entry point, and import / export round trips. Every test runs on SQLite and
on PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from labelloop import Project
from labelloop.errors import UnknownClassError, UnknownItemError, ValidationError

pytestmark = pytest.mark.usefixtures("each_db")   # every test on SQLite and on PostgreSQL ($LABELLOOP_DB)

CLASSES = ["billing", "bug", "feature", "urgent"]
LABELLOOP = [sys.executable, "-m", "labelloop.cli"]


def run(*args, check=True):
    proc = subprocess.run([*LABELLOOP, *map(str, args)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ))
    if check and proc.returncode != 0:
        raise AssertionError(f"labelloop {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def tags(tmp_path):
    """A multi-label text project with four classes and three texts (ids a, b, c)."""
    p = Project.init(tmp_path / "tags", modality="text", classes=CLASSES, task="multilabel")
    (tmp_path / "t.csv").write_text("id,text\na,my invoice is wrong\nb,the app crashes\nc,please add dark mode\n")
    p.import_(tmp_path / "t.csv")
    yield p
    p.close()


def _item(p, ext: str) -> int:
    return p.store.resolve_item(ext)


# ------------------------------------------------------------------ store and API
def test_init_multilabel_any_modality(tmp_path, next_db):
    p = Project.init(tmp_path / "img", modality="image", classes=CLASSES, task="multilabel")
    assert p.task == "multilabel" and p.modality == "image"
    p.close()
    next_db()
    with Project.init(tmp_path / "txt", modality="text", task="multilabel") as q:
        assert q.task == "multilabel" and q.store.schema_version() >= 8


def test_label_classes_writes_a_full_decision_and_the_latest_wins(tags):
    a, b = _item(tags, "a"), _item(tags, "b")
    tags.label_classes("a", ["billing", "urgent"], annotator="ann")
    tags.label_classes(b, [])                                  # none applies: a decision too
    assert tags.class_decisions() == {a: {"billing": 1, "bug": 0, "feature": 0, "urgent": 1},
                                      b: {c: 0 for c in CLASSES}}
    tags.label_classes("a", ["billing"], annotator="ann")     # a changed mind is a new row
    assert tags.class_decisions([a]) == {a: {"billing": 1, "bug": 0, "feature": 0, "urgent": 0}}
    history = tags.store.class_decision_rows(a)
    assert len(history) == 8                                  # append-only: both decisions kept
    assert [(r["class"], r["value"]) for r in history[:4]] == [("billing", 1), ("bug", 0), ("feature", 0),
                                                                ("urgent", 1)]
    assert {r["annotator"] for r in history} == {"ann"} and {r["source"] for r in history} == {"human"}


def test_sources_keep_their_own_decisions_and_the_first_listed_wins(tags):
    a = _item(tags, "a")
    tags.label_classes("a", ["bug"], source="import")
    tags.label_classes("a", ["billing"])
    assert tags.class_decisions(sources=("import",))[a]["bug"] == 1
    assert tags.class_decisions(sources=("human", "import"))[a] == {"billing": 1, "bug": 0, "feature": 0,
                                                                    "urgent": 0}
    assert tags.class_decisions(sources=("import", "human"))[a]["bug"] == 1
    assert tags.class_decisions(sources=("machine",)) == {}


def test_withdrawn_machine_decisions_are_not_in_effect(tags):
    a = _item(tags, "a")
    cid = tags.store.class_ids()
    tags.store.add_class_decisions([(a, cid["urgent"], 1)], source="machine", annotator="autolabel")
    assert tags.class_decisions(sources=("machine",)) == {a: {"urgent": 1}}
    tags.store.add_class_decisions([(a, cid["urgent"], None)], source="machine", annotator="autolabel")
    assert tags.class_decisions(sources=("machine",)) == {}


@pytest.mark.parametrize("item, classes, error, words", [
    ("a", ["billing", "refund"], UnknownClassError, ["'refund'", "billing, bug, feature, urgent"]),
    ("zzz", ["billing"], UnknownItemError, ["zzz"]),
    (999, ["billing"], UnknownItemError, ["999"]),
    ("a", "billing", ValidationError, ["list of class names"]),
])
def test_a_bad_decision_names_the_mistake_and_writes_nothing(tags, item, classes, error, words):
    before = tags.store.last_class_decision_id()
    with pytest.raises(error) as exc:
        tags.label_classes(item, classes)
    assert all(w in str(exc.value) for w in words)
    assert tags.store.last_class_decision_id() == before


def test_single_label_writes_refuse_each_other(tags, tmp_path, next_db):
    with pytest.raises(ValidationError, match="multi-label project.*--classes"):
        tags.label([("a", "billing")])
    next_db()
    with Project.init(tmp_path / "single", modality="text", classes=CLASSES) as single:
        (tmp_path / "s.csv").write_text("text\nhello\n")
        single.import_(tmp_path / "s.csv")
        with pytest.raises(ValidationError, match="multi-label projects.*ITEM=CLASS"):
            single.label_classes(1, ["billing"])


def test_label_classes_through_on_store(tags):
    """The web server's writer thread calls it on its own open store."""
    same = Project.on_store(tags.store)
    same.label_classes(_item(tags, "c"), ["feature"], annotator="web-user")
    assert tags.class_decisions()[_item(tags, "c")]["feature"] == 1


def test_class_scores_are_empty_before_a_refresh(tags):
    assert tags.class_scores([1, 2, 3]) == {}
    assert tags.predictions() is None


def test_migration_8_an_old_project_opens_with_the_new_table(tmp_path, monkeypatch, db_backend):
    from labelloop import store as store_mod

    if db_backend != "sqlite":
        pytest.skip("an old SQLite file is what users have on disk")
    monkeypatch.setattr(store_mod, "MIGRATIONS", [m for m in store_mod.MIGRATIONS if m[0] < 8])
    s = store_mod.Store(tmp_path / "old", create=True)
    s.set_meta("modality", "text")
    assert s.schema_version() == 7
    s.close()
    monkeypatch.undo()
    with Project(tmp_path / "old") as p:
        assert p.store.schema_version() == 8 and p.task == "classification"
        assert p.store.class_decisions() == []

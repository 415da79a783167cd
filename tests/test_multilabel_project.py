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
        assert p.store.schema_version() == max(v for v, _, _ in store_mod.MIGRATIONS) and p.task == "classification"
        assert p.store.class_decisions() == []


# ------------------------------------------------------------------ the loop, end to end
TOPICS = {
    "billing": "invoice payment charged account billing money card bank refund".split(),
    "bug": "crash error freeze screen button broken slow update exception".split(),
    "feature": "please add option support request wish idea dark mode".split(),
    "urgent": "urgent asap immediately now emergency critical today deadline".split(),
}
FILLER = "the a my it is this we you and to of for with on".split()


def tickets(n: int = 240, seed: int = 0) -> list[tuple[str, str, list[str]]]:
    """(id, text, true classes): each ticket has one or two topics, four words of each plus filler."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        tags = sorted(rng.choice(CLASSES, size=rng.choice([1, 1, 2]), replace=False).tolist())
        words = [w for t in tags for w in rng.choice(TOPICS[t], size=4)] + rng.choice(FILLER, size=4).tolist()
        rng.shuffle(words)
        out.append((f"t{i}", " ".join(words), tags))
    return out


@pytest.fixture
def loop_project(tmp_path):
    """240 tickets, tfidf, the first 120 decided by a person (as a person labels: at random)."""
    data = tickets()
    (tmp_path / "tickets.csv").write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t, _ in data))
    p = Project.init(tmp_path / "loop", modality="text", classes=CLASSES, task="multilabel")
    p.import_(tmp_path / "tickets.csv")
    p.embed("tfidf")
    p.label_many_classes([(i, tags) for i, _, tags in data[:120]], annotator="ann")
    truth = {p.store.resolve_item(i): set(tags) for i, _, tags in data}
    yield p, truth
    p.close()


def test_refresh_autolabel_next_audit_status_on_a_multilabel_project(loop_project):
    p, truth = loop_project
    s = p.refresh()
    assert s["task"] == "multilabel" and s["decided_items"] == 120 and s["items"] == 240
    scores = p.class_scores(list(truth))
    assert len(scores) == 240 and set(scores[next(iter(truth))]) == set(CLASSES)
    # the undecided tickets' scores rank the true classes first (independent truth: the generator)
    undecided = [i for i in truth if i not in p.class_decisions()]
    hits = [max(scores[i], key=scores[i].get) in truth[i] for i in undecided]
    assert np.mean(hits) > 0.9
    assert p.predictions() is None                         # no single-label predictions pretend to exist

    asked = p.next(6, seed=1)
    assert len(asked) == 6 and len({r["item"] for r in asked}) == 6
    assert {r["kind"] for r in asked} == {"strategy", "random"}   # the random share keeps certification honest
    assert p.actively_chosen() == {r["item"] for r in asked if r["kind"] == "strategy"}
    assert {r["kind"] for r in p.next(3, explore=1.0, record=False)} == {"random"}
    with pytest.raises(ValidationError, match="drop --strategy verify"):
        p.next(3, strategy="verify")

    a = p.autolabel(target_precision=0.9)
    assert {b["class"] for b in a["classes"]} == set(CLASSES)
    machine = p.class_decisions(sources=("machine",))
    assert a["accepted"] == sum(len(d) for d in machine.values()) > 0
    right = [int(c in truth[i]) == v for i, d in machine.items() for c, v in d.items()]
    assert np.mean(right) >= 0.9                            # the target, measured against the truth
    assert not set(machine) & set(p.class_decisions())     # only undecided pairs get machine decisions
    rows = [r for r in p.store.class_decision_rows(next(iter(machine))) if r["source"] == "machine"]
    assert rows and all(r["annotator"] == "autolabel" and r["run_id"] == a["run"] for r in rows)
    again = p.autolabel(target_precision=0.9)              # nothing changed: nothing appended
    assert again["new_or_changed"] == 0 and again["withdrawn"] == 0

    decided = p.class_decisions(sources=("human", "import", "machine"))
    still_open = [i for i in truth if len(decided.get(i, {})) < len(CLASSES)]
    asked = p.next(6, seed=2, record=False)
    assert len(asked) == min(6, len(still_open))
    for r in asked:   # machine-decided pairs are not asked again; each row says which classes are open
        assert r["undecided"] and set(r["undecided"]) == set(CLASSES) - set(decided.get(r["item"], {}))

    au = p.audit(top=5)
    assert au["decisions"] == 480 and len(au["issues"]) <= 5
    assert all(i["source"] == "human" and i["given"] in (0, 1) for i in au["issues"])
    st = p.status()
    assert st["task"] == "multilabel" and st["labeled"]["human"] == 120 and st["labeled"]["machine"] > 0
    assert [b["class"] for b in st["bars"]] == CLASSES and st["next_step"] is None
    assert sum(st["per_class"][c]["machine"] for c in CLASSES) == a["accepted"] - sum(
        b["accepted_not"] for b in a["classes"])


def test_a_noisy_decision_tops_the_audit(loop_project):
    p, truth = loop_project
    first = next(iter(p.class_decisions()))
    wrong = sorted(set(CLASSES) - truth[first])[:1] + sorted(truth[first])[1:]   # swap its class away
    p.label_classes(first, wrong)
    p.refresh()
    top = p.audit(top=3)["issues"]
    assert any(i["item"] == first for i in top)


def test_autolabel_without_enough_decisions_says_which_class_needs_how_many(tmp_path):
    data = tickets(80)
    (tmp_path / "t.csv").write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t, _ in data))
    with Project.init(tmp_path / "few", modality="text", classes=CLASSES, task="multilabel") as p:
        p.import_(tmp_path / "t.csv")
        p.embed("tfidf")
        p.label_many_classes([(i, tags) for i, _, tags in data[:12]])
        p.refresh()
        a = p.autolabel()
        assert a["accepted"] == 0 and a["more_needed"] > 0 and a["suggest"].startswith("labelloop next --n ")
        for b, name in zip(a["classes"], CLASSES):
            assert b["upper"] is None and f"class {name}" in b["reason"] and "more items" in b["reason"]


def test_the_loop_needs_a_refresh_and_decisions_first(tags):
    tags.embed("tfidf")
    with pytest.raises(Exception, match="no decisions yet"):
        tags.refresh()
    for step in (tags.autolabel, tags.audit):
        with pytest.raises(Exception, match="run `labelloop refresh` first"):
            step()
    cold = tags.next(2)                                   # before a refresh: the cold-start choice
    assert len(cold) == 2 and all(r["scores"] is None and r["undecided"] == CLASSES for r in cold)


# ------------------------------------------------------------------ the CLI, as a user runs it
def test_cli_multilabel_loop(tmp_path):
    data = tickets(160)
    src = tmp_path / "tickets.csv"   # the first 90 come with labels: a|b cells (and one JSON list)
    src.write_text("id,text,tags\n" + "".join(
        f"{i},{t},{'|'.join(tags) if n < 90 else ''}\n" for n, (i, t, tags) in enumerate(data)))
    proj = tmp_path / "tags"
    out = run("init", "-p", proj, "--modality", "text", "--task", "multilabel", "--classes", ",".join(CLASSES))
    assert "multilabel project" in out.stdout
    assert "90 labels imported" in run("import", "-p", proj, src, "--label-column", "tags").stdout
    run("embed", "-p", proj, "--backbone", "tfidf")
    assert "1 items decided (human)" in run("label", "-p", proj, "t100", "--classes", "billing,urgent").stdout
    run("label", "-p", proj, "t101", "--classes", "")
    with Project(proj) as p:
        assert p.class_decisions(["t100", "t101"], sources=("human",)) == {
            p.store.resolve_item("t100"): {"billing": 1, "bug": 0, "feature": 0, "urgent": 1},
            p.store.resolve_item("t101"): {c: 0 for c in CLASSES}}
    assert "decided items" in run("refresh", "-p", proj).stdout
    shown = run("next", "-p", proj, "--n", "3").stdout.splitlines()
    assert len(shown) == 3 and all("guess" in line for line in shown)
    auto = run("autolabel", "-p", proj, "--target-precision", "0.9").stdout
    assert "machine decisions on (item, class) pairs" in auto
    assert all(name in auto for name in CLASSES)            # each class: its bars, or why it has none
    assert "class decisions flagged" in run("audit", "-p", proj, "--top", "3").stdout
    status = run("status", "-p", proj).stdout
    assert "multi-label" in status and "undecided" in status and "bar" in status
    with Project(proj) as p:
        assert p.status()["labeled"]["import"] == 90 and p.status()["labeled"]["human"] == 2
    run("export", "-p", proj, "--out", tmp_path / "out.csv")
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "item,external_id,text,labels,source,undecided,predicted,batch" and len(lines) == 161


@pytest.mark.parametrize("args, words", [
    (["t1=billing"], ["multi-label project", "--classes a,b"]),
    (["t1", "--classes", "billing,refund"], ["unknown class 'refund'", "billing, bug, feature, urgent"]),
    (["nope", "--classes", "billing"], ["no item matches 'nope'"]),
    (["t1"], ["--classes a,b"]),
])
def test_cli_label_mistakes_are_one_line_and_write_nothing(tmp_path, args, words):
    proj = tmp_path / "tags"
    run("init", "-p", proj, "--modality", "text", "--task", "multilabel", "--classes", ",".join(CLASSES))
    (tmp_path / "t.csv").write_text("id,text\nt1,my invoice\n")
    run("import", "-p", proj, tmp_path / "t.csv")
    proc = run("label", "-p", proj, *args, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ") and all(w in proc.stderr for w in words)
    with Project(proj) as p:
        assert p.store.last_class_decision_id() == 0


def test_cli_label_classes_on_a_single_label_project_says_what_to_do(tmp_path):
    proj = tmp_path / "single"
    run("init", "-p", proj, "--modality", "text", "--classes", "billing,bug")
    (tmp_path / "t.csv").write_text("id,text\nt1,my invoice\n")
    run("import", "-p", proj, tmp_path / "t.csv")
    proc = run("label", "-p", proj, "t1", "--classes", "billing", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "classification project" in proc.stderr and "ITEM=CLASS" in proc.stderr and "--task multilabel" in proc.stderr


def test_cli_label_csv_skips_bad_rows_and_names_them(tmp_path):
    proj = tmp_path / "tags"
    run("init", "-p", proj, "--modality", "text", "--task", "multilabel", "--classes", ",".join(CLASSES))
    (tmp_path / "t.csv").write_text("id,text\nt1,my invoice\nt2,crash\n")
    run("import", "-p", proj, tmp_path / "t.csv")
    (tmp_path / "l.csv").write_text('item,labels\nt1,billing|urgent\nt2,"[""bug""]"\nt3,bug\nt1,refund\n')
    proc = run("label", "-p", proj, "--csv", tmp_path / "l.csv", check=False)
    assert proc.returncode == 1 and "2 items decided" in proc.stdout
    assert "l.csv:4" in proc.stderr and "l.csv:5" in proc.stderr and "'refund'" in proc.stderr
    with Project(proj) as p:
        got = p.class_decisions()
        assert got[p.store.resolve_item("t2")]["bug"] == 1 and got[p.store.resolve_item("t1")]["urgent"] == 1


# ------------------------------------------------------------------ formats: round trips
@pytest.fixture
def decided(tmp_path):
    """Five texts: two with classes (one from an import), one with none applying, two undecided."""
    p = Project.init(tmp_path / "src", modality="text", classes=CLASSES, task="multilabel")
    (tmp_path / "t.csv").write_text("id,text\na,my invoice\nb,the app crashes\nc,hello\nd,add dark mode\ne,asap\n")
    p.import_(tmp_path / "t.csv")
    p.label_classes("a", ["billing", "urgent"])
    p.label_classes("b", ["bug"], source="import")
    p.label_classes("c", [])
    yield p
    p.close()


def _sets(p: Project) -> dict[str, list[str] | None]:
    """external id -> the classes that apply by the decisions in effect (None: no decision)."""
    return {r["external_id"] or r["text"]: r["labels"] for r in p.rows()}


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_round_trip(decided, tmp_path, next_db, fmt):
    out = decided.export(tmp_path / f"out.{fmt}", format=fmt)
    if fmt == "jsonl":
        row = json.loads(out.read_text().splitlines()[0])
        assert row["labels"] == ["billing", "urgent"] and row["decisions"]["urgent"] == {"value": 1, "source": "human"}
    next_db()
    with Project.init(tmp_path / "dst", modality="text", classes=CLASSES, task="multilabel") as q:
        rep = q.import_(out, label_column="labels", id_column="external_id")
        assert rep.ok and rep.labeled == 3
        assert _sets(q) == _sets(decided) == {"a": ["billing", "urgent"], "b": ["bug"], "c": [], "d": None, "e": None}


def test_labelstudio_round_trip_multiple_choices(decided, tmp_path, next_db):
    rep = decided.export_dataset(tmp_path / "ls.json", format="labelstudio")
    assert 'choice="multiple"' in rep.extra[0].read_text()
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert tasks[0]["annotations"][0]["result"][0]["value"]["choices"] == ["billing", "urgent"]
    next_db()
    with Project.init(tmp_path / "dst", modality="text", classes=CLASSES, task="multilabel") as q:
        q.import_(None, annotations=tmp_path / "ls.json", annotation_format="labelstudio")
        got = {r["text"]: r["labels"] for r in q.rows()}
        assert got["my invoice"] == ["billing", "urgent"] and got["the app crashes"] == ["bug"]
        # Label Studio has no "none applies" result: that decision does not travel
        assert got["hello"] is None and got["asap"] is None


def test_hf_round_trip_sequence_of_classlabel(decided, tmp_path):
    pytest.importorskip("datasets")
    from datasets import ClassLabel, load_from_disk

    from labelloop import formats

    decided.export_dataset(tmp_path / "hf", format="hf")
    ds = load_from_disk(str(tmp_path / "hf"))
    assert isinstance(ds.features["labels"].feature, ClassLabel) and ds.features["labels"].feature.names == CLASSES
    coll = formats.read_hf(tmp_path / "hf")
    got = {r.meta["external_id"]: (r.labels, r.meta["source"]) for r in coll.records}
    assert got == {"a": (["billing", "urgent"], "human"), "b": (["bug"], "import"), "c": ([], "human"),
                   "d": ([], None), "e": ([], None)}


def test_coco_round_trip_of_an_image_project(tmp_path, next_db):
    from conftest import write_image

    for n in range(3):
        write_image(tmp_path / "imgs" / f"i{n}.png", seed=n)
    p = Project.init(tmp_path / "src", modality="image", classes=CLASSES, task="multilabel")
    p.import_(tmp_path / "imgs")
    p.label_classes("i0.png", ["billing", "bug"])
    p.label_classes("i1.png", ["urgent"])
    p.export_dataset(tmp_path / "coco.json", format="coco")
    with pytest.raises(ValidationError, match="one class per image"):
        p.export_dataset(tmp_path / "folder", format="imagefolder")
    next_db()
    with Project.init(tmp_path / "dst", modality="image", classes=CLASSES, task="multilabel") as q:
        rep = q.import_(tmp_path / "imgs", annotations=tmp_path / "coco.json")
        assert rep.labeled == 2
        assert {r["external_id"]: r["labels"] for r in q.rows()} == {
            "i0.png": ["billing", "bug"], "i1.png": ["urgent"], "i2.png": None}
    p.close()


def test_a_bad_labels_cell_is_skipped_and_named(tmp_path):
    with Project.init(tmp_path / "p", modality="text", classes=CLASSES, task="multilabel") as p:
        (tmp_path / "t.csv").write_text('id,text,tags\na,x,billing\nb,y,"[broken"\nc,z,"[1, 2]"\n')
        rep = p.import_(tmp_path / "t.csv", label_column="tags")
        assert rep.added == 1 and rep.labeled == 1
        assert [s.where for s in rep.skipped] == ["t.csv:3", "t.csv:4"]
        assert "not a JSON list" in rep.skipped[0].reason and "class names" in rep.skipped[1].reason

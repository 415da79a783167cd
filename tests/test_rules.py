"""Labeling functions (issue 14, part 1): rule kinds, storage and migration, the label model
against hand-computed numbers, rules as soft evidence that human labels overrule, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("each_db")   # every test on SQLite and on PostgreSQL

from labelloop.errors import ValidationError
from labelloop.rules import Expression, RuleItem, compile_rule, fit_label_model, keyword_pattern, seed_with_rules


# ------------------------------------------------------------------ rule kinds
def test_keywords_match_whole_words_in_any_case():
    pat = keyword_pattern(["refund", "charge back", "c++"])
    assert pat.search("I want a REFUND!")
    assert pat.search("a charge\n back please")
    assert pat.search("I write C++ daily")
    assert not pat.search("refunds are slow")      # whole words only
    assert not pat.search("prefund")
    with pytest.raises(ValidationError, match="at least one keyword"):
        keyword_pattern([" ", ""])


@pytest.mark.parametrize("expr, meta, text, expected", [
    ("meta.camera == 7", {"camera": "7"}, "", True),          # a CSV cell read as a number
    ("meta.camera == 7", {"camera": 7}, "", True),
    ("meta.camera == 7", {"camera": "8"}, "", False),
    ("meta.camera == 7", {}, "", False),                      # missing column: abstain
    ("meta.camera > 5", {"camera": None}, "", False),         # None: abstain, no error
    ('meta["shot at"] >= 20 and meta.site in ("n", "e")', {"shot at": "21", "site": "e"}, "", True),
    ("not meta.flagged", {"flagged": ""}, "", True),
    ("len(text) > 3 and lower(meta.kind) == 'night'", {"kind": "NIGHT"}, "long", True),
    ("meta.a / meta.b > 1", {"a": 1, "b": 0}, "", False),     # division by zero: abstain
])
def test_where_expressions_over_metadata(expr, meta, text, expected):
    assert Expression(expr)(meta, text) is expected


@pytest.mark.parametrize("expr, message", [
    ("meta.camera ==", "not a valid expression"),
    ("__import__('os').system('x')", "only the functions"),
    ("camera == 7", "use meta.camera"),
    ("meta.__class__.__bases__", "only meta.COLUMN"),
    ("[x for x in text]", "ListComp is not allowed"),
])
def test_bad_where_expressions_are_refused_naming_the_rule(expr, message):
    with pytest.raises(ValidationError, match=message) as info:
        Expression(expr, rule="night")
    assert "rule 'night'" in str(info.value)


def test_python_rules_run_the_users_function():
    src = "def crash(item):\n    return 'bug' if 'crash' in item.text else None\n"
    fn = compile_rule("crash", "python", {"source": src, "function": "crash"}, None)
    assert fn(RuleItem(1, "it crashes: crash")) == "bug"
    assert fn(RuleItem(2, "fine")) is None


# ------------------------------------------------------------------ label model
def test_majority_label_model_by_hand():
    # rule, row, class: row 0 gets votes 0, 0, 1; row 2 gets one vote 1; row 1 none
    votes = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 1], [2, 2, 1]])
    m = fit_label_model(votes, n_rules=3, n_classes=2, method="majority")
    assert m.rows.tolist() == [0, 2]
    np.testing.assert_allclose(m.proba, [[2 / 3, 1 / 3], [0, 1]])
    # estimated accuracy = mean P(voted class): rule 2 voted 1 on rows 0 and 2 -> (1/3 + 1) / 2
    np.testing.assert_allclose(m.rule_accuracy, [2 / 3, 2 / 3, (1 / 3 + 1) / 2])


def test_dawid_skene_label_model_posteriors_follow_bayes_rule():
    """Each covered row's posterior is pi_c prod_a theta[a, c, l_a] normalised, with the
    parameters the fit learned (computed here by hand), and unanimous rows are near certain."""
    from labelloop.audit.annotators import dawid_skene

    votes = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1], [0, 2, 0], [1, 2, 1], [2, 2, 1]])
    m = fit_label_model(votes, n_rules=3, n_classes=2, method="dawid-skene")
    with warnings.catch_warnings():   # the same fit as fit_label_model's, which records convergence
        warnings.simplefilter("ignore", RuntimeWarning)
        ds = dawid_skene([(i, a, c) for a, i, c in votes.tolist()], n_classes=2)
    for row in range(3):
        mine = votes[votes[:, 1] == row]
        post = ds.priors.copy()
        for a, _, c in mine:
            post = post * ds.confusion[ds.annotator_ids.index(a), :, c]
        np.testing.assert_allclose(m.proba[row], post / post.sum(), atol=1e-4)
    assert m.label[0] == 0 and m.label[1] == 1 and m.confidence[:2].min() > 0.9


def test_rule_seeds_never_replace_a_label():
    m = fit_label_model(np.array([[0, 0, 1], [0, 1, 1]]), n_rules=1, n_classes=2, method="majority")
    y, w = seed_with_rules(np.array([0, -1, -1]), np.array([100.0, 0, 0]), m, 0.5)
    assert y.tolist() == [0, 1, -1] and w.tolist() == [100.0, 0.5, 0.0]


# ------------------------------------------------------------------ storage
def test_migration_4_keeps_old_items_and_adds_rules(tmp_path, monkeypatch):
    from labelloop import store as store_mod

    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:3])
    s = store_mod.Store(tmp_path / "p", create=True)
    s.conn.execute("INSERT INTO items (content_hash, modality, text, added) VALUES ('h1', 'text', 'old', 0)")
    s.conn.commit()
    assert s.schema_version() == 3
    s.close()
    monkeypatch.undo()
    s = store_mod.Store(tmp_path / "p")
    assert s.schema_version() == max(v for v, _, _ in store_mod.MIGRATIONS)   # 4 and any later one
    assert s.rule_inputs() == [dict(id=1, external_id=None, uri=None, text="old", modality="text", meta={})]
    s.add_classes(["a"])
    rid = s.add_rule("r", "contains", {"keywords": ["old"]}, s.class_id("a"), author="ann")
    s.add_rule_votes(rid, [(1, s.class_id("a"))], through=1)
    assert s.rule_votes() == [(rid, 1, s.class_id("a"))]
    assert s.annotations() == []                     # votes are not annotations
    s.set_rule_active("r", False, by="admin")
    r = s.rule("r")
    assert (r["active"], r["author"], r["changed_by"], r["definition"]) == (False, "ann", "admin", {"keywords": ["old"]})
    assert s.rule_votes() == [] and len(s.rule_votes(active_only=False)) == 1
    s.close()


# ------------------------------------------------------------------ project
TOPICS = {
    "billing": "invoice payment charged account billing money card bank".split(),
    "bug": "crash error freeze screen button broken slow update".split(),
}


def _texts(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["id,text,camera"]
    for c, words in TOPICS.items():
        for i in range(20):
            text = " ".join(rng.choice(words, size=6))
            extra = " zzz" if c == "bug" and i < 6 else ""
            lines.append(f"{c}{i},{text}{extra},{7 if i % 2 else 3}")
    path = tmp_path / "texts.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def text_project(project_factory, tmp_path):
    p = project_factory("text", classes=list(TOPICS))
    p.import_(_texts(tmp_path))
    p.embed("tfidf")
    return p


def test_metadata_kept_at_import_feeds_where_rules(text_project):
    p = text_project
    r = p.add_rule("cam7", label="bug", where="meta.camera == 7")
    assert r["votes"] == 20
    with pytest.raises(ValidationError, match="--new-classes"):
        p.add_rule("night", label="night", where="meta.camera == 7")
    assert p.add_rule("night", label="night", where="meta.camera == 7", new_classes=True)["votes"] == 20


def test_rules_are_soft_evidence_that_a_human_label_overrules(text_project):
    p = text_project
    ids = {it.external_id: it.id for it in p.store.items()}

    def predicted():
        pred = p.predictions()
        row = pred.row_of()
        return {name: pred.classes[pred.label[row[i]]] for name, i in ids.items()}

    p.label([("billing0", "billing")])            # only billing has a human label
    p.refresh(full=True)
    assert set(predicted().values()) == {"billing"}
    # the rule "zzz" marks six bug texts (bug0 .. bug5) as bug: they change
    assert p.add_rule("zzz", label="bug", contains=["zzz"])["votes"] == 6
    assert p.refresh(full=True)["rule_seeded"] == 6
    assert all(predicted()[f"bug{i}"] == "bug" for i in range(6))
    # a human label on a covered item wins over the rule, and stops its seed there
    p.label([("bug1", "billing")])
    assert p.refresh()["rule_seeded"] == 5
    assert predicted()["bug1"] == "billing"
    assert p.current_labels()[ids["bug1"]][0] == p.store.class_id("billing")
    assert not p.store.has_source("machine") and len(p.store.annotations()) == 2
    # switched off: the evidence is gone, predictions are those without the rule
    p.set_rule_active("zzz", False)
    p.refresh(full=True)
    assert predicted()["bug0"] == "billing"


def test_refresh_with_rules_and_no_human_label(text_project):
    p = text_project
    p.add_rule("money", label="billing", contains=["invoice", "payment"])
    p.add_rule("broken", label="bug", contains=["crash", "error"])
    s = p.refresh(full=True)
    assert s["human"] == 0 and s["rule_seeded"] > 10
    pred = p.predictions()
    truth = np.array([it.external_id.rstrip("0123456789") for it in p.store.items()])
    assert (np.array(pred.classes)[pred.label] == truth).mean() > 0.9


def test_rules_report_measures_each_rule(text_project):
    p = text_project
    p.add_rule("zzz", label="billing", contains=["zzz"])
    p.add_rule("cam7", label="bug", where="meta.camera == 7")
    p.label([("bug1", "bug"), ("bug3", "bug"), ("billing1", "billing")])
    r = {x["name"]: x for x in p.rules_report()["rules"]}
    assert r["zzz"]["votes"] == 6 and r["zzz"]["measured_n"] == 2 and r["zzz"]["measured_accuracy"] == 0.0
    assert r["cam7"]["measured_n"] == 3 and r["cam7"]["measured_accuracy"] == pytest.approx(2 / 3)
    # zzz covers bug0..bug5; cam7 the odd ones: bug1, bug3, bug5 overlap and conflict
    assert r["zzz"]["overlap"] == pytest.approx(0.5) and r["zzz"]["conflict"] == pytest.approx(0.5)
    assert r["cam7"]["coverage"] == pytest.approx(0.5)


def test_new_items_are_voted_on_at_the_next_refresh(text_project, tmp_path):
    p = text_project
    p.add_rule("zzz", label="billing", contains=["zzz"])
    more = tmp_path / "more.csv"
    more.write_text("id,text\nnew1,zzz invoice payment\n")
    p.import_(more)
    p.embed("tfidf")
    assert p.rules_report()["rules"][0]["votes"] == 7


# ------------------------------------------------------------------ CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "labelloop.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def test_cli_round_trip(tmp_path):
    proj = tmp_path / "P"
    assert _cli("init", "-p", proj, "--modality", "text", "--classes", "billing,bug").returncode == 0
    assert _cli("import", "-p", proj, _texts(tmp_path)).returncode == 0
    r = _cli("rules", "-p", proj, "add", "zzz", "--label", "billing", "--contains", "zzz,refund")
    assert r.returncode == 0 and "6 items" in r.stdout
    assert _cli("rules", "add", "-p", proj, "cam7", "--label", "bug", "--where", "meta.camera == 7").returncode == 0
    lfs = tmp_path / "lfs.py"
    lfs.write_text("def crash(item):\n    return 'bug' if 'crash' in item.text else None\n\n"
                   "def _helper():\n    pass\n")
    r = _cli("rules", "-p", proj, "add-py", lfs)
    assert r.returncode == 0 and "'crash'" in r.stdout
    assert _cli("rules", "-p", proj, "off", "cam7").returncode == 0
    listed = json.loads(_cli("rules", "-p", proj, "list", "--json").stdout)
    assert [(x["name"], x["kind"], x["active"]) for x in listed] == [
        ("zzz", "contains", True), ("cam7", "where", False), ("crash", "python", True)]
    assert listed[2]["definition"]["source"] == lfs.read_text()        # provenance: the code itself
    assert _cli("rules", "-p", proj, "on", "cam7").returncode == 0
    report = json.loads(_cli("rules", "-p", proj, "report", "--json").stdout)
    assert {x["name"]: x["votes"] for x in report["rules"]}["zzz"] == 6
    text = _cli("rules", "-p", proj, "report").stdout
    assert "zzz" in text and "coverage" in text

    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    broken = tmp_path / "broken.py"
    broken.write_text("def f(item):\n    return item.nope\n")
    for args, message in [
        (("add", "n", "--label", "night", "--where", "meta.camera == 7"), "--new-classes"),
        (("add", "b", "--label", "bug", "--where", "meta.camera =="), "rule 'b'"),
        (("add", "zzz", "--label", "bug", "--contains", "x"), "exists already"),
        (("add-py", empty), "defines no labeling functions"),
        (("add-py", broken), "rule 'f' raised AttributeError"),
        (("off", "nope"), "no rule named 'nope'"),
    ]:
        r = _cli("rules", "-p", proj, *args)
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


def test_a_read_only_report_leaves_new_items_to_the_next_refresh(text_project, tmp_path):
    """The web app reads through a read-only Project: its report must not try to write the
    votes on items imported since the rules last ran (they count as abstained until then)."""
    from labelloop import Project

    p = text_project
    p.add_rule("zzz", label="billing", contains=["zzz"])
    more = tmp_path / "more.csv"
    more.write_text("id,text\nnew1,zzz invoice payment\n")
    p.import_(more)
    with Project(p.root, readonly=True) as ro:
        assert ro.rules_report()["rules"][0]["votes"] == 6
        assert ro.store.rule("zzz")["votes_through"] < ro.store.max_item_id()
    assert p.rules_report()["rules"][0]["votes"] == 7        # a writable Project runs the rule

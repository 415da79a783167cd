"""The rules page of the web app against a real `labelloop serve` subprocess: reviewers read
each labeling function's report, admins switch one off and on (CSRF-protected form and JSON
twin), everyone else gets a clear 403, and the switch reaches the predictions at the next
refresh. The queue and ``labelloop next`` ask first where rules conflict.

Truths are independent of the app: vote counts computed here from the texts, rows read back
from the SQLite file with plain SQL, predictions read through a read-only Project."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import wait_until  # noqa: E402
from labelloop import Project  # noqa: E402
from labelloop.errors import ValidationError  # noqa: E402
from labelloop.web import auth  # noqa: E402
from labelloop.web.testing import ServerProcess, topics_project  # noqa: E402

PASSWORDS = {"boss": "boss-password-1", "rita": "rita-password-1", "ann": "ann-password-1"}
ROLES = {"boss": "admin", "rita": "reviewer", "ann": "annotator"}


def text_project(root: Path, *, rules: bool = True) -> tuple[Path, dict]:
    """``topics_project`` (40 texts; rules "zzz" -> bug on bug0 .. bug5 and "money" -> billing,
    refreshed) with users holding API tokens."""
    p = topics_project(root / "proj", rules=rules)
    tokens = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**10)
        for name, role in ROLES.items():
            auth.add_user(p.store, name, role, password=PASSWORDS[name])
            tokens[name] = auth.issue_token(p.store, name)
    p.close()
    return root / "proj", tokens


def _sql(path: Path, q: str, *args):
    con = sqlite3.connect(path / "labelloop.db")
    try:
        return con.execute(q, args).fetchall()
    finally:
        con.close()


def _predicted(path: Path) -> dict[str, str]:
    with Project(path, readonly=True) as p:
        pred = p.predictions()
        row = pred.row_of()
        return {it.external_id: pred.classes[pred.label[row[it.id]]] for it in p.store.items()}


def _login(http: httpx.Client, name: str) -> str:
    r = http.post("/api/login", json={"name": name, "password": PASSWORDS[name]})
    assert r.status_code == 200, r.text
    return r.json()["csrf"]


def _wait(cond, what="condition"):
    wait_until(cond, timeout=90.0, what=what, every=0.1)


HTML = {"Accept": "text/html"}


def test_rules_page_report_roles_and_switch_reaching_the_predictions(tmp_path):
    path, tokens = text_project(tmp_path)
    bearer = {name: {"Authorization": f"Bearer {tok}"} for name, tok in tokens.items()}
    texts = (tmp_path / "proj-texts.csv").read_text().splitlines()[1:]
    zzz_votes = sum(" zzz" in t for t in texts)
    money_votes = sum(re.search(r"\binvoice\b", t) is not None for t in texts)
    assert _predicted(path)["bug0"] == "bug"           # the rule's evidence is in the predictions
    with ServerProcess(path) as server:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            # reviewers read the report (the JSON twin): counts as computed here from the texts
            data = http.get("/api/rules", headers=bearer["rita"]).json()
            rows = {r["name"]: r for r in data["rules"]}
            assert rows["zzz"]["votes"] == zzz_votes == 6 and rows["zzz"]["coverage"] == pytest.approx(6 / 40)
            assert rows["money"]["votes"] == money_votes
            assert rows["zzz"]["active"] and rows["zzz"]["author"] == "lead" and rows["zzz"]["label"] == "bug"
            assert rows["zzz"]["estimated_accuracy"] is not None and rows["zzz"]["measured_n"] == 0
            assert data["label_model"] == "majority" and data["totals"]["items"] == 40
            # ... and the page: every rule, its state, no switch for a reviewer, the refresh note
            page = http.get("/rules", headers={**bearer["rita"], **HTML})
            assert page.status_code == 200 and 'id="rule-zzz" data-active="true"' in page.text
            assert "next refresh" in page.text and "Only admins can switch" in page.text
            assert "Switch off" not in page.text and '<a href="/rules"' in page.text   # in the navigation
            # an annotator gets a 403 page, a reviewer's switch a 403 (JSON and form): nothing changes
            r = http.get("/rules", headers={**bearer["ann"], **HTML})
            assert r.status_code == 403 and "<h1>403" in r.text and "reviewer role" in r.text
            r = http.post("/api/rules/zzz", json={"active": False}, headers=bearer["rita"])
            assert r.status_code == 403 and r.json()["error"] == "forbidden"
            csrf = _login(http, "rita")
            r = http.post("/rules", data={"csrf_token": csrf, "name": "zzz", "action": "off"}, headers=HTML)
            assert r.status_code == 403 and "admin role" in r.text and "Traceback" not in r.text
            http.cookies.clear()
            assert _sql(path, "SELECT active FROM rules WHERE name = 'zzz'") == [(1,)]
            # an admin's form without the CSRF token is refused; with it the rule goes off
            csrf = _login(http, "boss")
            r = http.post("/rules", data={"name": "zzz", "action": "off"}, headers=HTML)
            assert r.status_code == 403 and "CSRF" in r.text
            page = http.get("/rules", headers=HTML).text
            assert re.search(r'name="csrf_token" value="([^"]+)"', page).group(1) == csrf and "Switch off" in page
            r = http.post("/rules", data={"csrf_token": csrf, "name": "zzz", "action": "off"}, headers=HTML,
                          follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/rules?done=off&rule=zzz"
            page = http.get(r.headers["location"], headers=HTML).text
            assert "Rule zzz switched off" in page and 'id="rule-zzz" data-active="false"' in page
            assert _sql(path, "SELECT active, changed_by FROM rules WHERE name = 'zzz'") == [(0, "boss")]
            off = http.get("/api/rules", headers=bearer["rita"]).json()
            assert {r["name"]: r["active"] for r in off["rules"]} == {"zzz": False, "money": True}
            assert "votes" not in {r["name"]: r for r in off["rules"]}["zzz"]   # off: not counted
            # the switch asked for a refresh: it runs without the rule's evidence
            _wait(lambda: _predicted(path)["bug0"] == "billing", what="predictions without the rule")
            # the JSON twin switches it on again, and the evidence comes back
            r = http.post("/api/rules/zzz", json={"active": True}, headers=bearer["boss"])
            assert r.status_code == 200 and r.json()["active"] is True and r.json()["changed_by"] == "boss"
            _wait(lambda: _predicted(path)["bug0"] == "bug", what="predictions with the rule again")
            # bad requests are clear 4xx
            r = http.post("/api/rules/nope", json={"active": False}, headers=bearer["boss"])
            assert r.status_code == 422 and "no rule named 'nope'" in r.json()["detail"]
            r = http.post("/api/rules/zzz", json={"active": "no"}, headers=bearer["boss"])
            assert r.status_code == 422
            r = http.post("/rules", data={"csrf_token": csrf, "name": "zzz", "action": "drop"}, headers=HTML)
            assert r.status_code == 422 and "action must be" in r.text
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])
    with Project(path) as p:
        assert p.store.rule("zzz")["active"] and p.store.rule("zzz")["changed_by"] == "boss"


def test_a_project_without_rules_shows_how_to_add_one_and_rules_added_meanwhile_appear(tmp_path):
    path, tokens = text_project(tmp_path, rules=False)
    bearer = {"Authorization": f"Bearer {tokens['boss']}"}
    with ServerProcess(path) as server, httpx.Client(base_url=server.url, headers=bearer, timeout=30) as http:
        page = http.get("/rules", headers=HTML).text
        assert 'id="rules-empty"' in page and "labelloop rules -p PROJECT add refund --label billing" in page
        assert http.get("/api/rules").json()["rules"] == []
        # a rule added from the command line while the server runs shows up on the next load
        with Project(path) as p:
            p.add_rule("zzz", label="bug", contains=["zzz"])
        data = http.get("/api/rules").json()
        assert [r["name"] for r in data["rules"]] == ["zzz"] and data["rules"][0]["votes"] == 6
        assert 'id="rule-zzz"' in http.get("/rules", headers=HTML).text
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])


def test_next_asks_first_where_rules_conflict(tmp_path):
    """`labelloop next --strategy conflict`: the items two rules disagree on come first, with
    the reason; `auto` after its cold start too; none without rules, a clear error."""
    path, _ = text_project(tmp_path, rules=False)
    with Project(path) as p:
        ids = {it.external_id: it.id for it in p.store.items()}
        p.refresh()
        with pytest.raises(ValidationError, match="labelloop rules add"):
            p.next(3, strategy="conflict")
        # two rules key on "zzz" (bug0 .. bug5) and say different classes: those six conflict
        p.add_rule("zzz", label="bug", contains=["zzz"])
        p.add_rule("zzz-too", label="billing", contains=["zzz"])
        p.refresh(full=True)
        rows = p.next(6, strategy="conflict", record=False)
        assert {r["item"] for r in rows} == {ids[f"bug{i}"] for i in range(6)}
        assert all(r["reason"].startswith("rules disagree (votes: 'billing' 1, 'bug' 1)") for r in rows)
        # auto, once every class has two labels: its strategy picks start with a conflict too
        p.label([("billing1", "billing"), ("bug10", "bug"), ("bug11", "bug")])
        p.refresh(full=True)
        auto = p.next(4, strategy="auto", record=False, explore=0.0)
        assert auto[0]["reason"].startswith("settling rule conflicts") and auto[0]["item"] in rows_of(ids)
        # rules switched off: nothing to rank by
        p.set_rule_active("zzz", False)
        p.set_rule_active("zzz-too", False)
        assert p.rule_matrices(p.graph()[0]) is None
        with pytest.raises(ValidationError, match="labelloop rules add"):
            p.next(3, strategy="conflict")


def rows_of(ids: dict) -> set[int]:
    return {ids[f"bug{i}"] for i in range(6)}

"""The labeling queue of multi-label projects against a real `labelloop serve` process, on
SQLite and PostgreSQL: items still open, the machine's per-class suggestions, a person's set of
classes (or none) stored as a full decision, and what is refused without writing anything.

The truth is the rows read back from the database with plain SQL."""

from __future__ import annotations

import time

import pytest

from conftest import serve_with_annotators, sql

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

DECISIONS = ("SELECT d.item_id, c.name, d.value, d.source, d.annotator FROM class_decisions d "
             "JOIN classes c ON c.id = d.class_id ORDER BY d.id")
DECIDED = {"billing0", "billing1", "billing2", "bug0", "bug1", "bug2"}


@pytest.fixture(scope="module")
def served(tmp_path_factory, module_db):
    """The tags project (40 texts, six decided, refreshed), an annotator with a token and one
    with a password; a live server on it."""
    from labelloop.web.testing import tags_project

    def build(path):
        p = tags_project(path)
        return p, {it.external_id: it.id for it in p.store.items()}

    root = tmp_path_factory.mktemp("tags")
    with serve_with_annotators(root / "proj", module_db, build) as (url, ids, tokens):
        yield url, root / "proj", ids, {"Authorization": f"Bearer {tokens['ann']}"}


def _queue(url, h, n=50):
    r = httpx.get(url + f"/api/queue?n={n}", headers=h, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _ranked(url, h, n=50):
    """The queue once the ranker has ranked the last refresh's scores."""
    deadline = time.monotonic() + 60
    while True:
        data = _queue(url, h, n)
        snap = data["snapshot"]
        if snap["run"] is not None and snap["strategy_run"] == snap["run"] or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def test_the_queue_serves_the_items_labelloop_next_chooses(served):
    """After a refresh the queue's order is Project.next's (most uncertain classes first, diverse),
    each item saying which classes are uncertain; nothing is recorded until items are served."""
    from labelloop.project import Project

    url, path, ids, h = served
    data = _ranked(url, h)
    snap = data["snapshot"]
    assert snap["strategy"] == "multilabel" and snap["strategy_run"] == snap["run"], snap
    p = Project(path, readonly=True)
    try:
        want = p.next(40 - len(DECIDED), seed=snap["run"], record=False)   # every open item
    finally:
        p.close()
    # the picks in the loop's order, its random share mixed in at the share it draws
    assert [it["id"] for it in data["items"] if it["kind"] == "strategy"] == \
        [o["item"] for o in want if o["kind"] == "strategy"]
    assert {it["id"] for it in data["items"]} == {o["item"] for o in want}
    reasons = {o["item"]: o["reason"] for o in want}
    assert any(it["kind"] == "random" for it in data["items"][:10])
    for it in data["items"]:
        assert it["reason"] == reasons[it["id"]], it
        if it["kind"] == "random":
            assert it["reason"].startswith("random sample"), it
            continue
        assert it["reason"].startswith("most uncertain classes: "), it
        named = dict(part.rsplit(" ", 1) for part in it["reason"].split(": ", 1)[1].split(", "))
        assert named and all(abs(float(v) - it["scores"][c]) < 0.006 for c, v in named.items()), (named, it["scores"])
    # served items are recorded as query runs, as `labelloop next` records its batch
    runs = sql(path, "SELECT params FROM runs WHERE kind = 'query'")
    assert runs and all('"multilabel"' in r[0] for r in runs)


def test_before_a_refresh_the_queue_serves_the_cold_start_order(tmp_path, each_db):
    from labelloop.project import Project
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, tags_project

    p = tags_project(tmp_path / "t", refresh=False)
    auth.add_user(p.store, "ann", "annotator", token=True)
    token = auth.issue_token(p.store, "ann")
    want = p.next(40 - len(DECIDED), seed=0, record=False)   # every open item
    p.close()
    h = {"Authorization": f"Bearer {token}"}
    with ServerProcess(tmp_path / "t", "--no-refresh") as server:   # no refresh: no scores
        deadline = time.monotonic() + 60
        data = _queue(server.url, h)
        while data["snapshot"]["ranked"] == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            data = _queue(server.url, h)
    assert data["snapshot"]["run"] is None and data["snapshot"]["strategy"] == "auto (cold start)"
    got = [it["id"] for it in data["items"]]
    assert got[:len(want)] == [o["item"] for o in want]
    assert not any(it["reason"].startswith("most uncertain") for it in data["items"])
    assert all(it["scores"] == {} for it in data["items"])


def test_the_queue_offers_open_items_with_per_class_suggestions(served):
    url, path, ids, h = served
    data = _queue(url, h)
    assert data["task"] == "multilabel" and data["classes"] == ["billing", "bug", "urgent"]
    names = {it["name"] for it in data["items"]}
    assert names and not names & DECIDED            # decided items are not asked again
    assert data["remaining"] == 40 - len(DECIDED)
    for it in data["items"]:                        # a score per class from the refresh
        assert set(it["scores"]) == {"billing", "bug", "urgent"}
        assert all(0.0 <= v <= 1.0 for v in it["scores"].values())
    # the suggestion follows the topic the text was written from
    by_name = {it["name"]: it["scores"] for it in data["items"]}
    billing = [s for n, s in by_name.items() if n.startswith("billing")]
    assert billing and sum(s["billing"] >= 0.5 for s in billing) > len(billing) / 2


def test_a_set_of_classes_is_a_full_decision_and_the_item_leaves_the_queue(served):
    url, path, ids, h = served
    before = len(sql(path, DECISIONS))
    item = ids["bug5"]
    r = httpx.post(url + "/api/decisions", json={"item": item, "classes": ["urgent", "bug"]}, headers=h, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == {"ok": True, "item": item, "classes": ["bug", "urgent"]}
    rows = sql(path, DECISIONS)[before:]
    assert sorted(rows) == [(item, "billing", 0, "human", "ann"), (item, "bug", 1, "human", "ann"),
                            (item, "urgent", 1, "human", "ann")]
    # none applies: every class 0
    none = ids["billing7"]
    r = httpx.post(url + "/api/decisions", json={"item": none, "classes": []}, headers=h, timeout=30)
    assert r.status_code == 200, r.text
    assert sorted(x for x in sql(path, DECISIONS) if x[0] == none) == [
        (none, "billing", 0, "human", "ann"), (none, "bug", 0, "human", "ann"), (none, "urgent", 0, "human", "ann")]
    left = _queue(url, h)
    assert not {it["id"] for it in left["items"]} & {item, none}
    deadline = time.monotonic() + 10   # the count is recounted at most once a second
    while left["remaining"] != 40 - len(DECIDED) - 2 and time.monotonic() < deadline:
        time.sleep(0.2)
        left = _queue(url, h)
    assert left["remaining"] == 40 - len(DECIDED) - 2


def test_undo_gives_the_item_back_its_previous_decisions_append_only(tmp_path, each_db):
    """U: the user's last decision in effect is undone by new rows: classes with an earlier human
    decision get it back (under its annotator), the others are withdrawn, so the item is open
    again; the next undo goes one decision further back, and with none left it says so."""
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, tags_project

    p = tags_project(tmp_path / "u", refresh=False)
    ids = {it.external_id: it.id for it in p.store.items()}
    auth.add_user(p.store, "ann", "annotator", token=True)
    token = auth.issue_token(p.store, "ann")
    p.close()
    h = {"Authorization": f"Bearer {token}"}
    path = tmp_path / "u"
    with ServerProcess(path, "--no-refresh") as server:
        def post(url, body):
            r = httpx.post(server.url + url, json=body, headers=h, timeout=30)
            return r.status_code, r.json()

        assert post("/api/decisions", {"item": ids["bug5"], "classes": ["bug"]})[0] == 200
        # ann changes lead's decision of billing0 (billing, urgent) to billing only
        assert post("/api/decisions", {"item": ids["billing0"], "classes": ["billing"]})[0] == 200
        before = len(sql(path, DECISIONS))
        status, out = post("/api/undo", {})
        assert status == 200 and out["item"] == ids["billing0"] and out["classes"] == ["billing", "urgent"], out
        assert out["item_data"]["id"] == ids["billing0"] and set(out["item_data"]["scores"]) == set()
        assert sorted(sql(path, DECISIONS)[before:]) == [
            (ids["billing0"], "billing", 1, "human", "lead"), (ids["billing0"], "bug", 0, "human", "lead"),
            (ids["billing0"], "urgent", 1, "human", "lead")]
        status, out = post("/api/undo", {})   # one further back: bug5 had no decision, so it is open again
        assert status == 200 and out["item"] == ids["bug5"] and out["classes"] == [], out
        assert out["withdrawn"] == ["billing", "bug", "urgent"]
        assert [x for x in sql(path, DECISIONS) if x[0] == ids["bug5"]][-3:] == [
            (ids["bug5"], c, None, "human", "ann") for c in ("billing", "bug", "urgent")]
        assert ids["bug5"] in {it["id"] for it in _queue(server.url, h)["items"]}
        before = sql(path, DECISIONS)
        status, out = post("/api/undo", {})
        assert status == 409 and "nothing to undo" in out["detail"], out
        assert sql(path, DECISIONS) == before


@pytest.mark.parametrize("body, status, words", [
    ({"item": "ITEM", "classes": ["bug", "horse"]}, 422, ["unknown class 'horse'", "billing, bug, urgent"]),
    ({"item": "ITEM", "classes": "bug"}, 422, ["classes"]),
    ({"item": "ITEM", "classes": [""]}, 422, ["classes"]),
    ({"item": 999999, "classes": ["bug"]}, 404, ["999999"]),
    ({"item": "ITEM"}, 422, ["classes"]),
])
def test_bad_decisions_are_refused_and_nothing_is_written(served, body, status, words):
    url, path, ids, h = served
    before = sql(path, DECISIONS)
    body = {k: ids["bug9"] if v == "ITEM" else v for k, v in body.items()}
    r = httpx.post(url + "/api/decisions", json=body, headers=h, timeout=30)
    assert r.status_code == status, r.text
    assert all(w in r.json()["detail"] for w in words), r.json()["detail"]
    assert sql(path, DECISIONS) == before


def test_cookie_sessions_need_the_csrf_token_and_the_page_says_toggle(served):
    url, path, ids, h = served
    with httpx.Client(base_url=url, timeout=30) as c:
        login = c.post("/api/login", json={"name": "bea", "password": "bea-password-1"})
        assert login.status_code == 200, login.text
        body = {"item": ids["bug11"], "classes": ["bug"]}
        assert c.post("/api/decisions", json=body).status_code == 403
        assert not [x for x in sql(path, DECISIONS) if x[0] == ids["bug11"]]
        r = c.post("/api/decisions", json=body, headers={"X-CSRF-Token": login.json()["csrf"]})
        assert r.status_code == 200, r.text
        page = c.get("/queue", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "toggle a class" in page.text and '"task": "multilabel"' in page.text


def test_a_classification_project_takes_no_class_sets(tmp_path, each_db):
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, topics_project

    p = topics_project(tmp_path / "t", rules=False)
    auth.add_user(p.store, "ann", "annotator", token=True)
    token = auth.issue_token(p.store, "ann")
    p.close()
    h = {"Authorization": f"Bearer {token}"}
    with ServerProcess(tmp_path / "t") as server:
        r = httpx.post(server.url + "/api/decisions", json={"item": 1, "classes": ["bug"]}, headers=h, timeout=30)
        assert r.status_code == 422 and "multi-label" in r.json()["detail"]
        assert _queue(server.url, h)["task"] == "classification"

"""The "New classes" page against a real `labelloop serve` subprocess: a reviewer looks for
candidate new classes in a new batch, sees the planted topic as a cluster, and adds the class in
one click; the class exists, its examples are queued for a person and nothing is labeled.
Annotators get a 403, bad input a clear 4xx."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from labelloop import Project  # noqa: E402
from labelloop.web import auth  # noqa: E402
from labelloop.web.testing import ServerProcess  # noqa: E402
from test_batches import _csv, _texts  # noqa: E402

PASSWORDS = {"rita": "rita-password-1", "ann": "ann-password-1"}
HTML = {"Accept": "text/html"}


def batched_project(root: Path) -> tuple[Path, dict]:
    """w1: billing and bug (3 labels each); w2 brings 15 texts of a new topic, shipping."""
    path = root / "proj"
    p = Project.init(path, modality="text", classes=["billing", "bug"])
    p.import_(_csv(root / "w1.csv", _texts("billing", 20, 0) + _texts("bug", 20, 1)), batch="w1")
    p.import_(_csv(root / "w2.csv", _texts("billing", 10, 2, "n") + _texts("bug", 10, 3, "n")
                   + _texts("shipping", 15, 4)), batch="w2")
    p.embed("tfidf")
    p.label([(f"{c}{i}", c) for c in ("billing", "bug") for i in range(3)])
    p.refresh(full=True)
    tokens = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**10)
        for name, role in (("rita", "reviewer"), ("ann", "annotator")):
            auth.add_user(p.store, name, role, password=PASSWORDS[name])
            tokens[name] = auth.issue_token(p.store, name)
    p.close()
    return path, {n: {"Authorization": f"Bearer {t}"} for n, t in tokens.items()}


def test_new_classes_page_finds_the_new_topic_and_adds_it_in_one_click(tmp_path):
    path, bearer = batched_project(tmp_path)
    with Project(path, readonly=True) as p:
        shipping = {it.id for it in p.store.items() if it.external_id.startswith("shipping")}
        n_labels = len(p.store.annotations())
    with ServerProcess(path) as server:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.get("/novel", headers={**bearer["ann"], **HTML}).status_code == 403
            empty = http.get("/novel", headers={**bearer["rita"], **HTML})
            assert empty.status_code == 200 and 'id="novel-empty"' in empty.text and '<a href="/novel"' in empty.text
            r = http.post("/api/login", json={"name": "rita", "password": PASSWORDS["rita"]})
            csrf = r.json()["csrf"]
            page = http.get("/novel", headers=HTML).text
            assert re.search(r'name="csrf_token" value="([^"]+)"', page).group(1) == csrf
            assert '<option value="w2">' in page
            # look in batch w2: the planted topic is the first cluster
            r = http.post("/novel", data={"csrf_token": csrf, "action": "find", "batch": "w2"}, headers=HTML,
                          follow_redirects=False)
            assert r.status_code == 303
            page = http.get(r.headers["location"], headers=HTML).text
            assert "candidate cluster" in page and 'id="cluster-1"' in page and "batch <b>w2</b>" in page
            data = http.get("/api/novel", headers=bearer["rita"]).json()
            top = data["last"]["clusters"][0]
            assert data["last"]["batch"] == "w2" and top["size"] >= 10
            assert {e["item"] for e in top["examples"]} <= shipping and all(e["text"] for e in top["examples"])
            # bad input: a clear 4xx, nothing added
            r = http.post("/novel", data={"csrf_token": csrf, "action": "add", "cluster": "99", "name": "x"},
                          headers=HTML)
            assert r.status_code == 422 and "has no cluster 99" in r.text
            r = http.post("/api/novel/1", json={"name": "bug"}, headers=bearer["rita"])
            assert r.status_code == 422 and "exists already" in r.json()["detail"]
            r = http.post("/api/novel", json={"batch": "nope"}, headers=bearer["rita"])
            assert r.status_code == 422 and "no batch named 'nope'" in r.json()["detail"]
            # one click adds the class
            r = http.post("/novel", data={"csrf_token": csrf, "action": "add", "cluster": str(top["cluster"]),
                                          "name": "shipping"}, headers=HTML, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/novel?added=shipping"
            assert "Class shipping added" in http.get(r.headers["location"], headers=HTML).text
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])
    with Project(path, readonly=True) as p:
        assert "shipping" in p.classes and len(p.store.annotations()) == n_labels   # nothing labeled
        q = p.store.last_run("query")
        assert q["params"]["strategy"] == "novel" and set(q["summary"]["items"]) <= shipping

"""Annotators at once against a real `labelloop serve` process on 127.0.0.1: 1,000 labels,
every one stored exactly once, none lost, no 5xx, refreshes coalesced in the background.
On SQLite 20 annotators label 50 items each, on PostgreSQL 50 annotators label 20 each.

The truth is the client side's own record of what it submitted, compared with the rows in the
database after the server has stopped."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from conftest import sql

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

CLIENTS = {"sqlite": 20, "postgresql": 50}
LABELS = 1000      # in total: 20 x 50 or 50 x 20
RETRY_EVERY = 10   # every 10th label is sent twice with the same idempotency key (a client retry)


@pytest.fixture(scope="module")
def project(tmp_path_factory, module_db):
    from labelloop.web import auth
    from labelloop.web.testing import digits_project

    root = tmp_path_factory.mktemp("conc")
    with module_db.create():
        p, ds, truth = digits_project(root / "proj")      # all 1,797 digits
    tokens = {f"a{i:02d}": None for i in range(CLIENTS[module_db.backend])}
    for name in tokens:
        auth.add_user(p.store, name, "annotator", token=True)
        tokens[name] = auth.issue_token(p.store, name)
    auth.add_user(p.store, "lead", "reviewer", token=True)
    tokens["lead"] = auth.issue_token(p.store, "lead")
    p.close()
    return root / "proj", truth, tokens


def test_concurrent_annotators_store_1000_labels_exactly_once(project):
    from labelloop.web.testing import ServerProcess

    path, truth, tokens = project
    n_clients = len(tokens) - 1
    labels_each = LABELS // n_clients
    classes = [str(d) for d in range(10)]
    sent: list[tuple[str, int, str, int]] = []       # (annotator, item, label, annotation id)
    statuses: Counter = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    stop_reading = threading.Event()

    def annotator(name: str, url: str, seed: int) -> None:
        import random

        rnd = random.Random(seed)
        h = {"Authorization": f"Bearer {tokens[name]}"}
        done = 0
        with httpx.Client(base_url=url, headers=h, timeout=60) as c:
            while done < labels_each:
                r = c.get("/api/queue", params={"n": 5})
                with lock:
                    statuses[r.status_code] += 1
                if r.status_code != 200:
                    errors.append(f"{name} queue {r.status_code} {r.text[:200]}")
                    return
                for it in r.json()["items"]:
                    if done >= labels_each:
                        break
                    # mostly the truth, sometimes a random class, as people do
                    label = truth[it["id"]] if rnd.random() < 0.9 else rnd.choice(classes)
                    body = {"item": it["id"], "label": label, "key": f"{name}-{done}"}
                    tries = 2 if done % RETRY_EVERY == 0 else 1
                    ids = set()
                    for _ in range(tries):
                        r = c.post("/api/labels", json=body)
                        with lock:
                            statuses[r.status_code] += 1
                        if r.status_code != 200:
                            errors.append(f"{name} label {r.status_code} {r.text[:200]}")
                            return
                        ids.add(r.json()["annotation"])
                    if len(ids) != 1:
                        errors.append(f"{name}: a retry with the same key gave annotations {ids}")
                    with lock:
                        sent.append((name, it["id"], label, ids.pop()))
                    done += 1
                # now and then a bad request: a clear 4xx, nothing written
                r = c.post("/api/labels", json={"item": 10**9, "label": "3"})
                with lock:
                    statuses[r.status_code] += 1
                if r.status_code != 404 or r.json()["error"] != "unknown_item":
                    errors.append(f"{name}: unknown item gave {r.status_code} {r.text[:200]}")

    def reader(url: str) -> None:
        # a lead watching the dashboard while everyone labels: reads never block writes
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['lead']}"}, timeout=60) as c:
            while not stop_reading.is_set():
                for u in ("/api/dashboard", "/api/review?source=predicted"):
                    r = c.get(u)
                    with lock:
                        statuses[r.status_code] += 1
                    if r.status_code != 200:
                        errors.append(f"lead {u} {r.status_code} {r.text[:200]}")
                stop_reading.wait(0.5)

    with ServerProcess(path) as server:
        threads = [threading.Thread(target=annotator, args=(name, server.url, i))
                   for i, name in enumerate(sorted(n for n in tokens if n != "lead"))]
        watcher = threading.Thread(target=reader, args=(server.url,))
        watcher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        stop_reading.set()
        watcher.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        code = server.stop()
    assert code == 0, "\n".join(server.output[-30:])
    assert not errors, errors[:5]
    assert not [s for s in statuses if s >= 500], statuses
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])

    rows = sql(path, "SELECT a.id, a.annotator, a.item_id, c.name FROM annotations a "
                     "JOIN classes c ON c.id = a.class_id WHERE a.source = 'human'")
    n_all = sql(path, "SELECT COUNT(*) FROM annotations")[0][0]
    refreshes = sql(path, "SELECT COUNT(*) FROM runs WHERE kind = 'refresh'")[0][0]
    assert len(sent) == n_clients * labels_each == LABELS == 1000
    stored = {(a, i, c, k) for k, a, i, c in rows}
    assert n_all == len(rows) == 1000               # nothing extra: retries and bad requests wrote nothing
    assert stored == set(sent)                     # exactly what was sent, attributed to its sender
    assert len({i for _, i, _, _ in sent}) == 1000  # reservations: no item was handed to two people
    assert 1 <= refreshes < 1000                    # bursts of labels coalesced into fewer refreshes

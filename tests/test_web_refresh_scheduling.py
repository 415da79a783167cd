"""When the server refreshes after labels, and how a client learns that it did.

- ``GET /api/queue?after=<annotation>&wait=<s>`` answers as soon as predictions refreshed with
  that label are served (a real ``labelloop serve``), or after ``wait`` with what is served;
  a burst of labels is coalesced and none is lost.
- The refresher starts the next refresh at once for the one label that came during a refresh
  (the debounce is for bursts), and a waiter learns of it without polling.

Truths are independent of the server: annotation ids the label requests returned, the refresh
runs read back through Project, labels written on a connection of the test's own."""

from __future__ import annotations

import sys
import threading
import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from conftest import wait_until  # noqa: E402
from labelloop import Project  # noqa: E402
from labelloop.store import Store  # noqa: E402
from labelloop.web import auth  # noqa: E402
from labelloop.web.service import Refresher, Writer  # noqa: E402
from labelloop.web.testing import ServerProcess, topics_project  # noqa: E402


@pytest.fixture
def topics(tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "SCRYPT_N", 2**10)
    p = topics_project(tmp_path / "proj", rules=False)
    p.refresh()
    auth.add_user(p.store, "ann", "annotator", token=True)
    token = auth.issue_token(p.store, "ann")
    ids = {it.external_id: it.id for it in p.store.items()}
    p.close()
    return tmp_path / "proj", ids, token


def test_a_client_waits_for_its_label_in_one_request_and_a_burst_loses_none(topics):
    path, ids, token = topics
    with ServerProcess(path) as server, httpx.Client(base_url=server.url, timeout=60,
                                                     headers={"Authorization": f"Bearer {token}"}) as c:
        wait_until(lambda: c.get("/api/queue", params={"n": 1}).json()["refresh"]["state"] == "idle",
               what="the server's first refresh")
        aid = c.post("/api/labels", json={"item": ids["bug3"], "label": "bug"}).json()["annotation"]
        r = c.get("/api/queue", params={"n": 1, "after": aid, "wait": 30})
        assert r.status_code == 200, r.text
        assert r.json()["snapshot"]["applied_annotation_id"] >= aid   # answered once it was served

        # nothing newer will come: answered after `wait` with what is served, not an error
        r = c.get("/api/queue", params={"n": 1, "after": aid + 1000, "wait": 0.2})
        assert r.status_code == 200 and r.json()["snapshot"]["applied_annotation_id"] < aid + 1000
        assert c.get("/api/queue", params={"n": 1, "after": aid, "wait": 1e6}).status_code == 422

        # a burst from several clients at once: every label is in the predictions served after it
        names = [f"billing{i}" for i in range(1, 9)] + [f"bug{i}" for i in range(4, 12)]
        got: list[int] = []

        def label(name):
            got.append(c.post("/api/labels", json={"item": ids[name], "label": name.rstrip("0123456789")})
                       .json()["annotation"])

        threads = [threading.Thread(target=label, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(got) == len(names)
        r = c.get("/api/queue", params={"n": 1, "after": max(got), "wait": 30}).json()
        assert r["snapshot"]["applied_annotation_id"] >= max(got)
        refreshes = r["refresh"]["refreshes"]
        wait_until(lambda: c.get("/api/queue", params={"n": 1}).json()["refresh"]["state"] == "idle", what="idle")
        with Project(path, readonly=True) as p:
            last = p.store.last_run("refresh")
            human = int((p.label_vector(p.item_ids(), sources=("human",)) >= 0).sum())
    # 1 + 1 + 16 human labels, all in the last refresh; the burst took fewer refreshes than labels
    assert human == 18 and last["summary"]["human"] == 18
    assert refreshes < 1 + 1 + len(names)


def test_one_label_during_a_refresh_refreshes_next_without_the_debounce(topics):
    """The writer is held busy so the refresh is caught running (its run record waits for the
    writer); a label arrives then. With a debounce of 60 s, it is served well before that."""
    path, ids, _ = topics
    writer = Writer(path)
    writer.start()
    ref = Refresher(path, strategy="least_confidence", writer=writer, debounce=60.0, max_delay=120.0)
    ref.start()
    try:
        wait_until(lambda: ref.status["state"] == "idle", what="the first refresh")
        gate = threading.Event()
        writer.submit(lambda s: gate.wait(60))   # the writer is busy until the gate opens
        with Store(path) as st:
            cid = st.class_ids()
            st.add_annotations([(ids["bug3"], cid["bug"])], source="human", annotator="t")
            first = st.last_annotation_id()
        ref.request()
        wait_until(lambda: ref.status["state"] == "running", what="the refresh to start")
        with Store(path) as st:
            st.add_annotations([(ids["bug4"], cid["bug"])], source="human", annotator="t")
            second = st.last_annotation_id()
        ref.request()   # the one request during the refresh
        served = ref.when_applied(second)
        assert not served.done()
        gate.set()
        assert served.result(timeout=30) is True   # without the debounce's 60 s
        assert ref.snapshot.applied_annotation_id >= second > first
        assert ref.wait_ranked(timeout=30)   # the ranker, held back while refreshes ran, ranked
    finally:
        gate.set()
        ref.stop()
        writer.stop()
    assert served.done() and ref.when_applied(second + 100).result(timeout=1) is False   # stopped: no wait


def test_the_refresher_accounts_for_where_a_labels_wait_went(topics):
    """The status ``last_visible`` splits a label's wait until its predictions are shown; a
    refresh held up by a busy writer (its run record waits for it) shows as blocked time."""
    path, ids, _ = topics
    writer = Writer(path)
    writer.start()
    ref = Refresher(path, strategy="least_confidence", writer=writer)
    ref.start()
    gate = threading.Event()
    try:
        wait_until(lambda: ref.status["state"] == "idle", what="the first refresh")
        writer.submit(lambda s: gate.wait(60))   # the writer is busy until the gate opens
        with Store(path) as st:
            st.add_annotations([(ids["bug3"], st.class_ids()["bug"])], source="human", annotator="t")
            aid = st.last_annotation_id()
        ref.request()
        wait_until(lambda: ref.status["state"] == "running", what="the refresh to start")
        time.sleep(0.5)
        gate.set()
        assert ref.when_applied(aid).result(timeout=30) is True
        wait_until(lambda: ref.status["last_visible"] is not None and ref.status["state"] != "running", what="idle")
        got = ref.status["last_visible"]
    finally:
        gate.set()
        ref.stop()
        writer.stop()
    assert got["queued_s"] >= 0 and got["refresh_s"] >= 0.5
    if sys.platform == "linux":   # from the thread's schedstat
        assert got["blocked_s"] >= 0.4 and got["on_cpu_s"] > 0
        assert abs(got["on_cpu_s"] + got["runqueue_s"] + got["blocked_s"] - got["refresh_s"]) < 0.01


def test_a_waiting_request_is_answered_before_the_refresh_stores_its_run(topics):
    """Published predictions wake the request waiting for them; the refresh goes on storing its
    run only once that request has built its page (here: never on its own, the wait is 60 s)."""
    path, ids, _ = topics
    writer = Writer(path)
    writer.start()
    ref = Refresher(path, strategy="least_confidence", writer=writer)
    ref.answer_wait = 60.0
    ref.start()
    try:
        wait_until(lambda: ref.status["state"] == "idle", what="the first refresh")
        # the label's refresh is asked for on the writer thread, right after its commit
        aid = writer.call(lambda s: (s.add_annotations([(ids["bug3"], s.class_ids()["bug"])], source="human",
                                                       annotator="t"), ref.request(), s.last_annotation_id())[-1])
        served = ref.when_applied(aid)
        assert served.result(timeout=30) is True and ref.snapshot.applied_annotation_id >= aid
        shown = ref.snapshot.run_id
        with Store(path) as st:   # shown, not stored yet: the refresh waits for the page
            assert st.run(shown)["status"] == "running"
        assert ref.status["state"] == "running"
        ref.answered(served)
        wait_until(lambda: ref.status["state"] == "idle", what="the refresh to store its run")
        with Store(path) as st:
            assert st.run(shown)["status"] == "done"
        # a request that gives up before the predictions come holds nothing up
        with Store(path) as st:
            st.add_annotations([(ids["bug4"], st.class_ids()["bug"])], source="human", annotator="t")
            later = st.last_annotation_id()
        gone = ref.when_applied(later)
        gone.cancel()
        ref.answered(gone)
        ref.request()
        wait_until(lambda: ref.snapshot.applied_annotation_id >= later and ref.status["state"] == "idle",
                   what="the next refresh, stored")
    finally:
        ref.stop()
        writer.stop()


def test_the_long_poll_page_and_what_it_served_are_recorded_before_the_next_label(topics):
    """A real server: the page answering ``after``/``wait`` is built on the event loop and the
    items it serves are recorded by a writer job nobody waits for; the next label still finds
    that record committed (the writer runs jobs in order), and the refresh stores its run."""
    path, ids, token = topics
    with ServerProcess(path) as server, httpx.Client(base_url=server.url, timeout=60,
                                                     headers={"Authorization": f"Bearer {token}"}) as c:
        wait_until(lambda: (lambda r: r["state"] == "idle" and r["ranking"] == "idle")(
            c.get("/api/queue", params={"n": 1}).json()["refresh"]), what="the server's first refresh and ranking")
        held = c.get("/api/queue", params={"n": 3}).json()["items"]
        served: list[int] = []
        for it in held:
            aid = c.post("/api/labels", json={"item": it["id"], "label": "bug"}).json()["annotation"]
            # what the pages before this label served is committed (the writer ran it first)
            with Store(path) as st:
                recorded = {i for run_id in st.run_ids("query") for i in st.run(run_id)["summary"]["items"]}
            assert set(served) <= recorded
            r = c.get("/api/queue", params={"n": 1, "after": aid, "wait": 30,
                                            "exclude": ",".join(str(h["id"]) for h in held)})
            assert r.status_code == 200, r.text
            data = r.json()
            assert data["snapshot"]["applied_annotation_id"] >= aid and len(data["items"]) == 1
            served += [i["id"] for i in data["items"] if i["kind"] is not None]
        assert served   # (the ranking served its picks: there was something to record)
        wait_until(lambda: c.get("/api/queue", params={"n": 1}).json()["refresh"]["state"] == "idle", what="idle")
        shown = c.get("/api/queue", params={"n": 1}).json()["snapshot"]["run"]
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])
    with Project(path, readonly=True) as p:
        assert p.store.run(shown)["status"] == "done" and p.predictions().run_id == shown

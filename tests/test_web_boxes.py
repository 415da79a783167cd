"""The box editor's API (detection projects) against a real `labelloop serve` process, on SQLite
and PostgreSQL: which images it offers, how a saved box list becomes append-only rows (accepted
pre-labels, edits, withdrawals, new boxes), and what it refuses (422 / 403 / 404 / 409) without
writing anything.

The truth is the rows read back from the database with plain SQL."""

from __future__ import annotations

import pytest

from conftest import serve_with_annotators, sql

httpx = pytest.importorskip("httpx")
pytest.importorskip("uvicorn")

BOX_ROWS = "SELECT id, item_id, x, y, w, h, class_id, source, annotator, score, replaces FROM boxes ORDER BY id"


@pytest.fixture(scope="module")
def served(tmp_path_factory, module_db):
    """Six 200x150 images (two with machine pre-labels), an annotator with a token and one
    with a password; a live server on it."""
    from labelloop.web.testing import boxes_project

    root = tmp_path_factory.mktemp("boxes")
    with serve_with_annotators(root / "proj", module_db, boxes_project, reviewer=True) as (url, ids, tokens):
        s = Served(url, root / "proj", ids, {"Authorization": f"Bearer {tokens['ann']}"})
        s.reviewer = {"Authorization": f"Bearer {tokens['rita']}"}
        yield s


class Served:
    def __init__(self, url, path, ids, auth):
        self.url, self.path, self.ids, self.auth = url, path, ids, auth

    def get(self, path, **kw):
        return httpx.get(self.url + path, headers=self.auth, timeout=30, **kw)

    def post(self, path, body=None, **kw):
        return httpx.post(self.url + path, json=body, headers=kw.pop("headers", self.auth), timeout=30, **kw)

    def rows(self, item=None):
        rows = sql(self.path, BOX_ROWS)
        return [r for r in rows if item is None or r[1] == item]

    def class_id(self, name):
        return sql(self.path, "SELECT id FROM classes WHERE name = ?", name)[0][0]


def test_the_editor_offers_unreviewed_images_with_their_pre_labels(served):
    r = served.get("/api/boxes?n=20")
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["classes"] == ["cat", "dog", "car"]
    offered = [it["id"] for it in data["items"]]
    # pre-labeled images first, then the rest in item order; every image is 200x150
    assert offered[:2] == [served.ids["im0.png"], served.ids["im1.png"]]
    assert set(offered) >= {served.ids[f"im{i}.png"] for i in range(2, 6)} - {None}
    im0 = data["items"][0]
    assert (im0["width"], im0["height"], im0["media"]) == (200, 150, f"/media/{served.ids['im0.png']}")
    pre = {(b["class"], b["source"], b["score"]) for b in im0["boxes"]}
    assert pre == {("cat", "machine", 0.9), ("dog", "machine", 0.4)}
    one = served.get(f"/api/boxes/{served.ids['im1.png']}").json()
    assert [(b["class"], b["x"], b["y"], b["w"], b["h"]) for b in one["boxes"]] == [("car", 10, 10, 30, 30)]


def test_saving_turns_the_final_list_into_append_only_rows(served):
    item = served.ids["im0.png"]
    before = served.rows(item)
    (cat_id, dog_id) = [r[0] for r in before]
    r = served.post(f"/api/boxes/{item}", {"boxes": [
        {"id": cat_id, "x": 22, "y": 31, "w": 58, "h": 44, "class": "car"},     # pre-label moved, resized, reclassed
        {"x": 100.5, "y": 10, "w": 40, "h": 30, "class": "dog"},               # a new box
    ]})                                                                        # the dog pre-label: left out
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["edited"], out["added"], out["deleted"]) == (0, 1, 1, 1)
    rows = served.rows(item)
    assert rows[:2] == before   # nothing overwritten
    new = {r[10]: r for r in rows[2:] if r[10] is not None}
    edit, withdrawal = new[cat_id], new[dog_id]
    assert edit[2:9] == (22.0, 31.0, 58.0, 44.0, served.class_id("car"), "human", "ann")
    assert withdrawal[6] is None and withdrawal[7] == "human"
    (added,) = [r for r in rows[2:] if r[10] is None]
    assert added[2:9] == (100.5, 10.0, 40.0, 30.0, served.class_id("dog"), "human", "ann")
    assert sorted((b["class"], b["source"]) for b in out["boxes"]) == [("car", "human"), ("dog", "human")]
    # what the detector trains on next (Project.train_detector reads human and imported boxes)
    from labelloop.project import Project

    with Project(served.path, readonly=True) as p:
        trained_on = sorted((b["class"], b["x"], b["y"], b["w"], b["h"]) for b in p.boxes(item, sources=("human", "import")))
    assert trained_on == [("car", 22.0, 31.0, 58.0, 44.0), ("dog", 100.5, 10.0, 40.0, 30.0)]
    # reviewed now: no longer offered
    assert item not in [it["id"] for it in served.get("/api/boxes?n=20").json()["items"]]


def test_an_untouched_pre_label_is_accepted_as_the_persons_box(served):
    item = served.ids["im1.png"]
    (pre,) = served.rows(item)
    b = served.get(f"/api/boxes/{item}").json()["boxes"][0]
    r = served.post(f"/api/boxes/{item}", {"boxes": [{k: b[k] for k in ("id", "x", "y", "w", "h", "class")}]})
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["edited"]) == (1, 0)
    rows = served.rows(item)
    assert rows[1][2:9] == (10.0, 10.0, 30.0, 30.0, served.class_id("car"), "human", "ann") and rows[1][10] == pre[0]
    # saving the same list again (now naming the human box) writes nothing
    now = r.json()["boxes"][0]
    r2 = served.post(f"/api/boxes/{item}", {"boxes": [{k: now[k] for k in ("id", "x", "y", "w", "h", "class")}]})
    assert r2.status_code == 200 and r2.json()["kept"] == 1
    assert len(served.rows(item)) == 2


def test_an_image_saved_with_no_boxes_counts_as_reviewed(served):
    item = served.ids["im2.png"]
    r = served.post(f"/api/boxes/{item}", {"boxes": []})
    assert r.status_code == 200, r.text
    assert r.json()["boxes"] == [] and served.rows(item) == []
    assert item not in [it["id"] for it in served.get("/api/boxes?n=20").json()["items"]]
    # the review is in the store, so it outlives the server and prelabel / next / train see it
    from labelloop.project import Project

    with Project(served.path, readonly=True) as p:
        assert item in p.done_images()


@pytest.mark.parametrize("box, status, words", [
    ({"x": 190, "y": 10, "w": 20, "h": 20, "class": "cat"}, 422, ["box 1", "outside the 200x150 image", "x + w <= 200"]),
    ({"x": -5, "y": 10, "w": 20, "h": 20, "class": "cat"}, 422, ["outside", "x, y >= 0"]),
    ({"x": 10, "y": 10, "w": 0, "h": 20, "class": "cat"}, 422, ["box 1", "at least 1 pixel"]),
    ({"x": 10, "y": 10, "w": 20, "h": 20, "class": "horse"}, 422, ["box 1", "unknown class", "cat, dog"]),
    ({"x": 10, "y": 10, "w": 20, "h": 20}, 422, ["class"]),
    ({"x": "10", "y": 10, "w": 20, "h": 20, "class": "cat"}, 422, ["x"]),
    ({"id": 999999, "x": 10, "y": 10, "w": 20, "h": 20, "class": "cat"}, 409, ["999999", "not in effect", "reload"]),
])
def test_bad_boxes_are_refused_with_the_box_and_the_fix_and_nothing_is_written(served, box, status, words):
    item = served.ids["im3.png"]
    before = served.rows()
    good = {"x": 1, "y": 1, "w": 10, "h": 10, "class": "cat"}
    r = served.post(f"/api/boxes/{item}", {"boxes": [box, good]})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert all(w in detail for w in words), detail
    assert served.rows() == before


def test_unknown_items_roles_csrf_and_other_projects(served, tmp_path):
    assert served.post("/api/boxes/999999", {"boxes": []}).status_code == 404
    assert served.get("/api/boxes/999999").status_code == 404
    assert served.post("/api/boxes/abc", {"boxes": []}).status_code == 422
    assert httpx.get(served.url + "/api/boxes", timeout=10).status_code == 401
    # a cookie session must send the CSRF token
    c = httpx.Client(base_url=served.url, timeout=30)
    login = c.post("/api/login", json={"name": "bea", "password": "bea-password-1"})
    assert login.status_code == 200, login.text
    # images handed to ann are not handed to bea meanwhile
    held = {it["id"] for it in served.get("/api/boxes?n=20").json()["items"]}
    assert held and not held & {it["id"] for it in c.get("/api/boxes?n=20").json()["items"]}
    item = served.ids["im4.png"]
    assert c.post(f"/api/boxes/{item}", json={"boxes": []}).status_code == 403
    r = c.post(f"/api/boxes/{item}", json={"boxes": [{"x": 5, "y": 5, "w": 20, "h": 20, "class": "cat"}]},
               headers={"X-CSRF-Token": login.json()["csrf"]})
    assert r.status_code == 200, r.text
    assert [r[7:9] for r in served.rows(item)] == [("human", "bea")]
    # the page and /queue, which leads to it on a detection project
    page = c.get("/queue", headers={"Accept": "text/html"}, follow_redirects=True)
    assert page.status_code == 200 and page.url.path == "/boxes" and "/static/boxes.js" in page.text
    review = c.get("/review", headers={"Accept": "text/html"})   # an annotator may not review
    assert review.status_code == 403
    # a reviewer reviews pre-labels in the box editor too
    review = httpx.get(served.url + "/review", headers={**served.reviewer, "Accept": "text/html"}, timeout=30)
    assert review.status_code == 303 and review.headers["location"] == "/boxes"
    c.close()
    # skipping writes nothing and hides the image from this user only
    skip = served.ids["im5.png"]
    n = len(served.rows())
    assert served.post(f"/api/boxes/{skip}/skip").status_code == 200
    assert skip not in [it["id"] for it in served.get("/api/boxes?n=20").json()["items"]]
    assert len(served.rows()) == n


def test_an_image_whose_file_went_missing_is_passed_over_and_named(served):
    # runs after the others in this module: it removes im3.png from the disk
    item = served.ids["im3.png"]
    (served.path.parent / (served.path.name + "-images") / "im3.png").unlink()
    r = served.get("/api/boxes?n=20")
    assert r.status_code == 200, r.text
    data = r.json()
    assert item not in [it["id"] for it in data["items"]]
    assert [p["item"] for p in data["problems"]] == [item] and "missing" in data["problems"][0]["detail"]


def test_a_classification_project_has_no_box_editor(tmp_path, each_db):
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, topics_project

    p = topics_project(tmp_path / "t", rules=False)
    auth.add_user(p.store, "ann", "annotator", token=True)
    token = auth.issue_token(p.store, "ann")
    p.close()
    h = {"Authorization": f"Bearer {token}"}
    with ServerProcess(tmp_path / "t") as server:
        r = httpx.get(server.url + "/api/boxes", headers=h, timeout=30)
        assert r.status_code == 409 and "detection projects" in r.json()["detail"]
        r = httpx.post(server.url + "/api/boxes/1", json={"boxes": []}, headers=h, timeout=30)
        assert r.status_code == 409


@pytest.mark.slow   # trains a small detector (about 15 s on a loaded 2-core box)
def test_after_a_prelabel_the_editor_offers_what_labelloop_next_chooses(tmp_path, each_db):
    """Before a prelabel run: pre-labeled images first, then import order. After one: the images
    Project.next picks (the least sure pre-labels, diverse), each with its reason, without a
    query run recorded per page load; the rest follow in the plain order."""
    torch = pytest.importorskip("torch")
    from labelloop.project import Project
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, boxes_project

    p, ids = boxes_project(tmp_path / "d", n=10)
    p.embed("pixels")
    for i in (2, 3, 4):   # a person boxed three images: the detector's training set
        p.add_boxes(f"im{i}.png", [(20 + 10 * i, 30, 60, 40, "cat")], annotator="ann")
    auth.add_user(p.store, "ann", "annotator", token=True)
    token = auth.issue_token(p.store, "ann")
    h = {"Authorization": f"Bearer {token}"}
    queries = "SELECT COUNT(*) FROM runs WHERE kind = 'query'"
    with ServerProcess(tmp_path / "d") as server:
        def offered():
            r = httpx.get(server.url + "/api/boxes?n=20", headers=h, timeout=30)
            assert r.status_code == 200, r.text
            return [(it["id"], it["reason"]) for it in r.json()["items"]]

        before = offered()   # no prelabel run yet: the plain order
        todo = [ids[f"im{i}.png"] for i in (0, 1, 5, 6, 7, 8, 9)]
        assert [i for i, _ in before] == todo
        assert [w for _, w in before[:2]] == ["pre-labeled: check the machine's boxes"] * 2

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            p.train_detector(device="cpu", epochs=1, image_size=32)
        finally:
            torch.set_num_threads(threads)
        run = p.prelabel()["run"]
        want = p.next(20, seed=run, record=False)
        runs = sql(tmp_path / "d", queries)
        after = offered()
        assert after == [(o["item"], o["reason"]) for o in want][:len(after)]
        assert all(w.startswith("least sure decision: image confidence") for _, w in after)
        assert sorted(i for i, _ in after) == sorted(todo)
        assert offered() == after and sql(tmp_path / "d", queries) == runs   # cached; nothing recorded
    p.close()

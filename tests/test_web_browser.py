"""What a person sees: Debian's Chromium, driven by Playwright, against a real `labelloop serve`
subprocess on 127.0.0.1. Screenshots go to tests/artifacts/ (git-ignored).

Needs /usr/bin/chromium (`apt-get install -y chromium`); skipped with that reason otherwise."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install -y chromium"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """300 digits, an annotator and a reviewer, six machine labels to review; a live server."""
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, digits_project

    root = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**12)   # keep the test quick; the server verifies any cost
        p, ds, truth = digits_project(root / "proj", n=300)
        auth.add_user(p.store, "ann", "annotator", password="ann-password-1")
        auth.add_user(p.store, "rita", "reviewer", password="rita-password-1")
    ids = p.store.class_ids()
    machine = [i for i in sorted(truth)[100:106]]
    p.store.add_annotations([(i, ids[truth[i]]) for i in machine], source="machine", confidences=[0.97] * 6)
    # the second half comes with imported labels, every 10th one wrong: material for the audit
    imported = sorted(truth)[150:]
    p.store.add_annotations([(i, ids[str((int(truth[i]) + 1) % 10) if k % 10 == 0 else truth[i]])
                             for k, i in enumerate(imported)], source="import")
    p.close()
    ARTIFACTS.mkdir(exist_ok=True)
    with ServerProcess(root / "proj") as server:
        yield server, root / "proj", truth, machine
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])


def _sql(path: Path, q: str, *args):
    con = sqlite3.connect(path / "labelloop.db")
    try:
        return con.execute(q, args).fetchall()
    finally:
        con.close()


def _login(page, url: str, name: str, password: str, then: str) -> None:
    page.goto(url + "/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(url + then)


def _current(page) -> int:
    return int(page.get_attribute("#item-view", "data-item-id") or 0)


def _wait_item_change(page, old: int) -> int:
    page.wait_for_function(
        "old => { const v = document.getElementById('item-view'); "
        "return v.dataset.itemId && v.dataset.itemId !== String(old) && v.querySelector('img,.item-text'); }",
        arg=old, timeout=5000)
    return _current(page)


def _stat(page, key: str) -> str:
    return page.inner_text(f"#stat-{key} b").strip()


def _watch(page) -> list[str]:
    """A list to which the page's script errors and every HTTP answer >= 400 are added."""
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    return problems


def _wait_until(fn, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return True
        time.sleep(0.1)
    return False


def test_label_with_the_keyboard_undo_dashboard_and_review(browser, served):
    server, path, truth, machine = served
    url = server.url
    ann = browser.new_context(viewport={"width": 1280, "height": 800})
    lead = browser.new_context(viewport={"width": 1280, "height": 900})
    page, dash = ann.new_page(), lead.new_page()
    problems: list[str] = []
    for pg in (page, dash):
        pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        pg.on("response", lambda r: problems.append(f"{r.status} {r.url}")
              if r.status >= 400 and not r.url.endswith("/dashboard") else None)

    # the reviewer's dashboard before anything is labeled
    dash.goto(url + "/dashboard")
    assert "/login" in dash.url
    _login(dash, url, "rita", "rita-password-1", "/dashboard")
    assert _stat(dash, "human") == "0"

    # the annotator logs in and lands on the queue: one large image, class keys 1-9 visible
    _login(page, url, "ann", "ann-password-1", "/queue")
    page.wait_for_selector("#item-view img")
    assert page.locator("nav a").all_inner_texts() == ["labelloop", "Label"]   # the queue only
    assert page.locator("#classes button.cls").count() == 10
    assert page.locator("#classes kbd").first.inner_text() == "0"   # digit classes: their own key
    box = page.locator("#item-view img").bounding_box()
    assert box["width"] > 300 and box["height"] > 300   # 8x8 digits scaled up to fit
    page.screenshot(path=ARTIFACTS / "queue.png")

    # five labels with the keyboard: the queue advances at once every time
    labeled, waits = [], []
    for _ in range(5):
        item = _current(page)
        key = truth[item]   # classes "0".."9" sit on their own digit keys
        t0 = time.perf_counter()
        page.keyboard.press(key)
        nxt = _wait_item_change(page, item)
        waits.append(time.perf_counter() - t0)
        assert nxt != item and nxt not in labeled
        labeled.append(item)
    assert page.inner_text("#progress").startswith("5 labeled")
    assert _wait_until(lambda: _sql(path, "SELECT COUNT(*) FROM annotations WHERE annotator = 'ann'")[0][0] == 5)
    stored = _sql(path, "SELECT a.item_id, c.name FROM annotations a JOIN classes c ON c.id = a.class_id "
                        "WHERE a.annotator = 'ann' ORDER BY a.id")
    assert stored == [(i, truth[i]) for i in labeled]
    print("keypress -> next item shown (s):", [round(w, 3) for w in waits])

    # the dashboard counts change
    dash.reload()
    assert _stat(dash, "human") == "5"

    # U undoes the last label: that item comes back and its label is withdrawn
    page.keyboard.press("u")
    back = _wait_item_change(page, _current(page))
    assert back == labeled[-1]
    assert _wait_until(lambda: _sql(path, "SELECT class_id FROM annotations WHERE annotator = 'ann' "
                                          "ORDER BY id DESC LIMIT 1") == [(None,)])
    page.screenshot(path=ARTIFACTS / "queue-after-undo.png")
    dash.reload()
    assert _stat(dash, "human") == "4"

    # a new class from the page
    page.fill("#new-class-name", "smudge")
    page.press("#new-class-name", "Enter")
    page.wait_for_selector("#classes button.cls[data-label='smudge']")
    assert _sql(path, "SELECT COUNT(*) FROM classes WHERE name = 'smudge'") == [(1,)]

    # after a refresh the machine's guess is shown; Enter accepts it
    assert _wait_until(lambda: _sql(path, "SELECT COUNT(*) FROM runs WHERE kind = 'refresh' AND status = 'done'")[0][0] > 0,
                       timeout=60)
    page.reload()
    page.wait_for_selector("#guess b", timeout=20000)
    item, guess = _current(page), page.inner_text("#guess b")
    page.screenshot(path=ARTIFACTS / "queue-with-guess.png")
    page.keyboard.press("Enter")
    _wait_item_change(page, item)
    # (the row before is the undo's withdrawal, so this waits for the new row)
    assert _wait_until(lambda: _sql(path, "SELECT a.item_id, c.name FROM annotations a LEFT JOIN classes c ON "
                                          "c.id = a.class_id WHERE annotator = 'ann' ORDER BY a.id DESC LIMIT 1")
                       == [(item, guess)])

    # S skips without writing anything
    n = _sql(path, "SELECT COUNT(*) FROM annotations")[0][0]
    item = _current(page)
    page.keyboard.press("s")
    assert _wait_item_change(page, item) != item
    time.sleep(0.3)
    rows = _sql(path, "SELECT id, item_id, class_id, source, annotator FROM annotations")
    assert len(rows) == n, str(rows)

    dash.reload()
    assert _stat(dash, "human") == "5"
    dash.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30000)
    dash.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    # review: accept one machine label; it becomes a human label by the reviewer
    dash.goto(url + "/review")
    tiles = dash.locator(".tile")
    assert tiles.count() == 6
    dash.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30000)
    dash.screenshot(path=ARTIFACTS / "review.png", full_page=True)
    first = int(tiles.first.locator("input.pick").get_attribute("value"))
    tiles.first.locator("input.pick").check()
    dash.click("#accept")
    dash.wait_for_selector(".flash")
    assert "1 label is now human-verified" in dash.inner_text(".flash")
    assert _sql(path, "SELECT a.annotator, c.name, a.source FROM annotations a JOIN classes c ON c.id = a.class_id "
                      "WHERE a.item_id = ? ORDER BY a.id DESC LIMIT 1", first) == [("rita", truth[first], "human")]
    assert dash.locator(".tile").count() == 5
    dash.screenshot(path=ARTIFACTS / "review-after.png", full_page=True)

    dash.goto(url + "/audit", timeout=120000)
    assert dash.locator(".suspect").count() > 0
    # thumbnails load lazily: wait for the ones on screen
    dash.wait_for_function("() => [...document.images].filter(i => i.getBoundingClientRect().top < innerHeight)"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30000)
    dash.screenshot(path=ARTIFACTS / "audit.png")
    # an annotator cannot open the dashboard
    r = page.goto(url + "/dashboard")
    assert r.status == 403
    page.screenshot(path=ARTIFACTS / "forbidden.png")
    assert not problems, problems
    ann.close()
    lead.close()


WORDS = ["airplane", "bird", "cat", "deer", "dog"]   # with the digits "0".."9": 15 classes


@pytest.fixture(scope="module")
def served15(tmp_path_factory):
    """120 digits with 15 classes (the digits and five words), guidelines with raw HTML in
    them, eight machine labels to review, an admin, an annotator and a reviewer; a live server."""
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, digits_project

    root = tmp_path_factory.mktemp("browser15")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**12)
        p, ds, truth = digits_project(root / "proj", n=120)
        for name, role in (("boss", "admin"), ("ann", "annotator"), ("rita", "reviewer")):
            auth.add_user(p.store, name, role, password=f"{name}-password-1")
    p.store.add_classes(WORDS)
    ids = p.store.class_ids()
    machine = sorted(truth)[60:68]
    p.store.add_annotations([(i, ids[truth[i]]) for i in machine], source="machine", confidences=[0.9] * 8)
    p.close()
    ARTIFACTS.mkdir(exist_ok=True)
    with ServerProcess(root / "proj") as server:
        yield server, root / "proj", truth, machine
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])


def _last_label(path: Path, annotator: str):
    return _sql(path, "SELECT a.item_id, c.name FROM annotations a LEFT JOIN classes c ON c.id = a.class_id "
                      "WHERE a.annotator = ? ORDER BY a.id DESC LIMIT 1", annotator)


def _visible_classes(page, root: str = "#classes") -> list[str]:
    return page.eval_on_selector_all(f"{root} button.cls", "bs => bs.filter(b => !b.hidden).map(b => b.dataset.label)")


def test_fifteen_classes_by_keyboard_guidelines_and_review_keys(browser, served15):
    server, path, truth, machine = served15
    url = server.url
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    problems = _watch(page)

    # the admin writes guidelines; raw HTML in them shows as text
    _login(page, url, "boss", "boss-password-1", "/dashboard")
    page.goto(url + "/guidelines")
    page.fill("#guidelines-input", "# Words\n\nUse **deer** for any animal with antlers.\n\n"
                                   "- a *dog* barks\n- <img src=x onerror=alert(1)>")
    page.click("form.guidelines-edit button[type=submit]")
    page.wait_for_selector(".flash")
    assert page.inner_text("#guidelines-text strong") == "deer"
    assert page.locator("#guidelines-text img").count() == 0
    assert "<img src=x onerror=alert(1)>" in page.inner_text("#guidelines-text")
    page.screenshot(path=ARTIFACTS / "guidelines.png", full_page=True)
    ctx.clear_cookies()

    # the annotator: 15 classes, the first ten on keys, guidelines behind G
    _login(page, url, "ann", "ann-password-1", "/queue")
    page.wait_for_selector("#item-view img")
    assert page.locator("#classes button.cls").count() == 15
    keys = page.locator("#classes kbd").all_inner_texts()
    assert keys[:10] == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"] and keys[10:] == [""] * 5
    assert "find a class" in page.inner_text("#keys")
    assert not page.locator("#guidelines .md").is_visible()
    page.keyboard.press("g")
    assert page.locator("#guidelines .md strong").inner_text() == "deer"
    page.screenshot(path=ARTIFACTS / "queue-15-guidelines.png")
    page.keyboard.press("g")
    assert not page.locator("#guidelines .md").is_visible()

    # "/" then letters narrow the list; Enter labels with the single match
    item = _current(page)
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "class-filter"
    page.keyboard.type("eer")
    assert _visible_classes(page) == ["deer"]
    page.screenshot(path=ARTIFACTS / "queue-15-filter.png")
    page.keyboard.press("Enter")
    _wait_item_change(page, item)
    assert _wait_until(lambda: _last_label(path, "ann") == [(item, "deer")])
    assert page.input_value("#class-filter") == "" and page.evaluate("document.activeElement.id") != "class-filter"
    assert len(_visible_classes(page)) == 15

    # several matches: names starting with the text first; arrows move, Enter picks
    item = _current(page)
    page.keyboard.press("/")
    page.keyboard.type("D")
    assert _visible_classes(page) == ["bird", "deer", "dog"]   # in class order ...
    assert page.inner_text("#classes button.cls.match span") == "deer"   # ... the first match starts with it
    page.keyboard.press("ArrowDown")
    assert page.inner_text("#classes button.cls.match span") == "dog"
    page.keyboard.press("Enter")
    _wait_item_change(page, item)
    assert _wait_until(lambda: _last_label(path, "ann") == [(item, "dog")])

    # no match: Enter says so and labels nothing; Esc clears, and the keys are shortcuts again
    n = _sql(path, "SELECT COUNT(*) FROM annotations")[0][0]
    item = _current(page)
    page.keyboard.press("/")
    page.keyboard.type("zebra")
    assert _visible_classes(page) == []
    page.keyboard.press("Enter")
    page.wait_for_selector("#toast.show.bad")
    assert "No class matches" in page.inner_text("#toast")
    page.keyboard.press("Escape")
    assert page.input_value("#class-filter") == "" and len(_visible_classes(page)) == 15
    page.keyboard.press("s")
    assert _wait_item_change(page, item) != item
    assert _sql(path, "SELECT COUNT(*) FROM annotations")[0][0] == n
    ctx.clear_cookies()

    # the reviewer: j / k move, a accepts, x fixes through the same picker, shift-A accepts the rest
    _login(page, url, "rita", "rita-password-1", "/dashboard")
    page.goto(url + "/review")
    assert page.locator(".tile").count() == 8
    assert "accept every tile shown" in page.inner_text("#keys")
    tile_ids = [int(v) for v in page.eval_on_selector_all(".tile input.pick", "bs => bs.map(b => b.value)")]
    assert sorted(tile_ids) == sorted(machine)
    assert page.get_attribute(".tile.current input.pick", "value") == str(tile_ids[0])
    page.keyboard.press("a")
    page.wait_for_selector(".tile.done")
    assert _wait_until(lambda: _last_label(path, "rita") == [(tile_ids[0], truth[tile_ids[0]])])
    assert page.get_attribute(".tile.current input.pick", "value") == str(tile_ids[1])
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("j")
    assert page.get_attribute(".tile.current input.pick", "value") == str(tile_ids[2])
    page.keyboard.press("x")
    assert page.is_visible("#picker") and page.evaluate("document.activeElement.id") == "picker-filter"
    page.keyboard.type("ca")
    assert _visible_classes(page, "#picker-classes") == ["cat"]
    page.screenshot(path=ARTIFACTS / "review-fix-picker.png")
    page.keyboard.press("Enter")
    assert _wait_until(lambda: _last_label(path, "rita") == [(tile_ids[2], "cat")])
    assert not page.is_visible("#picker")
    # the server commits before the page hears back: wait for the page, not the database
    page.wait_for_function("document.querySelectorAll('.tile.done').length === 2", timeout=5000)
    page.keyboard.press("Shift+A")
    page.wait_for_selector(".flash")
    assert "6 labels are now human-verified" in page.inner_text(".flash")
    rows = _sql(path, "SELECT a.item_id, c.name FROM annotations a JOIN classes c ON c.id = a.class_id "
                      "WHERE a.annotator = 'rita' ORDER BY a.id")
    assert dict(rows) == {i: ("cat" if i == tile_ids[2] else truth[i]) for i in tile_ids}
    assert page.locator(".tile").count() == 0
    assert not problems, problems
    ctx.close()


# ----------------------------------------------------------------------------- rules
def test_admin_switches_a_rule_off_on_the_rules_page(browser, tmp_path):
    """From the navigation to the rules page; "Switch off" on the zzz rule: the page shows it
    off with the note about the next refresh, the database has it off, by the admin."""
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, topics_project

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**12)
        p = topics_project(tmp_path / "proj")
        auth.add_user(p.store, "boss", "admin", password="boss-password-1")
        p.close()
    ARTIFACTS.mkdir(exist_ok=True)
    with ServerProcess(tmp_path / "proj") as server:
        ctx = browser.new_context(viewport={"width": 1400, "height": 900})
        page = ctx.new_page()
        problems = _watch(page)
        _login(page, server.url, "boss", "boss-password-1", "/dashboard")
        page.click("nav >> text=Rules")
        page.wait_for_url(server.url + "/rules")
        row = page.locator("#rule-zzz")
        assert row.locator("td.state").inner_text() == "active"
        assert "next refresh" in page.inner_text("#rules-refresh-note")
        row.locator("button", has_text="Switch off").click()
        page.wait_for_url(server.url + "/rules?done=off&rule=zzz")
        row = page.locator("#rule-zzz")
        assert row.get_attribute("data-active") == "false" and row.locator("td.state").inner_text() == "off"
        assert "Rule zzz switched off" in page.inner_text("p.flash")
        assert row.locator("button").inner_text() == "Switch on"
        assert page.locator("#rule-money td.state").inner_text() == "active"
        page.screenshot(path=str(ARTIFACTS / "rules-switched-off.png"), full_page=True)
        ctx.close()
    assert _sql(tmp_path / "proj", "SELECT active, changed_by FROM rules WHERE name = 'zzz'") == [(0, "boss")]
    assert not problems, problems
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])


def test_the_queue_waits_for_refreshed_predictions_instead_of_polling(browser, tmp_path):
    """After a label the page sends one GET /api/queue?after=<label>&wait=; the server answers
    it once predictions refreshed with that label are served, and the items the page had
    prefetched are replaced by the queue those predictions order (their guesses with them)."""
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, digits_project

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**12)
        p, _, truth = digits_project(tmp_path / "proj", n=300)
        auth.add_user(p.store, "ann", "annotator", password="ann-password-1")
    ids = p.store.class_ids()
    seeds = [next(i for i in sorted(truth) if truth[i] == c) for c in sorted(set(truth.values()))]
    p.store.add_annotations([(i, ids[truth[i]]) for i in seeds], source="human", annotator="seed")
    p.close()
    with ServerProcess(tmp_path / "proj") as server:
        ctx = browser.new_context(viewport={"width": 1280, "height": 800})
        page = ctx.new_page()
        problems = _watch(page)
        _login(page, server.url, "ann", "ann-password-1", "/queue")
        # the first refresh (the seed labels) is served: the page opens with its guesses
        assert _wait_until(lambda: page.evaluate(
            "fetch('/api/queue?n=1').then(r => r.json()).then(d => d.snapshot.run !== null "
            "&& d.refresh.state === 'idle')"), timeout=60)
        page.reload()
        page.wait_for_selector("#guess b", timeout=20000)
        first_run = page.evaluate("JSON.parse(document.getElementById('initial').textContent).snapshot.run")

        queue_gets: list[str] = []
        page.on("request", lambda r: queue_gets.append(r.url) if "/api/queue" in r.url else None)
        released: list[int] = []   # prefetched items the page dropped, handed back to the others
        page.on("request", lambda r: released.extend(r.post_data_json["items"]) if "/api/release" in r.url else None)
        prefetched = set(page.evaluate("fetch('/api/queue?n=6').then(r => r.json()).then(d => d.items.map(i => i.id))"))
        item = _current(page)
        with page.expect_response(lambda r: "after=" in r.url, timeout=60000) as answer:
            page.keyboard.press(truth[item])
            shown = _wait_item_change(page, item)
        data = answer.value.json()
        (aid,) = _sql(tmp_path / "proj", "SELECT MAX(id) FROM annotations WHERE annotator = 'ann'")[0]
        assert f"after={aid}" in answer.value.url and "wait=" in answer.value.url
        assert data["snapshot"]["applied_annotation_id"] >= aid and data["snapshot"]["run"] > first_run
        page.wait_for_function("aid => Number(document.body.dataset.applied) >= aid", arg=aid, timeout=5000)
        waiting = [u for u in queue_gets if "after=" in u]
        assert len(waiting) == 1 and len(queue_gets) <= 3, queue_gets   # one waiting request, no polling
        kept = {d["id"] for d in data["items"]}
        assert set(released) <= prefetched - kept - {shown}, (released, prefetched, kept, shown)

        # the next item is the refreshed queue's first, with the refreshed guess
        fresh = [d for d in data["items"] if d["id"] != shown]
        page.keyboard.press(truth[shown])
        nxt = _wait_item_change(page, shown)
        assert nxt == fresh[0]["id"]
        if fresh[0]["guess"] is not None:
            assert page.inner_text("#guess b") == fresh[0]["guess"]["label"]
        page.screenshot(path=ARTIFACTS / "queue-refreshed.png")
        assert not problems, problems
        ctx.close()
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])

"""The multi-label queue as a person uses it: Debian's Chromium, driven by Playwright, against a
real `labelloop serve` subprocess. Toggles pre-set from the machine's suggestions, keys toggle
classes, the class finder toggles too, Enter submits the set (or none); the truth is the rows
in the database afterwards.

Needs /usr/bin/chromium (`apt-get install -y chromium`); skipped with that reason otherwise."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from test_web_browser import (ARTIFACTS, _current, _login, _watch, _wait_item_change, browser,  # noqa: F401
                              pytestmark)   # the fixture and the marks


CLASSES = ["billing", "bug", "urgent"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, tags_project

    root = tmp_path_factory.mktemp("browser-tags")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**12)
        p = tags_project(root / "proj")
        auth.add_user(p.store, "ann", "annotator", password="ann-password-1")
    p.close()
    ARTIFACTS.mkdir(exist_ok=True)
    with ServerProcess(root / "proj") as server:
        yield server, root / "proj"
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])


def _decision(path: Path, item: int) -> dict[str, int]:
    con = sqlite3.connect(path / "labelloop.db")
    try:
        rows = con.execute("SELECT c.name, d.value, d.source, d.annotator FROM class_decisions d "
                           "JOIN classes c ON c.id = d.class_id WHERE d.item_id = ? ORDER BY d.id", (item,)).fetchall()
    finally:
        con.close()
    assert {(r[2], r[3]) for r in rows} <= {("human", "ann")}, rows
    return {r[0]: r[1] for r in rows}


def _decided(path: Path, item: int) -> dict[str, int]:
    """The item's decision once it is stored (the page saves in the background after moving on)."""
    deadline = time.monotonic() + 20
    while True:
        got = _decision(path, item)
        if len(got) == len(CLASSES) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def _toggled(page) -> set[str]:
    return set(page.eval_on_selector_all("#classes button.cls.on", "els => els.map(e => e.dataset.label)"))


def _suggested(page) -> set[str]:
    return set(page.eval_on_selector_all("#classes button.cls.suggested", "els => els.map(e => e.dataset.label)"))


def test_toggle_classes_with_keys_and_submit_sets_with_enter(browser, served):
    server, path = served
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    problems = _watch(page)
    _login(page, server.url, "ann", "ann-password-1", "/queue")
    page.wait_for_function("() => document.getElementById('item-view').dataset.itemId")
    initial = json.loads(page.inner_text("#initial"))
    scores = {it["id"]: it["scores"] for it in initial["items"]}

    # the first item: toggles pre-set from the scores >= 0.5, marked as the machine's suggestion
    first = _current(page)
    want = {c for c, s in scores[first].items() if s >= initial["suggest_at"]}
    assert _toggled(page) == _suggested(page) == want
    assert "Machine suggests" in page.inner_text("#guess")
    # keys 1 and 3 flip billing and urgent; Enter submits the set
    page.keyboard.press("1")
    page.keyboard.press("3")
    expect = want ^ {"billing", "urgent"}
    assert _toggled(page) == expect
    page.screenshot(path=str(ARTIFACTS / "multilabel-toggles.png"))
    page.keyboard.press("Enter")
    second = _wait_item_change(page, first)
    assert _decided(path, first) == {c: int(c in expect) for c in CLASSES}

    # the second: switch every suggestion off, Enter = none applies
    for c in sorted(_toggled(page)):
        page.keyboard.press(str(CLASSES.index(c) + 1))
    assert _toggled(page) == set()
    page.keyboard.press("Enter")
    third = _wait_item_change(page, second)
    assert _decided(path, second) == {c: 0 for c in CLASSES}

    # the third: the class finder toggles too (/ then part of a name, Enter), Enter submits
    before = _toggled(page)
    page.keyboard.press("/")
    page.keyboard.type("urg")
    page.keyboard.press("Enter")
    assert _toggled(page) == before ^ {"urgent"}
    page.keyboard.press("Enter")
    fourth = _wait_item_change(page, third)
    assert _decided(path, third) == {c: int(c in before ^ {"urgent"}) for c in CLASSES}

    # U undoes that decision (append-only: withdrawn, the item had none before) and shows it again
    page.keyboard.press("u")
    assert _wait_item_change(page, fourth) == third
    deadline = time.monotonic() + 20
    while _decision(path, third) != {c: None for c in CLASSES} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _decision(path, third) == {c: None for c in CLASSES}
    assert _toggled(page) == _suggested(page)   # pre-set from the suggestions again
    assert not problems, problems
    ctx.close()

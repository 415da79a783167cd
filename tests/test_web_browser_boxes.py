"""The box editor as a person uses it: Debian's Chromium, driven by Playwright, against a real
`labelloop serve` subprocess on a detection project. Mouse to draw, move and resize, keys for
class, delete, zoom, save and next; the truth is the rows in the database afterwards.

Needs /usr/bin/chromium (`apt-get install -y chromium`); skipped with that reason otherwise."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from test_web_browser import ARTIFACTS, _login, _watch, browser, pytestmark  # noqa: F401 (the fixture, the marks)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, boxes_project

    root = tmp_path_factory.mktemp("browser-boxes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**12)
        p, ids = boxes_project(root / "proj")
        auth.add_user(p.store, "ann", "annotator", password="ann-password-1")
    p.close()
    ARTIFACTS.mkdir(exist_ok=True)
    with ServerProcess(root / "proj") as server:
        yield server, root / "proj", ids
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])


def _rows(path: Path, item: int):
    con = sqlite3.connect(path / "labelloop.db")
    try:
        return con.execute("SELECT b.id, b.x, b.y, b.w, b.h, c.name, b.source, b.annotator, b.replaces "
                           "FROM boxes b LEFT JOIN classes c ON c.id = b.class_id WHERE b.item_id = ? "
                           "ORDER BY b.id", (item,)).fetchall()
    finally:
        con.close()


class Canvas:
    """Image pixels -> page coordinates of the editor's canvas at its current zoom."""

    def __init__(self, page):
        self.page = page

    def at(self, x: float, y: float) -> tuple[float, float]:
        r = self.page.eval_on_selector("#box-canvas", "e => { const r = e.getBoundingClientRect(); "
                                       "return [r.left, r.top, r.width]; }")
        scale = r[2] / 200   # the test images are 200 px wide
        return r[0] + x * scale, r[1] + y * scale

    def drag(self, a: tuple[float, float], b: tuple[float, float]) -> None:
        m = self.page.mouse
        m.move(*self.at(*a))
        m.down()
        for t in (0.25, 0.5, 0.75, 1.0):
            m.move(*self.at(a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t))
        m.up()

    def click(self, x: float, y: float) -> None:
        self.page.mouse.click(*self.at(x, y))


def test_draw_resize_reclass_delete_and_save_with_mouse_and_keys(browser, served):
    server, path, ids = served
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    page = ctx.new_page()
    problems = _watch(page)

    # an annotator lands on /queue, which on a detection project is the box editor
    _login(page, server.url, "ann", "ann-password-1", "/boxes")
    item = ids["im0.png"]
    page.wait_for_selector(f"#box-canvas[data-item-id='{item}'] .bx")
    page.wait_for_function("() => document.querySelector('#box-canvas img').complete")
    pre = page.eval_on_selector_all(".bx", "els => els.map(e => [e.className, e.textContent])")
    assert pre == [["bx machine", "cat 0.90"], ["bx machine", "dog 0.40"]]   # dashed, class and score
    cv = Canvas(page)

    # draw a box on empty space; it is selected, in the current class (the first)
    cv.drag((30, 90), (90, 140))
    assert page.locator(".bx").count() == 3
    assert page.get_attribute(".bx.sel", "data-cls") == "cat"
    # resize it by its bottom-right corner, then key 3 makes it a car
    cv.drag((90, 140), (100, 146))
    page.keyboard.press("3")
    assert page.get_attribute(".bx.sel", "data-cls") == "car"
    # select the dog pre-label with a click and delete it
    cv.click(145, 85)
    assert page.get_attribute(".bx.sel", "data-cls") == "dog"
    page.keyboard.press("Delete")
    assert page.locator(".bx").count() == 2
    # zoom in and out: the display scales, the boxes stay in image pixels
    w0 = page.eval_on_selector("#box-canvas", "e => e.getBoundingClientRect().width")
    page.keyboard.press("+")
    assert page.eval_on_selector("#box-canvas", "e => e.getBoundingClientRect().width") == pytest.approx(w0 * 1.25, rel=0.01)
    page.keyboard.press("-")
    page.screenshot(path=str(ARTIFACTS / "boxes-before-save.png"))

    # Enter saves (the cat pre-label left is accepted) and shows the next image
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#box-canvas[data-item-id='{ids['im1.png']}']")
    rows = _rows(path, item)
    by_id = {r[0]: r for r in rows}
    cat, dog = rows[0], rows[1]
    assert cat[6] == dog[6] == "machine"
    after = [r for r in rows[2:]]
    accepted = [r for r in after if r[8] == cat[0]]
    withdrawn = [r for r in after if r[8] == dog[0]]
    drawn = [r for r in after if r[8] is None]
    assert [(r[1:8]) for r in accepted] == [(20.0, 30.0, 60.0, 40.0, "cat", "human", "ann")]
    assert [(r[5], r[6]) for r in withdrawn] == [(None, "human")]
    assert len(drawn) == 1 and drawn[0][5:8] == ("car", "human", "ann")
    x, y, w, h = drawn[0][1:5]
    assert (x, y, x + w, y + h) == pytest.approx((30, 90, 100, 146), abs=1.5)   # pixels, whatever the zoom
    assert len(by_id) == len(rows) == 5

    # N goes on without saving: nothing written for im1
    page.keyboard.press("n")
    page.wait_for_function("old => document.getElementById('box-canvas').dataset.itemId !== String(old)",
                           arg=ids["im1.png"])
    assert [r[6] for r in _rows(path, ids["im1.png"])] == ["machine"]
    assert not problems, problems
    ctx.close()

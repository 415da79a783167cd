"""The web queue makes the loop's decision (``labelloop.loop.choose``) and records it like
``labelloop next`` does, so labels given through the web count the same for certification and
``diagnose``; verify checks come first while auto-labeling waits for them. And the web app
holds no SQL of its own.

Truths are independent of the app: the query runs read back through Project, the digits'
true classes, a regex over the web package's source."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient  # noqa: E402

from conftest import wait_until  # noqa: E402
from labelloop import Project  # noqa: E402
from labelloop.web import auth  # noqa: E402
from labelloop.web.app import create_app  # noqa: E402

WEB = Path(__file__).resolve().parents[1] / "src" / "labelloop" / "web"
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE\s+FROM|CREATE\s+TABLE|PRAGMA)\b|\.execute(many)?\(|\.conn\b")


def test_the_web_app_holds_no_sql():
    """Every query lives in Store (or Project): the web app only calls methods."""
    found = []
    for path in sorted(WEB.rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if SQL.search(line) and not line.lstrip().startswith("#"):
                found.append(f"{path.relative_to(WEB)}:{n}: {line.strip()}")
    assert not found, "SQL in the web app; move it into a Store method:\n" + "\n".join(found)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """300 digits embedded with pixels, a third labeled through the Python API and refreshed,
    an annotator with an API token."""
    from labelloop.web.testing import digits_project

    root = tmp_path_factory.mktemp("webloop")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auth, "SCRYPT_N", 2**10)
        p, _, truth = digits_project(root / "proj", n=300)
        auth.add_user(p.store, "ann", "annotator", password="ann-password-1")
        token = auth.issue_token(p.store, "ann")
        p.label([(i, c) for i, c in sorted(truth.items())[::3]], annotator="cli")
        p.refresh()
        p.close()
    return root / "proj", truth, token


def _copy(digits, tmp_path) -> Path:
    path = tmp_path / "proj"
    shutil.copytree(digits[0], path)
    return path


def test_the_queue_serves_the_strategy_with_its_random_share_and_records_it(digits, tmp_path):
    path = _copy(digits, tmp_path)
    truth, token = digits[1], digits[2]
    bearer = {"Authorization": f"Bearer {token}"}
    app = create_app(path, debounce=0.01, strategy="auto")
    with TestClient(app) as client:
        ref = app.state.web.refresher
        wait_until(lambda: ref.wait_ranked(timeout=0.5), what="the first ranking")
        served = []
        for _ in range(4):
            r = client.get("/api/queue?n=5", headers=bearer)
            assert r.status_code == 200, r.text
            items = r.json()["items"]
            served += items
            for it in items:
                client.post("/api/labels", json={"item": it["id"], "label": truth[it["id"]]}, headers=bearer)
        snap = r.json()["snapshot"]
        assert snap["random_share"] == pytest.approx(0.2)
    kinds = [it["kind"] for it in served]
    # auto: one item in five is drawn at random from every unlabeled item, as `labelloop next`
    assert kinds.count("random") == 4 and kinds.count("strategy") == 16, kinds
    assert all(it["reason"] for it in served)
    with Project(path) as p:
        runs = p.store.runs("query")
        # what was served, and only that, is recorded, with who it was served to
        assert runs and all(r["params"]["annotator"] == "ann" for r in runs)
        assert [i for r in runs for i in r["summary"]["items"]] == [it["id"] for it in served]
        random_ids = {it["id"] for it in served if it["kind"] == "random"}
        strategy_ids = {it["id"] for it in served if it["kind"] == "strategy"}
        # the random ones are checks certification counts, the others are actively chosen
        checks = {c["item"]: c for r in runs for c in r["summary"]["checks"]}
        assert random_ids <= set(checks) and all(checks[i]["coverage"] is not None for i in random_ids)
        cov, guess, correct, region = p.random_checks()
        assert len(cov) == len(random_ids) and (region == 1.0).all()  # drawn from every item
        chosen = p.actively_chosen()
        assert strategy_ids <= chosen and not (random_ids & chosen)


def test_verify_checks_are_served_first_and_certify_auto_labeling_end_to_end(digits, tmp_path):
    """A real server: autolabel waits for random checks; the queue serves verify items first,
    marked with their reason; labeled with the truth through the web, they certify it."""
    import httpx

    from labelloop.web.testing import ServerProcess

    path = _copy(digits, tmp_path)
    truth, token = digits[1], digits[2]
    with Project(path) as p:
        first = p.autolabel(target_precision=0.8)
        assert not first["certificate"]["certified"] and first["certificate"]["more_needed"] > 0
        assert "--strategy verify" in first["suggest"]
    bearer = {"Authorization": f"Bearer {token}"}
    verified, last_ann = set(), 0
    with ServerProcess(path) as server, httpx.Client(base_url=server.url, headers=bearer, timeout=30) as http:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            data = http.get("/api/queue", params={"n": 10}).json()
            todo = [it for it in data["items"] if it["kind"] == "verify"]
            for it in todo:
                assert "random check" in it["reason"] and it["guess"] is not None
                out = http.post("/api/labels", json={"item": it["id"], "label": truth[it["id"]]}).json()
                verified.add(it["id"])
                last_ann = out["annotation"]
            snap = data["snapshot"]
            if not todo and snap["verify"] == 0 and snap["strategy_run"] == snap["run"] \
                    and snap["applied_annotation_id"] >= last_ann and verified:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the queue kept serving verify items:\n" + "\n".join(server.output[-30:]))
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])
    with Project(path) as p:
        web = [r for r in p.store.runs("query") if r["params"]["strategy"] == "verify"]
        assert web and all(r["params"]["annotator"] == "ann" for r in web)
        assert verified <= {c["item"] for r in web for c in r["summary"]["checks"]}
        cov, guess, correct, region = p.random_checks()
        assert len(cov) >= len(verified) > 0
        p.refresh()
        a = p.autolabel(target_precision=0.8)
    assert a["certificate"]["certified"] and a["accepted"] > 0, a

"""Reliability findings against a real app (in process, through the ASGI client of
test_web_api.py): hostile ids, swapped media files, login floods, huge bodies, loose types,
and error bodies that match the OpenAPI schema. Every load loop here is bounded in count and
time and talks to the in-process app only (no sockets), or to 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

import httpx  # noqa: E402

from labelloop.web import auth  # noqa: E402
from test_web_api import PASSWORDS, base_project, cheap_scrypt, env  # noqa: E402,F401 - shared fixtures

HUGE = [2**63, 2**63 + 5, 2**64, 10**30, -(2**63) - 1]


def _call_as(env, client_host: str, method: str, url: str, **kw) -> httpx.Response:
    """One request from another client address, into the app env.client already started."""
    async def go():
        transport = httpx.ASGITransport(app=env.app, client=(client_host, 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            return await c.request(method, url, **kw)

    return asyncio.run(go())


# ----------------------------------------------------------------------------- ids
def test_item_ids_beyond_sqlite_integers_are_clean_4xx(env):
    h = env.bearer("rita")
    before = env.annotations()
    for big in HUGE:
        for url, body in (("/api/labels", {"item": big, "label": "3"}), ("/api/skip", {"item": big}),
                          ("/api/audit", {"item": big, "label": "3", "action": "keep"}),
                          ("/api/review", {"items": [{"item": big, "label": "3"}]})):
            r = env.client.post(url, json=body, headers=h)
            assert r.status_code in (404, 422), (url, big, r.status_code, r.text)
            assert r.json()["error"] in ("validation", "unknown_item") and "item" in r.json()["detail"], r.text
    for url in ("/api/review?offset=" + str(2**63), "/api/queue?exclude=" + str(2**63),
                "/media/" + str(2**63), "/media/" + "9" * 40):
        r = env.client.get(url, headers=h)
        assert r.status_code in (404, 422), (url, r.status_code, r.text)
    # the connection still works, nothing was written
    assert env.client.get("/api/me", headers=h).status_code == 200
    assert env.annotations() == before


def test_strict_types_ascii_ids_and_no_control_characters(env):
    h = env.bearer("ann")
    before = env.annotations()
    for bad in (True, False, 1.5, "1", [1], None, {"id": 1}):
        r = env.client.post("/api/labels", json={"item": bad, "label": "3"}, headers=h)
        assert r.status_code == 422 and r.json()["error"] == "validation", (bad, r.text)
        assert "item" in r.json()["detail"]
    assert env.annotations() == before
    # class names: control characters are refused with a message that says which and where
    for name in ("a\x00b", "x\x1b[31m", "tab\there", "del\x7f", "zero\u200bwidth", "line\u2028sep"):
        r = env.client.post("/api/classes", json={"name": name}, headers=h)
        assert r.status_code == 422 and r.json()["error"] == "validation", (name, r.text)
        assert "control character" in r.json()["detail"] and "U+" in r.json()["detail"]
    assert "a\x00b" not in [c for (c,) in env.sql("SELECT name FROM classes")]
    assert env.client.post("/api/classes", json={"name": "café ünïcode"}, headers=h).status_code == 200
    # only ASCII digits address an item: ١٢ (Arabic-Indic 12) and ¹ are no ids
    for ref in ("%D9%A1%D9%A2", "%C2%B9", "%EF%BC%91%EF%BC%92", "+12", " 12", "1_2"):
        r = env.client.get(f"/media/{ref}", headers=h)
        assert r.status_code == 404 and r.json()["error"] == "unknown_item", (ref, r.text)
    r = env.client.get("/api/queue?exclude=%D9%A1%D9%A2", headers=h)
    assert r.status_code == 422 and "exclude" in r.json()["detail"]


# --------------------------------------------------------------------------- media
def test_media_refuses_a_file_swapped_after_import(env, tmp_path):
    h = env.bearer("ann")
    uri = Path(env.sql("SELECT uri FROM items WHERE id = 5")[0][0])
    original = uri.read_bytes()   # the image folder is shared by the module: restored at the end
    assert env.client.get("/media/5", headers=h).status_code == 200
    try:
        # the imported file replaced by a symlink to a system file
        uri.unlink()
        uri.symlink_to("/etc/passwd")
        for url in ("/media/5", "/media/5?w=64"):
            r = env.client.get(url, headers=h)
            assert r.status_code == 410, (url, r.status_code)
            assert b"root:" not in r.content and r.json()["error"] == "media_changed"
            assert "item 5" in r.json()["detail"] and "import" in r.json()["detail"]
        # a symlink to a copy of the very same bytes in another folder: outside the import folder
        uri.unlink()
        outside = tmp_path / "elsewhere.png"
        outside.write_bytes(original)
        uri.symlink_to(outside)
        r = env.client.get("/media/5", headers=h)
        assert r.status_code == 410 and "outside" in r.json()["detail"]
        # other bytes at the same path (same name, content changed)
        uri.unlink()
        uri.write_bytes(Path(env.sql("SELECT uri FROM items WHERE id = 6")[0][0]).read_bytes())
        r = env.client.get("/media/5", headers=h)
        assert r.status_code == 410 and "changed" in r.json()["detail"]
        uri.unlink()
        r = env.client.get("/media/5", headers=h)
        assert r.status_code == 410 and "missing" in r.json()["detail"]
    finally:
        if uri.is_symlink() or uri.exists():
            uri.unlink()
        uri.write_bytes(original)
    # the original back: served again, byte for byte
    r = env.client.get("/media/5", headers=h)
    assert r.status_code == 200 and r.content == original
    assert hashlib.sha256(r.content).hexdigest() == env.sql("SELECT content_hash FROM items WHERE id = 5")[0][0]


# --------------------------------------------------------------------------- login
def test_login_failures_are_limited_per_client_address_too(env):
    # 12 names, 3 failures each, from one address: 36 failures, never 10 on one name
    statuses = []
    for k in range(36):
        r = _call_as(env, "10.0.0.1", "POST", "/api/login", json={"name": f"user{k % 12}", "password": "nope-nope"})
        statuses.append(r.status_code)
    assert statuses[0] == 401 and statuses[-1] == 429, statuses
    r = _call_as(env, "10.0.0.1", "POST", "/api/login", json={"name": "ann", "password": PASSWORDS["ann"]})
    assert r.status_code == 429 and "address" in r.json()["detail"]
    # another address is not affected
    r = _call_as(env, "10.0.0.2", "POST", "/api/login", json={"name": "ann", "password": PASSWORDS["ann"]})
    assert r.status_code == 200


def test_a_locked_name_still_logs_in_from_another_client(env):
    for _ in range(10):
        assert _call_as(env, "10.0.0.3", "POST", "/api/login",
                        json={"name": "bob", "password": "nope-nope"}).status_code == 401
    r = _call_as(env, "10.0.0.3", "POST", "/api/login", json={"name": "bob", "password": PASSWORDS["bob"]})
    assert r.status_code == 429
    # the owner, from their own machine, is not locked out by someone else's guesses
    r = _call_as(env, "10.0.0.4", "POST", "/api/login", json={"name": "bob", "password": PASSWORDS["bob"]})
    assert r.status_code == 200


def test_concurrent_password_checks_are_bounded(env, monkeypatch):
    from labelloop.web import guard

    live, peak, lock = [0], [0], threading.Lock()
    real = auth.verify_password

    def slow_verify(password, stored):
        with lock:
            live[0] += 1
            peak[0] = max(peak[0], live[0])
        try:
            time.sleep(0.2)
            return real(password, stored)
        finally:
            with lock:
                live[0] -= 1

    monkeypatch.setattr(auth, "verify_password", slow_verify)
    n = 16   # bounded: 16 requests, each at most ~2 s
    out: list[int] = [0] * n

    async def flood():
        transport = httpx.ASGITransport(app=env.app, client=("10.1.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as c:
            async def one(k):
                ip_body = {"name": f"n{k}", "password": "nope-nope"}
                r = await c.post("/api/login", json=ip_body)
                out[k] = r.status_code
            await asyncio.gather(*(one(k) for k in range(n)))

    t0 = time.monotonic()
    asyncio.run(flood())
    assert time.monotonic() - t0 < 30
    assert peak[0] <= guard.MAX_CONCURRENT_HASHES, peak
    assert set(out) <= {401, 429} and 401 in out


# ---------------------------------------------------------------------------- bodies
def test_large_bodies_are_refused_before_they_are_read(env):
    big = b'{"item": 1, "label": "' + b"x" * (5 * 2**20) + b'"}'
    # no credentials: 401 before reading anything
    r = env.client.post("/api/labels", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 401 and r.json()["error"] == "auth"
    # credentials, but too large: 413 with the limit in the message
    r = env.client.post("/api/labels", content=big, headers={**env.bearer("ann"), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large" and "MiB" in r.json()["detail"]

    # no Content-Length (a streamed, chunked body): counted as it arrives
    def chunks():
        for _ in range(6):
            yield b"x" * 2**20

    r = env.client.post("/api/labels", content=chunks(), headers={**env.bearer("ann"), "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "too_large"
    r = env.client.post("/api/login", content=b'{"name": "' + b"a" * 200_000 + b'"}',
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    # ordinary requests are unaffected
    assert env.client.post("/api/labels", json={"item": 1, "label": "3"}, headers=env.bearer("ann")).status_code == 200


# ---------------------------------------------------------------------------- schema
def test_error_bodies_match_the_documented_schema(env):
    schema = env.client.get("/api/openapi.json", headers=env.bearer("ann")).json()
    comps = schema["components"]["schemas"]
    assert "HTTPValidationError" not in comps
    err = comps["ErrorOut"]
    assert set(err["required"]) == {"error", "detail"}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for code in ("401", "422"):
                if code == "422" and not (op.get("parameters") or op.get("requestBody")):
                    continue
                ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorOut"), (method, path, code)
    for r in (env.client.post("/api/labels", json={"item": "x"}, headers=env.bearer("ann")),
              env.client.get("/media/999999", headers=env.bearer("ann")),
              env.client.get("/api/review", headers=env.bearer("ann")),
              env.client.get("/api/nope", headers=env.bearer("ann"))):
        assert set(r.json()) == {"error", "detail"}, r.text
        assert isinstance(r.json()["error"], str) and isinstance(r.json()["detail"], str)

"""What protects the server from its clients before a route runs.

- :class:`LoginLimiter`: failed logins counted per (name, client address), per client address
  and per name across addresses. The first two lock for minutes; the third only briefly, so
  guesses at someone's name from many machines cannot keep its owner out for long.
- :class:`HashSlots`: at most ``MAX_CONCURRENT_HASHES`` password hashes at once (scrypt takes
  128 MiB each); a login that finds no slot within ``HASH_WAIT`` seconds gets 429.
- :class:`RequestGuard` (pure ASGI middleware): a request that carries a body and is not a
  login is authenticated *before* its body is read, and no body may exceed its cap (413),
  whether it announces its length or streams it in chunks.

Client addresses are what the ASGI server reports (``scope["client"]``). Behind a reverse
proxy, run uvicorn with ``--proxy-headers`` / ``--forwarded-allow-ips`` so that this is the
real client and not the proxy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request

from ..errors import LabelloopError
from .auth import TooManyAttemptsError

__all__ = ["LoginLimiter", "HashSlots", "RequestGuard", "BODY_LIMIT", "LOGIN_BODY_LIMIT"]

# (failures, window seconds): (name, address) and address lock for minutes; a name across all
# addresses only for a minute at most
PAIR_LIMIT = (10, 300.0)
ADDRESS_LIMIT = (30, 300.0)
NAME_LIMIT = (50, 60.0)
MAX_CONCURRENT_HASHES = 4     # x 128 MiB of scrypt memory
HASH_WAIT = 2.0               # seconds a login waits for a free hash slot before 429

BODY_LIMIT = 4 * 2**20        # a review of 5,000 decisions is ~250 KB
LOGIN_BODY_LIMIT = 16 * 2**10
_MAX_KEYS = 50_000            # failure records kept before old ones are pruned


class LoginLimiter:
    """Sliding windows of failure times, thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._fails: dict[tuple, list[float]] = {}

    def _recent(self, key: tuple, window: float, now: float) -> list[float]:
        times = [t for t in self._fails.get(key, ()) if now - t < window]
        if times:
            self._fails[key] = times
        else:
            self._fails.pop(key, None)
        return times

    def check(self, name: str, address: str) -> None:
        """Raise TooManyAttemptsError if this login may not even be tried now."""
        now = time.time()
        with self._lock:
            for key, (limit, window), why in (
                    (("pair", name, address), PAIR_LIMIT, f"too many failed logins for {name!r} from your address"),
                    (("addr", address), ADDRESS_LIMIT, "too many failed logins from your address"),
                    (("name", name), NAME_LIMIT, f"too many failed logins for {name!r} from many addresses")):
                recent = self._recent(key, window, now)
                if len(recent) >= limit:
                    wait = int(window - (now - recent[-limit])) + 1
                    raise TooManyAttemptsError(f"{why}; try again in {wait} s")

    def failed(self, name: str, address: str) -> None:
        now = time.time()
        with self._lock:
            if len(self._fails) > _MAX_KEYS:
                longest = max(w for _, w in (PAIR_LIMIT, ADDRESS_LIMIT, NAME_LIMIT))
                self._fails = {k: v for k, v in self._fails.items() if v and now - v[-1] < longest}
            for key in (("pair", name, address), ("addr", address), ("name", name)):
                self._fails.setdefault(key, []).append(now)


class HashSlots:
    """A bounded number of concurrent password hashes, awaited without blocking the loop."""

    def __init__(self, n: int | None = None, wait: float | None = None):
        self.n = MAX_CONCURRENT_HASHES if n is None else n
        self.wait = HASH_WAIT if wait is None else wait
        self._sem = threading.BoundedSemaphore(self.n)

    async def run(self, fn: Callable, *args):
        """``fn(*args)`` in a worker thread once a slot is free; 429 after ``wait`` seconds."""
        from starlette.concurrency import run_in_threadpool

        deadline = time.monotonic() + self.wait
        while not self._sem.acquire(blocking=False):
            if time.monotonic() >= deadline:
                raise TooManyAttemptsError("the server is busy checking other logins; try again in a few seconds")
            await asyncio.sleep(0.02)
        try:
            return await run_in_threadpool(fn, *args)
        finally:
            self._sem.release()


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB" if n >= 2**20 else f"{n // 1024} KiB"


class TooLargeError(LabelloopError):
    kind = "too_large"
    http_status = 413


class RequestGuard:
    """ASGI middleware: authenticate body-carrying requests before reading them; cap bodies.

    ``authenticate(request)`` raises a LabelloopError (401) or returns what the routes will
    find under ``scope[PRINCIPAL_KEY]``; ``respond(request, exc)`` renders an error exactly as
    the app's exception handler does."""

    PRINCIPAL_KEY = "labelloop.principal"

    def __init__(self, app, *, authenticate: Callable[[Request], object],
                 respond: Callable[[Request, LabelloopError], Awaitable], public: set[str],
                 limit: int = BODY_LIMIT, public_limit: int = LOGIN_BODY_LIMIT):
        self.app = app
        self.authenticate = authenticate
        self.respond = respond
        self.public = public
        self.limit = limit
        self.public_limit = public_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        public = path in self.public or path.startswith("/static/")
        limit = self.public_limit if public else self.limit
        headers = dict(scope.get("headers") or ())
        length = headers.get(b"content-length")
        has_body = length not in (None, b"0") or b"chunked" in headers.get(b"transfer-encoding", b"")
        if has_body and not public:
            request = Request(scope)
            try:
                scope[self.PRINCIPAL_KEY] = self.authenticate(request)
            except LabelloopError as exc:
                return await (await self.respond(request, exc))(scope, receive, send)
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                n = limit + 1
            if n > limit:
                exc = TooLargeError(f"the request body has {n} bytes; the limit is {_mib(limit)} here "
                                    "(send fewer items per request)")
                return await (await self.respond(Request(scope), exc))(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(413, f"the request body is over the limit of {_mib(limit)} "
                                                      "here (send fewer items per request)")
            return message

        await self.app(scope, counted, send)

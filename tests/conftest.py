"""Shared fixtures: real files on disk (images of every mode, broken ones), real SQLite projects."""

from __future__ import annotations

import contextlib
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def _import_plugin_packages_now() -> None:
    """Import every module of anyio here, in the main thread, before any test runs.

    pytest rewrites the asserts of every module of a plugin's package when it is first imported
    (anyio ships a pytest plugin), and anyio imports its modules lazily, so without this they
    are parsed from the web server's threads while a test runs. CPython 3.11.7's AST builder
    keeps its recursion depth in shared state: two threads parsing at once fail with
    "SystemError: AST constructor recursion depth mismatch" -- a 500 from a static file in
    test_web_api and, once, a pytest INTERNALERROR while formatting a failure."""
    import importlib
    import pkgutil

    import anyio

    for mod in pkgutil.walk_packages(anyio.__path__, "anyio."):
        try:
            importlib.import_module(mod.name)
        except ImportError:   # optional backends (trio) that are not installed
            pass


_import_plugin_packages_now()


def write_image(path: Path, mode: str = "RGB", size=(16, 12), seed: int = 0, fmt: str | None = None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
    if mode == "L":
        im = Image.fromarray(arr[..., 0], "L")
    elif mode == "RGBA":
        im = Image.fromarray(arr, "RGBA")
    elif mode == "P":
        im = Image.fromarray(arr[..., :3], "RGB").convert("P")
    else:
        im = Image.fromarray(arr[..., :3], "RGB")
    im.save(path, format=fmt)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """cat/ and dog/ subfolders with images in several formats and modes."""
    root = tmp_path / "photos"
    write_image(root / "cat" / "c1.jpg", "RGB", seed=1)
    write_image(root / "cat" / "c2.png", "RGBA", seed=2)
    write_image(root / "cat" / "c3.gif", "P", seed=3)
    write_image(root / "dog" / "d1.bmp", "RGB", seed=4)
    write_image(root / "dog" / "d2.webp", "RGB", seed=5)
    write_image(root / "dog" / "d3.png", "L", size=(1, 1), seed=6)
    return root


@pytest.fixture
def project_factory(tmp_path, request):
    from labelloop import Project

    made = []

    def make(modality: str = "image", classes=None, name: str = "proj"):
        db = None   # on PostgreSQL (each_db) every further project gets a database of its own
        if made and os.environ.get("LABELLOOP_DB"):
            db = request.getfixturevalue("pg_server").new_database()
        p = Project.init(tmp_path / name, modality=modality, classes=classes, db=db)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


# ------------------------------------------------------------------ SQLite and PostgreSQL
# Store, CLI and web tests run on both databases: `pytestmark = pytest.mark.usefixtures("each_db")`
# in a module makes each of its tests run twice; projects created without --db then go to
# SQLite, or to a fresh PostgreSQL database. The server is $LABELLOOP_TEST_PG (CI starts one
# with scripts/pg-test-cluster.sh) or, without it, a cluster this session starts and stops.
ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


class PgServer:
    def __init__(self, url: str):
        self.url = url
        self.made: list[str] = []

    def _admin(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def url_of(self, name: str) -> str:
        base, _, _ = self.url.rpartition("/")
        return f"{base}/{name}"

    def new_database(self, template: str | None = None) -> str:
        import uuid

        import psycopg

        name = "lt_" + uuid.uuid4().hex[:12]
        create = f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else "")
        with self._admin() as c:
            try:   # a file copy: twice as fast as PostgreSQL 15's default, no WAL for the copy
                c.execute(create + " STRATEGY FILE_COPY")
            except psycopg.errors.SyntaxError:   # before PostgreSQL 15
                c.execute(create)
        self.made.append(name)
        return self.url_of(name)

    def drop_since(self, start: int = 0) -> None:
        """Drop the databases made since ``len(self.made)`` was ``start``: a test's leave no trace."""
        with self._admin() as c:
            for name in self.made[start:]:
                c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        del self.made[start:]


@pytest.fixture(scope="session")
def pg_server():
    pytest.importorskip("psycopg")
    url = os.environ.get("LABELLOOP_TEST_PG")
    if url:
        server = PgServer(url)
        yield server
        server.drop_since(0)
        return
    import subprocess
    import tempfile

    folder = tempfile.mkdtemp(prefix="labelloop-pg-")
    script = str(ROOT / "scripts" / "pg-test-cluster.sh")
    proc = subprocess.run(["bash", script, "start", folder], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "LABELLOOP_PG_NO_INSTALL": "1"})
    if proc.returncode == 3:
        pytest.skip("no PostgreSQL server: set LABELLOOP_TEST_PG or install Debian's postgresql package")
    assert proc.returncode == 0, proc.stderr
    try:
        yield PgServer(proc.stdout.strip().rpartition("=")[2])
    finally:
        subprocess.run(["bash", script, "stop", folder], capture_output=True, timeout=600)


@pytest.fixture(params=BACKENDS)
def db_backend(request) -> str:
    return request.param


@pytest.fixture
def each_db(db_backend, request, monkeypatch):
    """This test once on SQLite, once on PostgreSQL ($LABELLOOP_DB set to a fresh database,
    dropped after the test with every other database it made)."""
    if db_backend == "sqlite":
        monkeypatch.delenv("LABELLOOP_DB", raising=False)
        yield db_backend
        return
    server = request.getfixturevalue("pg_server")
    start = len(server.made)
    monkeypatch.setenv("LABELLOOP_DB", server.new_database())
    yield db_backend
    import gc

    gc.collect()   # stores the test left open close their connections
    server.drop_since(start)


@pytest.fixture
def next_db(each_db, request, monkeypatch):
    """Call before a test's second ``init``: on PostgreSQL each project needs its own database."""
    def fresh() -> None:
        if each_db == "postgresql":
            monkeypatch.setenv("LABELLOOP_DB", request.getfixturevalue("pg_server").new_database())
    return fresh


@pytest.fixture(scope="module", params=BACKENDS)
def module_db(request):
    """For module-scoped projects: ``module_db.create()`` is a context in which a new project
    goes to this backend; ``module_db.copy(src, dst)`` copies a project (its database too)."""
    server = request.getfixturevalue("pg_server") if request.param == "postgresql" else None
    start = len(server.made) if server else 0
    yield _ModuleDb(request.param, server)
    if server is not None:
        server.drop_since(start)


class _ModuleDb:
    def __init__(self, backend: str, server: PgServer | None):
        self.backend, self.server = backend, server

    @contextlib.contextmanager
    def create(self):
        with pytest.MonkeyPatch.context() as m:
            if self.server is None:
                m.delenv("LABELLOOP_DB", raising=False)
            else:
                m.setenv("LABELLOOP_DB", self.server.new_database())
            yield

    def copy(self, src: Path, dst: Path) -> None:
        import shutil

        shutil.copytree(src, dst)
        if self.server is not None:
            url = (src / "database").read_text().strip()
            (dst / "database").write_text(self.server.new_database(template=url.rpartition("/")[2]) + "\n")


def wait_until(cond, timeout: float = 60.0, what: str = "condition", every: float = 0.05) -> None:
    """Return once ``cond()`` is true, checking every ``every`` seconds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def sql(project: Path, q: str, *args) -> list[tuple]:
    """Plain SQL on a project's database (either kind), committed; rows as tuples."""
    from labelloop.store import Store

    with Store(project) as s, s.transaction() as c:
        cur = c.execute(q, args)
        return [tuple(r) for r in cur.fetchall()] if cur.description else []


@contextlib.contextmanager
def serve_with_annotators(path: Path, module_db, build, *, reviewer: bool = False):
    """Build a project at ``path`` with ``build(path) -> (project, extra)``, add the annotators
    the web tests log in as ("ann" with a token, "bea" with a password; "rita", a reviewer with
    a token, when ``reviewer``), and serve it for real. Yields ``(url, extra, tokens)``, tokens
    by user name; after the server stops, no traceback may be in its output."""
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess

    tokens = {}
    with pytest.MonkeyPatch.context() as mp, module_db.create():
        mp.setattr(auth, "SCRYPT_N", 2**10)
        p, extra = build(path)
        auth.add_user(p.store, "ann", "annotator", token=True)
        tokens["ann"] = auth.issue_token(p.store, "ann")
        auth.add_user(p.store, "bea", "annotator", password="bea-password-1")
        if reviewer:
            auth.add_user(p.store, "rita", "reviewer", token=True)
            tokens["rita"] = auth.issue_token(p.store, "rita")
        p.close()
    with ServerProcess(path) as server:
        yield server.url, extra, tokens
    assert "Traceback" not in "\n".join(server.output), "\n".join(server.output[-40:])

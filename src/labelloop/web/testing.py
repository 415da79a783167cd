"""Helpers for tests and benchmarks of the web app: a real server in a subprocess, small projects.

Not imported by the app itself.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

__all__ = ["ServerProcess", "boxes_project", "digits_project", "serve_command", "tags_project", "topics_project", "TOPICS"]

_URL_RE = re.compile(r"at (http://\S+?)/?$")
_ADMIN_RE = re.compile(r"^admin login: (\S+) / (\S+)")


def serve_command(project: Path, *extra: str) -> list[str]:
    """``labelloop serve`` when the CLI has it, else the same click command through a wrapper."""
    from ..cli import cli

    if "serve" in cli.commands:
        return [sys.executable, "-m", "labelloop.cli", "serve", "-p", str(project), *extra]
    code = "from labelloop.web.cli_commands import serve; serve(prog_name='labelloop serve')"
    return [sys.executable, "-c", code, "-p", str(project), *extra]


class ServerProcess:
    """``labelloop serve`` on 127.0.0.1 and a free port, as a real subprocess.

    ``url`` and (when the server created one) ``admin`` = (name, password) are read from what
    the server prints. ``stop()`` sends SIGINT (uvicorn's graceful shutdown) and waits."""

    def __init__(self, project: Path, *extra: str, env: dict | None = None, timeout: float = 60.0):
        self.project = Path(project)
        self.cmd = serve_command(self.project, "--host", "127.0.0.1", "--port", "0", *extra)
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.timeout = timeout
        self.url: str | None = None
        self.admin: tuple[str, str] | None = None
        self.output: list[str] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ServerProcess":
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=self.env, start_new_session=True)
        lines: queue.Queue = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                self.output.append(line.rstrip("\n"))
                lines.put(line)
            lines.put(None)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        deadline = time.monotonic() + self.timeout
        while True:  # read the banner up to its last line
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start:\n" + "\n".join(self.output))
            m = _ADMIN_RE.match(line)
            if m:
                self.admin = (m.group(1), m.group(2))
            m = _URL_RE.search(line.strip())
            if m:
                self.url = m.group(1).rstrip("/")
            if line.startswith("press Ctrl+C") and self.url:
                break
        self._wait_ready(deadline)
        return self

    def _wait_ready(self, deadline: float) -> None:
        import httpx

        while time.monotonic() < deadline:
            try:
                r = httpx.get(self.url + "/login", timeout=2)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the server did not answer:\n" + "\n".join(self.output))

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)   # a refresh in flight finishes first; slow on a loaded machine
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._pump.join(timeout=10)   # the rest of the output, then close the pipe
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def digits_project(path: Path, *, n: int | None = None, data_dir: Path | None = None, seed: int = 0):
    """A project of scikit-learn digits (PNG files), embedded with the ``pixels`` backbone.
    Returns (Project, dataset, {item id: true class name})."""
    from ..datasets import load_dataset, write_image_folder
    from ..project import Project

    ds = load_dataset("digits", n=n, seed=seed)
    data_dir = data_dir or Path(path).parent / (Path(path).name + "-images")
    paths = write_image_folder(ds, data_dir)
    p = Project.init(path, modality="image", classes=ds.class_names)
    p.import_(data_dir)
    p.embed("pixels")
    truth_by_ext = {q.relative_to(data_dir).as_posix(): ds.class_names[y] for q, y in zip(paths, ds.labels)}
    truth = {it.id: truth_by_ext[it.external_id] for it in p.store.items()}
    return p, ds, truth


def boxes_project(path: Path, *, n: int = 6, classes: tuple[str, ...] = ("cat", "dog", "car")):
    """A detection project of ``n`` 200x150 PNG images (im0.png ...), no detector; im0 and im1
    carry machine pre-labels with scores: im0 a cat at (20, 30, 60, 40) scored 0.9 and a dog at
    (120, 60, 50, 50) scored 0.4, im1 a car at (10, 10, 30, 30) scored 0.7.
    Returns (open Project, {file name: item id})."""
    from PIL import Image

    from ..project import Project

    path = Path(path)
    folder = path.parent / (path.name + "-images")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        im = Image.new("RGB", (200, 150), (30 + 30 * i % 200, 120, 220 - 25 * i % 200))
        im.paste((250, 250, 250), (20 + 10 * i, 30, 80 + 10 * i, 70))   # an "object" to box
        im.save(folder / f"im{i}.png")
    p = Project.init(path, modality="image", task="detection", classes=list(classes))
    p.import_(folder)
    ids = {it.external_id: it.id for it in p.store.items()}
    cid = p.store.class_ids()
    pre = [("im0.png", 20, 30, 60, 40, classes[0], 0.9), ("im0.png", 120, 60, 50, 50, classes[1], 0.4),
           ("im1.png", 10, 10, 30, 30, classes[2], 0.7)]
    p.store.add_boxes([{"item_id": ids[f], "x": x, "y": y, "w": w, "h": h, "class_id": cid[c], "source": "machine",
                        "score": s} for f, x, y, w, h, c, s in pre if f in ids])
    return p, ids


TOPICS = {   # two topics of short texts: what topics_project writes
    "billing": "invoice payment charged account billing money card bank".split(),
    "bug": "crash error freeze screen button broken slow update".split(),
}


def topics_project(path: Path, *, rules: bool = True):
    """40 short texts (billing0..19, bug0..19; bug0..bug5 also say "zzz") embedded with
    TF-IDF, one human label (billing0). With ``rules``: a rule "zzz" voting bug on those six,
    a rule "money" voting billing on texts saying "invoice", and a full refresh that used them.
    Returns the open Project."""
    import numpy as np

    from ..project import Project

    path = Path(path)
    rng = np.random.default_rng(0)
    lines = ["id,text"]
    for c, words in TOPICS.items():
        for i in range(20):
            extra = " zzz" if c == "bug" and i < 6 else ""
            lines.append(f"{c}{i},{' '.join(rng.choice(words, size=6))}{extra}")
    csv = path.parent / (path.name + "-texts.csv")
    csv.write_text("\n".join(lines) + "\n")
    p = Project.init(path, modality="text", classes=list(TOPICS))
    p.import_(csv)
    p.embed("tfidf")
    p.label([("billing0", "billing")])
    if rules:
        p.add_rule("zzz", label="bug", contains=["zzz"], author="lead")
        p.add_rule("money", label="billing", contains=["invoice"], author="lead")
        p.refresh(full=True)
    return p


def tags_project(path: Path, *, refresh: bool = True):
    """A multi-label project of 40 short texts (billing0..19, bug0..19; every 4th also says
    "asap") with classes billing, bug, urgent, embedded with TF-IDF. Six items are decided by
    "lead" (billing0-2 billing, bug0-2 bug; billing0 and bug0 urgent too); with ``refresh``
    a refresh has scored every class. Returns the open Project."""
    import numpy as np

    from ..project import Project

    path = Path(path)
    rng = np.random.default_rng(1)
    lines = ["id,text"]
    for c, words in TOPICS.items():
        for i in range(20):
            extra = " asap" if i % 4 == 0 else ""
            lines.append(f"{c}{i},{' '.join(rng.choice(words, size=6))}{extra}")
    csv = path.parent / (path.name + "-texts.csv")
    csv.write_text("\n".join(lines) + "\n")
    p = Project.init(path, modality="text", classes=["billing", "bug", "urgent"], task="multilabel")
    p.import_(csv)
    p.embed("tfidf")
    p.label_many_classes([("billing0", ["billing", "urgent"]), ("billing1", ["billing"]), ("billing2", ["billing"]),
                          ("bug0", ["bug", "urgent"]), ("bug1", ["bug"]), ("bug2", ["bug"])], annotator="lead")
    if refresh:
        p.refresh()
    return p

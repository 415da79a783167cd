"""End-to-end latency of what a user waits for after labeling: ``labelloop refresh`` in a fresh
process, and a real ``labelloop serve`` (label submit -> refreshed predictions visible,
/api/status, /api/dashboard), on synthetic 384-d projects of 100k (and 1M) items.

    python benchmarks/e2e_latency.py --n 100000                         # this code only
    python benchmarks/e2e_latency.py --n 100000 --baseline /work/main/src   # + main, same run

Project: n text items with synthetic 384-d embeddings (10 classes x 5 Gaussian clusters in a
32-d latent space mapped to 384-d plus noise; benchmarks/refresh_latency.py's generator) stored
as the active backbone; the kNN graph is built once (``Project.graph``, not timed) and one
full refresh is run with 3 human labels per class. Each variant (this checkout, and with
``--baseline`` another source tree, e.g. main's) works on its own copy of that project.

Measured per variant, ``--runs`` times each (medians reported):

- CLI: 10 new human labels (random unlabeled items, their true class), then
  ``python -m labelloop.cli refresh -p DIR`` as a child process: wall time, CPU seconds (user +
  system of the child, from wait4) and the child's peak RSS;
- server (``--server``): a real ``labelloop serve`` subprocess; POST /api/labels, then poll
  GET /api/queue?n=1 every 10 ms until its snapshot's ``applied_annotation_id`` covers the
  label (refreshed predictions visible); labels 0.3 s apart so each is its own refresh. Then
  GET /api/status and GET /api/dashboard right after a label.

Writes benchmarks/results/e2e_latency_<n>.json and .md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from refresh_latency import make_latent_embeddings  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CACHE_ID = "synthetic-384"
SRC = Path(__file__).resolve().parent.parent / "src"


def build(path: Path, n: int, *, seed: int = 0) -> dict:
    """Create the project, its embeddings, graph, seed labels, a first refresh and a user."""
    from labelloop import Project
    from labelloop.web import auth

    t: dict = {}
    t0 = time.perf_counter()
    X, _, y = make_latent_embeddings(n, seed=seed)
    p = Project.init(path, modality="text", classes=[f"c{c}" for c in range(10)])
    for s in range(0, n, 50_000):
        texts = [f"item {i}" for i in range(s, min(n, s + 50_000))]
        hashes = [hashlib.sha256(b"text\0" + x.encode()).hexdigest() for x in texts]
        p.store.add_items([{"external_id": str(s + j), "text": x, "content_hash": h, "modality": "text"}
                           for j, (x, h) in enumerate(zip(texts, hashes))])
        p.store.add_embedding_chunk(CACHE_ID, hashes, X[s:s + 50_000])
    p.store.set_meta("backbone", {"id": "fake", "cache_id": CACHE_ID, "options": {}})
    del X
    t["items_and_embeddings_s"] = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    ids, g = p.graph()
    t["graph_s"], t["graph_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
    rng = np.random.default_rng(seed)
    seed_rows = np.concatenate([rng.choice(np.flatnonzero(y == c), 3, replace=False) for c in range(10)])
    cid = p.store.class_ids()
    p.store.add_annotations([(int(ids[r]), cid[f"c{y[r]}"]) for r in seed_rows], source="human", annotator="seed")
    t0 = time.perf_counter()
    p.refresh(full=True)
    t["first_refresh_s"] = time.perf_counter() - t0
    auth.add_user(p.store, "bench", "annotator", token=True)
    (path / "bench_token.txt").write_text(auth.issue_token(p.store, "bench"))
    np.save(path / "truth.npy", y)
    p.close()
    return {k: round(v, 2) for k, v in t.items()} | {"graph_method": g.method, "k": g.k}


def add_labels(path: Path, count: int, rng: np.random.Generator, src: Path) -> None:
    """``count`` new human labels of random unlabeled items (their true class), written in a
    child process running the variant's code (its store, its schema)."""
    code = (
        "import sys, numpy as np\n"
        "from labelloop.store import Store\n"
        f"s = Store({str(path)!r}); y = np.load({str(path / 'truth.npy')!r})\n"
        "ids = s.item_ids(); have = set(s.latest_labels('human'))\n"
        f"rng = np.random.default_rng({int(rng.integers(1 << 31))})\n"
        "free = np.flatnonzero([int(i) not in have for i in ids])\n"
        f"pick = rng.choice(free, {count}, replace=False)\n"
        "cid = s.class_ids()\n"
        "s.add_annotations([(int(ids[r]), cid[f'c{y[r]}']) for r in pick], source='human', annotator='bench')\n"
        "s.close()\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(src))


def _env(src: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(src)}


def run_child(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds (user + system) and peak RSS (MB) of the child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{out}\n{err}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
            "peak_rss_mb": ru.ru_maxrss / 1024, "stdout": out.strip()}


def measure_cli(path: Path, src: Path, runs: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    env = _env(src)
    # imports alone: the floor of any command in a fresh process
    floor = [run_child([sys.executable, "-c", "import labelloop.cli, labelloop.project, numpy, scipy.sparse"], env)
             for _ in range(3)]
    got = []
    for r in range(runs):
        add_labels(path, 10, rng, src)
        m = run_child([sys.executable, "-m", "labelloop.cli", "refresh", "-p", str(path), "--json"], env)
        s = json.loads(m.pop("stdout"))
        m.update(warm=s["warm"], warm_updates=s.get("warm_updates"), load=os.getloadavg()[0])
        got.append(m)
        print(f"  cli run {r}: {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} CPU-s, {m['peak_rss_mb']:.0f} MB, "
              f"warm={m['warm']} load {m['load']:.1f}", flush=True)
    return {"runs": got, **{f"{k}_median": round(statistics.median(g[k] for g in got), 3)
                           for k in ("wall_s", "cpu_s", "user_s", "sys_s", "peak_rss_mb")},
            "import_floor_cpu_s": round(statistics.median(f["cpu_s"] for f in floor), 3)}

"""The store on SQLite vs PostgreSQL: the operations a project repeats, timed on both.

    PYTHONPATH=src python benchmarks/store_backends.py --pg postgresql://user@127.0.0.1:PORT/postgres [--n 20000] [--repeats 3]

--pg is a server where the role may CREATE DATABASE (e.g. `scripts/pg-test-cluster.sh start`,
whose cluster runs without fsync: a lower bound for a durable server). Each repeat makes a
fresh project on each backend. Wall seconds (the server's CPU is another process) and this
process's CPU seconds, medians; the ratio is PostgreSQL / SQLite in the same run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from labelloop.store import Store  # noqa: E402


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def one_run(folder: Path, n: int, db: str | None) -> dict[str, tuple[float, float]]:
    s = Store(folder, create=True, db=db)
    out = {}
    rows = [{"content_hash": f"h{i}", "modality": "text", "text": f"text {i}"} for i in range(n)]
    out["add_items (one transaction)"] = _timed(lambda: s.add_items(rows))
    s.add_classes([f"c{k}" for k in range(10)])
    cids = list(s.class_ids().values())
    rng = np.random.default_rng(0)
    labeled = rng.choice(np.arange(1, n + 1), n // 4, replace=False)
    out["add_annotations (n/4 rows)"] = _timed(lambda: s.add_annotations(
        [(int(i), cids[int(i) % 10]) for i in labeled], source="human", annotator="a"))
    out["latest_labels human"] = _timed(lambda: s.latest_labels("human"))
    out["item_ids + items()"] = _timed(lambda: (s.item_ids(), s.items()))
    ids = s.item_ids()
    some = [int(i) for i in rng.choice(ids, 200, replace=False)]
    out["200 single-label writes (web)"] = _timed(lambda: [s.add_human_labels([(i, cids[0])], annotator="w")
                                                          for i in some])
    out["200 status polls"] = _timed(lambda: [(s.last_annotation_id(), s.unlabeled_count(), s.items_key())
                                             for _ in range(200)])
    s.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pg", required=True, help="PostgreSQL server URL (a role that may CREATE DATABASE)")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    import psycopg

    results: dict[str, dict[str, list[tuple[float, float]]]] = {"sqlite": {}, "postgresql": {}}
    base = a.pg.rpartition("/")[0]
    for r in range(a.repeats):
        for backend in ("sqlite", "postgresql"):
            db = None
            if backend == "postgresql":
                name = "bench_" + uuid.uuid4().hex[:10]
                with psycopg.connect(a.pg, autocommit=True) as c:
                    c.execute(f"CREATE DATABASE {name}")
                db = f"{base}/{name}"
            with tempfile.TemporaryDirectory() as d:
                for op, t in one_run(Path(d) / "p", a.n, db).items():
                    results[backend].setdefault(op, []).append(t)
            if db:
                with psycopg.connect(a.pg, autocommit=True) as c:
                    c.execute(f"DROP DATABASE {name} WITH (FORCE)")
    print(f"n = {a.n} items, {a.repeats} repeats, load average {os.getloadavg()[0]:.2f} at the end\n")
    print("| operation | SQLite wall s | PostgreSQL wall s | ratio PG/SQLite | SQLite client CPU s | PG client CPU s |")
    print("|---|---|---|---|---|---|")
    for op in results["sqlite"]:
        sw = statistics.median(t[0] for t in results["sqlite"][op])
        pw = statistics.median(t[0] for t in results["postgresql"][op])
        sc = statistics.median(t[1] for t in results["sqlite"][op])
        pc = statistics.median(t[1] for t in results["postgresql"][op])
        print(f"| {op} | {sw:.3f} | {pw:.3f} | {pw / sw:.2f} | {sc:.3f} | {pc:.3f} |")


if __name__ == "__main__":
    main()

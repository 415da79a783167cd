"""/api/status and /api/dashboard latency on a 100k-item project, against a real `labelloop
serve` process (target: <= 0.3 s each on an idle core).

    python benchmarks/web_dashboard_latency.py              # 100k items
    python benchmarks/web_dashboard_latency.py --n 20000

Project: the one of ``web_latency.py`` (synthetic 64-d embeddings, kNN graph, 30 seed labels,
one refresh) plus a reviewer. Measured over HTTP on 127.0.0.1 with the reviewer's token:

- first: the first GET of each after the server is warm (caches empty);
- after a label: one label POSTed, its refresh applied, then GET: what a reviewer watching
  the dashboard while a team labels pays (the dashboard is cached per labels-and-run
  version, the status is computed per request);
- repeated: the same GET again with nothing changed.

Writes benchmarks/results/web_dashboard_latency.json and .md (medians and p95).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from web_latency import build, summary  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def measure(path: Path, *, labels: int) -> dict:
    import httpx

    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess

    from labelloop import Project

    with Project(path) as p:
        if auth.get_user(p.store, "boss") is None:
            auth.add_user(p.store, "boss", "reviewer", token=True)
        reviewer = auth.issue_token(p.store, "boss")
    annotator = (path / "bench_token.txt").read_text().strip()
    truth = np.load(path / "truth.npy")
    out: dict = {"first": {}, "after_label": {"status": [], "dashboard": []}, "repeated": {"status": [], "dashboard": []}}
    with ServerProcess(path, timeout=600) as server, \
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {reviewer}"}, timeout=120) as rev, \
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {annotator}"}, timeout=120) as ann:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:   # the catch-up refresh and the first ranking
            s = ann.get("/api/queue", params={"n": 1}).json()
            if s["refresh"]["state"] == "idle" and s["refresh"]["ranking"] == "idle" \
                    and s["snapshot"]["strategy_run"] == s["snapshot"]["run"]:
                break
            time.sleep(0.2)
        time.sleep(2.0)   # let the ranker and the map precompute settle: an idle server

        def get(url: str) -> float:
            t0 = time.perf_counter()
            r = rev.get(url)
            assert r.status_code == 200, r.text
            return time.perf_counter() - t0

        out["first"] = {"status": get("/api/status"), "dashboard": get("/api/dashboard")}
        for _ in range(labels):
            item = ann.get("/api/queue", params={"n": 1}).json()["items"][0]
            done = ann.post("/api/labels", json={"item": item["id"],
                                                 "label": f"c{truth[int(item['name'])]}"}).json()["annotation"]
            while ann.get("/api/queue", params={"n": 1}).json()["snapshot"]["applied_annotation_id"] < done:
                time.sleep(0.02)
            while rev.get("/api/me").status_code == 200 and \
                    ann.get("/api/queue", params={"n": 1}).json()["refresh"]["ranking"] != "idle":
                time.sleep(0.02)   # measure on an idle server: the ranking done too
            out["after_label"]["dashboard"].append(get("/api/dashboard"))
            out["after_label"]["status"].append(get("/api/status"))
            out["repeated"]["dashboard"].append(get("/api/dashboard"))
            out["repeated"]["status"].append(get("/api/status"))
    return {"first_ms": {k: round(1000 * v, 1) for k, v in out["first"].items()},
            "after_label": {k: summary(v) for k, v in out["after_label"].items()},
            "repeated": {k: summary(v) for k, v in out["repeated"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/labelloop-web-dashboard"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    path = args.dir / f"n{args.n}"
    built = None
    if not (path / "bench_token.txt").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        built = build(path, args.n)
    load_before = [round(x, 2) for x in os.getloadavg()]
    measured = measure(path, labels=args.labels)
    load_after = [round(x, 2) for x in os.getloadavg()]
    # the 1, 5 and 15 minute load averages: other work on the same cores inflates the figures
    result = {"n": args.n, "labels": args.labels, "built": built, **measured,
              "load_average": {"before": load_before, "after": load_after},
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}}
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "web_dashboard_latency.json").write_text(json.dumps(result, indent=2) + "\n")
        md = ["| request | first (ms) | after a label: median / p95 (ms) | repeated: median (ms) |", "|---|---|---|---|"]
        for k in ("status", "dashboard"):
            a, r = result["after_label"][k], result["repeated"][k]
            md.append(f"| /api/{k} | {result['first_ms'][k]} | {a['median_ms']} / {a['p95_ms']} | {r['median_ms']} |")
        (RESULTS / "web_dashboard_latency.md").write_text(
            f"# /api/status and /api/dashboard, {args.n} items\n\n`python benchmarks/web_dashboard_latency.py "
            f"--n {args.n} --labels {args.labels}`\n\n" + "\n".join(md) + "\n\n"
            f"Load average (1, 5, 15 min) on {result['machine']['cpus']} cores: before {load_before}, "
            f"after {load_after}.\n")


if __name__ == "__main__":
    main()

"""What OpenBLAS's idle worker threads cost a command: CPU seconds with the library's default
(threads spin ~0.1 s after starting and after every call before they sleep; set as
``OPENBLAS_THREAD_TIMEOUT=28``, its default, since the CLI now sets 4 itself) and with
``OPENBLAS_THREAD_TIMEOUT=4`` (they sleep at once; what the ``labelloop`` CLI sets before numpy
loads), in the same run, interleaved:

- ``python -c "import numpy"``;
- ``labelloop status --json`` on a project (``--project``; default: a 20k-item synthetic one
  built here with a graph and a first refresh);
- a kNN graph build of ``--graph-n`` synthetic 384-d vectors (large products, where the threads
  work): CPU and wall seconds.

    python benchmarks/blas_idle.py                     # 7 runs each, medians
    python benchmarks/blas_idle.py --n 100000 --graph-n 300000 --out blas_idle_100000

Child processes run this checkout's code; CPU = user + system of the child (wait4). Writes
benchmarks/results/blas_idle.json / .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parent.parent / "src"
#: OpenBLAS's default timeout is 2^28 cycles; set explicitly, since the CLI would set 4 itself
SETTINGS = {"default": "28", "timeout 4": "4"}

GRAPH = r"""
import sys, time
sys.path.insert(0, {bench!r})
from refresh_latency import make_latent_embeddings
from labelloop.graph import build_knn_graph
X, _, _ = make_latent_embeddings({n}, seed=0)
t = time.perf_counter()
build_knn_graph(X, k=20)
print(time.perf_counter() - t)
"""


def child(cmd: list[str], timeout: str) -> tuple[float, float, str]:
    """(CPU s, wall s, stdout) of ``cmd`` with OPENBLAS_THREAD_TIMEOUT set to ``timeout``."""
    env = os.environ | {"PYTHONPATH": str(SRC), "OPENBLAS_THREAD_TIMEOUT": timeout}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    out = proc.stdout.read().decode()
    proc.stdout.close()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"{cmd} failed")
    return ru.ru_utime + ru.ru_stime, wall, out


def build_project(path: Path, n: int) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from e2e_latency import build

    build(path, n)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--project", type=Path, default=None, help="a project for `status` (default: build one)")
    ap.add_argument("--n", type=int, default=20_000, help="items of the project built when --project is not given")
    ap.add_argument("--graph-n", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/labelloop-blas-idle"))
    ap.add_argument("--out", default="blas_idle", metavar="NAME", help="results file name in benchmarks/results")
    args = ap.parse_args()
    project = args.project
    if project is None:
        shutil.rmtree(args.dir, ignore_errors=True)
        project = args.dir / "proj"
        project.parent.mkdir(parents=True)
        build_project(project, args.n)
    commands = {
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
        "labelloop status --json": [sys.executable, "-m", "labelloop.cli", "status", "-p", str(project), "--json"],
        f"kNN graph build, {args.graph_n:,} x 384": [sys.executable, "-c", GRAPH.format(
            bench=str(Path(__file__).parent), n=args.graph_n)],
    }
    got = {c: {s: {"cpu": [], "wall": []} for s in SETTINGS} for c in commands}
    for r in range(args.runs):
        for c, cmd in commands.items():
            if c.startswith("kNN") and r >= max(3, args.runs // 2):
                continue   # (a build takes seconds: fewer runs)
            for s, timeout in SETTINGS.items():
                cpu, wall, out = child(cmd, timeout)
                got[c][s]["cpu"].append(cpu)
                got[c][s]["wall"].append(float(out) if c.startswith("kNN") else wall)
        print(f"run {r} done", flush=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
              "command": "python benchmarks/blas_idle.py " + " ".join(sys.argv[1:]),
              "load_average": list(os.getloadavg()), "runs": got}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2))
    lines = ["# OpenBLAS's idle threads: spinning (default) vs sleeping at once (OPENBLAS_THREAD_TIMEOUT=4)", "",
             f"Command: `{result['command']}` on {result['machine']}, load average after "
             f"{[round(x, 2) for x in result['load_average']]}. Medians; CPU = user + system of the child; "
             "the graph build's wall is the build alone.", "",
             "| command | CPU s, default | CPU s, timeout 4 | ratio | wall s, default | wall s, timeout 4 |",
             "|---|---:|---:|---:|---:|---:|"]
    for c, by in got.items():
        cd, ct = (statistics.median(by[s]["cpu"]) for s in SETTINGS)
        wd, wt = (statistics.median(by[s]["wall"]) for s in SETTINGS)
        lines.append(f"| {c} (n={len(by['default']['cpu'])}) | {cd:.3f} | {ct:.3f} | {cd / ct:.2f}x | {wd:.3f} | {wt:.3f} |")
    lines += ["", "Ratio = default / timeout 4 (how many times less CPU the threads take when they sleep at once)."]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

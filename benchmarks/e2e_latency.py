"""End-to-end latency of what a user waits for after labeling: ``labelloop refresh`` in a fresh
process, and a real ``labelloop serve`` (label submit -> refreshed predictions visible,
/api/status, /api/dashboard), on synthetic 384-d projects of 100k (and 1M) items.

    python benchmarks/e2e_latency.py --n 100000                         # this code only
    python benchmarks/e2e_latency.py --n 100000 --baseline /work/main/src   # + main, same run
    python benchmarks/e2e_latency.py --n 100000 --baseline /work/main/src --full --runs 3

Project: n text items with synthetic 384-d embeddings (10 classes x 5 Gaussian clusters in a
32-d latent space mapped to 384-d plus noise; benchmarks/refresh_latency.py's generator) stored
as the active backbone; the kNN graph is built once (``Project.graph``, not timed) and one
full refresh is run with 3 human labels per class. Each variant (this checkout, and with
``--baseline`` another source tree, e.g. main's) works on its own copy of that project; the
variants are measured in turn, run by run and label by label (their servers run side by side),
so a change in the shared machine's load hits each alike.

Measured per variant, ``--runs`` times each (medians reported):

- CLI: 10 new human labels (random unlabeled items, their true class), then
  ``python -m labelloop.cli refresh -p DIR`` as a child process: wall time, CPU seconds (user +
  system of the child, from wait4) and the child's peak RSS; with ``--full`` the timed command
  is ``refresh --full`` (a full propagation whose classifier head reads every vector);
- server (``--server``): a real ``labelloop serve`` subprocess; POST /api/labels, then
  GET /api/queue?n=1 until its snapshot's ``applied_annotation_id`` covers the label (refreshed
  predictions visible): ``--refreshes`` labels with ``after=<label>&wait=30`` (the server
  answers once they are served; a server without those parameters answers at once and the
  client polls every 10 ms), then as many polling every 10 ms (each poll is a request the
  server's CPU and GIL also serve while it refreshes); labels 0.3 s apart so each is its own
  refresh. Then GET /api/status and GET /api/dashboard right after a label. Per label, the
  refresher's own account of the wait (status ``last_visible``: queued before the refresh, then
  on a CPU, runnable waiting for a core, blocked). ``--server-only`` skips the CLI part
  (results in e2e_latency_<n>_server.*).
- ``--touch-memory GB``: first write and free that much memory (a newly booted virtual
  machine pays system time on the first touch of every page: the timed commands' page cache
  and arrays would pay it otherwise; the figures committed were taken after it, or on a
  machine that had run for a while).
- ``--pause S``: S seconds between the 10 labels and each timed CLI refresh, as between a
  person's labels and the next refresh: a virtual machine whose balloon reports free memory
  gives memory freed before (the previous commands') back to its host meanwhile, and the
  refresh pays system time to touch it again (benchmarks/results/fresh_memory.md); without a
  pause it reuses what the commands just before it freed.
- ``--machine-labels N``: first give N items accepted machine labels (a project after
  ``autolabel``: the refresh, the server's snapshot and its status read them too).

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


def add_machine_labels(path: Path, count: int, src: Path, seed: int = 7) -> None:
    """``count`` accepted machine labels (as ``autolabel`` writes them: source machine, one
    transaction) of random items without a human label, their true class: a project after
    auto-labeling, where every reader of the current labels reads these too."""
    code = (
        "import numpy as np\n"
        "from labelloop.store import Store\n"
        f"s = Store({str(path)!r}); y = np.load({str(path / 'truth.npy')!r})\n"
        "ids = s.item_ids(); have = set(s.latest_labels('human'))\n"
        f"rng = np.random.default_rng({seed})\n"
        "free = np.flatnonzero([int(i) not in have for i in ids])\n"
        f"pick = rng.choice(free, min({count}, len(free)), replace=False)\n"
        "cid = s.class_ids()\n"
        "s.add_annotations([(int(ids[r]), cid[f'c{y[r]}']) for r in pick], source='machine', annotator='autolabel')\n"
        "s.close()\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(src))


def _env(src: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(src)}


#: run a module as ``python -m`` would, then print the process's own peak RSS (VmHWM) to stderr.
#: The child's ru_maxrss from wait4 is not its own: Linux carries the forking parent's RSS into
#: it at exec, so a benchmark process holding 1 GB reported 1 GB for every child.
HWM = ("import atexit, runpy, sys\n"
       "atexit.register(lambda: sys.stderr.write('\\n' + next(l for l in open('/proc/self/status') "
       "if l.startswith('VmHWM'))))\n"
       "sys.argv = sys.argv[1:]\n"
       "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


def run_child(cmd: list[str], env: dict) -> dict:
    """Run ``cmd``; wall seconds, CPU seconds (user + system) and peak RSS (MB: the child's own
    VmHWM when ``cmd`` is ``python -m MODULE ...``, else wait4's ru_maxrss) of the child."""
    if cmd[1] == "-m":
        cmd = [cmd[0], "-c", HWM, *cmd[2:]]
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
    hwm = [line.split()[1] for line in err.splitlines() if line.startswith("VmHWM:")]
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
            "peak_rss_mb": int(hwm[-1]) / 1024 if hwm else ru.ru_maxrss / 1024, "stdout": out.strip()}


def measure_cli(variants: dict[str, tuple[Path, Path]], runs: int, seed: int, full: bool = False,
                pause: float = 0.0) -> dict:
    """``variants``: name -> (its project copy, its source tree). Interleaved run by run (this,
    baseline, this, ...) so a change in the machine's load hits every variant alike. ``pause``:
    seconds between the labels and the timed refresh."""
    rng = {name: np.random.default_rng(seed) for name in variants}   # the same labels for each
    env = {name: _env(src) for name, (_, src) in variants.items()}
    floor: dict = {name: [] for name in variants}
    floor_np: dict = {name: [] for name in variants}
    got: dict = {name: [] for name in variants}
    for _ in range(3):   # imports alone: the floor of any command in a fresh process
        for name in variants:
            floor[name].append(run_child([sys.executable, "-c", "import labelloop.cli, labelloop.project, numpy, "
                                          "scipy.sparse"], env[name]))
            floor_np[name].append(run_child([sys.executable, "-c", "import labelloop.cli, labelloop.project, numpy"],
                                            env[name]))
    # one untimed refresh first: whatever the variant stores once per graph (or per upgrade) is made
    for name, (path, src) in variants.items():
        add_labels(path, 10, rng[name], src)
        run_child([sys.executable, "-m", "labelloop.cli", "refresh", "-p", str(path)], env[name])
    for r in range(runs):
        for name, (path, src) in variants.items():
            add_labels(path, 10, rng[name], src)
            time.sleep(pause)
            m = run_child([sys.executable, "-m", "labelloop.cli", "refresh", "-p", str(path), "--json"]
                          + (["--full"] if full else []), env[name])
            s = json.loads(m.pop("stdout"))
            m.update(warm=s["warm"], warm_updates=s.get("warm_updates"), load=os.getloadavg()[0],
                     refit=s.get("refit"), drain_steps=s.get("drain_steps"), residual=s.get("residual"))
            got[name].append(m)
            print(f"  cli run {r} {name}: {m['wall_s']:.2f} s wall, {m['cpu_s']:.2f} CPU-s, "
                  f"{m['peak_rss_mb']:.0f} MB, warm={m['warm']} load {m['load']:.1f}", flush=True)
    return {name: {"runs": g, **{f"{k}_median": round(statistics.median(x[k] for x in g), 3)
                                 for k in ("wall_s", "cpu_s", "user_s", "sys_s", "peak_rss_mb")},
                   "cpu_s_mean": round(statistics.mean(x["cpu_s"] for x in g), 3),
                   "cpu_s_max": round(max(x["cpu_s"] for x in g), 3),
                   "import_floor_cpu_s": round(statistics.median(f["cpu_s"] for f in floor[name]), 3),
                   "import_floor_numpy_only_cpu_s": round(statistics.median(f["cpu_s"] for f in floor_np[name]), 3)}
            for name, g in got.items()}


def compile_tree(src: Path) -> None:
    """Byte-compile a source tree, as an installed package is: with PYTHONDONTWRITEBYTECODE set
    (it is on the machines these run on) every child would otherwise compile labelloop's
    modules from source, 0.1-0.2 CPU-s of every command."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(src / "labelloop")], check=True,
                   stdout=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})


def _tell_if_failed(name: str, server) -> None:
    """A server that stopped (e.g. killed for memory): its last words, before the error it caused."""
    if server.proc is not None and server.proc.poll() is not None:
        print(f"server {name} exited with {server.proc.returncode}:\n" + "\n".join(server.output[-30:]), flush=True)


#: the refresher's account of a label's wait until visible (its status ``last_visible``)
VISIBLE_PARTS = {"queued_s": "queued before the refresh started", "refresh_s": "refresh start -> visible (wall)",
                 "on_cpu_s": "of which on a CPU", "runqueue_s": "of which runnable, waiting for a core",
                 "blocked_s": "of which blocked (GIL, locks, writer, disk)"}


def measure_server(variants: dict[str, tuple[Path, Path]], refreshes: int, requests: int) -> dict:
    """A real ``labelloop serve`` per variant, all started at once (an idle server costs
    nothing) and labeled in turn, label by label, so load changes hit every variant alike."""
    import contextlib

    import httpx

    from labelloop.store import Store
    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess

    out: dict = {}
    with contextlib.ExitStack() as stack:
        clients = {}
        for name, (path, src) in variants.items():
            token = (path / "bench_token.txt").read_text().strip()
            with Store(path) as st:   # status and the dashboard are a reviewer's pages
                auth.add_user(st, "bench-reviewer", "reviewer", token=True)
                reviewer = auth.issue_token(st, "bench-reviewer")
            server = stack.enter_context(ServerProcess(path, env=_env(src), timeout=900))
            stack.callback(_tell_if_failed, name, server)
            # idle connections dropped after 2 s, before the server's keep-alive (5 s) closes them:
            # a POST sent on a connection the server is closing is reset (at 1M items a label of
            # the other variant can take that long)
            limits = httpx.Limits(keepalive_expiry=2.0)
            clients[name] = (
                stack.enter_context(httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                                                 timeout=120, limits=limits)),
                stack.enter_context(httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {reviewer}"},
                                                 timeout=120, limits=limits)),
                np.load(path / "truth.npy"))
        for c, _, _ in clients.values():
            deadline = time.monotonic() + 900   # the server starts warm: wait for its first refresh and ranking
            while time.monotonic() < deadline:
                s = c.get("/api/queue", params={"n": 1}).json()
                if s["refresh"]["state"] == "idle" and s["refresh"]["ranking"] == "idle":
                    break
                time.sleep(0.2)
        time.sleep(1.0)
        held = {name: c.get("/api/queue", params={"n": 2 * refreshes + 5}).json()["items"]
                for name, (c, _, _) in clients.items()}
        keys = ("refresh_applied_s", "refresh_applied_polled_s", "server_refresh_s", "server_visible_cpu_s",
                "status_s", "dashboard_s", "drain_steps_after_visible", "load",
                *(f"visible_{part}" for part in VISIBLE_PARTS))
        out = {name: {k: [] for k in keys} for name in variants}
        for r in range(2 * refreshes):
            # the first half waits for the refreshed predictions in one request (after/wait: the
            # server answers when they are served; code without it answers at once and the client
            # polls), the second half polls every 10 ms as a client without it would
            long_poll = r < refreshes
            for name, (c, _, truth) in clients.items():
                o = out[name]
                item = held[name].pop(0)
                t0 = time.perf_counter()
                a = c.post("/api/labels", json={"item": item["id"], "label": f"c{truth[int(item['name'])]}"})
                a.raise_for_status()
                aid = a.json()["annotation"]
                while True:
                    q = {"n": 1, "exclude": ",".join(str(i["id"]) for i in held[name])}
                    s = c.get("/api/queue", params=q | ({"after": aid, "wait": 30} if long_poll else {})).json()
                    now = time.perf_counter()
                    if s["snapshot"]["applied_annotation_id"] >= aid:
                        o["refresh_applied_s" if long_poll else "refresh_applied_polled_s"].append(now - t0)
                        break
                    if now - t0 > 300:
                        raise RuntimeError(f"refresh not applied after 300 s: {s['refresh']}")
                    time.sleep(0.01)
                while c.get("/api/queue", params={"n": 1}).json()["refresh"]["state"] != "idle":
                    time.sleep(0.01)   # the refresher's own follow-up work (status precompute) done
                st = c.get("/api/queue", params={"n": 1}).json()["refresh"]
                o["server_refresh_s"].append(st.get("last_seconds"))
                o["server_visible_cpu_s"].append(st.get("last_visible_cpu_seconds"))   # None on code without it
                o["drain_steps_after_visible"].append(st.get("last_drain_steps"))   # the previous refresh's, run after it was shown
                o["load"].append(os.getloadavg()[0])
                for part in VISIBLE_PARTS:   # the refresher's own account of the wait (None on code without it)
                    o[f"visible_{part}"].append((st.get("last_visible") or {}).get(part))
                time.sleep(0.3)
        for _ in range(requests):   # status and dashboard on an idle server, after a refresh
            for name, (_, rev, _) in clients.items():
                for url, key in (("/api/status", "status_s"), ("/api/dashboard", "dashboard_s")):
                    t0 = time.perf_counter()
                    rev.get(url).raise_for_status()
                    out[name][key].append(time.perf_counter() - t0)
    return {name: o | {f"{k}_median": round(statistics.median(got), 4) if (got := [x for x in v if x is not None])
                       else None for k, v in o.items()} for name, o in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--runs", type=int, default=5, help="CLI refreshes per variant (10 new labels each)")
    ap.add_argument("--server", action="store_true", help="also measure a real `labelloop serve`")
    ap.add_argument("--refreshes", type=int, default=10, help="server: labels timed until visible")
    ap.add_argument("--requests", type=int, default=10, help="server: GETs of /api/status and /api/dashboard")
    ap.add_argument("--baseline", type=Path, default=None, help="another source tree (e.g. /work/main/src)")
    ap.add_argument("--src", type=Path, default=SRC, help="this code's source tree (default: this checkout's)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/labelloop-e2e"))
    ap.add_argument("--base", type=Path, default=None, help="a project built before (default DIR/nN)")
    ap.add_argument("--server-only", action="store_true",
                    help="measure only the server (no CLI refreshes); writes e2e_latency_<n>_server.{json,md}")
    ap.add_argument("--full", action="store_true",
                    help="time `refresh --full` (full propagation; the classifier head reads the vectors)")
    ap.add_argument("--touch-memory", type=float, default=0, metavar="GB",
                    help="first write GB of memory once and free it: on a newly booted virtual machine the first "
                         "touch of each page costs system time (14 GB: 52 s here), which otherwise lands in the "
                         "timed commands' page cache and arrays")
    ap.add_argument("--machine-labels", type=int, default=0, metavar="N",
                    help="give N items accepted machine labels first (a project after autolabel)")
    ap.add_argument("--pause", type=float, default=0.0, metavar="S",
                    help="CLI: seconds between the new labels and each timed refresh (a person labels for a while: "
                         "memory freed before is given back to a virtual machine's host meanwhile; "
                         "benchmarks/results/fresh_memory.md)")
    ap.add_argument("--out", default=None, metavar="NAME",
                    help="results file name without suffix, in benchmarks/results (default: e2e_latency_<n>[_server|_full])")
    args = ap.parse_args()
    base = args.base or args.dir / f"n{args.n}"
    if args.touch_memory:
        touched = run_child([sys.executable, "-c", f"import numpy as np; np.ones(int({args.touch_memory} * 2**30) // 8)"],
                            dict(os.environ))
        print(f"touched {args.touch_memory} GB: {touched['sys_s']:.1f} system CPU-s", flush=True)
    if not (base / "bench_token.txt").exists():
        shutil.rmtree(base, ignore_errors=True)
        base.parent.mkdir(parents=True, exist_ok=True)
        print(f"building a {args.n:,}-item project in {base} ...", flush=True)
        (base.parent / f"{base.name}.build.json").write_text(json.dumps(build(base, args.n)))
    built_file = base.parent / f"{base.name}.build.json"
    built = json.loads(built_file.read_text()) if built_file.exists() else {}
    variants = {"this": args.src} | ({"baseline": args.baseline} if args.baseline else {})
    result = {"n": args.n, "build": built, "machine_labels": args.machine_labels, "cli_pause_s": args.pause, "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
              "command": "python benchmarks/e2e_latency.py " + " ".join(sys.argv[1:]), "load_average_before": list(os.getloadavg()),
              "variants": {}}
    copies = {}
    for name, src in variants.items():   # each variant on its own copy of the built project
        path = args.dir / f"{base.name}-{name}"
        shutil.rmtree(path, ignore_errors=True)
        shutil.copytree(base, path)
        compile_tree(Path(src))
        if args.machine_labels:
            add_machine_labels(path, args.machine_labels, Path(src))
        copies[name] = (path, Path(src))
        result["variants"][name] = {"src": str(src)}
    print("cli, variants in turn:", ", ".join(f"{n} ({s})" for n, (_, s) in copies.items()), flush=True)
    for name, r in ({} if args.server_only else measure_cli(copies, args.runs, seed=1, full=args.full, pause=args.pause)).items():
        result["variants"][name]["cli"] = r
    if args.server or args.server_only:
        for name, r in measure_server(copies, args.refreshes, args.requests).items():
            result["variants"][name]["server"] = r
            print(f"  server {name}:", {k: v for k, v in r.items() if k.endswith("median")}, flush=True)
    for path, _ in copies.values():
        shutil.rmtree(path, ignore_errors=True)
    result["load_average_after"] = list(os.getloadavg())
    out = RESULTS / (args.out or f"e2e_latency_{args.n}{'_server' if args.server_only else '_full' if args.full else ''}")
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    (write_server_markdown if args.server_only else write_markdown)(result, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


def server_rows(row) -> None:
    """The server's rows of the table (``row(label, get, fmt)``)."""
    row("server: label submit -> refreshed predictions visible, s (client waits: after/wait, else polls)",
        lambda x: x.get("server", {}).get("refresh_applied_s_median"))
    row("server: label submit -> refreshed predictions visible, s (client polls every 10 ms)",
        lambda x: x.get("server", {}).get("refresh_applied_polled_s_median"))
    row("server: refresher's CPU s until visible (refresh + snapshot, its thread)",
        lambda x: x.get("server", {}).get("server_visible_cpu_s_median"))
    row("server: refresher's wall s incl. the status precompute after it",
        lambda x: x.get("server", {}).get("server_refresh_s_median"))
    for part, what in VISIBLE_PARTS.items():
        row(f"server: refresher until visible: {what}, s", lambda x, k=f"visible_{part}_median": x.get("server", {}).get(k))
    row("server: full steps drained after the predictions were shown (median per refresh)",
        lambda x: x.get("server", {}).get("drain_steps_after_visible_median"), "{:.0f}")
    row("server: GET /api/status after a refresh, s", lambda x: x.get("server", {}).get("status_s_median"))
    row("server: GET /api/dashboard after a refresh, s", lambda x: x.get("server", {}).get("dashboard_s_median"))


def _table(r: dict, title: str, intro: list[str] = ()):
    """(lines, row): a result page's head, intro and table header, and ``row(label, get, fmt)``,
    which appends one measure per variant (and the ratio baseline / this when there are two)."""
    v, names = r["variants"], list(r["variants"])
    lines = [title, "",
             f"Command: `{r['command']}` on {r['machine']}. Load average (1/5/15 min) before "
             f"{[round(x, 2) for x in r['load_average_before']]}, after {[round(x, 2) for x in r['load_average_after']]}. "
             f"Project build (not timed below): {json.dumps(r['build'])}."
             + (f" Then {r['machine_labels']:,} items given accepted machine labels (a project after autolabel)."
                if r.get("machine_labels") else ""), "", *intro,
             "| measure | " + " | ".join(names) + (" | ratio |" if len(names) > 1 else " |"),
             "|---|" + "---:|" * (len(names) + (len(names) > 1))]

    def row(label, get, fmt="{:.3f}"):
        vals = [get(v[n]) for n in names]
        cells = [fmt.format(x) if x is not None else "-" for x in vals]
        ratio = (f" {vals[1] / vals[0]:.1f}x |" if vals[0] and vals[1] else " - |") if len(names) > 1 else ""
        lines.append(f"| {label} | " + " | ".join(cells) + " |" + ratio)

    return lines, row


def write_server_markdown(r: dict, path: Path) -> None:
    """The table of a ``--server-only`` run."""
    v, names = r["variants"], list(r["variants"])
    lines, row = _table(r, f"# Server latency, {r['n']:,} items (synthetic 384-d)")
    server_rows(row)
    for n in names:
        srv = v[n]["server"]
        lines.append("")
        lines.append(f"- {n} (`{v[n]['src']}`), submit -> visible per label, s (waiting client; polling client): "
                     + ", ".join(f"{x:.3f}" for x in srv["refresh_applied_s"]) + "; "
                     + ", ".join(f"{x:.3f}" for x in srv["refresh_applied_polled_s"])
                     + "; load average (1 min) per label: " + ", ".join(f"{x:.1f}" for x in srv["load"]))
    lines += ["", "Ratio = baseline / this (how many times less this takes). Medians; the machine is "
              "shared with other jobs, so wall times vary with its load."]
    path.write_text("\n".join(lines) + "\n")


def write_markdown(r: dict, path: Path) -> None:
    v, names = r["variants"], list(r["variants"])
    lines, row = _table(r, f"# End-to-end latency, {r['n']:,} items (synthetic 384-d)", [
        f"CLI: `labelloop refresh{' --full' if '--full' in r['command'] else ''}` in a fresh process after 10 new "
        f"human labels{f' and a {pause:g} s pause' if (pause := r.get('cli_pause_s')) else ''}, median of "
        f"{len(v[names[0]]['cli']['runs'])} runs (after one untimed refresh); CPU = user + "
        "system of the child process (from wait4), peak RSS the child's own VmHWM (read at its exit).", ""])
    row("refresh CPU s", lambda x: x["cli"]["cpu_s_median"])
    row("refresh system CPU s", lambda x: x["cli"].get("sys_s_median"))
    row("refresh CPU s, mean (drains and full fits included)", lambda x: x["cli"].get("cpu_s_mean"))
    row("refresh CPU s, max", lambda x: x["cli"].get("cpu_s_max"))
    row("refresh wall s", lambda x: x["cli"]["wall_s_median"])
    row("refresh peak RSS MB", lambda x: x["cli"]["peak_rss_mb_median"], "{:.0f}")
    row("import floor CPU s (python -c 'import labelloop.cli, labelloop.project, numpy, scipy.sparse')",
        lambda x: x["cli"]["import_floor_cpu_s"])
    row("import floor without scipy CPU s (python -c 'import labelloop.cli, labelloop.project, numpy')",
        lambda x: x["cli"].get("import_floor_numpy_only_cpu_s"))
    if "server" in v[names[0]]:
        server_rows(row)
    lines += ["", "Per-run CLI figures (CPU s / wall s / peak RSS MB; full: a cold refresh, refit: a full "
              "propagation instead of the warm update, drain N: N full steps past the error bound):", ""]

    def tags(g):
        t = [] if g["warm"] else ["full"]
        t += ["refit"] if g.get("refit") or (g["warm"] and g.get("warm_updates") == 0) else []
        t += [f"drain {g['drain_steps']}"] if g.get("drain_steps") else []
        return f" ({', '.join(t)})" if t else ""

    for n in names:
        lines.append(f"- {n} (`{v[n]['src']}`): " + "; ".join(
            f"{g['cpu_s']:.2f} / {g['wall_s']:.2f} / {g['peak_rss_mb']:.0f}{tags(g)}" for g in v[n]["cli"]["runs"]))
    lines += ["", "Ratio = baseline / this (how many times less this takes). Medians; the machine is "
              "shared with other jobs, so wall times vary with its load; CPU seconds much less."]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

"""What it costs to touch memory the system has not used lately, and what it costs right after
files of the same size were deleted: why a refresh deletes the run folder it replaces before it
writes its own (``Project.refresh``, ``Project.prune_runs``).

    python benchmarks/fresh_memory.py                 # 100 MB, 5 runs, 6 s pauses
    python benchmarks/fresh_memory.py --mb 100 --runs 7 --pause 8

A virtual machine whose balloon device reports free memory to its host (virtio-balloon free page
reporting; this machine kind has it, the results say whether this one does) gets memory that
stayed free for a couple of seconds taken back; touching it again costs system time in the
guest while the host hands it back. Memory freed just before (the page cache of deleted files)
is reused as it is. Per run, after a pause in which nothing is freed:

- write: ``np.save`` of ``--mb`` MB to a new file, then the same right after deleting a file of
  that size written before the pause;
- allocate: a new ``--mb`` MB array filled with ones, then the same right after such a delete.

CPU seconds (user + system) of this process for each, medians of ``--runs``. Writes
benchmarks/results/fresh_memory.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def free_page_reporting() -> bool | None:
    """Whether a virtio-balloon device here offers free page reporting (feature bit 5), None
    when there is no balloon device."""
    found = None
    for dev in Path("/sys/bus/virtio/devices").glob("*"):
        try:
            if (dev / "device").read_text().strip() == "0x0005":   # the balloon
                found = (dev / "features").read_text().strip()[5:6] == "1"
        except OSError:
            continue
    return found


def timed(f) -> float:
    c = cpu()
    f()
    return cpu() - c


def one_run(folder: Path, mb: int, pause: float) -> dict:
    a = np.random.default_rng(0).random(mb * 2**20 // 4, dtype=np.float32)
    old, new = folder / "old.npy", folder / "new.npy"

    def fill():
        b = np.ones(a.size, np.float32)
        del b

    out = {}
    for what, touch in (("write", lambda: np.save(new, a)), ("allocate", fill)):
        np.save(old, a)
        os.sync()
        time.sleep(pause)                  # what was freed before is given back meanwhile
        out[f"{what}_fresh_cpu_s"] = timed(touch)
        new.unlink(missing_ok=True)
        time.sleep(pause)
        old.unlink()                        # mb of page cache freed right before
        out[f"{what}_after_delete_cpu_s"] = timed(touch)
        new.unlink(missing_ok=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--pause", type=float, default=6.0, help="seconds with nothing freed before each measurement")
    ap.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        runs = []
        for r in range(args.runs):
            runs.append(one_run(Path(tmp), args.mb, args.pause))
            print(f"run {r}: " + " ".join(f"{k} {v:.3f}" for k, v in runs[-1].items()), flush=True)
    med = {k: round(statistics.median(x[k] for x in runs), 3) for k in runs[0]}
    res = {"mb": args.mb, "runs": runs, "median": med, "pause_s": args.pause, "cpus": os.cpu_count(),
           "machine": platform.platform(), "free_page_reporting": free_page_reporting()}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fresh_memory.json").write_text(json.dumps(res, indent=1))
    lines = [
        "# Touching memory the system has not used lately vs right after deleting files",
        "",
        f"`python benchmarks/fresh_memory.py --mb {args.mb} --runs {args.runs} --pause {args.pause:g}`; "
        f"{os.cpu_count()} CPUs, {platform.platform()}; virtio-balloon free page reporting: "
        f"{ {True: 'yes', False: 'no', None: 'no balloon device'}[res['free_page_reporting']] }.",
        "CPU seconds (user + system) of the one process, medians of the runs.",
        "",
        f"| {args.mb} MB | after a {args.pause:g} s pause | right after deleting {args.mb} MB of files | ratio |",
        "|---|---|---|---|",
    ]
    for what, label in (("write", "np.save to a new file"), ("allocate", "new array, filled")):
        f, d = med[f"{what}_fresh_cpu_s"], med[f"{what}_after_delete_cpu_s"]
        lines.append(f"| {label} | {f:.3f} | {d:.3f} | {f / d if d else float('inf'):.1f}x |")
    (RESULTS / "fresh_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""What `labelloop refresh` imports in a new process: only what the refresh uses. Every
module is CPU time of every command (the import floor was ~0.2 of a 0.4 CPU-s refresh at
100k, benchmarks/results/e2e_latency_100000.md); these were imported for a constant, a
quantile or another command (numpy.ma: for np.unique's check for a masked array;
concurrent.futures, logging, queue: for the embed stage's allocator tuning, now
labelloop.allocator). Truth: the new process's own ``sys.modules`` at exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: run ``labelloop refresh -p PATH`` as ``python -m labelloop.cli`` would, with
#: ``Project.RECALIBRATE_MAX_ITEMS`` set to argv[2]; print the modules at exit
_CLI = """
import atexit, json, runpy, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules))))
import labelloop.project
labelloop.project.Project.RECALIBRATE_MAX_ITEMS = int(sys.argv[2])
sys.argv = ["labelloop", "refresh", "-p", sys.argv[1]]
runpy.run_module("labelloop.cli", run_name="__main__")
"""

#: (socket is not among them: labelloop.web.cli_commands no longer imports it, but scipy.sparse
#: does, which a refresh loads when its warm update drains)
NOT_ON_THE_REFRESH_PATH = (
    "labelloop.audit", "labelloop.select", "labelloop.formats.imagefolder", "labelloop.web.app", "statistics",
    "fastapi", "sklearn", "torch", "pandas", "labelloop.embed", "concurrent.futures", "logging", "queue")
#: ... nor, where the warm refresh reuses the last calibration (above RECALIBRATE_MAX_ITEMS items,
#: as at 100k), this (the calibration's refit folds still call np.unique)
NOT_ON_THE_LARGE_REFRESH_PATH = NOT_ON_THE_REFRESH_PATH + ("numpy.ma",)


def test_a_refresh_in_a_new_process_imports_no_other_command(tmp_path):
    """Both warm paths: the calibration refit (a small project) and reused (a large one)."""
    from labelloop.web.testing import topics_project

    p = topics_project(tmp_path / "proj", rules=False)
    p.refresh()
    p.label([("bug1", "bug")])
    p.close()
    import labelloop

    # this checkout's labelloop only (pytest's own path entries would import pytest's modules)
    env = {**os.environ, "PYTHONPATH": str(Path(labelloop.__file__).parents[1])}
    for recalibrate_max, absent in ((10_000, NOT_ON_THE_REFRESH_PATH), (10, NOT_ON_THE_LARGE_REFRESH_PATH)):
        out = subprocess.run([sys.executable, "-c", _CLI, str(tmp_path / "proj"), str(recalibrate_max)], env=env,
                             check=True, capture_output=True, text=True).stdout
        assert "refreshed 40 items" in out and "warm start" in out, out
        modules = set(json.loads(out.split("MODULES ", 1)[1]))
        assert "labelloop.project" in modules and "labelloop.propagate" in modules   # it did refresh
        assert not [m for m in absent if m in modules], (recalibrate_max, [m for m in absent if m in modules])

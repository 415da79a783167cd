"""Fuzz the HTTP API against its own OpenAPI schema with schemathesis, bounded in time, on
127.0.0.1 only. Not part of the test suite (it needs schemathesis, best kept in its own
virtual environment so its dependencies cannot move the project's pins)::

    python -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install -c constraints.txt schemathesis
    PYTHONPATH=src python tests/fuzz/run_schemathesis.py --st /tmp/stvenv/bin/schemathesis --seconds 120

A fresh 150-digit project with an admin API token is served by ``labelloop serve``; the
schema is fetched with the token and the run is told the base URL. Exit status: schemathesis's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--st", default="schemathesis", help="the schemathesis executable")
    ap.add_argument("--seconds", type=int, default=120, help="time budget of the run")
    ap.add_argument("--examples", type=int, default=20, help="examples per operation")
    args, extra = ap.parse_known_args()

    import httpx

    from labelloop.web import auth
    from labelloop.web.testing import ServerProcess, digits_project

    with tempfile.TemporaryDirectory(prefix="labelloop-fuzz-") as tmp:
        root = Path(tmp)
        auth.SCRYPT_N = 2**10   # quick user creation; the server verifies any cost
        p, _, _ = digits_project(root / "proj", n=150)
        auth.add_user(p.store, "boss", "admin", token=True)
        token = auth.issue_token(p.store, "boss")
        p.close()
        with ServerProcess(root / "proj") as server:
            headers = {"Authorization": f"Bearer {token}"}
            schema = httpx.get(server.url + "/api/openapi.json", headers=headers).json()
            (root / "schema.json").write_text(json.dumps(schema))
            cmd = [args.st, "--config-file", str(HERE / "schemathesis.toml"), "run", str(root / "schema.json"),
                   "--url", server.url, "-H", f"Authorization: Bearer {token}",
                   "--max-examples", str(args.examples), "--max-time", str(args.seconds), "--seed", "1",
                   "-w", "1", "--request-timeout", "20", "--generation-allow-x00", "true",
                   # these would end the run's own session or token
                   "--exclude-path-regex", "^/api/users/", "--exclude-path", "/api/logout", *extra]
            rc = subprocess.run(cmd, timeout=args.seconds + 120).returncode
        log = "\n".join(server.output)
    if "Traceback" in log:
        print("the server logged a traceback:\n" + log[-4000:])
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""Embedding on a real Ray cluster: the same vectors as in-process, in the same cache, each
item embedded once, resumable after an interrupt.

The cluster is the one at ``RAY_ADDRESS`` when CI gives one (``scripts/ray-local.sh start``),
else one this module starts with that script on 127.0.0.1 and stops after.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_image

pytestmark = [
    pytest.mark.slow,   # a Ray cluster and its actors take tens of seconds to start
    # Ray 2.60's own DataContext sets options it deprecates itself; nothing of ours to fix
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    pytest.importorskip("ray.data")   # here, not at import: the fast suite never loads Ray
    if os.environ.get("RAY_ADDRESS"):
        yield os.environ["RAY_ADDRESS"]
        _leave_ray()
        return
    env = {**os.environ, "RAY_BIN": str(Path(sys.executable).parent / "ray"),
           "RAY_LOCAL_DIR": str(tmp_path_factory.mktemp("ray")),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)}
    script = str(ROOT / "scripts" / "ray-local.sh")
    address = subprocess.run([script, "start"], env=env, capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield address
    finally:
        _leave_ray()   # before the cluster goes: a joined driver outliving it is ended by Ray
        subprocess.run([script, "stop"], env=env, check=True)


def _leave_ray():
    """The embed calls keep this process joined to the cluster (labelloop.embed.cluster)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()


def chunk_rows(project, cache_id: str) -> int:
    """Rows written to the cache's vector files: more than the items means one was embedded twice."""
    return sum(np.load(f, mmap_mode="r").shape[0] for f in project.store.embedding_dir(cache_id).glob("*.npy"))


def test_images_on_ray_equal_in_process_resume_and_are_never_embedded_twice(project_factory, tmp_path, ray_address):
    from labelloop.embed import get_backbone
    from labelloop.embed.runner import item_input

    for i in range(22):
        write_image(tmp_path / "imgs" / f"{i:03d}.png", seed=i, size=(20 + i, 16))
    p = project_factory("image")
    p.import_(tmp_path / "imgs")
    cache_id = get_backbone("pixels").cache_id

    def stop_after_one(batches):
        raise KeyboardInterrupt

    r1 = p.embed("pixels", batch_size=5, ray_address=ray_address, on_batch=stop_after_one)
    assert r1.interrupted and 1 <= r1.embedded < 22
    assert len(p.store.embedded_hashes(cache_id)) == r1.embedded      # kept what it wrote
    assert p.store.get_meta("backbone") is None                       # not complete yet

    r2 = p.embed("pixels", batch_size=5, ray_address=ray_address)
    assert not r2.interrupted and not r2.skipped
    assert (r2.embedded, r2.cached) == (22 - r1.embedded, r1.embedded)  # only the rest
    assert p.store.get_meta("backbone")["id"] == "pixels"

    r3 = p.embed("pixels", ray_address=ray_address)                   # nothing left: Ray not even asked
    assert (r3.embedded, r3.cached) == (0, 22)
    assert chunk_rows(p, cache_id) == 22

    items = p.store.items()
    X = p.store.load_embeddings(cache_id, [it.content_hash for it in items])
    expected = get_backbone("pixels").embed_batch([item_input(it) for it in items])
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-7)


def test_cli_embeds_texts_with_a_fitted_backbone_on_ray(project_factory, tmp_path, ray_address):
    """tfidf is fitted in the driver and shipped to the actors: the same cache id and vectors
    as an in-process embed; a moved file would be reported, not fatal (text: none)."""
    from labelloop.cli import cli

    texts = [f"item {i} " + " ".join(["alpha beta", "gamma delta epsilon", "zeta"][j % 3] for j in range(i % 7 + 1))
             for i in range(40)]
    csv = tmp_path / "t.csv"
    csv.write_text("text\n" + "\n".join(texts) + "\n")
    on_ray, local = project_factory("text", name="ray"), project_factory("text", name="local")
    for p in (on_ray, local):
        p.import_(csv)
    res = CliRunner().invoke(cli, ["embed", "-p", str(on_ray.root), "--backbone", "tfidf", "--ray", ray_address,
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "40 embedded, 0 cached" in res.output
    local.embed("tfidf")
    ids_r, X_r = on_ray.embeddings()
    ids_l, X_l = local.embeddings()
    assert on_ray.store.get_meta("backbone")["cache_id"] == local.store.get_meta("backbone")["cache_id"]
    np.testing.assert_allclose(X_r, X_l, rtol=1e-5, atol=1e-6)
    assert chunk_rows(on_ray, on_ray.store.get_meta("backbone")["cache_id"]) == 40
    again = CliRunner().invoke(cli, ["embed", "-p", str(on_ray.root), "--ray", ray_address, "--no-progress"])
    assert again.exit_code == 0 and "0 embedded, 40 cached" in again.output


def test_efficientnet_on_ray_equals_in_process(project_factory, tmp_path, ray_address):
    """The real network in the actors (packaged weights): the vectors an in-process run gives."""
    for i in range(16):
        write_image(tmp_path / "imgs" / f"{i:03d}.png", seed=i, size=(40, 30))
    on_ray, local = project_factory("image", name="ray"), project_factory("image", name="local")
    for p in (on_ray, local):
        p.import_(tmp_path / "imgs")
    r = on_ray.embed("efficientnet-lite0", image_size=64, batch_size=8, ray_address=ray_address)
    assert (r.embedded, r.skipped) == (16, [])
    local.embed("efficientnet-lite0", image_size=64, batch_size=8)
    np.testing.assert_allclose(on_ray.embeddings()[1], local.embeddings()[1], rtol=1e-4, atol=1e-4)


# last in the module: after a local Ray has been started and stopped in this process, Ray Data
# 2.60 cannot run on another cluster from it (its actors are cancelled before they start)
def test_without_an_address_a_local_ray_is_started_and_stopped(project_factory, tmp_path):
    """In its own process (without RAY_ADDRESS): a process that started and stopped a local Ray
    must not share a Ray session with the tests that use the cluster at RAY_ADDRESS."""
    pytest.importorskip("ray")

    for i in range(6):
        write_image(tmp_path / "imgs" / f"{i}.png", seed=i)
    p = project_factory("image")
    p.import_(tmp_path / "imgs")
    (tmp_path / "imgs" / "5.png").write_bytes(b"damaged after import")
    code = (
        "import sys, json, ray\n"
        "from labelloop import Project\n"
        "with Project(sys.argv[1]) as p:\n"
        "    r = p.embed('pixels', batch_size=4, ray_address='local')\n"
        "    print(json.dumps([r.embedded, [s.where for s in r.skipped], ray.is_initialized(),\n"
        "                      p.store.runs('embed')[-1]['params']['ray']]))\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(ROOT / "src"), env.get("PYTHONPATH")) if x)
    out = subprocess.run([sys.executable, "-c", code, str(p.root)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    embedded, skipped, initialized, recorded = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert (embedded, skipped) == (5, ["5.png"])   # reported by the actor, not fatal
    assert not initialized and recorded == "local"

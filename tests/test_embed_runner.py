"""Embedding is cached per (backbone, content) and resumes after an interrupt."""

import numpy as np
import pytest
from conftest import write_image

from labelloop.embed import Backbone, get_backbone


class CountingBackbone(Backbone):
    """Wraps a backbone and records every item it embeds."""

    def __init__(self, inner):
        self.inner = inner
        self.seen = []
        self.id, self.modality, self.batch_size = inner.id, inner.modality, 4
        self.needs_fit, self._cache_id = False, inner.cache_id

    @property
    def cache_id(self):
        return self._cache_id

    def embed_batch(self, inputs):
        self.seen += [np.asarray(x).tobytes() for x in inputs]
        return self.inner.embed_batch(inputs)


@pytest.fixture
def image_project(project_factory, tmp_path):
    p = project_factory("image")
    for i in range(22):
        write_image(tmp_path / "imgs" / f"{i:03d}.png", seed=i)
    p.import_(tmp_path / "imgs")
    return p


def test_interrupted_embedding_resumes_without_redoing_items(image_project, monkeypatch):
    from labelloop.embed import runner

    p = image_project
    bb = CountingBackbone(get_backbone("pixels"))

    def stop_after_two(batches):
        if batches == 2:
            raise KeyboardInterrupt

    items = p.store.items()
    r1 = runner.embed_items(p.store, bb, items, on_batch=stop_after_two, progress=False)
    assert r1.interrupted and r1.embedded == 8
    assert len(p.store.embedded_hashes(bb.cache_id)) == 8
    r2 = runner.embed_items(p.store, bb, items, progress=False)
    assert not r2.interrupted and (r2.embedded, r2.cached) == (14, 8)
    assert len(bb.seen) == 22 and len(set(bb.seen)) == 22  # nobody embedded twice
    X = p.store.load_embeddings(bb.cache_id, [it.content_hash for it in items])
    np.testing.assert_allclose(X, get_backbone("pixels").embed_batch([runner.item_input(it) for it in items]),
                               rtol=1e-6)


def test_project_embed_records_interrupt_and_sets_backbone_only_when_complete(image_project):
    p = image_project

    def stop(batches):
        raise KeyboardInterrupt

    r = p.embed("pixels", batch_size=5, on_batch=stop)
    assert r.interrupted and p.store.get_meta("backbone") is None
    assert p.store.runs("embed", status="interrupted")
    r = p.embed("pixels", batch_size=5)
    assert r.embedded == 17 and r.cached == 5
    assert p.store.get_meta("backbone")["id"] == "pixels"
    ids, X = p.embeddings()
    assert X.shape[0] == len(ids) == 22


def test_damaged_file_at_embed_time_is_reported_not_fatal(image_project, tmp_path):
    p = image_project
    (tmp_path / "imgs" / "003.png").write_bytes(b"garbage")
    r = p.embed("pixels")
    assert r.embedded == 21 and [s.where for s in r.skipped] == ["003.png"]


def test_embed_on_a_ray_address_nobody_listens_on_is_a_clear_error(image_project):
    """Checked before Ray is asked (Ray would retry for minutes); nothing is embedded."""
    import socket

    from click.testing import CliRunner

    from labelloop.cli import cli

    with socket.socket() as s:          # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = CliRunner().invoke(cli, ["embed", "-p", str(image_project.root), "--backbone", "pixels",
                                   "--ray", f"127.0.0.1:{port}"])
    assert res.exit_code != 0 and isinstance(res.exception, SystemExit)   # a clean exit, no crash
    assert f"cannot reach a Ray cluster at '127.0.0.1:{port}'" in res.output
    assert "Traceback" not in res.output
    assert image_project.store.embedding_backbones() == {}

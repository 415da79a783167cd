"""The embed stage on a Ray cluster: the same backbone, in actors, the same cache.

The driver (the process that has the project) decides what to embed exactly as the
in-process runner does (:func:`runner.todo_items`: the backbone fitted if it needs it, items
already in the cache left out, texts longest first), sends each distinct content once
through Ray Data — ``map_batches`` over a pool of actors that each hold one copy of the
backbone, batches streamed — and writes every batch that comes back into the project's
cache itself, as it arrives (:meth:`Store.add_embedding_chunk`). So the cache is the same as
an in-process run's, an interrupted run keeps what it wrote, and the next run, on Ray or
not, embeds only the rest.

Workers read images by their paths in the project: on a cluster of several machines the
images must be at the same path on each (a shared filesystem). Texts travel in the batches.
Without an address a local Ray (bound to 127.0.0.1) is started for the run and stopped after.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..allocator import tune_allocator
from ..errors import MissingDependencyError, ValidationError
from ..ingest import Skipped
from ..store import Item, Store
from .runner import EmbedReport, decode_input, todo_items

__all__ = ["LOCAL", "embed_items_ray"]

LOCAL = "local"   # the address that means: start a Ray of our own on this machine


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError.for_extra("ray[data]", "ray") from exc
    return ray


class EmbedActor:
    """One Ray actor: holds the backbone (its model loaded on first use) and embeds batches
    of rows ``{content_hash, modality, uri, text}`` into ``{content_hash, vector, error}``."""

    def __init__(self, backbone) -> None:
        tune_allocator()  # for the actor's lifetime: see labelloop.allocator
        self.backbone = backbone

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["content_hash"])
        inputs, ok, errors = [], [], [""] * n
        for i in range(n):
            try:
                inputs.append(decode_input(str(batch["modality"][i]), str(batch["uri"][i]), str(batch["text"][i])))
                ok.append(i)
            except Exception as exc:  # file moved, damaged or not on this machine: report it
                errors[i] = f"cannot read ({exc})"
        vectors = self.backbone.embed_batch(inputs) if ok else None   # (len(ok), dim)
        dim = vectors.shape[1] if vectors is not None else self.backbone.dim
        out = np.zeros((n, dim), dtype=np.float32)                    # (n, dim)
        if ok:
            out[ok] = vectors
        return {"content_hash": batch["content_hash"], "vector": out, "error": np.array(errors, dtype=object)}


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A ``host:port`` that nothing listens on is a clear error at once (Ray itself retries
    for minutes); other forms (``auto``, ``ray://...``) are left to Ray."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ValidationError(f"cannot reach a Ray cluster at {address!r} ({exc}); start one with "
                              "`ray start --head`, or give no address to run a local Ray") from exc


def _connect(ray, address: str):
    """Start a local Ray (``LOCAL``) or join the cluster at ``address``; True if we started it."""
    if ray.is_initialized():
        return False
    common = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
    if address == LOCAL:
        ray.init(address="local", _node_ip_address="127.0.0.1", **common)
        return True
    import labelloop

    try:
        # the workers run the driver's labelloop (its backbones, this module), not whatever
        # version the nodes have installed; its dependencies must be there
        ray.init(address=address, runtime_env={"py_modules": [labelloop]}, **common)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValidationError(f"cannot join the Ray cluster at {address!r} ({exc}); start one with "
                              "`ray start --head`, or give no address to run a local Ray") from exc
    return True


def embed_items_ray(store: Store, backbone, items: Sequence[Item], *, address: str = LOCAL,
                    batch_size: int | None = None, actors: int | None = None,
                    cpus_per_actor: float = 1.0, progress: bool = True,
                    on_batch: Callable[[int], None] | None = None) -> EmbedReport:
    """Embed on Ray the items that ``backbone`` has not embedded yet; see the module docstring.

    ``actors``: how many copies of the backbone run (default: the cluster's CPUs divided by
    ``cpus_per_actor``). ``on_batch(batches_done)`` is called after each stored batch."""
    from tqdm.auto import tqdm

    todo, report = todo_items(store, backbone, items)
    if not todo:
        return report
    by_hash: dict[str, list[Item]] = {}
    for it in todo:
        by_hash.setdefault(it.content_hash, []).append(it)   # equal content is embedded once
    bs = batch_size or backbone.batch_size
    if bs < 1:
        raise ValidationError(f"batch_size must be >= 1, got {bs}")
    if address != LOCAL:
        _check_reachable(address)
    ray = _import_ray()
    started = _connect(ray, address)
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"embed {report.backbone} on Ray", unit="item",
               disable=not progress, leave=False)
    batches = 0
    batches_out = None
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)   # no execution plans on the terminal
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False          # ours counts what is stored, not what is sent
        ctx.enable_auto_log_stats = False
        if actors is None:
            actors = max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_actor))
        rows = [{"content_hash": h, "modality": its[0].modality, "uri": its[0].uri or "",
                 "text": its[0].text or ""} for h, its in by_hash.items()]
        n_batches = -(-len(rows) // bs)
        actors = min(actors, n_batches)         # no idle copies of the model
        ds = ray.data.from_items(rows, override_num_blocks=min(n_batches, 10 * actors))
        ds = ds.map_batches(EmbedActor, fn_constructor_kwargs={"backbone": backbone}, batch_size=bs,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_cpus=cpus_per_actor)
        batches_out = iter(ds.iter_batches(batch_size=None, batch_format="numpy"))
        for out in batches_out:
            hashes = [str(h) for h in out["content_hash"]]
            ok = np.array([not e for e in out["error"]], dtype=bool)
            for h, e in zip(hashes, out["error"]):
                if e:
                    report.skipped += [Skipped(it.display, str(e)) for it in by_hash[h]]
            if ok.any():
                good = [h for h, k in zip(hashes, ok) if k]
                store.add_embedding_chunk(report.backbone, good, out["vector"][ok])
                report.embedded += sum(len(by_hash[h]) for h in good)
            bar.update(sum(len(by_hash[h]) for h in hashes))
            batches += 1
            if on_batch is not None:
                on_batch(batches)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        report.seconds = time.perf_counter() - start
        if batches_out is not None and hasattr(batches_out, "close"):
            batches_out.close()   # stops Ray Data's executor threads before anything below
        # A driver joined to a cluster stays joined: ray.shutdown() while Ray Data's threads
        # still wind down makes Ray end the whole process ("the core worker has already been
        # shutdown"); the local Ray this call started is stopped.
        if started and address == LOCAL:
            ray.shutdown()
    return report


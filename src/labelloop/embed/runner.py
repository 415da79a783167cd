"""The embed stage: run a backbone over a project's items, in batches, caching as it goes.

Every finished batch is written (vectors to its own file, then its index rows in one
transaction) before the next starts, so an interrupt — Ctrl-C, a kill, a crash — loses at most
the batch in flight, and the next run embeds only what is missing. Vectors are keyed by
(backbone cache id, content hash): an item is never embedded twice by the same backbone.

What keeps embedding at the model's own speed (``benchmarks/results/embed_speed.md``):
texts go through the model longest first (batches of similar length pad little; the cache
is keyed by content, so the order changes nothing else); the next batch is read, decoded and
preprocessed in a background thread while the model runs; and glibc's allocator keeps the
model's large activations on its heap instead of mapping and unmapping them on every batch
(:func:`labelloop.allocator.tune_allocator`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..allocator import tune_allocator
from ..ingest import Skipped, load_image
from ..store import Item, Store


@dataclass
class EmbedReport:
    backbone: str            # backbone cache id the vectors are stored under
    total: int               # items in the project
    embedded: int = 0        # embedded by this run
    cached: int = 0          # already there
    seconds: float = 0.0
    skipped: list[Skipped] = field(default_factory=list)
    interrupted: bool = False
    note: str | None = None  # e.g. the input size the project chose for its images

    def to_dict(self) -> dict:
        return {"backbone": self.backbone, "total": self.total, "embedded": self.embedded,
                "cached": self.cached, "seconds": round(self.seconds, 3),
                "skipped": [s.__dict__ for s in self.skipped], "interrupted": self.interrupted,
                "note": self.note}


def item_input(item: Item):
    """What a backbone receives for an item: a decoded RGB image or the text."""
    return decode_input(item.modality, item.uri, item.text)


def decode_input(modality: str, uri: str | None, text: str | None):
    """:func:`item_input` from an item's fields (what a Ray worker receives)."""
    return load_image(uri) if modality == "image" else text


def todo_items(store: Store, backbone, items: Sequence[Item]) -> tuple[list[Item], EmbedReport]:
    """Fit the backbone if it needs it, then the items it has not embedded yet, in the order
    to embed them (texts longest first), and the report to fill in."""
    if backbone.needs_fit:
        # a fitted backbone (TF-IDF) depends on the whole corpus: fit on every item first
        backbone.fit([item_input(it) for it in items])
    cache_id = backbone.cache_id
    done = store.embedded_hashes(cache_id)
    todo = [it for it in items if it.content_hash not in done]
    if backbone.modality == "text":
        # batches of similar length pad little (sentence-transformers pads to the longest);
        # longest first, so the largest batch comes first and a memory problem shows at once
        todo.sort(key=lambda it: -len(it.text or ""))
    report = EmbedReport(backbone=cache_id, total=len(items), cached=len(items) - len(todo))
    return todo, report


def read_batch(items: Sequence[Item]) -> tuple[list[Item], list, list[Skipped]]:
    """Decode a batch: (the items that could be read, their inputs, those that could not)."""
    batch, inputs, skipped = [], [], []
    for it in items:
        try:
            inputs.append(item_input(it))
            batch.append(it)
        except Exception as exc:  # file moved or damaged since import: report, go on
            skipped.append(Skipped(it.display, f"cannot read ({exc})"))
    return batch, inputs, skipped


def _prepared(backbone, items: Sequence[Item]) -> tuple[list[Item], Any, list[Skipped]]:
    batch, inputs, skipped = read_batch(items)
    return batch, backbone.prepare(inputs) if batch else None, skipped


def embed_items(store: Store, backbone, items: Sequence[Item], *, batch_size: int | None = None,
                progress: bool = True,
                on_batch: Callable[[int], None] | None = None) -> EmbedReport:
    """Embed the items that the backbone has not embedded yet.

    ``on_batch(batches_done)`` is called after each stored batch (progress hooks, tests that
    interrupt a run)."""
    from tqdm.auto import tqdm

    todo, report = todo_items(store, backbone, items)
    cache_id = report.backbone
    bs = batch_size or backbone.batch_size
    chunks = [todo[lo : lo + bs] for lo in range(0, len(todo), bs)]
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"embed {cache_id}", unit="item", disable=not progress,
               leave=False)
    # one reader thread: batch i + 1 is decoded and preprocessed while batch i is in the model
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelloop-embed-read")
    restore = tune_allocator()
    try:
        ahead = reader.submit(_prepared, backbone, chunks[0]) if chunks else None
        for i, chunk in enumerate(chunks):
            batch, prepared, skipped = ahead.result()
            ahead = reader.submit(_prepared, backbone, chunks[i + 1]) if i + 1 < len(chunks) else None
            report.skipped += skipped
            if batch:
                vectors = backbone.embed_prepared(prepared)  # (B, dim)
                store.add_embedding_chunk(cache_id, [it.content_hash for it in batch], vectors)
                report.embedded += len(batch)
            bar.update(len(chunk))
            if on_batch is not None:
                on_batch(i + 1)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        restore()
        bar.close()
        report.seconds = time.perf_counter() - start
    return report

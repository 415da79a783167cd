"""The embed stage: run a backbone over a project's items, in batches, caching as it goes.

Every finished batch is written (vectors to its own file, then its index rows in one
transaction) before the next starts, so an interrupt — Ctrl-C, a kill, a crash — loses at most
the batch in flight, and the next run embeds only what is missing. Vectors are keyed by
(backbone cache id, content hash): an item is never embedded twice by the same backbone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

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
    if item.modality == "image":
        return load_image(item.uri)
    return item.text


def embed_items(store: Store, backbone, items: Sequence[Item], *, batch_size: int | None = None,
                progress: bool = True,
                on_batch: Callable[[int], None] | None = None) -> EmbedReport:
    """Embed the items that the backbone has not embedded yet.

    ``on_batch(batches_done)`` is called after each stored batch (progress hooks, tests that
    interrupt a run)."""
    from tqdm.auto import tqdm

    if backbone.needs_fit:
        # a fitted backbone (TF-IDF) depends on the whole corpus: fit on every item first
        backbone.fit([item_input(it) for it in items])
    cache_id = backbone.cache_id
    done = store.embedded_hashes(cache_id)
    todo = [it for it in items if it.content_hash not in done]
    report = EmbedReport(backbone=cache_id, total=len(items), cached=len(items) - len(todo))
    bs = batch_size or backbone.batch_size
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc=f"embed {cache_id}", unit="item", disable=not progress,
               leave=False)
    batches = 0
    try:
        for lo in range(0, len(todo), bs):
            batch, inputs = [], []
            for it in todo[lo : lo + bs]:
                try:
                    inputs.append(item_input(it))
                    batch.append(it)
                except Exception as exc:  # file moved or damaged since import: report, go on
                    report.skipped.append(Skipped(it.display, f"cannot read ({exc})"))
            if batch:
                vectors = backbone.embed_batch(inputs)  # (B, dim)
                store.add_embedding_chunk(cache_id, [it.content_hash for it in batch], vectors)
                report.embedded += len(batch)
            bar.update(len(todo[lo : lo + bs]))
            batches += 1
            if on_batch is not None:
                on_batch(batches)
    except KeyboardInterrupt:
        report.interrupted = True
    finally:
        bar.close()
        report.seconds = time.perf_counter() - start
    return report

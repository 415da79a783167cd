"""``labelloop.Project``: the one Python API; the CLI and the web app are shells over it."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import config
from .errors import NotReadyError, PoolExhaustedError, ProjectError, UnknownItemError, ValidationError
from .ingest import (ImportReport, Report, Skipped, check_class_names, import_images, import_table,
                     import_texts)
from .store import DATABASE_FILE, Store, full_decision, is_project

MODALITIES = ("image", "text")
TASKS = ("classification", "detection", "multilabel")   # detection: boxes on images (labelloop.detect);
#                                                          multilabel: a set of classes per item (label_classes)
DETECTORS_DIR = "detectors"              # <project>/detectors/<run id>/detector.pt, .checkpoint/
TRAINED_ITEMS = "trained_items.npy"      # run folder of a train-detector run: the images it learned from
PRELABELED_ITEMS = "prelabeled_items.npy"   # run folder of a prelabel run: the images it pre-labeled
AUTOLABEL_ANNOTATOR = "autolabel"       # who auto-accepted boxes and images are attributed to
SMOOTH_ALPHA = 0.95  # spreading weight for soft (imported) labels; benchmarks/label_noise.py
#: a refresh run's propagation state Y, by whether its rows are in the items' order (False) or
#: in the graph's locality order (True: as a drain's sweeps leave it, LabelPropagation.state);
#: code from before the second name finds no state there and fits cold
STATE_Y_FILES = {False: "state_Y.npy", True: "state_Y_ordered.npy"}
EXPORT_FORMATS = ("csv", "jsonl")   # one file of rows (also downloadable from the web app)
DATASET_FORMATS = ("coco", "labelstudio", "imagefolder", "hf")   # labelloop.formats
ANNOTATION_FORMATS = ("coco", "labelstudio", "yolo", "voc")   # annotation files `import` reads labels / boxes from
BOX_FORMATS = ("coco", "labelstudio", "yolo", "voc")   # what a detection project exports its boxes to
LABEL_SOURCES = ("human", "import", "machine")  # an item's current label: the first source that has one


@dataclass(kw_only=True)
class LabelReport(Report):
    appended: int = 0


@dataclass(kw_only=True)
class ExportReport:
    """What :meth:`Project.export_dataset` wrote."""

    path: Path
    format: str
    items: int
    labeled: int       # records with a label (annotations; ImageFolder: the folders)
    predicted: int     # records with only a prediction (COCO / Label Studio / HF)
    extra: list[Path]  # files written beside ``path`` (Label Studio's labeling configuration)

    def summary(self) -> str:
        if self.format == "imagefolder":
            s = (f"wrote {self.path}: {self.labeled} images in class folders; {self.items - self.labeled} items "
                 "without a current label were not written (export --format csv lists the predictions)")
        else:
            s = (f"wrote {self.path}: {self.items} items, {self.labeled} with a label, "
                 f"{self.predicted} with only a prediction (and its confidence)")
        for p in self.extra:
            s += (f"\nwrote {p}: the labeling configuration these tasks match; paste it into the Label Studio "
                  "project's Labeling Interface before importing the tasks")
        return s


@dataclass
class Predictions:
    """The latest refresh: row r of every array is item ``item_ids[r]``."""

    run_id: int
    item_ids: np.ndarray     # (n,)
    proba: np.ndarray        # (n, C) class distributions, columns = ``classes``
    classes: list[str]
    label: np.ndarray        # (n,) column index of the predicted class
    confidence: np.ndarray   # (n,) max probability
    margin: np.ndarray       # (n,) top1 - top2
    entropy: np.ndarray      # (n,)
    reached: np.ndarray      # (n,) bool: a labeled item is in its graph component
    calibration: dict | None = None  # the refresh's calibrator (labelloop.loop.calibrate)

    def row_of(self) -> dict[int, int]:
        return {int(i): r for r, i in enumerate(self.item_ids)}


class Project:
    """A labeling project folder. ``Project.init`` creates one, ``Project(path)`` opens one."""

    def __init__(self, path: str | Path = ".", *, readonly: bool = False):
        self.store = Store(path, readonly=readonly)
        self.root = self.store.root
        self._lp = None        # in-memory propagation state for warm starts (web app, loops)
        self._lp_key = None
        self._own_predictions: Predictions | None = None   # of this Project's last refresh

    @classmethod
    def init(cls, path: str | Path, *, modality: str, classes: Sequence[str] | None = None,
             task: str = "classification", db: str | None = None) -> "Project":
        """A new project folder at ``path``. ``db``: a PostgreSQL database for its rows
        (``postgresql://user@host:port/dbname`` or ``env:VAR``, see
        :func:`labelloop.store.check_database_address`); default ``$LABELLOOP_DB``, and without
        it the embedded SQLite file."""
        if modality not in MODALITIES:
            raise ValidationError(f"modality must be 'image' or 'text', not {modality!r}")
        if task not in TASKS:
            raise ValidationError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
        if task == "detection" and modality != "image":
            raise ValidationError("a detection project holds images: use --modality image with --task detection")
        root = Path(path)
        if is_project(root):
            raise ProjectError(f"{root.resolve()} is already a labelloop project; open it instead")
        store = Store(root, create=True, db=db)
        if store.get_meta("modality") is not None:
            store.close()
            (root / DATABASE_FILE).unlink(missing_ok=True)
            raise ProjectError(f"the database {db or os.environ.get('LABELLOOP_DB')} holds a labelloop project "
                               "already; give each project its own database (createdb NAME)")
        store.set_meta("modality", modality)
        store.set_meta("task", task)
        store.set_meta("settings", {})
        store.set_meta("created", time.time())
        if classes:
            store.add_classes(classes)
        store.close()
        return cls(root)

    @classmethod
    def on_store(cls, store: Store) -> "Project":
        """A Project over a store that is already open: the web server's writer thread hands
        its one read-write connection, so a user action made there is this class's method."""
        p = cls.__new__(cls)
        p.store, p.root = store, store.root
        p._lp = p._lp_key = p._own_predictions = None
        return p

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ settings
    @property
    def modality(self) -> str:
        return self.store.get_meta("modality")

    @property
    def task(self) -> str:
        """``classification`` (one label per item; projects made before tasks existed),
        ``multilabel`` (each class applies or not: :meth:`label_classes`) or ``detection`` (boxes)."""
        return self.store.get_meta("task", "classification")

    def setting(self, name: str):
        return config.setting(name, self.store.get_meta("settings", {}))

    def set_setting(self, name: str, value) -> None:
        config.setting(name)  # validates the name
        values = self.store.get_meta("settings", {})
        values[name] = config.coerce(name, value)
        self.store.set_meta("settings", values)

    @property
    def classes(self) -> list[str]:
        return self.store.classes()

    def add_classes(self, names: Iterable[str]) -> list[str]:
        return self.store.add_classes(names)

    # -------------------------------------------------------------------- ingest
    def import_(self, source: str | Path | None = None, *, labels_from_folders: bool = False,
                text_column: str = "text", label_column: str | None = None, id_column: str | None = None,
                fmt: str | None = None, encoding: str | None = None, annotations: str | Path | None = None,
                annotation_format: str = "coco", batch: str | None = None) -> ImportReport:
        """Import a folder of images or a CSV / JSONL of texts (by the project's modality).
        ``encoding``: of a text file (default UTF-8). Whole-import problems (no class
        subfolders, a file in another encoding) are in the report's ``warnings``.

        ``annotations``: a COCO or Label Studio JSON file (``annotation_format``) whose
        image-level classes become import labels of the images under ``source`` that its
        records name; a text project takes its texts from Label Studio tasks (no ``source``).
        The file is read and checked before anything is stored.
        ``batch``: the name the new items carry (``--batch week-48``); without it they are
        ``unbatched``. An item already in the project keeps the batch it first came in."""
        from .store import validate_batch_name

        if encoding is not None and self.modality == "image":
            raise ValidationError("--encoding is for CSV / JSONL files of texts; this is an image project")
        batch = None if batch is None else validate_batch_name(batch)
        coll = None
        if annotations is not None:
            coll = self._read_annotations(source, annotations, annotation_format)
        elif source is None:
            raise ValidationError("give what to import: a folder of images, a CSV / JSONL file of texts, "
                                  "or (text projects) --labelstudio tasks.json")
        params = dict(source=None if source is None else str(source), labels_from_folders=labels_from_folders,
                      text_column=text_column, label_column=label_column, id_column=id_column,
                      encoding=encoding, annotations=None if annotations is None else str(annotations),
                      annotation_format=annotation_format if annotations is not None else None, batch=batch)
        run = self.store.start_run("import", params)
        try:
            multilabel = self.task == "multilabel"
            with self.store.new_items_batch(batch):
                if self.task == "detection":
                    report = import_images(self.store, source)
                    if coll is not None:
                        self._import_boxes(coll, source, Path(annotations).name, report, run)
                elif self.modality == "image":
                    report = import_images(self.store, source, labels_from_folders=labels_from_folders,
                                           annotations=coll, annotations_name=Path(annotations or "").name,
                                           multilabel=multilabel)
                elif coll is not None:
                    report = import_texts(self.store, coll, name=Path(annotations).name, multilabel=multilabel)
                else:
                    report = import_table(self.store, source, text_column=text_column, label_column=label_column,
                                          id_column=id_column, fmt=fmt, encoding=encoding or "utf-8",
                                          multilabel=multilabel)
        except BaseException:
            self.store.finish_run(run, status="failed")
            raise
        self.store.finish_run(run, {k: v for k, v in report.to_dict().items() if k != "skipped"}
                              | {"skipped": len(report.skipped)})
        return report

    def _read_annotations(self, source, annotations: str | Path, annotation_format: str):
        from . import formats

        if annotation_format not in ANNOTATION_FORMATS:
            raise ValidationError(f"annotation format must be one of {', '.join(ANNOTATION_FORMATS)}, "
                                  f"not {annotation_format!r}")
        flag = {"coco": "--annotations", "labelstudio": "--labelstudio", "yolo": "--yolo", "voc": "--voc"}
        if self.modality == "image" and source is None:
            raise ValidationError("give the folder of images the annotation file describes: "
                                  f"labelloop import -p PROJECT ./images {flag[annotation_format]} FILE")
        if annotation_format in ("yolo", "voc") and self.task != "detection":
            raise ValidationError(f"{flag[annotation_format]} holds boxes; this is a {self.task} project "
                                  "(boxes go into a project made with: labelloop init --modality image --task detection)")
        if self.modality == "text":
            if annotation_format != "labelstudio":
                raise ValidationError("COCO annotations describe images; this is a text project "
                                      "(texts come as CSV / JSONL, or as Label Studio tasks with --labelstudio)")
            if source is not None:
                raise ValidationError("the Label Studio tasks hold the texts: drop SOURCE "
                                      "(labelloop import -p PROJECT --labelstudio tasks.json)")
        if annotation_format == "yolo":
            coll = formats.read_yolo(annotations, source)
        elif annotation_format == "voc":
            coll = formats.read_voc(annotations)
        else:
            coll = (formats.read_coco if annotation_format == "coco" else formats.read_labelstudio)(annotations)
        check_class_names(coll, Path(annotations).name)
        return coll

    # --------------------------------------------------------------------- embed
    def backbone(self, backbone_id: str | None = None, **options):
        from .embed import default_backbone, get_backbone

        meta = self.store.get_meta("backbone") or {}
        if backbone_id is None and meta:
            backbone_id, options = meta["id"], {**meta.get("options", {}), **options}
        backbone_id = backbone_id or default_backbone(self.modality)
        bb = get_backbone(backbone_id, project_dir=self.root, **options)
        if len(getattr(bb, "modalities", None) or ()) > 1 and "modality" not in options:
            # a backbone for several modalities (the test backbone "fake") embeds this project's
            bb = get_backbone(backbone_id, project_dir=self.root, modality=self.modality, **options)
        if bb.modality != self.modality:
            raise ValidationError(f"backbone {backbone_id!r} embeds {bb.modality}s but this is a "
                                  f"{self.modality} project")
        return bb

    def embed(self, backbone: str | None = None, *, batch_size: int | None = None, progress: bool = False,
              on_batch=None, echo=None, ray_address: str | None = None, **options):
        """Embed every item not yet embedded by this backbone; it becomes the active backbone.

        An image backbone with a choice of input sizes that is given no ``image_size`` (and
        has none from an earlier embed of this project) gets one chosen from the images:
        about twice their median short side, at most the backbone's default
        (:mod:`labelloop.embed.sizing`). ``echo(message)`` hears that choice before the work
        starts; the report's ``note`` has it too. ``ray_address``: embed on the Ray cluster
        there instead, or on a local Ray started for the run with ``"local"``
        (:mod:`labelloop.embed.cluster`; the same cache either way)."""
        from .embed.runner import embed_items

        self.backbone(backbone, **options)  # an unknown id or option is the first thing to hear
        items = self.store.items()
        if not items:
            raise NotReadyError("the project has no items yet: run `labelloop import` first")
        options, note = self._embed_options(backbone, options, items)
        if note and echo is not None:
            echo(note)
        bb = self.backbone(backbone, **options)
        batch_size = batch_size or self.setting("batch_size") or None
        run = self.store.start_run("embed", {"backbone": bb.id, "options": options, "batch_size": batch_size}
                                   | ({"ray": ray_address} if ray_address else {}))
        if ray_address:
            from .embed.cluster import embed_items_ray

            report = embed_items_ray(self.store, bb, items, address=ray_address, batch_size=batch_size,
                                     progress=progress, on_batch=on_batch)
        else:
            report = embed_items(self.store, bb, items, batch_size=batch_size, progress=progress,
                                 on_batch=on_batch)
        report.note = note
        self.store.finish_run(run, report.to_dict() | {"skipped": len(report.skipped)},
                              status="interrupted" if report.interrupted else "done")
        if not report.interrupted:
            self.store.set_meta("backbone", {"id": bb.id, "cache_id": report.backbone, "options": options})
        return report

    def _embed_options(self, backbone_id: str | None, options: dict, items) -> tuple[dict, str | None]:
        """The options to embed with (those of the project's earlier embed by the same backbone
        under the ones given) and, when the input size was chosen from the images, what was
        chosen and how to override it."""
        from .embed import default_backbone
        from .embed.sizing import UPSCALE, choose_image_size, median_short_side

        meta = self.store.get_meta("backbone") or {}
        resolved = backbone_id or meta.get("id") or default_backbone(self.modality)
        if meta.get("id") == resolved:
            # the size chosen (or given) before sticks: the cache and the graph stay valid
            options = {**meta.get("options", {}), **options}
            return options, None
        if self.modality != "image" or "image_size" in options:
            return options, None
        sizes = getattr(self.backbone(resolved, **options), "image_sizes", ())
        side = median_short_side([it.uri for it in items]) if sizes else None
        if side is None:
            return options, None
        size = choose_image_size(side, sizes)
        note = (f"{resolved}: input size {size} px, chosen from the images (median short side {side:.0f} px; "
                f"at most ~{UPSCALE:g}x upscaling, {sizes[-1]} px at most); "
                f"override with --image-size N")
        return {**options, "image_size": size}, note

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(item_ids (n,), vectors (n, d)) of the active backbone, in item-id order; read-only.
        The vectors are one ``.npy`` file per set of items and backbone (``arrays/vectors/``),
        gathered from the embedding cache once and memory-mapped after: a reader pays only
        for the rows it touches, and nothing is read again until items are added or the
        backbone changes (:data:`MEMO` keeps the mapping)."""
        meta = self.store.get_meta("backbone")
        key = (self.store.items_key(), (meta or {}).get("cache_id"))
        return MEMO.get(self.root, "embeddings", key, lambda: _frozen(self._load_embeddings(meta)))

    def _load_embeddings(self, meta: dict | None) -> tuple[np.ndarray, np.ndarray]:
        if not self.store.item_count():
            raise NotReadyError("the project has no items yet: run `labelloop import` first")
        if not meta:
            raise NotReadyError("no embeddings yet: run `labelloop embed` first")
        ids = self.item_ids()
        folder = self.root / "arrays" / "vectors"
        path = folder / f"{self._vectors_fingerprint(ids, meta['cache_id'])}.npy"
        if path.exists():
            return ids, np.load(path, mmap_mode="r")
        items = self.store.items()
        cache_id = meta["cache_id"]
        have = self.store.embedded_hashes(cache_id)
        missing = [it for it in items if it.content_hash not in have]
        if missing:
            raise NotReadyError(
                f"{len(missing)} of {len(items)} items have no {cache_id!r} embedding "
                f"(e.g. {missing[0].display}): run `labelloop embed` again")
        ids = np.array([it.id for it in items], dtype=np.int64)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npy"
        self.store.load_embeddings(cache_id, [it.content_hash for it in items], out_path=tmp)
        tmp.replace(path)
        for old in folder.glob("*.npy"):   # one file per project: the older sets of items go
            if old != path and not old.name.endswith(".tmp.npy"):
                old.unlink(missing_ok=True)
        return ids, np.load(path, mmap_mode="r")

    @staticmethod
    def _vectors_fingerprint(ids: np.ndarray, cache_id: str) -> str:
        """The backbone's cache id (its vector of an item never changes) and the item ids."""
        h = hashlib.sha256(str(cache_id).encode())
        h.update(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
        return h.hexdigest()[:20]

    def snippets(self, item_ids: Iterable[int], *, width: int = 60) -> dict[int, str]:
        """item_id -> a short description to show a person (:meth:`Item.snippet`)."""
        return {it.id: it.snippet(width) for it in self.store.items([int(i) for i in item_ids])}

    # --------------------------------------------------------------------- graph
    def graph(self):
        """The shared kNN graph over the active embeddings, built once and stored at the largest
        k any consumer asks for (:meth:`graph_k`); propagation truncates it to the ``k`` setting.
        A stored graph is found from the item ids alone (:meth:`_graph_fingerprint`): the
        vectors are read only to build one. After items were added, the last graph is extended
        with them (:func:`labelloop.graph.extend_knn_graph`) instead of rebuilt, until more than
        :data:`labelloop.graph.REBUILD_AFTER_ADDED` of the items at its last full build were added."""
        from .graph import KnnGraph, build_knn_graph, extend_knn_graph

        path = self._graph_path(self.item_ids())
        if path.exists():
            ids = self.item_ids()
            return ids, MEMO.get(self.root, "graph", path.stem, lambda: KnnGraph.load(path))
        ids, X = self.embeddings()   # says what is missing (items, embeddings) when it is
        path = self._graph_path(ids)
        k_eff = min(self.graph_k(), len(ids) - 1)
        if k_eff < 1:
            raise NotReadyError("a graph needs at least 2 embedded items")
        base = self._graph_to_extend(ids, k_eff)
        run = self.store.start_run("graph", {"k": k_eff, "exact_threshold": self.setting("exact_threshold")},
                                   {"fingerprint": path.stem} | ({"extends": base[0]} if base else {}))
        t0 = time.perf_counter()
        if base is None:
            g = build_knn_graph(X, k=k_eff, exact_threshold=self.setting("exact_threshold"))
            extra = {"full_n": g.n}
        else:
            fingerprint, old, full_n = base
            g, changed = extend_knn_graph(old, X[:old.n], X[old.n:], exact_threshold=self.setting("exact_threshold"))
            extra = {"full_n": full_n, "added": g.n - old.n, "changed_rows": changed}
        path.parent.mkdir(parents=True, exist_ok=True)
        g.save(path)
        self.store.finish_run(run, {"n": g.n, "k": g.k, "method": g.method,
                                    "seconds": round(time.perf_counter() - t0, 3)} | extra)
        self._prune_graphs(keep=path.stem)
        return ids, g

    def _prune_graphs(self, *, keep: str) -> list[str]:
        """Delete the stored graphs other than ``keep`` (a fingerprint) and the affinities stored
        beside them: once a graph over the current items is stored (built, or extended from the
        newest one) the older ones are never read again. A process still using one keeps its
        memory map (the file goes when it is closed). Returns the names deleted."""
        folder = self.root / "arrays" / "graphs"
        removed = []
        for f in sorted(folder.iterdir()):
            fingerprint = f.name.split("-S-")[0].removesuffix(".npz")
            stored = f.suffix == ".npz" or ("-S-" in f.name and not f.name.endswith(".tmp"))
            if stored and fingerprint != keep:
                if f.is_dir():
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink(missing_ok=True)
                removed.append(f.name)
        return removed

    def _graph_to_extend(self, ids: np.ndarray, k: int):
        """``(fingerprint, graph, items at its last full build)`` of the newest stored graph over
        a prefix of ``ids`` (items are only added, with ascending ids) at the same backbone, k
        and threshold, or None when there is none or a full rebuild is due: more than
        :data:`~labelloop.graph.REBUILD_AFTER_ADDED` x the items of the last full build added since."""
        from .graph import REBUILD_AFTER_ADDED, KnnGraph

        for run in reversed(self.store.runs("graph")):
            n_old, fingerprint = run["summary"].get("n"), run["inputs"].get("fingerprint")
            old = self.root / "arrays" / "graphs" / f"{fingerprint}.npz"
            if not n_old or n_old >= len(ids) or not old.exists():
                continue
            if self._graph_fingerprint(ids[:n_old]) != fingerprint:
                continue
            full_n = int(run["summary"].get("full_n", n_old))
            if len(ids) - full_n > REBUILD_AFTER_ADDED * full_n:
                return None
            g = KnnGraph.load(old)
            return (fingerprint, g, full_n) if g.k == k else None
        return None

    def graph_k(self) -> int:
        """The k the shared graph is built at: the largest any consumer asks for -- propagation
        (the ``k`` setting), typicality (TypiClust's 20 neighbours), the audit's graph signal."""
        from .graph import GRAPH_K, TYPICALITY_NEIGHBOURS

        return max(self.setting("k"), TYPICALITY_NEIGHBOURS, GRAPH_K)

    def propagation_graph(self):
        """``(ids, graph)`` with each item's ``k`` (setting) nearest neighbours: what propagates."""
        ids, g = self.graph()
        return ids, g.truncate(min(self.setting("k"), g.k))

    def affinity(self):
        """``(ids, S)``: the propagation's normalised affinity (:func:`labelloop.propagate.affinity_matrix`
        of :meth:`propagation_graph` at the ``temperature`` setting), computed once per graph, k
        and temperature and stored beside the graph as memory-mapped arrays, so a refresh in a
        new process reads neither the graph nor the vectors (21 s of affinity at 1M items)."""
        ids = self.item_ids()
        T = self.setting("temperature")
        graph = self._graph_path(ids)
        folder = graph.with_name(f"{graph.stem}-S-k{self.setting('k')}-T{T}")
        return ids, MEMO.get(self.root, "affinity", folder.name, lambda: self._load_affinity(folder, T))

    def _load_affinity(self, folder: Path, temperature):
        from .csr import LOCALITY_MIN_ROWS, CsrArrays
        from .propagate import affinity_matrix

        parts = ("data", "indices", "indptr")
        if not folder.exists():   # written whole under another name, then renamed
            S = affinity_matrix(self.propagation_graph()[1], temperature=temperature)
            tmp = folder.with_name(f"{folder.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.mkdir(parents=True, exist_ok=True)
            for a in parts:
                np.save(tmp / f"{a}.npy", getattr(S, a))
            try:
                tmp.replace(folder)
            except OSError:   # another process stored it first
                shutil.rmtree(tmp, ignore_errors=True)
        data, indices, indptr = (np.asarray(np.load(folder / f"{a}.npy", mmap_mode="r")) for a in parts)
        n = len(indptr) - 1
        # numpy arrays, no scipy: a warm refresh only gathers rows (labelloop.csr); a full
        # propagation makes the scipy matrix over the same arrays on its first product
        # affinity_matrix sorted the indices; its locality order for full products
        # (CsrArrays.ordered) is stored beside it once, made here (an affinity stored before
        # there was one gets it on its next load) so that no later refresh or drain pays for it
        S = CsrArrays(data, indices, indptr, (n, n), order_dir=folder / "order")
        if n >= LOCALITY_MIN_ROWS and not (folder / "order").exists():
            S.ordered()
        return S

    def _graph_path(self, ids: np.ndarray) -> Path:
        return self.root / "arrays" / "graphs" / f"{self._graph_fingerprint(ids)}.npz"

    def _graph_fingerprint(self, ids: np.ndarray) -> str:
        """What a stored graph was built from: the backbone's cache id (its vectors of an item
        never change), k, the exact-search threshold and the item ids (sha256 of 8 MB at 1M
        items: ~5 ms)."""
        meta = self.store.get_meta("backbone") or {}
        h = hashlib.sha256()
        h.update(str(meta.get("cache_id")).encode())
        h.update(f"k={self.graph_k()};exact<={self.setting('exact_threshold')}".encode())
        h.update(np.ascontiguousarray(ids))   # its buffer: no 8 MB copy at 1M items
        return h.hexdigest()[:20]

    # -------------------------------------------------------------------- labels
    def label(self, assignments: Iterable[tuple[str | int, str]], *, source: str = "human",
              annotator: str | None = None, create_classes: bool = False) -> LabelReport:
        """Append labels. ``assignments``: (item reference, class name) pairs; a reference is an
        item id, external id, path or unique file name. Bad rows are reported, never fatal.

        A class name the project does not know is skipped unless ``create_classes`` (the
        CLI's ``--new-classes``), except while the project has no classes at all: then the
        first labels define them."""
        return self._label_rows([(f"item {ref!r}", ref, name) for ref, name in assignments],
                                source=source, annotator=annotator, create_classes=create_classes)

    def _label_rows(self, rows_in: Iterable[tuple[str, str | int, str]], *, source: str,
                    annotator: str | None, create_classes: bool) -> LabelReport:
        """``label`` for (where, item reference, class name) rows: ``where`` names the row as
        the user gave it (``labels.csv:7 item 'cat_01.jpg'``) in every skip reason."""
        if source not in ("human", "import"):
            raise ValidationError("label source must be 'human' or 'import' (machine labels come from autolabel)")
        if self.task == "multilabel":
            raise ValidationError("this is a multi-label project: give each item the set of classes that apply "
                                  "(labelloop label -p PROJECT ITEM --classes a,b; Project.label_classes)")
        report = LabelReport()
        rows: list[tuple[str, int, str]] = []
        for where, ref, name in rows_in:
            name = (name or "").strip() if isinstance(name, str) else name
            if not name:
                report.skipped.append(Skipped(where, "empty label"))
                continue
            try:
                rows.append((where, self.store.resolve_item(ref), name))
            except UnknownItemError as exc:
                report.skipped.append(Skipped(where, str(exc)))
        known = set(self.classes)
        new = sorted({name for _, _, name in rows if name not in known})
        if new and (create_classes or not known):
            report.classes_added = self.store.add_classes(new)
        elif new:
            for where, _, name in rows:
                if name in new:
                    report.skipped.append(Skipped(
                        where, f"unknown class {name!r} (known: {', '.join(sorted(known))}); "
                        "label with --new-classes to create it"))
            rows = [r for r in rows if r[2] not in new]
        class_ids = self.store.class_ids()
        pairs = [(i, class_ids[name]) for _, i, name in rows]
        if source == "human":
            self._record_confirmations(pairs, annotator)
        report.appended = self.store.add_annotations(pairs, source=source, annotator=annotator)
        return report

    def _record_confirmations(self, pairs: list[tuple[int, int]], annotator: str | None) -> None:
        """A person who gives an item the label it already had has confirmed it: the audit does
        not flag that (item, label) again until the label changes."""
        given = self.store.latest_labels("import") | self.store.latest_labels("human")
        same = [(i, k) for i, k in pairs if given.get(i) == k]
        if same:
            self.store.add_audit_confirmations(same, evidence="relabeled", annotator=annotator)

    def label_csv(self, path: str | Path, *, source: str = "human", annotator: str | None = None,
                  create_classes: bool = False) -> LabelReport:
        """Labels from a CSV with columns ``item`` and ``label`` (see :meth:`label`); a skipped
        row is named by its file and line."""
        rows = [(f"{where} item {ref!r}", ref, cell) for where, ref, cell in _item_csv(path, "label")]
        return self._label_rows(rows, source=source, annotator=annotator, create_classes=create_classes)

    def label_vector(self, ids: np.ndarray | None = None, *, sources: Sequence[str] = ("human", "import")
                     ) -> np.ndarray:
        """(n,) class index per item (-1 none) from the given sources; earlier sources win."""
        return self.labels_with_source(ids, sources=sources)[0]

    def labels_with_source(self, ids: np.ndarray | None = None, *, sources: Sequence[str] = LABEL_SOURCES
                           ) -> tuple[np.ndarray, np.ndarray]:
        """``(y, src)``: (n,) class index of each item's current label from ``sources`` (-1
        none; earlier sources win, :meth:`_current_label_arrays`) and (n,) the index in
        ``sources`` of the source it came from (-1 none)."""
        ids = np.asarray(self.item_ids() if ids is None else ids, dtype=np.int64)
        y = np.full(len(ids), -1, dtype=np.int64)
        src = np.full(len(ids), -1, dtype=np.int64)
        k, v, s = self._current_label_arrays(sources)   # (m,) item ids, class ids, source index
        if not len(k) or not len(ids):
            return y, src
        class_ids = np.fromiter(self.store.class_ids().values(), dtype=np.int64)
        col = np.full(int(max(class_ids.max(initial=0), v.max())) + 1, -1, np.int64)   # class id -> its column
        col[class_ids] = np.arange(len(class_ids))
        if bool((ids[1:] > ids[:-1]).all()):   # item ids come ascending: no sort (1M: 3 per refresh)
            order, sorted_ids = None, ids
        else:
            order = np.argsort(ids, kind="stable")
            sorted_ids = ids[order]                                       # (n,) ascending
        pos = np.minimum(np.searchsorted(sorted_ids, k), len(ids) - 1)
        hit = sorted_ids[pos] == k
        at = pos[hit] if order is None else order[pos[hit]]
        y[at], src[at] = col[v[hit]], s[hit]
        return y, src

    # ------------------------------------------------------------------- refresh
    def refresh(self, *, full: bool = False, on_predictions=None, drain: bool = True) -> dict:
        """:meth:`_refresh` with glibc's allocator keeping freed memory for reuse
        (:func:`labelloop.allocator.tuned_allocator`): a refresh at 1M items allocates and
        frees (n, C) arrays of 40 MB each that would otherwise be mapped, zero-filled page by
        page and unmapped again (measured: 1.3 -> 0.6-0.8 system CPU-s of a `labelloop refresh`,
        +20 MB peak RSS). The results do not change."""
        from .allocator import tuned_allocator

        with tuned_allocator():
            return self._refresh(full=full, on_predictions=on_predictions, drain=drain)

    def _refresh(self, *, full: bool, on_predictions, drain: bool) -> dict:
        """kNN graph (reused) + label propagation -> predictions of every item. After new labels
        the propagation warm-starts from the previous result unless ``full``. A multi-label
        project: :meth:`_refresh_multilabel`.

        ``on_predictions(run_id)``: called as soon as :meth:`predictions` of this Project returns
        the new predictions (and their held-out scores are stored), before the run's arrays are
        written and the run is finished: a server shows them without waiting for the disk.

        ``drain=False``: a warm update past its error bound leaves its full steps
        (:meth:`LabelPropagation.drain`) to a later :meth:`drain` of this Project, e.g. a
        server's once the predictions are shown; the summary's ``residual`` says what is left."""
        from .propagate import LabelPropagation, class_index_dtype, prediction_summary

        if self.task == "multilabel":
            return self._refresh_multilabel()

        ids, S = self.affinity()   # the propagation graph's normalised affinity, stored
        classes = self.classes
        if not classes:
            raise NotReadyError("no classes yet: label some items first (`labelloop label`)")
        y_h = self.label_vector(ids, sources=("human",))
        y = self.label_vector(ids, sources=("human", "import"))
        trust = self.setting("import_trust")
        rules, rules_key = self._rule_evidence(ids)   # labeling functions: soft seeds, or None
        if not (y >= 0).any() and rules is None:
            raise NotReadyError("no labeled items yet: label a few items per class first (`labelloop label`)")
        params = dict(k=min(self.setting("k"), len(ids) - 1), temperature=self.setting("temperature"), n_iter=self.setting("n_iter"),
                      import_trust=trust, class_prior=self.setting("class_prior"), rules=rules_key)
        key = (self._graph_fingerprint(ids), len(classes), self.setting("temperature"), trust,
               self.setting("class_prior"), rules_key)
        warm = not full and self._lp is not None and self._lp_key == key
        if not full and not warm:
            warm = self._load_warm_state(key, S)
        t0 = time.perf_counter()
        run = self.store.start_run("refresh", params | {"warm": warm},
                                   {"graph": key[0], "labels": int((y >= 0).sum())})
        out_dir = self.store.run_dir(run)
        # Memory the system has not used for a few seconds can cost far more to touch: on a
        # virtual machine that hands free memory back to its host, 0.73 CPU-s to write 100 MB to
        # a new file after a pause, 0.03 right after deleting 100 MB of files
        # (benchmarks/results/fresh_memory.md); a refresh at 1M items makes ~100 MB of arrays.
        # A refresh in a process of its own (the CLI's) has no memory of its own to reuse: the
        # run folder it replaces goes first, and the (n, C) distributions and state are made in
        # this run's files, in the memory that folder's files held (1M, 8 s pause: system CPU
        # 0.48 -> 0.23 s, e2e_latency_1000000_s10b.md). A server (on_predictions: it shows them
        # before storing them) reuses the memory it freed the refresh before: its arrays stay in
        # it, and the folder goes once the predictions are shown (100k, label -> visible 0.056
        # vs 0.065 s with the files, e2e_latency_100000_s10b.md)
        in_files = on_predictions is None
        if in_files:
            self.prune_runs(keep=self.KEEP_REFRESH_RUNS - 1)
        proba_file = _RunFile(out_dir / "proba.npy")
        state_file = _RunFile(out_dir / STATE_Y_FILES[False])   # named by its row order when stored
        if warm and in_files:   # the state is updated in the file this run stores it in
            self._lp.move_state(state_file.create(self._lp.state()[0].shape))
        if trust >= 1.0 and rules is None:
            fit_y, weight, alpha = y, None, None
        else:
            # imported labels are soft evidence: spread with every item's own label as a prior
            # weighted by trust, nothing clamped; a human label's own term (weight 100)
            # outweighs its neighbourhood (audit.label_errors.smooth_labels, label_noise benchmark)
            # (with rules and import_trust 1, imported labels count as human ones)
            fit_y = y
            weight = np.where(y_h >= 0, 100.0, np.where(y >= 0, trust if trust < 1.0 else 100.0, 0.0))
            alpha = SMOOTH_ALPHA
            if rules is not None:   # rule-covered items without a label: weight rule_trust x confidence
                from .rules import seed_with_rules

                fit_y, weight = seed_with_rules(y, weight, rules, self.setting("rule_trust"))
        prior, prior_source = self._class_prior(ids, y_h, len(classes)) if self._class_mass() else (None, "none")
        if self._class_mass() == "estimated" and prior_source != "random":
            prior, prior_source = None, "estimated"  # the graph's estimate, until random draws measure it
        refits = 0
        if not warm:
            self._lp = LabelPropagation(temperature=self.setting("temperature"), n_iter=self.setting("n_iter"),
                                        alpha=alpha, class_mass=self._class_mass(), class_prior=prior)
        # the distributions of every row made in the run's proba file, not in a new array that
        # is then copied there (40 MB at 1M items)
        self._lp.distributions_out = proba_file.create if in_files else None
        try:
            if warm:
                self._lp.class_prior = prior
                refits = getattr(self._lp, "n_refits_", 0)
                self._lp.update(fit_y, n_iter=self.setting("warm_iter"), sample_weight=weight, drain=drain)
                refits = getattr(self._lp, "n_refits_", 0) - refits
            else:
                self._lp.fit(S, fit_y, n_classes=len(classes), sample_weight=weight)
                self._lp_key = key
            P = self._lp.predict_proba()  # (n, C)
        finally:
            self._lp.distributions_out = None
        reached = self._lp.reached_
        hw_setting = self.setting("head_weight")
        if hw_setting == "auto" and warm:
            # a warm refresh keeps the last full refresh's choice: no head fits when it was 0
            hw_setting = self._last_head_weight()
        # a second opinion from the embeddings alone (loop.choose_head_weight picks "auto")
        H = self._head_proba(fit_y, len(classes)) if hw_setting == "auto" or hw_setting > 0 else None
        # fit_y: the held-out propagations keep the seeds the refresh used (rule evidence too)
        choose_prior = self.setting("class_prior") == "auto" and prior_source != "random"
        pred, head_weight = self._calibrate(P, H, reached, fit_y, y_h, weight, alpha, warm=warm,
                                            head_weight=hw_setting, prior_shares=prior if choose_prior else False)
        reached = np.asarray(pred.reached, dtype=bool)  # the head, where averaged in, reaches every item
        P = pred.proba.astype(np.float32, copy=False)   # (n, C) as stored and as every reader sees it
        s = prediction_summary(P)
        seconds = time.perf_counter() - t0
        prev = self.predictions()
        changed = None
        if prev is not None and len(prev.item_ids) == len(ids) and np.array_equal(prev.item_ids, ids):
            changed = int((prev.label != s["label"]).sum())
        # the human labels scored held out, calibrated: what autolabel / estimate / diagnose read
        np.save(out_dir / "heldout_rows.npy", pred.heldout_rows)
        np.save(out_dir / "heldout_proba.npy", pred.heldout_proba)
        np.save(out_dir / "heldout_labels.npy", y_h[pred.heldout_rows])
        own_before = self._own_predictions
        self._remember_predictions(run, ids, P, reached, classes, pred.calibrator.to_dict(), s)
        try:
            if on_predictions is not None:
                on_predictions(run)
                # the folder this run replaces goes now: the files below are written in its memory
                self.prune_runs(keep=self.KEEP_REFRESH_RUNS - 1)
            # the predictions: one versioned set of array files per refresh (:meth:`_load_predictions`);
            # the item ids, when those of the last predictions, a link to their file (8 MB at 1M)
            if changed is None or not _link(self.store.run_dir(prev.run_id) / "item_ids.npy", out_dir / "item_ids.npy"):
                np.save(out_dir / "item_ids.npy", ids)
            proba_file.save(P)   # made there already, unless calibrated into another array
            for name, a in (("reached", reached), *s.items()):
                np.save(out_dir / f"{name}.npy", a)
            # the propagation state, so the next refresh (another process) can warm-start from it,
            # in the row order it is held in (after a drain: the graph's locality order, not
            # reordered: LabelPropagation.state); the labels in the smallest integer type that
            # holds the class ids (read back as int64)
            Y, ordered = self._lp.state()
            state_file.save(Y, out_dir / STATE_Y_FILES[ordered])   # there already, unless a step made a new array
            np.save(out_dir / "state_y.npy", self._lp.y_.astype(class_index_dtype(len(classes))))
            np.save(out_dir / "state_w.npy", self._lp.sample_weight_)
        except BaseException:
            self._own_predictions = own_before   # not stored: the previous run stays current
            raise
        finally:
            # the propagation writes into no array in the run's files any more: what it wrote later
            # (an update in place) would change a finished run's predictions or stored state
            proba_file.release(self._lp)
            state_file.release(self._lp)
        summary = dict(items=len(ids), labeled=int((y >= 0).sum()), human=int((y_h >= 0).sum()),
                       rule_seeded=int(((fit_y >= 0) & (y < 0)).sum()),
                       class_prior=None if prior is None else [round(float(v), 4) for v in prior],
                       class_prior_source=prior_source, class_prior_choice=pred.class_prior,
                       unreached=int((~reached).sum()), mean_confidence=float(s["confidence"].mean()),
                       changed=changed, warm=warm, warm_updates=int(getattr(self._lp, "n_updates_", 0)),
                       # the warm update's error bound (propagate.UPDATE_RESIDUAL_GROWTH): drain_steps
                       # full steps ran because it was exceeded; refit: a full propagation ran
                       # instead (a label removed, or the steps ran out)
                       refit=refits > 0, drain_steps=int(getattr(self._lp, "drain_steps_", 0)) if warm else 0,
                       residual=_round_or_none(getattr(self._lp, "residual_", None), 6),
                       residual_fit=_round_or_none(getattr(self._lp, "residual_fit_", None), 6),
                       drained=int(getattr(self._lp, "drained_", 0)),   # drain steps since then
                       seconds=round(seconds, 4), classes=classes, calibration=pred.calibrator.to_dict(),
                       head_weight=head_weight,
                       ece_heldout=_nan_none(pred.heldout_ece(y_h, s["label"])))
        # the whole-dataset estimate as `status` computes it for these predictions, so the
        # dashboard's learning curve and its estimate card tell the same story
        summary["estimated_accuracy"] = self._estimate_from(s["label"], s["confidence"], len(classes), pred, y >= 0,
                                                            y_h)["accuracy"]
        self.store.finish_run(run, summary)   # (the folder it replaces went before its arrays were made)
        return summary | {"run": run}

    def drain(self, *, stop=None, max_steps: int | None = None) -> int:
        """Full propagation steps that this Project's last warm refresh left past its error bound
        (``refresh(drain=False)``; :meth:`LabelPropagation.drain`): back to the last full fit's
        residual, at most ``max_steps`` (default: ``n_iter``, a full fit's work; a refresh's own
        drain stops at the propagation's ``drain_steps``), on the propagation state this process
        holds: the next warm refresh starts from the drained state; the stored predictions stay
        those of the last refresh. ``stop()``: asked between row blocks of every step, True ends
        the drain (a new label waiting). Returns the full steps run (0: nothing past the bound,
        or no warm state)."""
        from .propagate import MAX_ITER_TO_CONVERGE

        lp = self._lp
        if lp is None or not lp.fitted or not lp.residual_exceeded():
            return 0
        if max_steps is None:
            max_steps = MAX_ITER_TO_CONVERGE if lp.n_iter is None else lp.n_iter
        from .allocator import tuned_allocator

        with tuned_allocator():   # as in refresh: (n, C) arrays every step
            return lp.drain(max_steps, stop=stop)

    #: refresh run folders kept (``arrays/runs/<id>``: predictions, propagation state, held-out
    #: scores; ~150 MB each at 1M items): the newest finished one is what every reader uses and
    #: a warm refresh starts from; a server's request threads may still read the one before
    #: while its refresher writes the next (:data:`Memo.SLOTS`); one more to spare, which a
    #: refresh deletes before it makes its arrays (a server's: once its predictions are shown,
    #: before it writes them; :meth:`refresh`).
    KEEP_REFRESH_RUNS = 3

    def prune_runs(self, keep: int | None = None) -> list[int]:
        """Delete the folders of finished, failed or interrupted refresh runs older than the
        ``keep`` (default :data:`KEEP_REFRESH_RUNS`) newest finished ones, except the run the
        last ``autolabel`` accepted labels from and this Project's own predictions; running
        ones are never touched. Returns the run ids whose folders went. A refresh prunes to
        one fewer before it makes its arrays: its own run is the last kept once it finishes."""
        keep = max(1, self.KEEP_REFRESH_RUNS if keep is None else keep)
        done = self.store.run_ids("refresh")
        if len(done) <= keep:
            return []
        oldest_kept = done[-keep]
        spared = set()
        last_autolabel = self.store.last_run("autolabel")
        if last_autolabel is not None:
            spared.add(last_autolabel["inputs"].get("prediction_run"))
        if self._own_predictions is not None:
            spared.add(self._own_predictions.run_id)
        folder = self.root / "arrays" / "runs"
        removed = []
        for run_id in self.store.run_ids("refresh", ("done", "failed", "interrupted")):
            if run_id >= oldest_kept:
                break
            if run_id not in spared and (folder / str(run_id)).exists():
                shutil.rmtree(folder / str(run_id), ignore_errors=True)
                removed.append(run_id)
        return removed

    #: a warm refresh above this many items reuses the last calibration instead of refitting it
    #: (five held-out propagations); a full refresh always refits
    RECALIBRATE_MAX_ITEMS = 50_000
    #: calibrate on the labels no query strategy chose once there are this many
    MIN_REPRESENTATIVE = 30

    def _calibrate(self, P, H, reached, y, y_h, weight, alpha, *, warm: bool, head_weight, prior_shares=False):
        """``(prediction, head_weight)``: propagation ``P`` (averaged with the head ``H`` where the
        ``head_weight`` setting, or its "auto" choice on held-out labels, says so), calibrated
        (:func:`labelloop.loop.predict`) on held-out propagation of the human labels with the
        refresh's own settings. ``prior_shares`` other than False (the label shares, or None for
        those of ``y``): the class prior is chosen on the held-out labels too
        (``class_prior auto``, :func:`labelloop.loop.predict.choose_class_prior`)."""
        from .loop import Calibrator, mix_head, predict
        from .loop.predict import calibrated_predictions, prior_candidates
        from .propagate import LabelPropagation

        C = P.shape[1]
        hw_setting = head_weight
        choose_prior = prior_shares is not False
        shares = prior_shares if choose_prior else None
        if warm and len(y) > self.RECALIBRATE_MAX_ITEMS:
            last = self.predictions()
            cal = (last.calibration or {}) if last is not None else {}
            prev = None
            if choose_prior:   # the last full refresh's choice, like its calibration
                prev = ((self.store.last_run("refresh") or {}).get("summary") or {}).get("class_prior_choice") \
                    or "labels"
                if prev != "labels":   # "labels" is what the propagation normalised P to already
                    P = prior_candidates(self._lp.Y_, y, C, (prev,), shares=shares)[prev]
            if "beta" in cal:
                d = self.store.run_dir(last.run_id)
                held = (np.load(d / "heldout_rows.npy"), np.load(d / "heldout_proba.npy"))
                hw = self._last_head_weight()
                P_mix = mix_head(P, H, hw) if H is not None and hw > 0 else P
                reached = np.ones_like(reached) if H is not None and hw > 0 else reached
                self._lp.release_distributions(P_mix)   # calibrated in its memory: no new (n, C) array
                pred = predict(P_mix, reached, y_h, held, calibrator=Calibrator.from_dict(cal), heldout_calibrated=True,
                               overwrite=True)
                pred.class_prior = prev
                return pred, hw
        S, n_iter, T = self._lp.S_, self.setting("n_iter"), self.setting("temperature")

        def propagate(y_hidden):
            hidden = (y_h >= 0) & (y_hidden < 0)  # hide the item's imported label too
            yy = np.where(hidden, -1, y)
            w = None if weight is None else np.where(hidden, 0.0, weight)
            lp = LabelPropagation(temperature=T, n_iter=n_iter, alpha=alpha, class_mass=self._class_mass(),
                                  class_prior=self._lp.class_prior).fit(S, yy, n_classes=C, sample_weight=w)
            # class_prior auto: every candidate, with the shares of all labels (not the fold's)
            return prior_candidates(lp.Y_, y, C, shares=shares) if choose_prior else lp.predict_proba()

        head = None
        if H is not None:
            head = lambda y_f, rows: self._head_proba(np.where((y_h >= 0) & (y_f < 0), -1, y), C)[rows]  # noqa: E731
        # labels a query strategy chose are the hardest items by design: calibrating on them makes
        # every confidence too low. Score the others (first labels, random shares, verify checks)
        # once there are enough of them.
        chosen = self.actively_chosen()
        ids = self.item_ids() if len(chosen) else None
        rep = None if ids is None or len(ids) != len(y_h) else np.array([int(i) not in chosen for i in ids])
        if rep is not None and ((y_h >= 0) & rep).sum() < self.MIN_REPRESENTATIVE:
            rep = None
        if choose_prior:
            P = prior_candidates(self._lp.Y_, y, C, shares=shares)
        return calibrated_predictions(P, H, reached, y_h, propagate, head, head_weight=hw_setting, score=rep)

    def _last_head_weight(self) -> float:
        """The head weight the last refresh used (0 when unknown)."""
        last = self.store.last_run("refresh")
        return float(((last or {}).get("summary") or {}).get("head_weight") or 0.0)

    def _class_mass(self) -> bool | str:
        prior = self.setting("class_prior")  # "auto": the propagation's own normalisation is "labels"
        return False if prior == "none" else "labels" if prior == "auto" else prior

    def _class_prior(self, ids: np.ndarray, y_h: np.ndarray, n_classes: int) -> tuple[np.ndarray | None, str]:
        """The class shares for class-mass normalisation (:func:`labelloop.loop.class_prior`):
        from labels `next` drew at random once there are enough, else from the labels no query
        strategy chose. ``y_h``: the human labels of ``ids`` (:meth:`label_vector`)."""
        from .loop import class_prior

        drawn_items: set[int] = set()
        for run in self._query_runs():
            drawn_items.update(c["item"] for c in run["summary"].get("checks", []) if c.get("kind") == "random")
            if run["params"].get("strategy") == "random":
                drawn_items.update(run["summary"].get("items", []))
        chosen_items = self.actively_chosen()
        drawn = np.isin(ids, np.fromiter(drawn_items, dtype=np.int64, count=len(drawn_items)))
        chosen = np.isin(ids, np.fromiter(chosen_items, dtype=np.int64, count=len(chosen_items)))
        return class_prior(y_h, n_classes, drawn=drawn, chosen=chosen)

    def _head_proba(self, y: np.ndarray, n_classes: int, rows: np.ndarray | None = None) -> np.ndarray:
        """``(n, C)`` probabilities of the refresh's classifier head
        (:func:`labelloop.loop.predict.embedding_head`) fitted on the labels ``y`` over the
        active embeddings; with ``rows``, only those rows (``(len(rows), C)``)."""
        from .loop.predict import embedding_head

        return embedding_head(self.embeddings()[1], n_classes, normalised=False)(y, rows)

    def _load_warm_state(self, key, S) -> bool:
        """Rebuild the propagation state from the last refresh run if it used the same graph."""
        from .propagate import LabelPropagation

        last = self.store.last_run("refresh")
        if not last or last["inputs"].get("graph") != key[0]:
            return False
        p = last["params"]
        if (len(last["summary"].get("classes", [])), p.get("temperature"), p.get("import_trust"),
                p.get("class_prior", "labels"), p.get("rules")) != key[1:]:
            return False
        d = self.store.run_dir(last["id"])
        ordered = (d / STATE_Y_FILES[True]).exists()
        if not all((d / f).exists() for f in (STATE_Y_FILES[ordered], "state_y.npy", "state_w.npy")):
            return False
        lp = LabelPropagation(temperature=key[2], n_iter=self.setting("n_iter"),
                              alpha=None if key[3] >= 1.0 and key[5] is None else SMOOTH_ALPHA,
                              class_mass=self._class_mass())
        if ordered and S.ordered() is None:
            return False
        # Y memory-mapped, read-only: the refresh copies it into its own run's file (move_state)
        lp.restore(S, np.load(d / STATE_Y_FILES[ordered], mmap_mode="r"), np.load(d / "state_y.npy"),
                   sample_weight=np.load(d / "state_w.npy"), n_updates=last["summary"].get("warm_updates", 0),
                   residual_fit=last["summary"].get("residual_fit"), drained=last["summary"].get("drained", 0),
                   ordered=ordered)
        self._lp, self._lp_key = lp, key
        return True

    def predictions(self) -> Predictions | None:
        """The latest refresh's predictions, or None before the first refresh: this Project's
        own last refresh (even while its rows are still being written, :meth:`refresh`), else
        the latest finished one, read once per process (:data:`MEMO`)."""
        last = self.store.last_run_id("refresh")
        own = self._own_predictions
        if own is not None and (last is None or own.run_id >= last):
            return own
        return MEMO.get(self.root, "predictions", last, lambda: self._load_predictions(last))

    def _load_predictions(self, run_id: int | None) -> Predictions | None:
        """A refresh's predictions from its run folder, memory-mapped: ``proba``, ``item_ids``,
        ``reached`` and the summary arrays (``label``, ``confidence``, ``margin``, ``entropy``).
        Runs stored before those arrays existed are summarised here and their ``reached`` read
        from the ``predictions`` table."""
        last = None if run_id is None else self.store.run(run_id)
        if last is None:
            return None
        d = self.store.run_dir(last["id"])
        if not (d / "proba.npy").exists():   # a multi-label refresh: scores.npy (multilabel_scores)
            return None
        P = np.asarray(np.load(d / "proba.npy", mmap_mode="r"))
        ids = np.asarray(np.load(d / "item_ids.npy", mmap_mode="r"))
        names = ("label", "confidence", "margin", "entropy")
        if all((d / f"{a}.npy").exists() for a in (*names, "reached")):
            s = {a: np.asarray(np.load(d / f"{a}.npy", mmap_mode="r")) for a in names}
            reached = np.asarray(np.load(d / "reached.npy", mmap_mode="r"))
        else:
            from .propagate import prediction_summary

            s = prediction_summary(P)
            reached = self.store.prediction_reached(last["id"], len(ids))
        return _frozen(Predictions(last["id"], ids, P, last["summary"].get("classes", self.classes), s["label"],
                                   s["confidence"], s["margin"], s["entropy"], reached,
                                   last["summary"].get("calibration")))

    # ------------------------------------------------------------ active learning
    def _current_predictions(self, ids: np.ndarray) -> Predictions | None:
        pred = self.predictions()
        if pred is None or len(pred.item_ids) != len(ids) or not np.array_equal(pred.item_ids, ids) \
                or len(pred.classes) != len(self.classes):
            return None
        return pred

    def next(self, n: int = 20, *, strategy: str = "auto", seed: int | None = None, annotator: str | None = None,
             record: bool = True, explore: float | None = None, target_precision: float | None = None,
             batch: str | None = None) -> list[dict]:
        """The ``n`` items a person should label next, most useful first, with the reason.
        Items with a human or imported label are not asked again, nor accepted machine labels
        (except by ``verify``, which checks exactly those). ``batch``: only items of that batch
        are candidates (the model still learns from every label).

        ``strategy``: a :mod:`labelloop.select` strategy, or ``"verify"``: a random sample of the
        items auto-labeling could accept, whose labels certify it (:mod:`labelloop.loop.certify`).
        ``explore``: share of the batch drawn at random once predictions exist (default 0.2
        for ``auto``, 0 otherwise): the random ones are an unbiased sample for certification.
        With active labeling functions, ``conflict`` asks first where they disagree (with each
        other or with the graph), and ``auto`` does so after its cold start. A multi-label
        project: :meth:`_next_multilabel`."""
        from .loop import choose, coverage_of

        if self.task == "multilabel":
            if strategy != "auto":
                raise ValidationError(f"a multi-label project chooses by the uncertainty of each item's undecided "
                                      f"classes (plus a random share); drop --strategy {strategy}")
            return self._next_multilabel(n, seed=seed, annotator=annotator, record=record, explore=explore,
                                         batch=batch)
        if self.task == "detection":
            return self._detection_next(n, strategy=strategy, seed=seed, annotator=annotator, record=record,
                                        batch=batch)
        ids, graph = self.graph()
        _, X = self.embeddings()
        given = set(self.store.latest_labels("human")) | set(self.store.latest_labels("import"))
        done = given | set(self.store.latest_labels("machine"))
        row = {int(i): r for r, i in enumerate(ids)}
        labeled = np.array(sorted(row[i] for i in done if i in row), dtype=np.int64)
        unlabeled = np.setdiff1d(np.arange(len(ids)), labeled)
        y = self.label_vector(ids, sources=("human", "import", "machine"))
        pred = self._current_predictions(ids)
        seed = self._query_seed(seed)
        eligible = self._eligible(ids, pred) if pred is not None else None
        rules = self.rule_matrices(ids) if strategy != "verify" else None
        if strategy == "conflict" and rules is None and self.setting("rule_trust") <= 0:
            raise ValidationError("rule_trust is 0, so rules are only reported, never used: set it above 0 "
                                  "(`labelloop config rule_trust 0.5`) to ask where they conflict")
        ch = choose(strategy, n, labeled=labeled, unlabeled=unlabeled,
                    probabilities=None if pred is None else pred.proba, graph=graph, embeddings=X,
                    labels=y[labeled] if len(labeled) else None, class_names=self.classes, seed=seed,
                    explore=explore, target_precision=target_precision or self._target(),
                    verify_eligible=eligible, within=None if batch is None else self.in_batch(ids, batch),
                    verify_heldout=self._plan_heldout(pred) if strategy == "verify" and pred is not None else None,
                    **dict(zip(("certified_coverage", "pending_coverage"), self._verify_state())),
                    **(dict(zip(("rule_votes", "rule_proba"), rules)) if rules is not None and pred is not None else {}))
        picked = ch.rows.tolist()
        items = self.store.items(ids[picked].tolist())
        coverage = coverage_of(pred.confidence, eligible) if pred is not None else None
        out = []
        for r, it, score, reason, kind, region in zip(picked, items, ch.scores, ch.reasons, ch.kinds, ch.regions):
            guess = conf = cov = None
            if pred is not None and pred.reached[r]:
                guess, conf, cov = pred.classes[pred.label[r]], float(pred.confidence[r]), float(coverage[r])
            out.append({"item": it.id, "ref": it.display, "guess": guess, "confidence": conf, "coverage": cov,
                        "region": region, "score": float(score), "reason": reason, "kind": kind})
        if record:
            self.record_query(ch.strategy, n, seed, out, annotator=annotator, labeled=len(labeled),
                              prediction_run=pred.run_id if pred else None, details=ch.details, batch=batch)
        return out

    def record_query(self, strategy: str, n: int, seed: int, chosen: list[dict], *, annotator: str | None = None,
                     labeled: int = 0, prediction_run: int | None = None, details: dict | None = None,
                     batch: str | None = None) -> int:
        """Record what was served and why (``chosen``: dicts with item, guess, confidence, kind):
        random and verify items keep the machine's guess of that moment, which is what
        certification later compares the person's label with."""
        params = {"strategy": strategy, "n": n, "seed": seed, "annotator": annotator}
        run = self.store.start_run("query", params | ({"batch": batch} if batch is not None else {}),
                                   {"labeled": int(labeled), "prediction_run": prediction_run})
        checks = [{"item": o["item"], "guess": o["guess"], "confidence": o["confidence"],
                   "coverage": o.get("coverage"), "kind": o["kind"],
                   "region": o.get("region") if o.get("region") is not None else (1.0 if o["kind"] == "random" else None)}
                  for o in chosen if o.get("kind") in ("random", "verify") and o.get("coverage") is not None]
        self.store.finish_run(run, {"items": [o["item"] for o in chosen], "details": _jsonable(details or {}),
                                    "random": [o["item"] for o in chosen if o.get("kind") in ("random", "verify")],
                                    "checks": checks})
        return run

    # ----------------------------------------------------------------- autolabel
    def _target(self) -> float:
        """The target precision: the last `autolabel --target-precision`, else the setting."""
        last = self.store.last_run("autolabel")
        return float(last["params"]["target_precision"]) if last else self.setting("target_precision")

    def _checked_target(self, target_precision: float | None) -> float:
        """``target_precision`` (None: :meth:`_target`), checked to lie in [0.5, 1)."""
        target_precision = self._target() if target_precision is None else target_precision
        if not 0.5 <= target_precision < 1:
            raise ValidationError(f"--target-precision must be in [0.5, 1), got {target_precision}")
        return target_precision

    def _query_seed(self, seed: int | None) -> int:
        """``seed``, else the number of `next` runs so far (each query draws differently)."""
        return int(seed if seed is not None else len(self.store.runs("query", status=None)))

    def _heldout(self, pred: Predictions):
        """(confidence, predicted, correct, labels) of the human labels the last refresh scored
        held out (calibrated), as stored with it; read once per refresh (:data:`MEMO`: the
        certificate, ``checks_wanted`` and a verify query all ask, the server on every request).
        A refresh writes them before its predictions can be read, so the run id is the key."""
        return MEMO.get(self.root, "heldout", pred.run_id, lambda: _frozen(self._load_heldout(pred.run_id)))

    def _load_heldout(self, run_id: int):
        d = self.store.run_dir(run_id)
        if not (d / "heldout_proba.npy").exists():
            z = np.zeros(0)
            return z, z.astype(np.int64), z.astype(bool), z.astype(np.int64)
        Q, t = np.load(d / "heldout_proba.npy"), np.load(d / "heldout_labels.npy")
        return Q.max(1), Q.argmax(1), Q.argmax(1) == t, t

    def _plan_heldout(self, pred: Predictions) -> tuple[np.ndarray, np.ndarray]:
        """(confidence, correct) of the held-out human labels: where verify draws corrects its
        plan by them (:func:`labelloop.loop.certify.error_scale`)."""
        conf, _, correct, _ = self._heldout(pred)
        return conf, correct

    def random_checks(self) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """Every randomly drawn item (verify checks, the random share of `next`) a person has
        labeled since: (its coverage then, the guessed class name then, whether the person
        agreed, the coverage of the region it was drawn from). See :mod:`labelloop.loop.certify`."""
        return self._random_checks()[:4]

    def _random_checks(self) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, list[int]]:
        """:meth:`random_checks` and the batch ends among them: after how many checks each
        `next` run's draws are all in (the looks a certificate keeps, :func:`loop.certify`)."""
        name_of = {v: k for k, v in self.store.class_ids().items()}
        human = self.store.latest_labels("human")
        latest: dict[int, tuple[int, dict]] = {}
        for b, run in enumerate(self._query_runs()):
            for c in run["summary"].get("checks", []):
                if c.get("coverage") is not None and c.get("region") is not None:
                    latest.pop(c["item"], None)
                    latest[c["item"]] = (b, c)  # the latest draw of an item counts, in its place
        cov, guess, correct, region, batch = [], [], [], [], []
        for item, (b, c) in latest.items():
            if item in human and c["guess"] is not None:
                cov.append(float(c["coverage"]))
                guess.append(c["guess"])
                correct.append(name_of.get(human[item]) == c["guess"])
                region.append(float(c["region"]))
                batch.append(b)
        ends = [i + 1 for i in range(len(batch) - 1) if batch[i + 1] != batch[i]]
        return (np.array(cov, dtype=np.float64), guess, np.array(correct, dtype=bool),
                np.array(region, dtype=np.float64), ends)

    def _eligible(self, ids: np.ndarray, pred: Predictions) -> np.ndarray:
        """(n,) items auto-labeling may label: no human or imported label, reached by propagation."""
        return (self.label_vector(ids, sources=("human", "import")) < 0) & pred.reached

    def _certified_coverage(self) -> float:
        last = self.store.last_run("autolabel")
        return float((last["summary"].get("certificate") or {}).get("certified_coverage") or 0.0) if last else 0.0

    def _verify_state(self) -> tuple[float, float]:
        """(certified coverage of the last autolabel run, the region the last verify checks were
        drawn from while more checks can still certify it, else 0): where verify draws next."""
        from .loop import pending_region

        certified = self._certified_coverage()
        last_region = 0.0
        for run in reversed(self._query_runs()):
            regions = [c.get("region") for c in run["summary"].get("checks", []) if c.get("kind") == "verify"]
            if regions and regions[0] is not None:
                last_region = float(regions[0])
                break
        if last_region <= certified:
            return certified, 0.0
        cov, _, correct, region = self.random_checks()
        return certified, pending_region(cov, region, correct, last_region,
                                         target_precision=self._target())

    def certificate(self, pred: Predictions, *, target_precision: float, confidence_level: float = 0.95,
                    per_class: bool = True):
        """What the random checks certify for the current predictions (:func:`loop.certify`)."""
        from .loop import certify, verify_coverage

        cov, guess, correct, region, ends = self._random_checks()
        col = {c: j for j, c in enumerate(pred.classes)}
        keep = np.array([g in col for g in guess], dtype=bool)
        ends = np.cumsum(keep)[np.asarray(ends, dtype=np.int64) - 1].tolist() if ends else []
        cpred = np.array([col[g] for g, k in zip(guess, keep) if k], dtype=np.int64)
        eligible = self._eligible(pred.item_ids, pred)
        certified, pending = self._verify_state()
        cand = verify_coverage(pred.confidence, eligible, target_precision=target_precision,
                               certified_coverage=certified, pending=pending, heldout=self._plan_heldout(pred))
        return certify(cov[keep], cpred, correct[keep], n_classes=len(pred.classes), candidate=cand,
                       check_region=region[keep], target_precision=target_precision,
                       confidence_level=confidence_level, per_class=per_class, batch_ends=ends)

    def autolabel(self, *, target_precision: float | None = None, per_class: bool = True,
                  confidence_level: float = 0.95) -> dict:
        """Accept machine labels above thresholds that random checks by people certify to reach
        ``target_precision`` (one-sided Clopper-Pearson bound); withdraw earlier machine labels
        that no longer pass. When nothing is certified yet, says how many checks it needs and
        the command that serves them (`labelloop next --strategy verify`). A multi-label
        project: :meth:`_autolabel_multilabel`."""
        from .loop import coverage_of

        if self.task == "multilabel":
            return self._autolabel_multilabel(target_precision=target_precision, confidence_level=confidence_level)
        target_precision = self._checked_target(target_precision)
        if self.task == "detection":
            return self._detection_autolabel(target_precision=target_precision, confidence_level=confidence_level)
        ids = self.item_ids()
        pred = self._current_predictions(ids)
        if pred is None:
            raise NotReadyError("predictions are missing or out of date: run `labelloop refresh` first")
        cert = self.certificate(pred, target_precision=target_precision, confidence_level=confidence_level,
                                per_class=per_class)
        y_other = self.label_vector(ids, sources=("human", "import"))
        eligible = self._eligible(ids, pred)
        accept = eligible & cert.accepts(coverage_of(pred.confidence, eligible), pred.label)  # (n,)
        class_ids = list(self.store.class_ids().values())
        col_id = {c: class_ids[self.classes.index(c)] for c in pred.classes}
        current = self.store.latest_labels("machine")
        run = self.store.start_run("autolabel", {"target_precision": target_precision, "per_class": per_class,
                                                 "confidence_level": confidence_level},
                                   {"prediction_run": pred.run_id, "random_checks": cert.checked})
        new, confs, withdrawn = [], [], []
        for r in np.flatnonzero(accept):
            item, cid = int(ids[r]), col_id[pred.classes[pred.label[r]]]
            if current.get(item) != cid:
                new.append((item, cid))
                confs.append(float(pred.confidence[r]))
        accepted_items = set(ids[accept].tolist())
        for item in current:
            if item not in accepted_items:
                withdrawn.append((item, None))
        self.store.add_annotations(new, source="machine", annotator="autolabel", run_id=run, confidences=confs)
        self.store.add_annotations(withdrawn, source="machine", annotator="autolabel", run_id=run)
        summary = {
            "accepted": int(accept.sum()), "new_or_changed": len(new), "withdrawn": len(withdrawn),
            "coverage": float(accept.mean()), "target_precision": target_precision,
            "estimated_precision": _nan_none(cert.precision_estimate), "precision_lower": cert.precision_lower,
            "calibration_items": cert.checked, "reason": cert.reason,
            "certified_coverage": {c: round(float(v), 6) for c, v in zip(pred.classes, cert.coverage)},
            "needs_person": int((~accept & (y_other < 0)).sum()),
            "certificate": cert.to_dict(),
            "expected_precision": _nan_none(float(pred.confidence[accept].mean())) if accept.any() else None,
        }
        names, codes = self._batch_codes(ids)
        if len(names) > 1:   # where the accepted labels fall: a new batch the model handles badly shows here
            summary["per_batch"] = {
                b: {"items": int((codes == c).sum()), "accepted": int(accept[codes == c].sum()),
                    "needs_person": int((~accept & (y_other < 0))[codes == c].sum())} for c, b in enumerate(names)}
        if cert.more_needed:
            summary["suggest"] = f"labelloop next --strategy verify --n {cert.more_needed}"
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    def estimate(self, *, batch: str | None = None) -> dict | None:
        """Estimated accuracy of the whole dataset's labels (human + machine + predicted) if
        exported now, from the calibrated confidences (:mod:`labelloop.loop.estimate`);
        ``batch``: of that batch's items only (calibrated on every held-out human label)."""
        ids = self.item_ids()
        pred = self._current_predictions(ids)
        if pred is None:
            return None
        return self._estimate_rows(ids, pred, None if batch is None else self.in_batch(ids, batch))

    def _estimate_rows(self, ids: np.ndarray, pred: Predictions, rows: np.ndarray | None, *, masks=None,
                       heldout=None) -> dict:
        """:meth:`estimate` over the rows ``rows`` ((n,) bool; None: every item); ``masks``
        (:meth:`_label_masks`) and ``heldout`` (:meth:`_heldout`) when the caller has them."""
        conf, cpred, correct, truth = heldout or self._heldout(pred)
        human, machine_mask = masks or self._label_masks(ids)
        label, confidence = pred.label, pred.confidence   # P's argmax and max, stored with it
        if rows is not None:
            label, confidence, human, machine_mask = label[rows], confidence[rows], human[rows], machine_mask[rows]
        est = self._estimate_from(label, confidence, len(pred.classes), None, human, None,
                                  heldout=(conf, correct, truth))
        return est | {"machine": int(machine_mask.sum()), "needs_person": int((~human & ~machine_mask).sum()),
                      "target": self._target()}

    def _estimate_from(self, label: np.ndarray, confidence: np.ndarray, n_classes: int, pred, human: np.ndarray,
                       y_h, *, heldout=None) -> dict:
        """The dataset estimate for predictions with (n,) ``label`` and ``confidence`` (the
        argmax and max of their (n, C) distributions: :func:`propagate.prediction_summary`, not
        recomputed over n x C) and the held-out human labels (from a fresh ``loop.Prediction``
        ``pred`` and ``y_h``, or ``heldout`` = (confidence, correct, true labels) as stored with
        a refresh)."""
        from .loop.calibrate import prediction_weights
        from .loop.estimate import estimate_dataset_accuracy

        if heldout is None:
            t = y_h[pred.heldout_rows]
            Q = pred.heldout_proba
            heldout = (Q.max(1), Q.argmax(1) == t, t) if len(t) else (np.zeros(0), np.zeros(0, bool), t)
        conf, correct, truth = heldout
        w = prediction_weights(truth, label, n_classes) if len(conf) else None
        est = estimate_dataset_accuracy(confidence, human, conf, correct, heldout_weights=w)
        return {"accuracy": round(est.accuracy, 4), "lower": round(est.lower, 4), "upper": round(est.upper, 4),
                "human_or_import": est.n_human, "calibration_gap": _nan_none(est.calibration_gap)}

    def stopping(self, estimate: dict | None, *, window: int = 3, max_changed: float = 0.005) -> dict:
        """Whether more labels are unlikely to change the outcome: predictions stable over the
        last ``window`` refreshes (at most ``max_changed`` of items changed each time) and the
        estimated accuracy's lower bound at or above the target."""
        runs = self.store.runs("refresh")[-window:]
        changes = [r["summary"].get("changed") for r in runs]
        n = max(len(self.item_ids()), 1)   # memoised per set of items (a COUNT(*) scans them all)
        stable = len(changes) == window and all(c is not None and c / n <= max_changed for c in changes)
        accurate = bool(estimate) and estimate["lower"] >= estimate["target"]
        if stable and accurate:
            advice = "stop: predictions are stable and the estimated accuracy meets the target"
        elif not accurate:
            advice = "keep labeling: the estimated accuracy is below the target" if estimate else \
                "keep labeling: no estimate yet (label some items and refresh)"
        else:
            advice = "keep labeling: predictions still change between refreshes"
        return {"stop": bool(stable and accurate), "stable": stable, "recent_changes": changes, "advice": advice}

    # --------------------------------------------------------------------- audit
    #: above this many items the audit uses the graph signal only (seconds, not minutes)
    AUDIT_LOGREG_MAX_ITEMS = 20_000

    def audit_labels(self, *, classifier: str = "auto"):
        """The label audit without side effects (the web app's read-only view calls it):
        ``(ids, y, classifier, result)`` -- item ids, ``(n,)`` audited labels (human, else
        imported; -1 none), the classifier used and the :class:`~labelloop.audit.AuditResult`."""
        from threadpoolctl import threadpool_limits

        from .audit import audit_labels

        ids, graph = self.graph()
        _, X = self.embeddings()
        y = self.label_vector(ids, sources=("human", "import"))
        if (y >= 0).sum() < 2 or len(set(y[y >= 0].tolist())) < 2:
            raise NotReadyError("the audit needs labeled items of at least two classes")
        col = {cid: c for c, cid in enumerate(self.store.class_ids().values())}
        row = {int(i): r for r, i in enumerate(ids)}
        confirmed = [(row[i], col[k]) for i, k in self.store.conn.execute(
            "SELECT item_id, class_id FROM audit_confirmations") if i in row]
        if classifier == "auto":
            classifier = "logreg" if len(ids) <= self.AUDIT_LOGREG_MAX_ITEMS else "none"
        # small k-fold logistic regressions: one BLAS thread each is 25x faster than two
        # oversubscribed threads on a busy 2-core machine (measured), and no slower when idle
        r = self.human_label_accuracy(ids)
        with threadpool_limits(1, user_api="blas"):
            res = audit_labels(X, graph, y, len(self.classes), confirmed=confirmed, classifier=classifier,
                               label_accuracy=r)
        return ids, y, classifier, res

    #: Beta prior on an annotator's accuracy when gold items measure it: Beta(19, 1), mean 0.95
    ANNOTATOR_PRIOR = (19.0, 1.0)

    def human_label_accuracy(self, ids: np.ndarray) -> np.ndarray:
        """(n,) prior probability that each item's human label is right (NaN: no human label).

        The annotator's accuracy on gold items where there are some (Beta(19, 1) smoothed),
        else their Dawid-Skene accuracy where items were labeled by several people, else the
        ``human_label_accuracy`` setting: people are usually right."""
        a, b = self.ANNOTATOR_PRIOR
        default = self.setting("human_label_accuracy")
        per: dict[str | None, float] = {}
        report = {"annotators": []}
        rows = self.annotator_annotations()
        several = len(rows) > len({i for i, _, _ in rows})
        if self.gold() or several:  # only evidence about people can move the prior
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # Dawid-Skene's convergence note
                try:
                    report = self.annotators()
                except ValidationError:
                    pass
        for st in report["annotators"]:
            if st["gold_items"] and st["gold_accuracy"] is not None:
                k = st["gold_accuracy"] * st["gold_items"]
                per[st["annotator"]] = (k + a) / (st["gold_items"] + a + b)
            elif report.get("items_with_several", 0) >= 10 and st["compared"]:
                per[st["annotator"]] = st["dawid_skene_accuracy"]
        last: dict[int, str | None] = {}
        for ann in self.store.annotations("human"):
            last[ann["item_id"]] = ann["annotator"]
        row = {int(i): r for r, i in enumerate(ids)}
        out = np.full(len(ids), np.nan)
        for item, who in last.items():
            if item in row:
                out[row[item]] = per.get(who, default)
        return np.clip(out, 0.5, 0.999)

    def audit(self, *, top: int | None = 100, classifier: str = "auto") -> dict:
        """Rank the given labels (human, else imported) that look wrong, with the suggested
        label and the evidence: the graph neighbours that disagree, and an out-of-fold
        classifier (confident learning). Flags change no label; a person confirms or fixes.
        A multi-label project: :meth:`_audit_multilabel`."""
        if self.task == "multilabel":
            return self._audit_multilabel(top=top)
        classes = self.classes
        ids, y, classifier, res = self.audit_labels(classifier=classifier)
        run = self.store.start_run("audit", {"classifier": classifier, "top": top},
                                   {"labels": int((y >= 0).sum()), "confirmed": self.store.conn.execute(
                                       "SELECT COUNT(*) FROM audit_confirmations").fetchone()[0]})
        items = self.store.items(ids.tolist())
        issues = []
        for iss in res.issues[: top or None]:
            it = items[iss.item]
            issues.append({
                "item": it.id, "ref": it.display, "given": classes[iss.given_label],
                "suggested": classes[iss.suggested_label], "score": round(float(iss.score), 4),
                "graph_score": round(float(iss.graph_score), 4),
                "classifier_score": None if not np.isfinite(iss.classifier_score) else round(float(iss.classifier_score), 4),
                "disagreeing_neighbours": [{"item": int(ids[j]), "label": classes[k]}
                                           for j, k in zip(iss.evidence, iss.evidence_labels)],
            })
        summary = {"flagged": int(res.flagged.sum()), "shown": len(issues), "confirmed_skipped": res.n_confirmed_skipped,
                   # the expected share of wrong labels under the audit's own posterior
                   "estimated_noise_rate": round(float(np.nanmean(res.scores)) if (y >= 0).any() else 0.0, 4),
                   "classifier": classifier}
        self.store.finish_run(run, summary | {"items": [i["item"] for i in issues]})
        return summary | {"run": run, "issues": issues}

    # --------------------------------------------------------------------- adapt
    def _query_runs(self) -> list[dict]:
        """Every finished ``query`` run, as ``store.runs("query")``, each run's JSON parsed once
        per Project: a server records one for every page it serves, and its refresher's
        long-lived Project reads them at every refresh (a full parse grew by ~0.1 ms per served
        page, at each of several reads per refresh). Runs are never deleted and a finished
        run's record never changes, so only ids not seen before are read."""
        ids = self.store.run_ids("query")
        memo: dict[int, dict] = self.__dict__.setdefault("_query_run_memo", {})
        missing = [i for i in ids if i not in memo]
        if len(missing) > 20:
            memo.update((r["id"], r) for r in self.store.runs("query"))
        for i in missing:
            if i not in memo:
                memo[i] = self.store.run(i)
        return [memo[i] for i in ids]

    def actively_chosen(self) -> set[int]:
        """Items a query strategy picked with `next` (not its random share, not a `random`
        strategy run): their labels are a biased sample, the hardest items by design."""
        chosen: set[int] = set()
        for run in self._query_runs():
            if run["params"].get("strategy") == "random":
                continue
            rnd = set(run["summary"].get("random", []))
            chosen.update(i for i in run["summary"].get("items", []) if i not in rnd)
        return chosen

    def diagnose(self) -> dict:
        """How well the active embeddings separate the classes the human labels show:
        cross-validated propagation accuracy on the labels active learning did not choose
        (Wilson interval), leave-one-out kNN accuracy, graph homophily, silhouette, advice."""
        from .adapt import diagnose

        ids, graph = self.propagation_graph()
        _, X = self.embeddings()
        y = self.label_vector(ids, sources=("human",))
        chosen = self.actively_chosen()
        representative = np.array([int(i) not in chosen for i in ids], dtype=bool)
        d = diagnose(graph, y, X, representative=representative, modality=self.modality)
        out = d.to_dict() | {"summary": d.summary(), "backbone": (self.store.get_meta("backbone") or {}).get("cache_id")}
        pred = self._current_predictions(ids)
        if pred is not None:  # how far the confidences are from the held-out accuracy
            last = self.store.last_run("refresh")
            out["calibration"] = (pred.calibration or {}) | {"ece_heldout": last["summary"].get("ece_heldout")}
            # balanced labels say nothing about imbalanced classes: say when the graph disagrees
            y_all = y[y >= 0]
            if len(y_all) and self._class_prior(ids, y, len(pred.classes))[1] != "random":
                lab_share = np.bincount(y_all, minlength=len(pred.classes)) / len(y_all)
                pred_share = np.bincount(pred.label, minlength=len(pred.classes)) / len(pred.label)
                skew = pred_share / np.maximum(lab_share, 1e-9)
                if len(pred.classes) >= 2 and (skew.max() > 2 or skew.min() < 0.5):
                    c = int(np.argmax(np.abs(np.log(np.maximum(skew, 1e-9)))))
                    out["imbalance"] = {"class": pred.classes[c], "label_share": round(float(lab_share[c]), 4),
                                        "predicted_share": round(float(pred_share[c]), 4)}
                    out["summary"] += (
                        f"\nclasses: {pred.classes[c]!r} is {lab_share[c]:.0%} of your labels but {pred_share[c]:.0%} "
                        "of the predictions; if your classes are imbalanced, label some items drawn at random "
                        "(`labelloop next --strategy random`: their shares become the class prior) or try "
                        "`labelloop config class_prior estimated`")
            if out["calibration"].get("ece_heldout") is not None:
                out["summary"] += (f"\nconfidence: expected calibration error {out['calibration']['ece_heldout']:.3f} "
                                   f"on {out['calibration'].get('heldout_items', 0)} held-out human labels")
        run = self.store.start_run("diagnose", {}, {"labels": int((y >= 0).sum())})
        self.store.finish_run(run, {k: v for k, v in out.items() if k != "summary"})
        return out

    def adapt(self, *, method: str = "simclr", epochs: int | None = None, device: str = "cpu",
              image_size: int | None = None, max_images: int | None = None, augment: str = "auto",
              prototypes: int | None = None, local_crops: int | None = None, local_size: int | None = None,
              progress: bool = False) -> dict:
        """Self-supervised adaptation of the ImageNet backbone on this project's images; saved
        in the project as a new backbone id for `embed --backbone`. Resumes an interrupted run.
        ``method``: "simclr", "byol" or "swav".
        ``augment``: "auto" (photo for colour images, grayscale otherwise), "photo",
        "grayscale", or "characters" (grayscale without mirror flips: digits, letters, scans).
        SwAV only: ``prototypes`` (default 3 per class of the project, else ~sqrt(images)),
        ``local_crops`` (small crops per image, default 6), ``local_size`` (their pixels,
        default 96 / 224 of ``image_size``); the rest is in :class:`~labelloop.adapt.AdaptConfig`."""
        from .adapt import AdaptConfig, adapt_backbone
        from .ingest import load_image

        if self.modality != "image":
            raise ValidationError("adapt trains the image backbone; this is a text project "
                                  "(text adaptation is not available yet)")
        kw = {"method": method, "device": device, "augment": augment}
        if epochs is not None:
            kw["epochs"] = epochs
        swav_only = {"prototypes": prototypes, "local_crops": local_crops, "local_size": local_size}
        if method != "swav" and any(v is not None for v in swav_only.values()):
            given = ", ".join(k for k, v in swav_only.items() if v is not None)
            raise ValidationError(f"{given}: only for method swav, not {method}; drop it or use --method swav")
        for name, value in (("image_size", image_size), *swav_only.items()):
            if value is not None:
                kw[name] = value
        cfg = AdaptConfig(**kw)
        items = self.store.items()
        if len(items) < 2:
            raise NotReadyError("adaptation needs images: run `labelloop import` first")
        run = self.store.start_run("adapt", cfg.to_dict() | {"max_images": max_images}, {"items": len(items)})
        try:
            images = [load_image(it.uri) for it in items]
            outcome = adapt_backbone(images, self.root, cfg, max_images=max_images, progress=progress,
                                     n_classes=len(self.classes) or None)
        except BaseException:
            self.store.finish_run(run, status="interrupted")
            raise
        summary = {"backbone": outcome.backbone_id, "provenance": outcome.provenance}
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    def train(self, *, schedule: str = "auto", epochs: int | None = None, device: str | None = None,
              progress: bool = False) -> dict:
        """Transfer learning: a classifier on the (possibly adapted) image backbone trained on
        the human labels. Its class probabilities are stored with the run as a second opinion;
        the propagated labels stay the project's predictions. ``epochs`` defaults to 30,
        ``device`` to cpu.

        In a detection project: the detector (:meth:`train_detector`; device default: CUDA
        when there is a GPU, epochs from its schedule)."""
        from .adapt import FineTuneClassifier
        from .ingest import load_image

        if self.task == "detection":
            return self.train_detector(device=device or "auto", epochs=epochs)
        epochs = 30 if epochs is None else epochs
        device = device or "cpu"
        if self.modality != "image":
            raise ValidationError("train fine-tunes the image backbone; this is a text project")
        ids = self.item_ids()
        y = self.label_vector(ids, sources=("human",))
        if (y >= 0).sum() < 2:
            raise NotReadyError("train needs human labels: label a few items per class first")
        bb = self.backbone()
        if not (bb.id.startswith("adapted-") or bb.id == "efficientnet-lite0"):
            bb = self.backbone("efficientnet-lite0")
        clf = FineTuneClassifier.from_backbone(bb, schedule=schedule, epochs=epochs, device=device,
                                               n_classes=len(self.classes), progress=progress)
        run = self.store.start_run("train", {"schedule": schedule, "epochs": epochs, "backbone": bb.cache_id},
                                   {"labels": int((y >= 0).sum())})
        items = self.store.items(ids.tolist())
        images = [load_image(it.uri) for it in items]
        clf.fit(images, y)
        P = clf.predict_proba(images)  # (n, C)
        np.save(self.store.run_dir(run) / "classifier_proba.npy", P.astype(np.float32))
        summary = {"schedule": getattr(clf, "schedule_", schedule), "labels": int((y >= 0).sum()),
                   "training_accuracy": float((P.argmax(1)[y >= 0] == y[y >= 0]).mean())}
        pred = self._current_predictions(ids)
        if pred is not None:
            summary["agreement_with_propagation"] = float((P.argmax(1) == pred.label).mean())
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    # ----------------------------------------------------------------- detection
    def _require_detection(self, what: str) -> None:
        if self.task != "detection":
            raise ValidationError(f"{what} works on detection projects; this is a {self.task} project "
                                  "(create one with: labelloop init --modality image --task detection)")

    def add_boxes(self, item: str | int, boxes: Iterable[Sequence], *, source: str = "human",
                  annotator: str | None = None, create_classes: bool = False) -> list[int]:
        """Append boxes ``(x, y, w, h, class_name)`` (image pixels, top-left origin) to an image;
        returns the new box ids. Every box is checked before any is stored."""
        self._require_detection("add_boxes")
        if source not in LABEL_SOURCES:
            raise ValidationError(f"source must be one of {', '.join(LABEL_SOURCES)}, got {source!r}")
        item_id = self.store.resolve_item(item)
        (it,) = self.store.items([item_id])
        rows = self._box_rows(it, boxes, source=source, annotator=annotator, create_classes=create_classes)
        if not rows and source == "human":   # a person saying "no (more) boxes here"
            self.mark_reviewed(item_id, annotator=annotator)
        return self.store.add_boxes(rows)

    def mark_reviewed(self, item: str | int, annotator: str | None = None) -> None:
        """A person checked this image: its human and imported boxes in effect are its complete
        set -- none, if it has none ("reviewed, empty"). Drawing, editing or deleting a box
        already counts as a review; this records one where nothing was drawn. Pre-labels
        (machine boxes) still in effect are not part of the reviewed set: a person accepts one
        by writing it as theirs (:meth:`edit_box` without a change). Reviewed images
        are trained on (an empty one as background), never asked again by :meth:`next`,
        never pre-labeled again, and certify :meth:`autolabel` when a detector pre-labeled
        them before the review."""
        self._require_detection("mark_reviewed")
        self.store.add_box_reviews([self.store.resolve_item(item)], source="human", annotator=annotator)

    def _box_rows(self, it, boxes: Iterable[Sequence], *, source: str, annotator: str | None,
                  create_classes: bool, run_id: int | None = None) -> list[dict]:
        """Checked box rows of one image (item ``it``) for :meth:`Store.add_boxes`; an error
        names the item and the box."""
        width, height = _image_size(it.uri)
        rows = []
        for b in boxes:
            if len(b) != 5:
                raise ValidationError(f"item {it.display}: a box is (x, y, w, h, class), got {tuple(b)!r}")
            x, y, w, h = _box_numbers(it.display, b[:4])
            if x >= width or y >= height or x + w <= 0 or y + h <= 0:
                raise ValidationError(f"item {it.display} ({width}x{height} px): box {(x, y, w, h)} lies outside "
                                      "the image; boxes are x, y, w, h in pixels from the top-left corner")
            rows.append({"item_id": it.id, "x": x, "y": y, "w": w, "h": h, "source": source,
                         "annotator": annotator, "class_id": self._box_class(b[4], create_classes),
                         "run_id": run_id})
        return rows

    def _import_boxes(self, coll, source, name: str, report: ImportReport, run_id: int) -> None:
        """The boxes of an annotation file's image records as ``import`` boxes of the images
        under ``source`` they name (:func:`labelloop.formats.match_paths`). A record whose
        boxes do not fit its image is skipped whole and named in the report; its image stays."""
        from . import formats
        from .store import validate_class_name

        for r in coll.records:   # every class name first: a bad one stores no box at all
            for b in r.boxes:
                try:
                    validate_class_name(b.label)
                except ValidationError as exc:
                    raise ValidationError(f"{name}: {r.name}: {exc}") from None
        root = Path(source).expanduser()
        root = root.parent if root.is_file() else root
        rels = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
        ids = self.store.existing_external_ids(rels)
        matched, unmatched = formats.match_paths([r for r in coll.records if r.boxes], list(ids))
        for rec, why in unmatched:
            report.skipped.append(Skipped(f"{name}: {rec.name}", why))
        done_before = {b["item_id"] for b in self.store.current_boxes(sources=("import",),
                                                                       item_ids=[ids[rel] for rel in matched])}
        rows = []
        for rel, rec in matched.items():
            if ids[rel] in done_before:   # importing the same file again adds nothing
                continue
            (it,) = self.store.items([ids[rel]])
            try:
                rows += self._box_rows(it, [(b.x, b.y, b.w, b.h, b.label) for b in rec.boxes], source="import",
                                       annotator="import", create_classes=True, run_id=run_id)
            except ValidationError as exc:
                report.skipped.append(Skipped(f"{name}: {rec.name}", f"{exc}; its boxes were not imported"))
        self.store.add_boxes(rows)
        report.notes.append(f"{name}: {len(rows)} boxes imported on {len({r['item_id'] for r in rows})} images")
        predicted = sum(bool(r.predicted_boxes) for r in coll.records)
        if predicted:
            report.notes.append(f"{name}: the predicted boxes of {predicted} records were not imported (a model's "
                                "guesses; labelloop prelabel makes its own)")

    def _box_class(self, name: str, create: bool) -> int:
        from .errors import UnknownClassError
        from .store import validate_class_name

        cid = self.store.class_id_of(validate_class_name(name))
        if cid is None:
            if not create:
                raise UnknownClassError(f"unknown class {name!r}; classes: {', '.join(self.classes) or '(none)'} "
                                        "(add it with create_classes / --new-classes)")
            cid = self.store.class_id(name, create=True)
        return cid

    def edit_box(self, box_id: int, *, x: float | None = None, y: float | None = None, w: float | None = None,
                 h: float | None = None, class_name: str | None = None, delete: bool = False,
                 annotator: str | None = None) -> int:
        """A person's edit of a box (any source) as a new row replacing it; ``delete``
        withdraws it. Returns the new row's id."""
        self._require_detection("edit_box")
        old = self.store.box(box_id)
        if old is None:
            raise ValidationError(f"no box with id {box_id} in this project")
        if old["class_id"] is None or self.store.box_replaced(box_id):
            raise ValidationError(f"box {box_id} was already edited or deleted; edit the box now in effect "
                                  "(see Project.boxes)")
        geometry = _box_numbers(f"#{old['item_id']}", [old[k] if v is None else v
                                                         for k, v in (("x", x), ("y", y), ("w", w), ("h", h))])
        cid = None if delete else (old["class_id"] if class_name is None else self._box_class(class_name, False))
        (new,) = self.store.add_boxes([{"item_id": old["item_id"], **dict(zip("xywh", geometry, strict=True)),
                                        "class_id": cid, "source": "human", "annotator": annotator,
                                        "replaces": box_id}])
        return new

    def boxes(self, item: str | int | None = None, *, sources: Sequence[str] = LABEL_SOURCES) -> list[dict]:
        """Boxes in effect (of one item, or all): id, item_id, x, y, w, h, class, source,
        annotator, score, run_id."""
        ids = None if item is None else [self.store.resolve_item(item)]
        names = {v: k for k, v in self.store.class_ids().items()}
        return [{k: r[k] for k in ("id", "item_id", "x", "y", "w", "h", "source", "annotator", "score", "run_id")}
                | {"class": names[r["class_id"]]} for r in self.store.current_boxes(sources=sources, item_ids=ids)]

    def train_detector(self, *, device: str = "auto", epochs: int | None = None, image_size: int = 128,
                       trainable_blocks: int | None = None, hflip: bool = True, seed: int = 0) -> dict:
        """Fit the detector (labelloop.detect) on every image with human or imported boxes;
        saved under ``detectors/<run id>/``. An interrupted run resumes when started again
        with the same boxes and options."""
        import shutil

        from .detect.boxes import ImageBoxes
        from .detect.train import DetectConfig, train_detector
        from .ingest import load_image

        self._require_detection("train_detector")
        rows = self.store.current_boxes(sources=("human", "import"))
        if not rows:
            raise NotReadyError("train needs boxes: draw or import boxes on a few images first")
        classes = self.classes
        col = {cid: classes.index(name) for name, cid in self.store.class_ids().items()}
        by_item: dict[int, list[dict]] = {i: [] for i in self.store.box_review_times("human")}   # reviewed, maybe empty
        for r in rows:
            by_item.setdefault(r["item_id"], []).append(r)
        item_ids = sorted(by_item)
        items = self.store.items(item_ids)
        images = [load_image(it.uri) for it in items]
        targets = [ImageBoxes([[r["x"], r["y"], r["w"], r["h"]] for r in by_item[i]],
                              [col[r["class_id"]] for r in by_item[i]]) for i in item_ids]
        cfg = DetectConfig(device=device, epochs=epochs, image_size=image_size, trainable_blocks=trainable_blocks,
                           hflip=hflip, seed=seed)
        run = self.store.start_run("train-detector", cfg.to_dict(), {"images": len(item_ids), "boxes": len(rows)})
        np.save(self.store.run_dir(run) / TRAINED_ITEMS, np.array(item_ids, dtype=np.int64))   # held out: the rest
        ckdir = self.root / DETECTORS_DIR / ".checkpoint"
        try:
            det = train_detector(images, targets, len(classes), cfg, class_names=classes, checkpoint_dir=ckdir)
        except BaseException:
            self.store.finish_run(run, status="interrupted")
            raise
        path = det.save(self.root / DETECTORS_DIR / str(run) / "detector.pt")
        shutil.rmtree(ckdir, ignore_errors=True)
        summary = {"images": len(item_ids), "boxes": len(rows), "epochs": det.epochs,
                   "empty_images": sum(not v for v in by_item.values()),
                   "trainable_blocks": det.config.trainable_blocks, "resumed_from_epoch": det.resumed_from,
                   "final_loss": det.history[-1] if det.history else None, "seconds": round(det.seconds, 1),
                   "device": str(next(det.model.parameters()).device), "path": str(path.relative_to(self.root))}
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    def prelabel(self, *, items: Iterable[str | int] | None = None, score_threshold: float | None = None,
                 batch_size: int = 32) -> dict:
        """Boxes with scores from the latest detector on every image not done yet -- not
        reviewed by a person, imported or auto-accepted -- (or on ``items``), stored as machine
        boxes; the previous machine boxes of those images are withdrawn. The run records which
        images it pre-labeled (also those it found empty)."""
        from .detect.train import load_detector
        from .ingest import load_image

        self._require_detection("prelabel")
        trained = self.store.last_run("train-detector")
        if trained is None:
            raise NotReadyError("no detector yet: run labelloop train first")
        det = load_detector(self.root / trained["summary"]["path"])
        if items is None:
            done = self.done_images()
            ids = [int(i) for i in self.store.item_ids() if int(i) not in done]
        else:
            ids = [self.store.resolve_item(i) for i in items]
        cids = self.store.class_ids()
        missing = [n for n in det.class_names if n not in cids]
        if missing:
            raise ValidationError(f"the detector knows class {missing[0]!r}, which this project no longer has")
        run = self.store.start_run("prelabel", {"detector_run": trained["id"], "score_threshold": score_threshold},
                                   {"images": len(ids)})
        np.save(self.store.run_dir(run) / PRELABELED_ITEMS, np.array(ids, dtype=np.int64))
        n_boxes = 0
        for lo in range(0, len(ids), batch_size):
            part = ids[lo:lo + batch_size]
            preds = det.predict([load_image(it.uri) for it in self.store.items(part)], score_threshold=score_threshold)
            old = self.store.current_boxes(sources=("machine",), item_ids=part)
            rows = [{**{k: o[k] for k in ("item_id", "x", "y", "w", "h")}, "class_id": None, "source": "machine",
                     "run_id": run, "replaces": o["id"]} for o in old]
            for item_id, p in zip(part, preds, strict=True):
                rows += [{"item_id": item_id, "x": float(b[0]), "y": float(b[1]), "w": float(b[2]),
                          "h": float(b[3]), "class_id": cids[det.class_names[c]], "source": "machine",
                          "score": float(s), "run_id": run} for b, c, s in zip(p.boxes, p.labels, p.scores,
                                                                               strict=True)]
                n_boxes += len(p)
            self.store.add_boxes(rows)
        summary = {"images": len(ids), "boxes": n_boxes, "detector_run": trained["id"]}
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    def done_images(self) -> set[int]:
        """Images that need no person: reviewed by one, imported with boxes, or auto-accepted."""
        return (set(self.store.box_review_times("human")) | set(self.store.box_review_times("machine"))
                | {r["item_id"] for r in self.store.current_boxes(sources=("import",))})

    def _prelabel_history(self) -> dict[int, list[tuple[int, float, int]]]:
        """item_id -> [(prelabel run, when it started, its detector run)], oldest first."""
        out: dict[int, list[tuple[int, float, int]]] = {}
        for r in self.store.runs("prelabel"):
            f = self.store.run_dir(r["id"]) / PRELABELED_ITEMS
            items = np.load(f) if f.is_file() else {b["item_id"] for b in self.store.run_boxes([r["id"]])}
            for i in items:
                out.setdefault(int(i), []).append((r["id"], r["started"], r["params"]["detector_run"]))
        return out

    def _proposals(self, picks: dict[int, int]):
        """item_id -> ImageBoxes (class ids as labels, with scores) that prelabel run ``picks[item]``
        proposed for it, as proposed (later edits do not change it)."""
        from .detect.boxes import ImageBoxes

        rows: dict[int, list[dict]] = {i: [] for i in picks}
        for b in self.store.run_boxes(sorted(set(picks.values()))):
            if picks.get(b["item_id"]) == b["run_id"]:
                rows[b["item_id"]].append(b)
        return {i: ImageBoxes([[b[k] for k in "xywh"] for b in bs], [b["class_id"] for b in bs],
                              [b["score"] for b in bs]) for i, bs in rows.items()}

    def _heldout_reviews(self) -> tuple[list[int], list, list]:
        """Images a person reviewed after a detector that never trained on them pre-labeled
        them: (item ids, the proposal of the last such prelabel before the review, the human and
        imported boxes in effect now)."""
        from .detect.boxes import ImageBoxes

        reviewed = self.store.box_review_times("human")
        history = self._prelabel_history()
        trained: dict[int, set[int]] = {}
        picks = {}
        for item, when in reviewed.items():
            for run, started, det_run in reversed(history.get(item, [])):
                if started >= when:
                    continue
                if det_run not in trained:
                    f = self.store.run_dir(det_run) / TRAINED_ITEMS
                    if f.is_file():
                        trained[det_run] = set(np.load(f).tolist())
                    else:   # trained before runs recorded their images: every image reviewed or imported before it
                        t0 = (self.store.run(det_run) or {}).get("started", 0)
                        trained[det_run] = {i for i, t in reviewed.items() if t < t0} | {
                            b["item_id"] for b in self.store.current_boxes(sources=("import",)) if b["created"] < t0}
                if item not in trained[det_run]:
                    picks[item] = run
                break
        ids = sorted(picks)
        props = self._proposals(picks)
        truth: dict[int, list[dict]] = {i: [] for i in ids}
        for b in self.store.current_boxes(sources=("human", "import"), item_ids=ids):
            truth[b["item_id"]].append(b)
        return (ids, [props[i] for i in ids],
                [ImageBoxes([[b[k] for k in "xywh"] for b in truth[i]], [b["class_id"] for b in truth[i]]) for i in ids])

    def _image_bar(self, target_precision: float, confidence_level: float = 0.95):
        """The image-level accept bar (:func:`labelloop.detect.accept.certify_images`)."""
        from .detect.accept import certify_images

        _, preds, truths = self._heldout_reviews()
        return certify_images(preds, truths, target_precision=target_precision, confidence_level=confidence_level)

    def _current_proposals(self, item_ids: Iterable[int]) -> dict:
        """item_id -> the proposal of the last prelabel run of each image that has one."""
        history = self._prelabel_history()
        return self._proposals({int(i): history[int(i)][-1][0] for i in item_ids if int(i) in history})

    def _detection_next(self, n: int, *, strategy: str, seed: int | None, annotator: str | None, record: bool,
                        batch: str | None) -> list[dict]:
        """:meth:`next` of a detection project (:mod:`labelloop.detect.select`)."""
        from .detect.select import image_uncertainty, select_images

        if strategy not in ("auto", "random"):
            raise ValidationError(f"a detection project picks images with --strategy auto or random, not {strategy!r}")
        ids, X = self.embeddings()
        done = self.done_images()
        is_done = np.isin(ids, np.array(sorted(done), dtype=np.int64))
        cand = ~is_done if batch is None else ~is_done & self.in_batch(ids, batch)
        labeled, unlabeled = np.flatnonzero(is_done), np.flatnonzero(cand)
        if unlabeled.size == 0:
            raise PoolExhaustedError("every image is reviewed, imported or auto-accepted: nothing left to ask")
        n = min(int(n), int(unlabeled.size))
        seed = int(seed if seed is not None else len(self.store.runs("query", status=None)))
        props = self._current_proposals(ids[unlabeled])
        tau = self._box_threshold()
        unc = known = None
        if props:
            known = np.isin(ids, np.array(sorted(props), dtype=np.int64))
            unc = image_uncertainty([props.get(int(i)) for i in ids], box_threshold=tau)
        if strategy == "random":
            from .select import random_sampling

            sel = random_sampling(labeled, unlabeled, n, seed=seed)
            kind = "random"
        else:
            sel = select_images(X, labeled, unlabeled, n, uncertainty=unc, prelabeled=known, seed=seed)
            kind = "uncertain" if unc is not None else "cold-start"
        out = []
        for r, it, score, reason in zip(sel.indices, self.store.items(ids[sel.indices].tolist()), sel.scores,
                                        sel.reasons, strict=True):
            p = props.get(it.id)
            kept = None if p is None else int((p.scores >= tau).sum())
            out.append({"item": it.id, "ref": it.display, "guess": None if p is None else f"{kept} box" + "es" * (kept != 1),
                        "confidence": None if unc is None or not known[r] else float(1 - unc[r]),
                        "coverage": None, "region": None, "score": float(score), "reason": reason, "kind": kind})
        if record:
            self.record_query(sel.strategy, n, seed, out, annotator=annotator, labeled=len(labeled),
                              details=sel.details | {"box_threshold": tau}, batch=batch)
        return out

    def _box_threshold(self) -> float:
        """The box threshold of the last detection autolabel, else the default."""
        from .detect.accept import DEFAULT_BOX_THRESHOLD

        last = self.store.last_run("autolabel")
        return float((last["summary"].get("bar") or {}).get("box_threshold", DEFAULT_BOX_THRESHOLD)) if last \
            else DEFAULT_BOX_THRESHOLD

    def _detection_autolabel(self, *, target_precision: float, confidence_level: float) -> dict:
        """:meth:`autolabel` of a detection project: accept whole images (all their boxes at once)
        whose image confidence clears the bar certified on held-out reviewed images."""
        from .detect.accept import image_confidence

        bar = self._image_bar(target_precision, confidence_level)
        ids = self.store.item_ids()
        done = self.done_images()
        todo = [int(i) for i in ids if int(i) not in done]
        props = self._current_proposals(todo)
        run = self.store.start_run("autolabel", {"target_precision": target_precision, "task": "detection",
                                                 "confidence_level": confidence_level},
                                   {"reviewed_heldout": bar.reviewed})
        conf = {i: image_confidence(p, box_threshold=bar.box_threshold) for i, p in props.items()}
        accept = [i for i, c in conf.items() if bar.certified and c >= bar.bar]
        rows = []
        for b in self.store.current_boxes(sources=("machine",), item_ids=accept):
            keep = b["score"] is not None and b["score"] >= bar.box_threshold
            rows.append({**{k: b[k] for k in ("item_id", "x", "y", "w", "h", "score")},
                         "class_id": b["class_id"] if keep else None, "source": "machine",
                         "annotator": AUTOLABEL_ANNOTATOR, "run_id": run, "replaces": b["id"]})
        self.store.add_boxes(rows)
        self.store.add_box_reviews(accept, source="machine", annotator=AUTOLABEL_ANNOTATOR, run_id=run)
        summary = {
            "task": "detection", "accepted": len(accept), "boxes_accepted": sum(r["class_id"] is not None for r in rows),
            "coverage": len(accept) / len(ids) if len(ids) else 0.0, "new_or_changed": len(accept), "withdrawn": 0,
            "candidates": len(props), "not_prelabeled": len(todo) - len(props),
            "needs_person": len(todo) - len(accept), "target_precision": target_precision,
            "estimated_precision": bar.precision_estimate, "precision_lower": bar.precision_lower,
            "calibration_items": bar.reviewed, "reason": bar.reason, "bar": bar.to_dict(),
        }
        if bar.more_needed:
            # right reviews needed in the candidate band; a random draw lands there with the band's share
            share = np.mean([c >= bar.candidate for c in conf.values()]) if bar.candidate is not None and conf else 1.0
            if share > 0:
                summary["reviews_needed"] = int(np.ceil(bar.more_needed / share))
                summary["suggest"] = f"labelloop next --strategy random --n {summary['reviews_needed']}"
                if summary["reviews_needed"] > len(props):
                    summary["reason"] += (f"; that takes about {summary['reviews_needed']} random reviews, more than "
                                          f"the {len(props)} pre-labeled images left")
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    def _detection_status(self, batch: str | None) -> dict:
        """:meth:`status` of a detection project: images by state, boxes by class and source."""
        st = self.store
        ids = st.item_ids()
        if batch is not None:
            ids = ids[self.in_batch(ids, batch)]
        keep = set(ids.tolist())
        human = {i for i in st.box_review_times("human") if i in keep}
        accepted = {i for i in st.box_review_times("machine") if i in keep} - human
        boxes = st.current_boxes(item_ids=ids)
        imported = {b["item_id"] for b in boxes if b["source"] == "import"} - human
        name_of = {v: k for k, v in st.class_ids().items()}
        per_class = {c: {"human": 0, "import": 0, "machine": 0, "predicted": 0} for c in self.classes}
        with_boxes = set()
        for b in boxes:
            src = "machine" if b["annotator"] == AUTOLABEL_ANNOTATOR else \
                ("predicted" if b["source"] == "machine" else b["source"])
            per_class[name_of[b["class_id"]]][src] += 1
            if src in ("human", "import"):
                with_boxes.add(b["item_id"])
        history = self._prelabel_history()
        last = st.last_run("autolabel")
        out = {
            "project": str(self.root), "modality": self.modality, "task": "detection", "items": len(ids),
            "classes": len(self.classes), "labeled": {"human": len(human), "import": len(imported),
                                                      "machine": len(accepted)},
            "embedded": st.embedding_backbones(), "active_backbone": (st.get_meta("backbone") or {}).get("cache_id"),
            "per_class": per_class, "predicted": 0,
            "detection": {"reviewed": len(human), "reviewed_empty": len(human - with_boxes),
                          "imported": len(imported), "auto_accepted": len(accepted),
                          "prelabeled": sum(1 for i in keep if i in history),
                          "to_do": len(keep - human - imported - accepted),
                          "detector_run": (st.last_run("train-detector") or {}).get("id"),
                          "last_autolabel": None if last is None else {
                              k: last["summary"].get(k) for k in ("accepted", "estimated_precision", "precision_lower",
                                                                  "calibration_items", "reason")}},
        }
        if batch is not None:
            out["batch"] = batch
        d = out["detection"]
        out["next_step"] = (
            "run `labelloop import` to add images" if not len(ids) else
            "draw boxes on a few images (`labelloop serve`; `labelloop next` picks them), then `labelloop train`"
            if not d["reviewed"] and not d["imported"] else
            "run `labelloop train`" if d["detector_run"] is None else
            "run `labelloop prelabel`" if d["to_do"] and not d["prelabeled"] else None)
        return out

    # ------------------------------------------------------------------- quality
    GOLD_ANNOTATOR = "gold"

    def add_gold(self, pairs: Iterable[tuple[str | int, str]], *, create_classes: bool = False) -> LabelReport:
        """Mark items as gold standard with their known-true label. Gold labels also count as
        verified (human) labels, attributed to the annotator "gold"."""
        report = self.label(pairs, source="human", annotator=self.GOLD_ANNOTATOR, create_classes=create_classes)
        last = {}
        for a in self.store.annotations("human"):
            if a["annotator"] == self.GOLD_ANNOTATOR:
                last[a["item_id"]] = a["class_id"]
        now = time.time()
        with self.store.transaction() as c:
            c.executemany("INSERT INTO gold (item_id, class_id, added) VALUES (?, ?, ?) "
                          "ON CONFLICT(item_id) DO UPDATE SET class_id = excluded.class_id",
                          [(i, k, now) for i, k in last.items() if k is not None])
        return report

    def import_gold(self, path: str | Path, *, text_column: str = "text", label_column: str = "label",
                    create_classes: bool = True) -> LabelReport:
        """Gold items from a CSV: columns ``item,label`` naming existing items, or (text
        projects) ``text,label`` adding the texts as items first."""
        path = Path(path)
        if not path.is_file():
            raise ValidationError(f"{path} is not a file: give a CSV with columns item,label")
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            cols = [c.strip() for c in (next(csv.reader(f), []) or [])]
        if "item" in cols and label_column in cols:
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
                pairs = [((r.get("item") or "").strip(), r.get(label_column) or "") for r in csv.DictReader(f)]
            return self.add_gold(pairs, create_classes=create_classes)
        if self.modality == "text" and text_column in cols and label_column in cols:
            from .ingest import content_hash

            imp = self.import_(path, text_column=text_column)
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
                rows = [(r.get(text_column) or "").strip() for r in csv.DictReader(f)], None
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
                labels = [(r.get(label_column) or "") for r in csv.DictReader(f)]
            known = self.store.existing_hashes(content_hash(t) for t in rows[0] if t)
            pairs = [(known[content_hash(t)], lab) for t, lab in zip(rows[0], labels) if t and content_hash(t) in known]
            report = self.add_gold(pairs, create_classes=create_classes)
            report.skipped = imp.skipped + report.skipped
            return report
        raise ValidationError(f"{path.name} needs columns item,{label_column}"
                              + (f" or {text_column},{label_column}" if self.modality == "text" else "")
                              + f"; it has: {', '.join(cols) or '(no header)'}")

    def gold(self) -> dict[int, int]:
        """item_id -> class column index of the gold items."""
        col = {cid: c for c, cid in enumerate(self.store.class_ids().values())}
        return {i: col[k] for i, k in self.store.conn.execute("SELECT item_id, class_id FROM gold")}

    def annotator_annotations(self) -> list[tuple[int, str, int]]:
        """(item_id, annotator, class column) of every annotator's latest human label."""
        col = {cid: c for c, cid in enumerate(self.store.class_ids().values())}
        rows = self.store.conn.execute(
            "SELECT a.item_id, a.annotator, a.class_id FROM annotations a JOIN ("
            "  SELECT item_id, annotator, MAX(id) AS last FROM annotations"
            "  WHERE source = 'human' AND annotator IS NOT NULL AND annotator != ? GROUP BY item_id, annotator"
            ") l ON a.id = l.last WHERE a.class_id IS NOT NULL ORDER BY a.id", (self.GOLD_ANNOTATOR,)).fetchall()
        return [(i, who, col[k]) for i, who, k in rows]

    def annotators(self) -> dict:
        """Per-annotator accuracy against gold items and against the others' consensus,
        Dawid–Skene estimates, Cohen's kappa between pairs, Fleiss' kappa overall."""
        from .audit.annotators import (
            annotator_report,
            as_annotations,
            dawid_skene,
            fleiss_kappa_from_annotations,
            majority_vote,
            pairwise_cohen_kappa,
        )

        rows = self.annotator_annotations()
        classes = self.classes
        out: dict = {"annotations": len(rows), "classes": classes, "annotators": [], "pairs": [],
                     "fleiss_kappa": None, "items_with_several": 0}
        if not rows:
            return out
        ann = as_annotations(rows, n_classes=len(classes))
        gold = self.gold()
        stats = annotator_report(ann, gold=gold)
        ds = dawid_skene(ann)
        counts = np.bincount(ann.item, minlength=len(ann.item_ids))
        out["items_with_several"] = int((counts >= 2).sum())
        ds_acc = {}
        for a, aid in enumerate(ann.annotator_ids):
            cm = ds.confusion[a]  # (C, C) P(given | true)
            ds_acc[aid] = float((ds.priors * np.diag(cm)).sum())
        for st in stats:
            out["annotators"].append({
                "annotator": st.annotator, "annotations": st.n_annotations, "gold_items": st.n_gold,
                "gold_accuracy": _nan_none(st.gold_accuracy), "compared": st.n_compared,
                "consensus_accuracy": _nan_none(st.consensus_accuracy),
                "dawid_skene_accuracy": round(ds_acc[st.annotator], 4),
                "confusion": st.confusion.tolist()})
        for (a, b), (kappa, n_shared) in pairwise_cohen_kappa(ann).items():
            out["pairs"].append({"a": a, "b": b, "shared_items": n_shared, "cohen_kappa": _nan_none(kappa)})
        try:
            out["fleiss_kappa"] = _nan_none(fleiss_kappa_from_annotations(ann))
        except ValidationError as exc:
            out["fleiss_kappa_note"] = str(exc)
        mv = majority_vote(ann)
        out["consensus_ties"] = int(mv.tied.sum())
        return out

    def consensus(self, *, fraction: float, times: int, annotators: Sequence[str] | None = None,
                  seed: int = 0) -> dict:
        """Route a ``fraction`` of the items no person has labeled yet to ``times`` different
        annotators each (every other item to one), as queue assignments."""
        from .audit.annotators import consensus_sample

        people = list(annotators or [])
        if not people:
            people = [r["name"] for r in self.store.users(role="annotator", active_only=True)]
        if not people:
            people = sorted({who for _, who, _ in self.annotator_annotations()})
        if not people:
            raise ValidationError("no annotators known: pass --annotators alice,bob or add users "
                                  "(`labelloop users add NAME --role annotator`)")
        human = set(self.store.latest_labels("human"))
        pending = [int(i) for i in self.item_ids() if int(i) not in human]
        queues = consensus_sample(pending, fraction, times, people, seed=seed)
        now = time.time()
        multi = {}
        for who, items in queues.items():
            for i in items:
                multi[i] = multi.get(i, 0) + 1
        with self.store.transaction() as c:
            c.executemany("INSERT OR IGNORE INTO assignments (item_id, annotator, reason, created) VALUES (?, ?, ?, ?)",
                          [(i, who, "consensus" if multi[i] > 1 else "single", now)
                           for who, items in queues.items() for i in items])
        return {"annotators": people, "items": len(pending), "items_to_several": sum(v > 1 for v in multi.values()),
                "queue_sizes": {who: len(items) for who, items in queues.items()}}

    # -------------------------------------------------------------------- status
    def status(self, *, batch: str | None = None) -> dict:
        """Counts, predictions and their confidence, the estimate and what to do next.
        ``labeled`` and ``per_class`` count every item once, by the source of its current
        label (:meth:`current_labels`), as :meth:`export` writes it. ``batch``: the counts,
        confidence and estimate of that batch's items only; without it, a project with named
        batches also gets ``drift`` (:meth:`drift`). A multi-label project: :meth:`_multilabel_status`."""
        if self.task == "multilabel":
            return self._multilabel_status(batch=batch)
        if self.task == "detection":
            return self._detection_status(batch)
        st = self.store
        ids = self.item_ids()
        in_batch = None if batch is None else self.in_batch(ids, batch)
        classes = self.classes
        cid = st.class_ids()
        name_of = {v: k for k, v in cid.items()}
        per_class = {c: {"human": 0, "import": 0, "machine": 0, "predicted": 0} for c in classes}
        items, class_ids, sources = self._current_label_arrays()
        labeled_all = {src: int(n) for src, n in zip(LABEL_SOURCES, np.bincount(sources, minlength=len(LABEL_SOURCES)))}
        if in_batch is not None:   # what the next step depends on is every item's (labeled_all)
            mine = np.isin(items, ids[in_batch])
            class_ids, sources = class_ids[mine], sources[mine]
        # (class, source) counts: a column per source, a row per class id
        counts = np.zeros((int(class_ids.max(initial=0)) + 1, len(LABEL_SOURCES)), np.int64)
        np.add.at(counts, (class_ids, sources), 1)
        labeled = {src: int(n) for src, n in zip(LABEL_SOURCES, counts.sum(axis=0))}
        for class_id, row in enumerate(counts):
            if row.any():
                per_class[name_of[class_id]].update((src, int(n)) for src, n in zip(LABEL_SOURCES, row))
        pred = self.predictions()
        out = {
            "project": str(self.root),
            "modality": self.modality,
            "items": int(len(ids)) if in_batch is None else int(in_batch.sum()),
            "classes": len(classes),
            "labeled": labeled,
            "embedded": st.embedding_backbones(),
            "active_backbone": (st.get_meta("backbone") or {}).get("cache_id"),
            "per_class": per_class,
            "predicted": 0,
        }
        if batch is not None:
            out["batch"] = batch
        if pred is not None:
            prow = None if in_batch is None else np.flatnonzero(np.isin(pred.item_ids, ids[in_batch]))
            if prow is None:
                counts, out["confidence"] = MEMO.get(self.root, "prediction_stats", pred.run_id,
                                                     lambda: _prediction_stats(pred))
            else:
                counts, out["confidence"] = _prediction_stats(pred, prow)
            for c, n in zip(pred.classes, counts):
                per_class[c]["predicted"] += n
            out["predicted"] = int(len(pred.item_ids) if prow is None else len(prow))
            out["unreached"] = int((~pred.reached).sum() if prow is None else (~pred.reached[prow]).sum())
            # the run that made these predictions (a server's refresher has them before it is done)
            last = st.run(pred.run_id) or {"id": pred.run_id, "finished": None, "params": {}, "summary": {}}
            out["last_refresh"] = {"run": last["id"], "finished": last["finished"],
                                   "warm": last["params"].get("warm"), "stale": len(pred.item_ids) != len(ids)}
            # calibration of the confidences: the refresh's power map and its held-out error
            out["calibration"] = (pred.calibration or {}) | {"ece_heldout": last["summary"].get("ece_heldout")}
            est = self.estimate(batch=batch)
            out["estimate"] = est
            if batch is None:
                out["stopping"] = self.stopping(est)
                if est is not None and self._has_named_batches():
                    out["drift"] = self.drift()["batches"]
        out["next_step"] = self._next_step(out if in_batch is None else out | {
            "items": len(ids), "labeled": labeled_all, "predicted": 0 if pred is None else len(pred.item_ids)})
        return out

    def _has_named_batches(self) -> bool:
        """Whether any item came in a named batch, asked once per set of items (:data:`MEMO`:
        items are only added, and an item's batch never changes; the GROUP BY over every item
        took ~0.2 s of each ``status`` at 1M items)."""
        return MEMO.get(self.root, "named_batches", self.store.items_key(),
                        lambda: any(b["name"] is not None for b in self.store.batches()))

    def _next_step(self, status: dict) -> str | None:
        """The command the project needs before its predictions are current, or None."""
        if not status["items"]:
            return "run `labelloop import` to add images or texts"
        meta = self.store.get_meta("backbone")
        if not meta:
            return "run `labelloop embed` to embed the items"
        backbone = meta["cache_id"]
        # items and embeddings are only ever added: the same counts mean the same answer
        key = (self.store.items_key(), backbone, status["embedded"].get(backbone, 0))
        missing = MEMO.get(self.root, "unembedded", key, lambda: self.store.conn.execute(
            "SELECT COUNT(*) FROM items WHERE content_hash NOT IN "
            "(SELECT content_hash FROM embeddings WHERE backbone = ?)", (backbone,)).fetchone()[0])
        if missing:
            return f"run `labelloop embed`: {missing} items are not embedded yet"
        if not status["labeled"]["human"] and not status["labeled"]["import"]:
            return "label a few items per class (`labelloop label`), then run `labelloop refresh`"
        if not status["predicted"]:
            return "run `labelloop refresh` to predict every item's label"
        if status["last_refresh"]["stale"]:
            return "run `labelloop refresh`: items were added since the last refresh"
        return None

    # ------------------------------------------------------------------- batches
    def batches(self) -> list[dict]:
        """Every batch in arrival order (by its first item): name (``unbatched`` for items
        imported without ``--batch``), items, first item id, when its first item was added."""
        from .store import UNBATCHED

        return [b | {"name": b["name"] or UNBATCHED} for b in self.store.batches()]

    def _batch_codes(self, ids: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(batch names in arrival order, (n,) index into them of each item of ``ids``)."""
        from .store import UNBATCHED

        def load():
            all_ids, names = self.store.item_batches()
            order = [b["name"] for b in self.batches()]
            code_of = {name: c for c, name in enumerate(order)}
            codes = np.array([code_of[n or UNBATCHED] for n in names], dtype=np.int64)
            return _frozen((all_ids, codes, order))

        all_ids, codes, order = MEMO.get(self.root, "item_batches", self.store.items_key(), load)
        pos = np.searchsorted(all_ids, ids)
        return list(order), codes[np.minimum(pos, len(all_ids) - 1)] if len(all_ids) else codes

    def in_batch(self, ids: np.ndarray, batch: str) -> np.ndarray:
        """(n,) bool: which of ``ids`` came in ``batch``; an unknown batch is an error naming the known ones."""
        names, codes = self._batch_codes(np.asarray(ids, dtype=np.int64))
        if batch not in names:
            raise ValidationError(f"no batch named {batch!r} in this project; batches: {', '.join(names) or '(none)'}"
                                  " (set one with `labelloop import --batch NAME`)")
        return codes == names.index(batch)

    def _label_masks(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n,) bool each: a human or imported label is in effect / an accepted machine label is."""
        human = self.label_vector(ids, sources=("human", "import")) >= 0
        machine = np.isin(ids, np.fromiter(self.store.latest_labels("machine"), dtype=np.int64)) & ~human
        return human, machine

    def drift(self) -> dict:
        """Per batch in arrival order: items, the share people labeled and the share
        auto-labeled, predicted class proportions against those of every earlier batch (total
        variation distance ``shift``, :mod:`labelloop.drift`), and the estimated accuracy of its
        labels if exported now (:mod:`labelloop.loop.estimate`)."""
        from .drift import batch_drift

        ids = self.store.item_ids()
        pred = self._current_predictions(ids)
        if pred is None:
            raise NotReadyError("drift compares the current predictions: run `labelloop refresh` first")
        names, codes = self._batch_codes(ids)
        human, machine = self._label_masks(ids)
        heldout = self._heldout(pred)
        rows = batch_drift(codes, pred.label, len(pred.classes), human=human, machine=machine)

        def shares(v):
            return None if v is None else {c: round(float(x), 4) for c, x in zip(pred.classes, v)}

        out = []
        for b, r in enumerate(rows):
            est = self._estimate_rows(ids, pred, codes == b, masks=(human, machine), heldout=heldout)
            change = r["largest_change"]
            out.append({"batch": names[b]} | r | {
                "predicted_shares": shares(r["predicted_shares"]), "earlier_shares": shares(r["earlier_shares"]),
                "largest_change": None if change is None else {
                    "class": pred.classes[change[0]], "earlier": round(change[1], 4), "now": round(change[2], 4)},
                "mean_confidence": round(float(pred.confidence[codes == b].mean()), 4),
                "estimate": {k: est[k] for k in ("accuracy", "lower", "upper")}})
        return {"batches": out, "classes": list(pred.classes), "prediction_run": pred.run_id}

    def novel(self, *, batch: str | None = None, quantile: float | None = None, min_size: int | None = None,
              n_examples: int = 5) -> dict:
        """Candidate new classes: clusters of unlabeled items (of ``batch``) far from every
        labeled item -- and from every item of the batches before ``batch`` -- relative to
        their neighbourhood's density (:mod:`labelloop.novelty`),
        largest first, each with its most typical items as examples, the nearest known class
        and what the model predicts for them now. Recorded as a ``novel`` run, whose cluster
        numbers :meth:`add_class_from_cluster` takes."""
        from .novelty import DEFAULT_MIN_SIZE, DEFAULT_QUANTILE, find_novel_clusters

        quantile = DEFAULT_QUANTILE if quantile is None else float(quantile)
        min_size = DEFAULT_MIN_SIZE if min_size is None else int(min_size)
        if not 0.5 <= quantile < 1:
            raise ValidationError(f"--quantile must be in [0.5, 1), got {quantile}")
        if min_size < 2 or n_examples < 1:
            raise ValidationError("--min-size must be at least 2 and --examples at least 1")
        ids, graph = self.graph()
        _, X = self.embeddings()
        y = self.label_vector(ids, sources=("human", "import"))
        labeled = np.flatnonzero(y >= 0)
        if len(labeled) < 2:
            raise NotReadyError("novelty is measured against the labeled items: label at least two first")
        candidates, reference = y < 0, None
        if batch is not None:   # new relative to the labels and to every batch that came before it
            names, codes = self._batch_codes(ids)
            candidates = candidates & self.in_batch(ids, batch)
            reference = codes < names.index(batch)
            reference = reference if reference.any() else None   # the first batch: the labels alone
        res = find_novel_clusters(X, graph, labeled, y[labeled], candidates, reference=reference,
                                  quantile=quantile, min_size=min_size, n_examples=n_examples)
        pred = self._current_predictions(ids)
        classes = self.classes
        run = self.store.start_run("novel", {"batch": batch, "quantile": quantile, "min_size": min_size,
                                             "n_examples": n_examples}, {"labels": int(len(labeled))})
        clusters = []
        for k, cl in enumerate(res.clusters, start=1):
            items = self.store.items(ids[cl.examples].tolist())
            predicted = None
            if pred is not None:   # what the model calls them now (unreached items: nothing)
                reached = cl.rows[pred.reached[cl.rows]]
                counts = np.bincount(pred.label[reached], minlength=len(pred.classes))
                predicted = {"class": pred.classes[int(counts.argmax())] if len(reached) else None,
                             "share": round(float(counts.max() / cl.size), 4),
                             "unreached": round(1 - len(reached) / cl.size, 4)}
            clusters.append({"cluster": k, "size": cl.size, "nearest_class": classes[cl.nearest_class],
                             "similarity": round(cl.similarity, 4), "cohesion": round(cl.cohesion, 4),
                             "mean_score": round(cl.mean_score, 4), "predicted_now": predicted,
                             "examples": [{"item": it.id, "ref": it.display} for it in items]})
        np.savez(self.store.run_dir(run) / "clusters.npz",
                 **{f"cluster_{k}": ids[cl.rows] for k, cl in enumerate(res.clusters, start=1)})
        summary = {"batch": batch, "candidates": res.n_candidates, "novel_items": int(res.novel.sum()),
                   "threshold": round(res.threshold, 4), "clusters": clusters}
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    def last_novel(self) -> dict | None:
        """The last :meth:`novel` run's summary (batch, clusters with their examples) with its
        ``run`` id and when it ``finished``; None before the first run."""
        last = self.store.last_run("novel")
        return None if last is None else last["summary"] | {"run": last["id"], "finished": last["finished"]}

    def add_class_from_cluster(self, name: str, cluster: int, *, confirm: bool = False,
                               annotator: str | None = None) -> dict:
        """Add class ``name`` for cluster ``cluster`` of the last :meth:`novel` run. Nothing
        is machine-labeled: the cluster's examples (as `novel` listed them) are recorded as a
        query for a person to label, or, with ``confirm``, labeled ``name`` by ``annotator``
        -- a person vouching for the examples they were shown."""
        from .store import validate_class_name

        last = self.store.last_run("novel")
        if last is None:
            raise NotReadyError("no candidate clusters yet: run `labelloop novel` first")
        found = {c["cluster"]: c for c in last["summary"].get("clusters", [])}
        if cluster not in found:
            raise ValidationError(f"the last `labelloop novel` run (run {last['id']}) has no cluster {cluster}; "
                                  f"its clusters: {', '.join(map(str, found)) or 'none'}")
        name = validate_class_name(name)
        if name in self.classes:
            raise ValidationError(f"class {name!r} exists already; label the cluster's examples with "
                                  "`labelloop label ITEM={name} ...` instead")
        given = self.store.labeled_among([e["item"] for e in found[cluster]["examples"]])
        examples = [e for e in found[cluster]["examples"] if e["item"] not in given]
        self.store.add_classes([name])
        out = {"class": name, "cluster": cluster, "novel_run": last["id"], "examples": examples, "labeled": 0}
        if confirm:
            out["labeled"] = self.label([(e["item"], name) for e in examples], annotator=annotator).appended
        else:
            chosen = [{"item": e["item"], "guess": None, "confidence": None, "kind": "strategy"} for e in examples]
            out["query_run"] = self.record_query("novel", len(chosen), 0, chosen, annotator=annotator,
                                                 details={"cluster": cluster, "novel_run": last["id"], "class": name})
        return out

    # -------------------------------------------------------------------- export
    def current_labels(self) -> dict[int, tuple[int, str]]:
        """item_id -> (class_id, source) of every labeled item's current label: a person's
        (``human``) wins over an ``import`` label, which wins over an accepted ``machine``
        label; withdrawn labels do not count. ``status`` counts and ``export`` writes this
        (:meth:`_current_label_arrays`, which decides it)."""
        items, class_ids, sources = self._current_label_arrays()
        return dict(zip(items.tolist(), zip(class_ids.tolist(), (LABEL_SOURCES[s] for s in sources.tolist()))))

    def _current_label_arrays(self, sources: Sequence[str] = LABEL_SOURCES
                              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`current_labels` as three (m,) arrays: item ids, class ids and the index of
        the label's source in ``sources``, the first source that has one winning: the one
        place that decides it (``status`` counts these, :meth:`labels_with_source` maps them
        onto items), with no Python loop over the items (a project after auto-labeling holds
        a machine label for most of them)."""
        items, class_ids, found = [], [], []
        for s, source in enumerate(sources):   # the first source that has one wins
            k, v = self.store.latest_label_arrays(source)
            if items and len(k):
                new = ~np.isin(k, np.concatenate(items))
                k, v = k[new], v[new]
            items.append(k)
            class_ids.append(v)
            found.append(np.full(len(k), s, np.int64))
        if not items:
            return (np.zeros(0, np.int64),) * 3
        return np.concatenate(items), np.concatenate(class_ids), np.concatenate(found)

    def rows(self, *, batch: str | None = None) -> list[dict]:
        """One row per item (of ``batch``) with its batch and current best label: human, then
        import, then machine, then the propagated prediction. A multi-label project's rows:
        :meth:`_multilabel_rows`."""
        if self.task == "multilabel":
            return self._multilabel_rows(batch=batch)
        st = self.store
        name_of = {v: k for k, v in st.class_ids().items()}
        current = self.current_labels()
        conf_machine = dict(st.conn.execute(
            "SELECT a.item_id, a.confidence FROM annotations a JOIN (SELECT item_id, MAX(id) last FROM "
            "annotations WHERE source='machine' GROUP BY item_id) l ON a.id = l.last").fetchall())
        pred = self.predictions()
        prow = pred.row_of() if pred is not None else {}
        pcol = {c: j for j, c in enumerate(pred.classes)} if pred is not None else {}
        out = []
        for it, row in self._item_rows(batch):
            r = prow.get(it.id)
            label, source, conf = None, None, None
            if it.id in current:
                class_id, source = current[it.id]
                label = name_of[class_id]
            if source == "human":
                conf = 1.0
            elif source == "import":
                conf = float(pred.proba[r, pcol[label]]) if r is not None and label in pcol else None
            elif source == "machine":
                conf = conf_machine.get(it.id)
            elif r is not None and pred.reached[r]:
                label, source = pred.classes[pred.label[r]], "predicted"
                conf = float(pred.confidence[r])
            row.update(label=label, source=source, confidence=None if conf is None else round(conf, 6))
            out.append(row)
        return out

    def _item_rows(self, batch: str | None) -> Iterable[tuple]:
        """(item, the start of its export row: item, external_id, batch, source_path or text)
        of every item (of ``batch``), in id order."""
        ids = self.store.item_ids()
        names, codes = self._batch_codes(ids)
        batch_of = dict(zip(ids.tolist(), (names[c] for c in codes)))
        keep = None if batch is None else set(ids[self.in_batch(ids, batch)].tolist())
        for it in self.store.items():
            if keep is not None and it.id not in keep:
                continue
            row = {"item": it.id, "external_id": it.external_id, "batch": batch_of[it.id]}
            if it.modality == "image":
                row["source_path"] = it.uri
            else:
                row["text"] = it.text
            yield it, row

    def export(self, out: str | Path, *, format: str = "csv", batch: str | None = None) -> Path:
        """Write the current labels (of the items of ``batch``) to ``out``: one row per item
        (:meth:`rows` as csv, jsonl) or a dataset in an interchange format (:meth:`export_dataset`)."""
        if format in DATASET_FORMATS or format in BOX_FORMATS or self.task == "detection":
            return self.export_dataset(out, format=format, batch=batch).path
        if format not in EXPORT_FORMATS:
            raise ValidationError(f"export format must be one of {', '.join(EXPORT_FORMATS + DATASET_FORMATS)}, "
                                  f"not {format!r}")
        out = Path(out)
        multilabel = self.task == "multilabel"
        rows = self.rows(batch=batch)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            if format == "csv":
                text_col = "source_path" if self.modality == "image" else "text"
                fields = ["item", "external_id", text_col, "label", "source", "confidence", "batch"]
                if multilabel:   # lists as a|b (labels: [] when decided and none applies, empty: no decision)
                    fields = ["item", "external_id", text_col, "labels", "source", "undecided", "predicted", "batch"]
                    rows = [r | {"labels": _label_cell(r["labels"]), "undecided": "|".join(r["undecided"]),
                                 "predicted": "|".join(r["predicted"])} for r in rows]
                w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
            else:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        tmp.replace(out)
        return out

    def export_dataset(self, out: str | Path, *, format: str, image_url_prefix: str = "",
                       batch: str | None = None) -> ExportReport:
        """Write the current labels in an interchange format (:mod:`labelloop.formats`):

        - ``coco`` (a JSON file; images) and ``labelstudio`` (a JSON file of tasks, plus the
          matching labeling configuration beside it): human and import labels as annotations,
          accepted machine labels and the other items' predictions as predictions with their
          calibrated confidence as ``score``;
        - ``imagefolder`` (a new folder ``class/file``; images): every item with a current
          label (human, import or accepted machine), copied; the others are not written;
        - ``hf`` (a new folder, ``datasets.save_to_disk``): every item, ``label`` its current
          label (-1 none), ``predicted`` / ``score`` the prediction of the others, and the
          columns ``item``, ``external_id``, ``source``, ``confidence``.

        Each record carries the item id (COCO image field / Label Studio data key
        ``labelloop_item``, HF column ``item``) and where its label came from."""
        from . import formats

        if self.task == "detection":
            return self._export_boxes(out, format=format, image_url_prefix=image_url_prefix, batch=batch)
        multilabel = self.task == "multilabel"
        if multilabel and format == "imagefolder":
            raise ValidationError("an ImageFolder tree holds one class per image; a multi-label project exports "
                                  "csv, jsonl, coco, labelstudio or hf")
        if format not in DATASET_FORMATS:
            raise ValidationError(f"dataset format must be one of {', '.join(DATASET_FORMATS)}, not {format!r}")
        if self.modality == "text" and format in ("coco", "imagefolder"):
            raise ValidationError(f"{format} holds images; a text project exports csv, jsonl, labelstudio or hf")
        out = Path(out).expanduser()
        images = self.modality == "image"
        accepted = ("human", "import", "machine") if format in ("imagefolder", "hf") else ("human", "import")
        files: dict[str, Path] = {}
        records = []
        for row in self.rows(batch=batch):
            rec = formats.Record()
            if images:
                rec.path = row["external_id"] or Path(row["source_path"]).name
                files[rec.path] = Path(row["source_path"])
            else:
                rec.text = row["text"]
            source = row["source"]
            if multilabel:   # a class's decision in effect: given (accepted sources), else a prediction
                dec = row["decisions"]
                rec.labels = [c for c, d in dec.items() if d["value"] == 1 and d["source"] in accepted]
                if format != "hf":
                    rec.predicted = [c for c, d in dec.items() if d["value"] == 1 and d["source"] not in accepted]
                    rec.predicted += row["predicted"]
            elif row["label"] is not None and source in accepted:
                rec.labels = [row["label"]]
            elif row["label"] is not None:
                rec.predicted, rec.score = [row["label"]], row["confidence"]
            if format == "hf":
                rec.meta = {"item": row["item"], "external_id": row["external_id"], "source": source}
                if not multilabel:
                    rec.meta["confidence"] = row["confidence"]
            else:
                rec.meta = {"labelloop_item": row["item"], "labelloop_source": source}
            records.append(rec)
        if not records:
            raise NotReadyError("the project has no items yet: run `labelloop import` first")
        if format == "coco":
            for rec in records:
                rec.width, rec.height = formats.image_size(files[rec.path]) or (None, None)
        extra = _write_collection(formats.Collection(self.classes, records), out, format, modality=self.modality,
                                  image_url_prefix=image_url_prefix, images_root=files if images else None,
                                  multilabel=multilabel)
        return ExportReport(path=out, format=format, items=len(records),
                            labeled=sum(bool(r.labels) for r in records),
                            predicted=sum(bool(r.predicted) for r in records), extra=extra)

    def _export_boxes(self, out: str | Path, *, format: str, image_url_prefix: str = "",
                      batch: str | None = None) -> ExportReport:
        """A detection project's images (of ``batch``) with their boxes in effect: human, import
        and auto-accepted boxes as annotations, the other machine boxes (``labelloop prelabel``)
        as predictions with their scores. Each image's ``labelloop_status`` (COCO image field,
        Label Studio task data) says ``reviewed`` (by a person; no boxes then means none there),
        ``imported``, ``auto-accepted`` or ``to-do``. coco / labelstudio: a JSON file; yolo, voc:
        a new folder."""
        from . import formats

        if format not in BOX_FORMATS:
            raise ValidationError(f"a detection project exports its boxes as {', '.join(BOX_FORMATS)}, not {format!r}")
        ids = self.store.item_ids()
        if batch is not None:
            ids = ids[self.in_batch(ids, batch)]
        if ids.size == 0:
            raise NotReadyError("no images to export: run `labelloop import` first")
        names = {v: k for k, v in self.store.class_ids().items()}
        by_item: dict[int, list[dict]] = {}
        for b in self.store.current_boxes(item_ids=ids):
            by_item.setdefault(b["item_id"], []).append(b)
        reviewed, accepted = self.store.box_review_times("human"), self.store.box_review_times("machine")
        records = []
        for it in self.store.items(ids):
            width, height = formats.image_size(it.uri) or (None, None)
            bs = by_item.get(it.id, [])
            status = ("reviewed" if it.id in reviewed else "imported" if any(b["source"] == "import" for b in bs)
                      else "auto-accepted" if it.id in accepted else "to-do")
            rec = formats.Record(path=it.external_id or Path(it.uri).name, width=width, height=height,
                                 meta={"labelloop_item": it.id, "labelloop_status": status})
            for b in bs:
                predicted = b["source"] == "machine" and b["annotator"] != AUTOLABEL_ANNOTATOR
                box = formats.Box(b["x"], b["y"], b["w"], b["h"], names[b["class_id"]], b["score"] if predicted else None)
                (rec.predicted_boxes if predicted else rec.boxes).append(box)
            records.append(rec)
        out = Path(out).expanduser()
        extra = _write_collection(formats.Collection(self.classes, records), out, format, modality="image",
                                  image_url_prefix=image_url_prefix, boxes=True)
        done = [r.meta["labelloop_status"] != "to-do" for r in records]
        return ExportReport(path=out, format=format, items=len(records), labeled=sum(done),
                            predicted=sum(bool(r.predicted_boxes) and not d for r, d in zip(records, done)), extra=extra)

    # ---- used by the web app (and cached for long-running servers)
    def item_ids(self) -> np.ndarray:
        """``store.item_ids()`` read once per set of items (:data:`MEMO`; read-only): items are
        only ever added, so the largest id identifies the set (:meth:`Store.items_key`)."""
        key = self.store.items_key()

        def load():
            # the last refresh's ids when they are still every item (a file read: 1M ids take
            # ~0.4 s to SELECT); else from the database
            last = self.store.last_run_id("refresh")
            path = None if last is None else self.root / "arrays" / "runs" / str(last) / "item_ids.npy"
            if path is not None and path.exists():
                ids = np.asarray(np.load(path, mmap_mode="r"))
                if len(ids) and int(ids[-1]) == key:
                    return ids
            ids = self.store.item_ids()
            ids.flags.writeable = False
            return ids

        return MEMO.get(self.root, "item_ids", key, load)

    def _remember_predictions(self, run: int, ids: np.ndarray, P: np.ndarray, reached: np.ndarray,
                              classes: list[str], calibration: dict, s: dict[str, np.ndarray]) -> None:
        """Keep the refresh's predictions (``P`` float32 as saved, ``s`` its
        :func:`~labelloop.propagate.prediction_summary`) as :meth:`predictions` would read them
        back: a server's refresher sees them at once; once the run is done every Project of
        this process shares them."""
        pred = _frozen(Predictions(run, np.asarray(ids), P, list(classes), s["label"], s["confidence"], s["margin"],
                                   s["entropy"], reached.copy(), calibration))
        self._own_predictions = pred
        MEMO.put(self.root, "predictions", run, pred)

    def checks_wanted(self, pred: Predictions | None = None) -> dict | None:
        """The random checks by people auto-labeling waits for, as :meth:`autolabel` would say
        now with the settings of its last run: ``{"more_needed", "target_precision",
        "certified_coverage", "reason"}``; None before the first autolabel run (nobody asked for
        machine labels) or without current predictions. ``more_needed`` > 0: serve that many
        ``verify`` items (``labelloop next --strategy verify``)."""
        last = self.store.last_run("autolabel")
        if last is None:
            return None
        pred = pred if pred is not None else self._current_predictions(self.item_ids())
        if pred is None:
            return None
        params = last["params"]
        target = float(params.get("target_precision", self.setting("target_precision")))
        cert = self.certificate(pred, target_precision=target, per_class=params.get("per_class", True),
                                confidence_level=params.get("confidence_level", 0.95))
        certified, pending = self._verify_state()
        return {"more_needed": int(cert.more_needed or 0), "target_precision": target,
                "certified_coverage": certified, "pending_coverage": pending, "reason": cert.reason,
                "heldout": self._plan_heldout(pred)}

    def autolabel_eligible(self, pred: Predictions) -> np.ndarray:
        """(n,) over ``pred``'s items: the ones auto-labeling may label (no human or imported
        label, reached by propagation); verify checks are drawn among them."""
        return self._eligible(pred.item_ids, pred)

    def embedding_map(self, *, n_points: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
        """A 2-D picture of the embeddings: ``(item ids (m,), xy (m, 2))`` of a seeded sample of
        at most ``n_points`` items, projected on the sample's top two principal components of
        the unit-normalised vectors (cosine geometry, as the graph). None with fewer than 3
        embedded items. Computed once per set of embeddings per process (:data:`MEMO`)."""
        from .errors import LabelloopError

        try:
            ids, X = self.embeddings()
        except LabelloopError:
            return None
        if len(ids) < 3:
            return None

        def project() -> tuple[np.ndarray, np.ndarray]:
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(len(ids), size=min(n_points, len(ids)), replace=False))  # (m,)
            Xs = X[rows].astype(np.float64)                                    # (m, d)
            Xs /= np.maximum(np.linalg.norm(Xs, axis=1, keepdims=True), 1e-12)
            Xs -= Xs.mean(axis=0)
            # PCA: the top-2 right singular vectors of the centred sample
            _, _, vt = np.linalg.svd(Xs, full_matrices=False)
            return _frozen((ids[rows], Xs @ vt[:2].T))                         # (m,), (m, 2)

        key = (self.store.items_key(), (self.store.get_meta("backbone") or {}).get("cache_id"), n_points, seed)
        return MEMO.get(self.root, "embedding_map", key, project)

    # ---- labeling functions (rules)
    def rules(self) -> list[dict]:
        """Every labeling function with its provenance (author, created, definition) and state."""
        return self.store.rules()

    def add_rule(self, name: str, *, label: str, contains: Sequence[str] | None = None,
                 where: str | None = None, new_classes: bool = False, author: str | None = None) -> dict:
        """A ``contains`` (keywords) or ``where`` (metadata expression) rule voting ``label``;
        it is evaluated on every item now and on later items at the next refresh / report."""
        from .rules import Expression, keyword_pattern, validate_rule_name

        validate_rule_name(name)
        if (contains is None) == (where is None):
            raise ValidationError(f"rule {name!r}: give either --contains WORDS or --where EXPRESSION")
        if contains is not None:
            kind, definition = "contains", {"keywords": [k.strip() for k in contains if k and k.strip()]}
            keyword_pattern(definition["keywords"])
        else:
            kind, definition = "where", {"expression": where}
            Expression(where, rule=name)
        self._check_new_rule_names([name])
        class_id = self._rule_classes(name, [label], new_classes)[label]
        rule_id = self.store.add_rule(name, kind, definition, class_id, author=author)
        return self._catch_up_rule(self.store.rule(name)) | {"id": rule_id}

    def add_python_rules(self, path: str | Path, *, new_classes: bool = False, author: str | None = None
                         ) -> list[dict]:
        """Every public top-level function of a Python file (``item -> class name | None``) as a
        rule named after it. This runs the user's own code in this process; the file's source is
        stored with each rule (provenance) and run again for items imported later."""
        from .rules import RuleItem, evaluate, python_functions, validate_rule_name
        from .rules.kinds import source_digest

        path = Path(path).expanduser()
        if not path.is_file():
            raise ValidationError(f"{path} is not a file: give a .py file of labeling functions")
        source = path.read_text(encoding="utf-8")
        fns = python_functions(source, filename=str(path))
        if not fns:
            raise ValidationError(f"{path.name} defines no labeling functions: write top-level functions "
                                  "like `def refund(item): return 'billing' if 'refund' in item.text else None` "
                                  "(names starting with '_' are skipped)")
        for name in fns:
            validate_rule_name(name)
        self._check_new_rule_names(list(fns))
        through = self.store.max_item_id()
        items = [RuleItem(**r) for r in self.store.rule_inputs()]
        votes = {name: evaluate(name, fn, items) for name, fn in fns.items()}   # all run before any is stored
        for name, v in votes.items():
            self._rule_classes(name, sorted({k for _, k in v}), new_classes)
        class_ids = self.store.class_ids()
        out = []
        for name, v in votes.items():
            definition = {"file": str(path.resolve()), "function": name, "sha256": source_digest(source),
                          "source": source}
            rule_id = self.store.add_rule(name, "python", definition, None, author=author)
            self.store.add_rule_votes(rule_id, [(i, class_ids[k]) for i, k in v], through=through)
            out.append({"id": rule_id, "name": name, "votes": len(v)})
        return out

    def set_rule_active(self, name: str, active: bool, *, by: str | None = None) -> dict:
        """Switch a rule on or off (who and when are kept); its votes stay stored either way."""
        if self.store.rule(name) is None:
            raise ValidationError(f"no rule named {name!r}; see `labelloop rules list`")
        self.store.set_rule_active(name, active, by=by)
        return self.store.rule(name)

    def rules_report(self) -> dict:
        """Per rule: coverage, overlap, conflict, estimated accuracy (label model) and measured
        accuracy on human labels (with n); switched-off rules are listed without statistics."""
        from .rules import rule_stats

        ids = self.item_ids()
        votes, active = self._rule_votes(ids)
        model = self._rule_model(votes, len(active))
        y_h = self.label_vector(ids, sources=("human",))
        stats, totals = rule_stats(votes, n_rules=len(active), n_items=len(ids), model=model, y_human=y_h)
        by_name = {r["name"]: st for r, st in zip(active, stats)}
        rows = []
        for r in self.store.rules():
            d = r["definition"]
            what = (", ".join(d["keywords"]) if r["kind"] == "contains" else d["expression"] if r["kind"] == "where"
                    else f"{d['function']}() in {d['file']}")
            rows.append(dict(name=r["name"], kind=r["kind"], label=r["class"], definition=what, author=r["author"],
                             created=r["created"], active=r["active"], changed_by=r["changed_by"],
                             changed=r["changed"]) | by_name.get(r["name"], {}))
        known = y_h[model.rows] >= 0
        model_acc = float((model.label[known] == y_h[model.rows][known]).mean()) if known.any() else None
        classes = self.classes
        return dict(rules=rows, totals=totals, label_model=model.method, label_model_converged=model.converged,
                    label_model_measured_accuracy=model_acc, label_model_measured_n=int(known.sum()),
                    rule_trust=self.setting("rule_trust"),
                    predicted_shares={classes[c]: round(float((model.label == c).mean()), 4)
                                      for c in range(len(classes))} if len(model.rows) else {})

    def _check_new_rule_names(self, names: list[str]) -> None:
        taken = [n for n in names if self.store.rule(n) is not None]
        if taken:
            raise ValidationError(f"a rule named {taken[0]!r} exists already; rules are never redefined: "
                                  f"switch it off (`labelloop rules off {taken[0]}`) and add the new one under "
                                  "another name")

    def _rule_classes(self, rule: str, labels: list[str], create: bool) -> dict[str, int]:
        """Class id of each label a rule gives; unknown ones created with ``create``, else an error."""
        known = self.store.class_ids()
        unknown = [k for k in labels if k not in known]
        if unknown and not create:
            raise ValidationError(
                f"rule {rule!r} gives unknown class {unknown[0]!r} (known: {', '.join(known) or 'none'}); "
                "create it with --new-classes, or fix the label")
        if unknown:
            self.store.add_classes(unknown)
            known = self.store.class_ids()
        return {k: known[k] for k in labels}

    def _catch_up_rule(self, rule: dict) -> dict:
        """Evaluate a rule on the items imported since it last ran; store its votes."""
        from .rules import RuleItem, compile_rule, evaluate

        through = self.store.max_item_id()
        if rule["votes_through"] >= through:
            return {"name": rule["name"], "votes": None}
        fn = compile_rule(rule["name"], rule["kind"], rule["definition"], rule["class"])
        votes = evaluate(rule["name"], fn, (RuleItem(**r) for r in self.store.rule_inputs(rule["votes_through"])))
        class_ids = self._rule_classes(rule["name"], sorted({k for _, k in votes}), create=False)
        self.store.add_rule_votes(rule["id"], [(i, class_ids[k]) for i, k in votes], through=through)
        return {"name": rule["name"], "votes": len(votes)}

    def _rule_votes(self, ids: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """(V, 3) votes (active-rule index, row of ``ids``, class column) and the active rules.
        Rules run on items imported since they last ran first, unless the store is read-only
        (a web page: those items count as abstained until the next refresh runs them)."""
        active = self.store.rules(active_only=True)
        for r in active:
            if not self.store.readonly:
                self._catch_up_rule(r)
        index = {r["id"]: a for a, r in enumerate(active)}
        col = {cid: c for c, cid in enumerate(self.store.class_ids().values())}
        raw = np.array(self.store.rule_votes(active_only=True), dtype=np.int64).reshape(-1, 3)
        rows = np.searchsorted(ids, raw[:, 1])
        ok = (rows < len(ids)) & (ids[np.minimum(rows, len(ids) - 1)] == raw[:, 1]) if len(ids) else rows < 0
        votes = np.stack([np.array([index[r] for r in raw[ok, 0]], dtype=np.int64).reshape(-1),
                          rows[ok], np.array([col[c] for c in raw[ok, 2]], dtype=np.int64).reshape(-1)], axis=1)
        return votes, active

    def rule_matrices(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """What active learning reads of the rules, rows = positions in ``ids`` (ascending):
        (n, C) votes of the active rules per class and (n, C) their label model's class
        distribution (zero rows where no rule voted). None without a vote, or with
        ``rule_trust`` 0 (rules only reported, never used)."""
        if self.setting("rule_trust") <= 0 or not self.store.rules(active_only=True):
            return None
        votes, active = self._rule_votes(ids)
        if not len(votes):
            return None
        C = len(self.classes)
        V = np.zeros((len(ids), C))                                # (n, C)
        np.add.at(V, (votes[:, 1], votes[:, 2]), 1.0)
        model = self._rule_model(votes, len(active))
        Q = np.zeros((len(ids), C))                                # (n, C)
        Q[model.rows] = model.proba
        return V, Q

    def _rule_model(self, votes: np.ndarray, n_rules: int):
        from .rules import fit_label_model

        return fit_label_model(votes, n_rules=n_rules, n_classes=len(self.classes),
                               method=self.setting("label_model"))

    def _rule_evidence(self, ids: np.ndarray):
        """The label model over ``ids`` (rows = positions in ``ids``) for :meth:`refresh`, and a
        fingerprint of what it seeds; None without rule votes or with ``rule_trust`` 0."""
        if self.setting("rule_trust") <= 0 or not self.store.rules(active_only=True):
            return None, None
        votes, active = self._rule_votes(ids)
        model = self._rule_model(votes, len(active))
        if not len(model.rows):
            return None, None
        h = hashlib.sha256(model.rows.tobytes() + np.round(model.proba, 6).tobytes())
        h.update(f"{self.setting('rule_trust')}".encode())
        return model, h.hexdigest()[:16]

    # --------------------------------------------------------------- multi-label
    # A multi-label project stores one decision per (item, class): 1 the class applies, 0 it
    # does not (store ``class_decisions``, append-only; the latest row of a source is its
    # decision). Y for the loop (labelloop.loop.multilabel) is int8 (n, C): 1 / 0 / -1 undecided.
    def _require_multilabel(self, what: str) -> None:
        if self.task != "multilabel":
            raise ValidationError(
                f"{what} is for multi-label projects; this is a {self.task} project: give each item one class "
                "(labelloop label -p PROJECT ITEM=CLASS), or make a multi-label project with "
                "labelloop init --task multilabel --classes a,b,c")

    def _item_id(self, item: str | int) -> int:
        """An item id from an id (int, as the web app holds them) or a reference a user wrote."""
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not self.store.has_item(int(item)):
                raise UnknownItemError(f"no item with id {int(item)}")
            return int(item)
        return self.store.resolve_item(item)

    def _decision_rows(self, item_id: int, names: Iterable[str], where: str) -> list[tuple[int, int, int]]:
        """(item_id, class_id, value) for every project class: 1 for ``names``, 0 for the others;
        an unknown name is a ValidationError naming it, ``where`` and the project's classes."""
        from .errors import UnknownClassError

        if isinstance(names, str):
            raise ValidationError(f"{where}: give the classes as a list of class names ([{names!r}]), not the string {names!r}")
        wanted = {n.strip() if isinstance(n, str) else n for n in names}
        class_ids = self.store.class_ids()
        if not class_ids:
            raise ValidationError("the project has no classes yet: add them with labelloop init --classes a,b,c "
                                  "(or Project.add_classes)")
        unknown = sorted(str(n) for n in wanted if n not in class_ids)
        if unknown:
            raise UnknownClassError(f"{where}: unknown class {unknown[0]!r}; this project's classes are "
                                    f"{', '.join(class_ids)}")
        return full_decision(item_id, wanted, class_ids)

    def label_classes(self, item: str | int, classes: Iterable[str], *, annotator: str | None = None,
                      source: str = "human") -> None:
        """A person's full decision for one item of a multi-label project: every project class
        gets a row, 1 for ``classes`` (the ones that apply; empty: none does), 0 for the others.
        An unknown item or class name is a ValidationError and nothing is written."""
        self.label_many_classes([(item, classes)], annotator=annotator, source=source)

    def label_many_classes(self, decisions: Iterable[tuple[str | int, Iterable[str]]], *,
                           annotator: str | None = None, source: str = "human") -> int:
        """:meth:`label_classes` for several (item, classes) pairs in one transaction: all are
        checked first, so one bad item or class writes nothing. Returns the items decided."""
        self._require_multilabel("label_classes")
        if source not in ("human", "import"):
            raise ValidationError("label source must be 'human' or 'import' (machine decisions come from autolabel)")
        rows, n = [], 0
        for item, classes in decisions:
            rows += self._decision_rows(self._item_id(item), classes, f"item {item!r}")
            n += 1
        self.store.add_class_decisions(rows, source=source, annotator=annotator)
        return n

    def undo_class_decision(self, annotator: str) -> dict:
        """Undo ``annotator``'s most recent human decision still in effect in a multi-label
        project (append-only): each class of that item gets back the human decision in effect
        before it (re-sent under its own annotator), or is withdrawn where there was none, so
        the item is open again. The next undo goes one decision further back. Returns the item
        and the classes that apply now; NotReadyError when there is nothing to undo."""
        self._require_multilabel("undo")
        item = self.store.last_class_decision_in_effect(annotator)
        if item is None:
            raise NotReadyError(f"nothing to undo: {annotator} has no class decision in effect")
        rows = [r for r in self.store.class_decision_rows(item) if r["source"] == "human"]
        mine = [r for r in rows if r["annotator"] == annotator and r["value"] is not None]
        batch = max(r["created"] for r in mine)   # one decision: its rows share their time
        first = min(r["id"] for r in mine if r["created"] == batch)
        class_ids = self.store.class_ids()
        before: dict[str, dict] = {}
        for r in rows:
            if r["id"] < first:
                before[r["class"]] = r
        new, who = [], []
        for name, cid in class_ids.items():
            prev = before.get(name)
            restore = prev is not None and prev["value"] is not None
            new.append((item, cid, prev["value"] if restore else None))
            who.append(prev["annotator"] if restore else annotator)
        self.store.add_class_decisions(new, source="human", annotators=who)
        return {"item": item, "classes": [name for (_, _, v), name in zip(new, class_ids) if v == 1],
                "withdrawn": [name for (_, _, v), name in zip(new, class_ids) if v is None]}

    def label_classes_csv(self, path: str | Path, *, annotator: str | None = None,
                          source: str = "human") -> LabelReport:
        """Decisions from a CSV with columns ``item`` and ``labels`` (``a|b``, a JSON list, ``[]``
        for none applies): each row is its item's full decision. A bad row (unknown item or
        class, unreadable labels) is skipped and named by its file and line; the others are written."""
        from .ingest import parse_label_set

        self._require_multilabel("label_classes_csv")
        report, good = LabelReport(), []
        for where, ref, cell in _item_csv(path, "labels"):
            names, why = parse_label_set(cell or "[]", where)
            try:
                if why:
                    raise ValidationError(why)
                item = self._item_id(ref)
                self._decision_rows(item, names, f"{where} item {ref!r}")
                good.append((item, names))
            except ValidationError as exc:
                report.skipped.append(Skipped(where, str(exc)))
        report.appended = self.label_many_classes(good, annotator=annotator, source=source)
        return report

    def class_decisions(self, items: Iterable[str | int] | None = None, *,
                        sources: Sequence[str] = ("human",)) -> dict[int, dict[str, int]]:
        """item id -> {class name: 1 applies / 0 does not} of the decisions in effect (each
        source's latest per item and class); with several ``sources`` the earlier one wins
        for an (item, class). ``items``: only those (ids or references)."""
        unknown = [s for s in sources if s not in LABEL_SOURCES]
        if unknown:
            raise ValidationError(f"sources must be among {', '.join(LABEL_SOURCES)}, not {unknown[0]!r}")
        ids = None if items is None else [self._item_id(i) for i in items]
        return {i: {c: d[0] for c, d in per.items()} for i, per in self._decisions(sources, ids).items()}

    def _decisions(self, sources: Sequence[str], ids: Sequence[int] | None = None
                   ) -> dict[int, dict[str, tuple[int, str, float | None]]]:
        """item id -> {class: (value, source, confidence)} of the decision in effect per item and
        class, the first of ``sources`` that has one; classes in project order."""
        order = {name: j for j, name in enumerate(self.store.class_ids())}
        name_of = {v: k for k, v in self.store.class_ids().items()}
        rank = {s: r for r, s in enumerate(sources)}
        best: dict[tuple[int, int], tuple] = {}   # (item, class column) -> (rank, value, source, confidence)
        for item, cid, value, source, conf in self.store.class_decisions(sources=sources, item_ids=ids):
            key = (item, order[name_of[cid]])
            if key not in best or rank[source] < best[key][0]:
                best[key] = (rank[source], value, source, conf)
        out: dict[int, dict[str, tuple[int, str, float | None]]] = {}
        names = list(order)
        for (item, col), (_, value, source, conf) in sorted(best.items()):
            out.setdefault(item, {})[names[col]] = (value, source, conf)
        return out

    def _decision_matrix(self, ids: np.ndarray, sources: Sequence[str]) -> np.ndarray:
        """(n, C) int8 over ``ids`` and the project's classes: 1 applies, 0 does not, -1 undecided,
        by the decision in effect of the first of ``sources`` that has one (the loop's ``Y``)."""
        col = {cid: j for j, cid in enumerate(self.store.class_ids().values())}
        row = {int(i): r for r, i in enumerate(ids)}
        Y = np.full((len(ids), len(col)), -1, dtype=np.int8)   # (n, C)
        for source in reversed(tuple(sources)):                # earlier sources write last
            for item, cid, value, _, _ in self.store.class_decisions(sources=(source,)):
                r = row.get(item)
                if r is not None:
                    Y[r, col[cid]] = value
        return Y

    def _multilabel_status(self, *, batch: str | None = None) -> dict:
        """:meth:`status` of a multi-label project: ``labeled`` counts items with a decision in
        effect from each source; ``per_class`` the items a class applies to by the source of its
        decision, ``predicted`` (undecided, in the last refresh's predicted set) and
        ``undecided``; ``bars`` each class's bar from the last autolabel run (or why it has none)."""
        st = self.store
        ids = self.item_ids()
        scope = np.ones(len(ids), dtype=bool) if batch is None else self.in_batch(ids, batch)
        classes = self.classes
        labeled = dict.fromkeys(LABEL_SOURCES, 0)
        labeled_all = dict.fromkeys(LABEL_SOURCES, 0)   # what the next step depends on
        Y = np.full((len(ids), len(classes)), -1, dtype=np.int8)   # (n, C) decisions in effect
        row = {int(i): r for r, i in enumerate(ids)}
        col = {c: j for j, c in enumerate(classes)}
        per_class = {c: {"human": 0, "import": 0, "machine": 0, "predicted": 0, "undecided": 0} for c in classes}
        for item, dec in self._decisions(LABEL_SOURCES).items():
            r = row.get(item)
            for source in {d[1] for d in dec.values()}:
                labeled_all[source] += 1
                labeled[source] += r is not None and bool(scope[r])
            if r is None or not scope[r]:
                continue
            for c, (value, source, _) in dec.items():
                Y[r, col[c]] = value
                per_class[c][source] += value == 1
        undecided = (Y < 0) & scope[:, None]                        # (n, C)
        scores = self.multilabel_scores()
        current = scores is not None and len(scores.item_ids) == len(ids) and np.array_equal(scores.item_ids, ids) \
            and scores.classes == classes
        predicted = np.zeros_like(undecided)
        if current:
            predicted = undecided & scores.reached[:, None] & scores.applies()
        for c, j in col.items():
            per_class[c]["undecided"] = int(undecided[:, j].sum())
            per_class[c]["predicted"] = int(predicted[:, j].sum())
        out = {"project": str(self.root), "modality": self.modality, "task": "multilabel",
               "items": int(scope.sum()), "classes": len(classes), "labeled": labeled,
               "embedded": st.embedding_backbones(), "active_backbone": (st.get_meta("backbone") or {}).get("cache_id"),
               "per_class": per_class, "predicted": 0}
        if batch is not None:
            out["batch"] = batch
        if scores is not None:
            out["predicted"] = int(scope.sum()) if current else 0
            out["unreached"] = int((~scores.reached[scope]).sum()) if current else None
            last = st.run(scores.run_id) or {"id": scores.run_id, "finished": None}
            out["last_refresh"] = {"run": last["id"], "finished": last["finished"], "stale": not current}
        last_auto = st.last_run("autolabel")
        if last_auto is not None and "classes" in last_auto["summary"]:
            out["bars"] = last_auto["summary"]["classes"]
        out["next_step"] = self._next_step(out | {"items": len(ids), "labeled": labeled_all,
                                                  "predicted": 0 if scores is None else len(scores.item_ids)})
        return out

    def _multilabel_rows(self, *, batch: str | None = None) -> list[dict]:
        """One row per item (of ``batch``): ``labels`` the classes that apply by the decision in
        effect per class (human, then import, then machine; None without any decision),
        ``source`` where those decisions came from (``human+machine`` when mixed),
        ``decisions`` {class: {value, source}}, ``undecided`` the classes without one,
        ``predicted`` the undecided classes in the last refresh's predicted set (each class's
        score at or above its bar, :meth:`MultiLabelScores.applies`), and
        ``scores`` its per-class scores."""
        decisions = self._decisions(LABEL_SOURCES)
        classes = self.classes
        scores = self.multilabel_scores()
        srow = scores.row_of() if scores is not None else {}
        out = []
        applies = scores.applies() if scores is not None else None   # (n, C) predicted sets
        for it, row in self._item_rows(batch):
            dec = decisions.get(it.id, {})
            r = srow.get(it.id)
            per = {} if r is None else dict(zip(scores.classes, scores.scores[r].tolist()))
            said = {} if r is None else dict(zip(scores.classes, applies[r].tolist()))
            undecided = [c for c in classes if c not in dec]
            reached = r is not None and bool(scores.reached[r])
            row.update(
                labels=[c for c, d in dec.items() if d[0] == 1] if dec else None,
                source="+".join(s for s in LABEL_SOURCES if any(d[1] == s for d in dec.values())) or None,
                decisions={c: {"value": d[0], "source": d[1]} for c, d in dec.items()},
                undecided=undecided,
                predicted=[c for c in undecided if reached and said.get(c, False)],
                scores={c: round(v, 6) for c, v in per.items()} or None)
            out.append(row)
        return out

    def class_scores(self, item_ids: Iterable[int]) -> dict[int, dict[str, float]]:
        """item id -> {class name: calibrated P(the class applies)} of the last refresh of a
        multi-label project, for the given items it scored (empty before the first refresh)."""
        scores = self.multilabel_scores()
        if scores is None:
            return {}
        row = scores.row_of()
        out = {}
        for i in item_ids:
            r = row.get(int(i))
            if r is not None:
                out[int(i)] = {c: float(v) for c, v in zip(scores.classes, scores.scores[r])}
        return out

    def multilabel_scores(self) -> "MultiLabelScores | None":
        """The last multi-label refresh's per-class scores (its run folder's ``scores.npy``,
        ``item_ids.npy``, ``reached.npy``), read once per process (:data:`MEMO`); None before one."""
        last = self.store.last_run_id("refresh")
        if last is None:
            return None
        return MEMO.get(self.root, "multilabel_scores", last, lambda: self._load_multilabel_scores(last))

    def _load_multilabel_scores(self, run_id: int) -> "MultiLabelScores | None":
        run = self.store.run(run_id)
        d = self.store.run_dir(run_id)
        if run is None or not (d / "scores.npy").exists():
            return None
        load = lambda name: np.asarray(np.load(d / f"{name}.npy", mmap_mode="r"))  # noqa: E731
        return _frozen(MultiLabelScores(run_id, load("item_ids"), load("scores"), load("reached"),
                                        list(run["summary"].get("classes", [])), load("thresholds")))

    def _multilabel_evidence(self, ids: np.ndarray) -> np.ndarray:
        """The ``Y`` the loop learns from: human decisions, and imported ones where a human made
        none for that class (with ``import_trust`` below 1, human decisions only: the
        multi-label propagation clamps every decision it is given)."""
        trust = self.setting("import_trust")
        return self._decision_matrix(ids, ("human", "import") if trust >= 1.0 else ("human",))

    def _refresh_multilabel(self) -> dict:
        """:meth:`refresh` of a multi-label project: one-vs-rest propagation of every class on the
        shared graph, calibrated per class (:func:`labelloop.loop.multilabel.predict_multilabel`).
        The prediction is stored as array files in the run folder (``scores``, ``reached``,
        ``item_ids`` and the held-out arrays autolabel / audit / next read), its calibration in
        the run's summary."""
        from .loop.multilabel import predict_multilabel

        classes = self.classes
        if not classes:
            raise NotReadyError("no classes yet: add them with labelloop init --classes a,b,c")
        ids, graph = self.propagation_graph()
        Y = self._multilabel_evidence(ids)     # (n, C) int8
        if not (Y >= 0).any():
            raise NotReadyError("no decisions yet: label a few items first (labelloop label ITEM --classes a,b)")
        params = dict(k=graph.k, task="multilabel", import_trust=self.setting("import_trust"))
        run = self.store.start_run("refresh", params, {"graph": self._graph_fingerprint(ids),
                                                       "decisions": int((Y >= 0).sum())})
        t0 = time.perf_counter()
        try:
            pred = predict_multilabel(graph, Y, X=self.embeddings()[1], seed=0,
                                      positive_share=self._positive_share(ids, Y))
        except BaseException:
            self.store.finish_run(run, status="failed")
            raise
        seconds = time.perf_counter() - t0
        prev = self.multilabel_scores()
        changed = None
        if prev is not None and np.array_equal(prev.item_ids, ids) and prev.classes == classes:
            changed = int((prev.applies() != pred.labels()).sum())
        out_dir = self.store.run_dir(run)
        np.save(out_dir / "item_ids.npy", ids)
        for name, value in pred.arrays().items():   # scores, reached, thresholds, the held-out arrays, ...
            np.save(out_dir / f"{name}.npy", value)
        open_pairs = (Y < 0) & pred.reached[:, None]
        summary = dict(items=len(ids), task="multilabel", classes=classes,
                       decided_items=int((Y >= 0).any(axis=1).sum()), decided_pairs=int((Y >= 0).sum()),
                       human_items=int((self._decision_matrix(ids, ("human",)) >= 0).any(axis=1).sum()),
                       unreached=int((~pred.reached).sum()),
                       applies_predicted=int((open_pairs & pred.labels()).sum()),
                       changed=changed, seconds=round(seconds, 4),
                       calibration=pred.calibration.to_dict(), head_weight=float(pred.head_weight),
                       heldout_items=int(len(pred.heldout_rows)))
        self.store.finish_run(run, summary)
        return summary | {"run": run, "labeled": summary["decided_items"], "warm": False,
                          "mean_confidence": float(np.maximum(pred.scores, 1 - pred.scores)[open_pairs].mean())
                          if open_pairs.any() else 1.0}

    def _multilabel_prediction(self, ids: np.ndarray):
        """The last multi-label refresh as a :class:`labelloop.loop.multilabel.MultiLabelPrediction`
        when it scored exactly ``ids`` and the project's classes, else None (read once per run)."""
        scores = self.multilabel_scores()
        if scores is None or not np.array_equal(scores.item_ids, ids) or scores.classes != self.classes:
            return None
        return MEMO.get(self.root, "multilabel_prediction", scores.run_id,
                        lambda: self._load_multilabel_prediction(scores.run_id))

    def _load_multilabel_prediction(self, run_id: int):
        from .loop.multilabel import MultiLabelPrediction

        return MultiLabelPrediction.from_arrays({f.stem: np.load(f) for f in self.store.run_dir(run_id).glob("*.npy")})

    def _current_multilabel_prediction(self, ids: np.ndarray):
        pred = self._multilabel_prediction(ids)
        if pred is None:
            raise NotReadyError("the per-class scores are missing or out of date: run `labelloop refresh` first")
        return pred

    def _random_rows(self, ids: np.ndarray) -> np.ndarray:
        """(n,) bool: items a person decided that no query strategy chose (first labels, the
        random share of `next`): the decisions that certify auto-labeling without bias."""
        chosen = self.actively_chosen()
        human = (self._decision_matrix(ids, ("human",)) >= 0).any(axis=1)
        return human & ~np.isin(ids, np.fromiter(chosen, dtype=np.int64, count=len(chosen)))

    def _positive_share(self, ids: np.ndarray, Y: np.ndarray) -> np.ndarray | None:
        """(C,) the add-one smoothed share of items each class applies to among the items decided
        at random (:meth:`_random_rows`), once strategies chose others and at least
        :attr:`MIN_REPRESENTATIVE` random ones exist; else None (the loop's default: all decisions)."""
        if not self.actively_chosen():
            return None
        rnd = self._random_rows(ids)
        D = Y[rnd]                                                   # (m, C)
        if len(D) < self.MIN_REPRESENTATIVE:
            return None
        return ((D == 1).sum(axis=0) + 1.0) / ((D >= 0).sum(axis=0) + 2.0)

    def _certify_multilabel(self, ids: np.ndarray, pred, Y: np.ndarray, *, target_precision: float,
                            confidence_level: float):
        from .loop.multilabel import certify_multilabel

        return certify_multilabel(pred, Y, target_precision=target_precision, level=confidence_level,
                                  random_rows=self._random_rows(ids), class_names=self.classes)

    def _autolabel_multilabel(self, *, target_precision: float | None = None,
                              confidence_level: float = 0.95) -> dict:
        """:meth:`autolabel` of a multi-label project: per class, the bars held-out human
        decisions certify (:func:`labelloop.loop.multilabel.certify_multilabel`); every undecided
        (item, class) past its class's bar gets a ``machine`` decision (confidence: the calibrated
        probability of the value decided); earlier machine decisions that no longer pass are
        withdrawn. ``classes``: each class's bar, what it accepted, or why it has none and how
        many more labeled items it needs."""
        from .loop.multilabel import accepted_pairs

        target_precision = self._checked_target(target_precision)
        ids = self.item_ids()
        pred = self._current_multilabel_prediction(ids)
        Y = self._multilabel_evidence(ids)
        bars = self._certify_multilabel(ids, pred, Y, target_precision=target_precision,
                                        confidence_level=confidence_level)
        acc = accepted_pairs(pred, Y, bars)    # (m, 3) item row, class column, value
        class_ids = list(self.store.class_ids().values())
        current = {(i, k): v for i, k, v, _, _ in self.store.class_decisions(sources=("machine",))}
        run = self.store.start_run("autolabel", {"target_precision": target_precision,
                                                 "confidence_level": confidence_level, "task": "multilabel"},
                                   {"prediction_run": self.multilabel_scores().run_id})
        new, confs, keep = [], [], set()
        for r, c, v in acc.tolist():
            key = (int(ids[r]), class_ids[c])
            keep.add(key)
            if current.get(key) != v:
                new.append((*key, v))
                p = float(pred.scores[r, c])
                confs.append(p if v == 1 else 1.0 - p)
        withdrawn = [(i, k, None) for (i, k) in current if (i, k) not in keep]
        self.store.add_class_decisions(new, source="machine", annotator="autolabel", run_id=run, confidences=confs)
        self.store.add_class_decisions(withdrawn, source="machine", annotator="autolabel", run_id=run)
        per_class = []
        for b in bars:
            col = acc[acc[:, 1] == b.cls]
            per_class.append(b.to_dict() | {"class": self.classes[b.cls], "accepted": int(len(col)),
                                            "accepted_applies": int((col[:, 2] == 1).sum()),
                                            "accepted_not": int((col[:, 2] == 0).sum())})
        open_after = (Y < 0)
        open_after[acc[:, 0], acc[:, 1]] = False
        more = max((b.more_needed or 0 for b in bars), default=0)
        summary = {"task": "multilabel", "accepted": int(len(acc)), "new_or_changed": len(new),
                   "withdrawn": len(withdrawn), "target_precision": target_precision, "classes": per_class,
                   "coverage": float(len(acc) / max(int((Y < 0).sum()), 1)),
                   "needs_person": int(open_after.any(axis=1).sum()), "more_needed": more,
                   "reason": "; ".join(b.reason for b in bars if b.upper is None or b.lower is None) or
                   "every class has both bars"}
        if more:
            summary["suggest"] = f"labelloop next --n {more}"
        self.store.finish_run(run, summary)
        return summary | {"run": run}

    def _next_multilabel(self, n: int, *, seed: int | None = None, annotator: str | None = None,
                         record: bool = True, explore: float | None = None, batch: str | None = None) -> list[dict]:
        """:meth:`next` of a multi-label project: items with undecided classes (no human, import or
        machine decision), the most uncertain first (:func:`labelloop.loop.multilabel.choose_multilabel`,
        diverse over the embeddings), plus a random share (``explore``, default as ``auto``) whose
        decisions certify auto-labeling. Before the first refresh: the cold-start choice of
        :func:`labelloop.loop.choose` (``auto``)."""
        from .loop import choose, default_explore
        from .loop.multilabel import choose_multilabel

        ids, graph = self.graph()
        _, X = self.embeddings()
        Y = self._decision_matrix(ids, LABEL_SOURCES)           # (n, C): decided pairs are not asked
        within = None if batch is None else self.in_batch(ids, batch)
        open_rows = (Y < 0).any(axis=1) if within is None else (Y < 0).any(axis=1) & within
        seed = self._query_seed(seed)
        pred = self._multilabel_prediction(ids)
        if pred is None:
            ch = choose("auto", n, labeled=np.flatnonzero(~(Y < 0).any(axis=1)),
                        unlabeled=np.flatnonzero((Y < 0).any(axis=1)), probabilities=None, graph=graph,
                        embeddings=X, class_names=self.classes, seed=seed, within=within)
            picked, reasons, kinds = ch.rows.tolist(), ch.reasons, ch.kinds
            strategy = ch.strategy
        else:
            explore = default_explore("auto") if explore is None else explore
            n_random = int(round(explore * n)) if n > 1 else 0
            Y_scope = np.where(open_rows[:, None], Y, np.int8(0))   # rows outside the scope: nothing open
            picked = choose_multilabel(pred, Y_scope, n - n_random, X=X, seed=seed).tolist() if n > n_random else []
            rest = np.setdiff1d(np.flatnonzero(open_rows), picked)
            extra = np.random.default_rng(seed).choice(rest, size=min(n_random, len(rest)), replace=False) \
                if n_random and len(rest) else np.zeros(0, np.int64)
            reasons = [_uncertain_classes(pred.scores[r], Y[r], self.classes) for r in picked] + \
                ["random sample: keeps the auto-label precision estimate unbiased"] * len(extra)
            kinds = ["strategy"] * len(picked) + ["random"] * len(extra)
            picked += extra.tolist()
            strategy = "multilabel"
        items = self.store.items(ids[picked].tolist())
        classes = self.classes
        out = []
        for r, it, reason, kind in zip(picked, items, reasons, kinds):
            row = {"item": it.id, "ref": it.display, "undecided": [c for j, c in enumerate(classes) if Y[r, j] < 0],
                   "scores": None, "guess": None, "confidence": None, "reason": reason, "kind": kind}
            if pred is not None and pred.reached[r]:
                row["scores"] = {c: round(float(pred.scores[r, j]), 4) for j, c in enumerate(classes)}
                row["guess"] = [c for j, c in enumerate(classes) if pred.labels()[r, j]]
            out.append(row)
        if record:
            self.record_query(strategy, n, seed, out, annotator=annotator,
                              labeled=int((~(Y < 0)).any(axis=1).sum()),
                              prediction_run=None if pred is None else self.multilabel_scores().run_id, batch=batch)
        return out

    def _audit_multilabel(self, *, top: int | None = 100) -> dict:
        """:meth:`audit` of a multi-label project: the human and imported decisions the held-out
        prediction disagrees with, by the probability they are wrong given that people are
        usually right (the ``human_label_accuracy`` setting;
        :func:`labelloop.loop.multilabel.audit_multilabel`)."""
        from .loop.multilabel import audit_multilabel

        ids = self.item_ids()
        pred = self._current_multilabel_prediction(ids)
        Y = self._multilabel_evidence(ids)
        flagged = audit_multilabel(pred, Y, label_accuracy=self.setting("human_label_accuracy"))  # (m, 3)
        decisions = self._decisions(("human", "import"))
        run = self.store.start_run("audit", {"top": top, "task": "multilabel"}, {"decisions": int((Y >= 0).sum())})
        shown = flagged[: top or None]
        items = self.store.items(ids[shown[:, 0].astype(np.int64)].tolist()) if len(shown) else []
        classes = self.classes
        heldout = {int(r): j for j, r in enumerate(pred.heldout_rows)}   # item row -> its held-out scores
        issues = []
        for (r, c, p_wrong), it in zip(shown.tolist(), items):
            name = classes[int(c)]
            value, source, _ = decisions[it.id][name]
            issues.append({"item": it.id, "ref": it.display, "class": name, "given": value, "suggested": 1 - value,
                           "source": source, "score": round(float(p_wrong), 4),
                           "p_applies": round(float(pred.heldout_scores[heldout[int(r)], int(c)]), 4)})
        summary = {"task": "multilabel", "flagged": int(len(flagged)), "shown": len(issues),
                   "decisions": int((Y >= 0).sum()),
                   "estimated_noise_rate": round(float(flagged[:, 2].sum() / max(int((Y >= 0).sum()), 1)), 4)}
        self.store.finish_run(run, summary | {"items": [i["item"] for i in issues]})
        return summary | {"run": run, "issues": issues}


def _uncertain_classes(scores: np.ndarray, decided: np.ndarray, classes: list[str], top: int = 3) -> str:
    """Why ``next`` asks a multi-label item: its undecided classes whose score lies nearest 0.5
    (``scores``, ``decided``: the item's (C,) scores and decision row, -1 undecided)."""
    open_ = [j for j in range(len(classes)) if decided[j] < 0]
    open_.sort(key=lambda j: abs(float(scores[j]) - 0.5))
    return "most uncertain classes: " + ", ".join(f"{classes[j]} {float(scores[j]):.2f}" for j in open_[:top])


@dataclass
class MultiLabelScores:
    """A multi-label refresh: row r of every array is item ``item_ids[r]``."""

    run_id: int
    item_ids: np.ndarray     # (n,)
    scores: np.ndarray       # (n, C) float32 calibrated P(class applies), columns = ``classes``
    reached: np.ndarray      # (n,) bool: a decided item is in its graph component
    classes: list[str]
    thresholds: np.ndarray   # (C,) each class's bar of the predicted sets (loop.multilabel.share_thresholds)

    def row_of(self) -> dict[int, int]:
        return {int(i): r for r, i in enumerate(self.item_ids)}

    def applies(self) -> np.ndarray:
        """(n, C) bool: the predicted sets (as ``MultiLabelPrediction.labels``)."""
        return self.scores >= self.thresholds[None, :]


class Memo:
    """The last values of each (project folder, what) computed in this process, with the key
    each was computed for: embeddings, the kNN graph, the latest predictions (and their held-out
    scores), the embedding map, the item ids.

    Every Project of a process shares it, so a server's refresher and its request threads
    (one read-only Project each) hold one copy, and a CLI command that reads the embeddings
    three times loads them once. Values are read-only arrays (:func:`_frozen`). Each ``what``
    keeps its :data:`SLOTS` newest keys (one unless listed), so memory stays at one copy of
    each; predictions keep two: a server's refresher puts the new run's while request threads
    still read the last finished run (its rows are being written), and with one slot each
    would evict the other and reload from disk (0.5 s at 100k items) on every request."""

    SLOTS = {"predictions": 2, "prediction_stats": 2, "heldout": 2}

    def __init__(self):
        self._lock = threading.Lock()
        self._values: dict[tuple[Path, str], list[tuple[object, object]]] = {}

    def get(self, root: Path, what: str, key, compute):
        with self._lock:
            hit = next((v for k, v in self._values.get((root, what), ()) if k == key), _MISSING)
        if hit is not _MISSING:
            return hit
        value = compute()
        self.put(root, what, key, value)
        return value

    def put(self, root: Path, what: str, key, value) -> None:
        with self._lock:
            kept = [kv for kv in self._values.get((root, what), ()) if kv[0] != key]
            kept.append((key, value))
            self._values[(root, what)] = kept[-self.SLOTS.get(what, 1):]

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


_MISSING = object()


#: the process's :class:`Memo`
MEMO = Memo()


def _frozen(value):
    """``value`` with its numpy arrays (in a tuple or a :class:`Predictions`) made read-only:
    memoised values are shared, so a caller that wants to change one must copy it."""
    arrays = value.__dict__.values() if isinstance(value, (Predictions, MultiLabelScores)) else \
        (value if isinstance(value, tuple) else ())
    for a in arrays:
        if isinstance(a, np.ndarray):
            a.flags.writeable = False
    return value


def _jsonable(d: dict) -> dict:
    """``d`` with numpy scalars as Python numbers and non-finite floats as None (run summaries are JSON)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, (np.floating, float)):
            v = float(v) if np.isfinite(v) else None
        elif isinstance(v, np.integer):
            v = int(v)
        out[k] = v
    return out


def _prediction_stats(pred: Predictions, rows: np.ndarray | None = None) -> tuple[list[int], dict]:
    """Items predicted per class (in ``pred.classes`` order) and the confidence summary of
    ``status`` (of the rows ``rows`` only, e.g. one batch): computed once per prediction run."""
    conf = pred.confidence if rows is None else pred.confidence[rows]
    label = pred.label if rows is None else pred.label[rows]
    if not len(conf):
        return [0] * len(pred.classes), {}
    counts = np.bincount(label, minlength=len(pred.classes))[:len(pred.classes)]
    p10, median, p90 = np.quantile(conf, [0.1, 0.5, 0.9])
    return [int(n) for n in counts], {
        "mean": round(float(conf.mean()), 4),
        "p10": round(float(p10), 4),
        "median": round(float(median), 4),
        "p90": round(float(p90), 4),
        "share_ge_0.9": round(float((conf >= 0.9).mean()), 4),
    }


class _RunFile:
    """A run's array file that an array is made in where it is stored, instead of in a new array
    copied there later: :meth:`create` memory-maps it under a temporary name (once; a
    propagation's distributions, ``LabelPropagation.distributions_out``, or its state,
    ``move_state``), :meth:`save` gives it its name (or ``path``) when the array to store is that
    map, else writes the array (``np.save``) and drops the map's file, :meth:`release` makes the
    propagation write into the map no more (what it wrote there later, an update in place, would
    change a finished run's file): it forgets distributions made there and freezes a state held
    there."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.part = path.with_name(path.stem + ".part" + path.suffix)
        self.array: np.ndarray | None = None

    def create(self, shape: tuple[int, int]) -> np.ndarray:
        if self.array is not None:   # a second map of the file would cut the first one short
            return np.empty(shape, np.float32)
        self.array = np.lib.format.open_memmap(self.part, mode="w+", dtype=np.float32, shape=shape)
        return self.array

    def holds(self, a: np.ndarray) -> bool:
        """Whether ``a`` is the map (the same memory, shape and layout)."""
        m = self.array
        return m is not None and a.shape == m.shape and a.dtype == m.dtype and a.strides == m.strides \
            and a.__array_interface__["data"][0] == m.__array_interface__["data"][0]

    def save(self, a: np.ndarray, path: Path | None = None) -> None:
        path = self.path if path is None else path
        if self.holds(a):
            try:
                os.replace(self.part, path)   # the map is the array: its file, complete
                return
            except OSError:   # (a file system that cannot rename a mapped file)
                pass
        np.save(path, a)
        try:
            self.part.unlink(missing_ok=True)
        except OSError:   # still mapped where that stops it; a failed run's folder goes later
            pass

    def release(self, lp) -> None:
        if self.array is None or lp is None:
            return
        lp.release_distributions(self.array)
        if lp.fitted and self.holds(lp.state()[0]):
            lp.freeze_state()


def _link(source: Path, target: Path) -> bool:
    """Hard-link ``target`` to ``source`` (a run's array file another run stores unchanged);
    False where that fails (no such file, a file system without links)."""
    try:
        os.link(source, target)
        return True
    except OSError:
        return False


def _round_or_none(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


def _nan_none(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def _write_collection(coll, out: Path, format: str, *, modality: str, image_url_prefix: str = "",
                      images_root=None, boxes: bool = False, multilabel: bool = False) -> list[Path]:
    """Write ``coll`` to ``out`` in ``format`` (:mod:`labelloop.formats`); returns the files
    written beside ``out`` (Label Studio's labeling configuration, matching the tasks)."""
    from . import formats

    if format == "labelstudio":
        formats.write_labelstudio(coll, out, image_url_prefix=image_url_prefix)
        config_path = out.with_name(out.stem + ".label_config.xml")
        formats.write_text_atomic(config_path, formats.labelstudio_config(coll.classes, modality=modality,
                                                                          boxes=boxes, multilabel=multilabel))
        return [config_path]
    if format == "hf":
        formats.write_hf(coll, out, images_root=images_root, multilabel=multilabel)
    elif format == "imagefolder":
        formats.write_imagefolder(coll, out, images_root=images_root)
    else:   # coco, yolo, voc
        getattr(formats, f"write_{format}")(coll, out)
    return []


def _item_csv(path: str | Path, column: str) -> list[tuple[str, str, str]]:
    """(``file:line``, item reference, the ``column`` cell) of each row of a CSV with columns
    ``item`` and ``column``; a missing file or column is a ValidationError."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"{path} is not a file: give a CSV with columns item,{column}")
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.DictReader(f)
        cols = [c.strip() for c in reader.fieldnames or []]
        if "item" not in cols or column not in cols:
            raise ValidationError(f"{path.name} must have columns 'item' and '{column}'; it has: "
                                  f"{', '.join(cols) or '(no header)'}")
        return [(f"{path.name}:{reader.line_num}", (r.get("item") or "").strip(), r.get(column) or "")
                for r in reader]


def _label_cell(names: list[str] | None) -> str | None:
    """A list of classes in one CSV cell: ``a|b``; ``[]`` for an empty list; None for no list."""
    if names is None:
        return None
    return "|".join(names) if names else "[]"


def _image_size(uri: str | None) -> tuple[int, int]:
    """Width and height of an image file from its header (no decoding)."""
    from PIL import Image

    try:
        with Image.open(uri) as im:
            return im.size
    except (OSError, ValueError, TypeError) as exc:
        raise ValidationError(f"cannot read the image {uri}: {exc}") from exc


def _box_numbers(where: str, xywh: Sequence) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` as finite floats with w, h > 0, or an error naming the item."""
    try:
        x, y, w, h = (float(v) for v in xywh)
    except (TypeError, ValueError):
        raise ValidationError(f"item {where}: box {tuple(xywh)!r} must be four numbers x, y, w, h") from None
    if not all(np.isfinite([x, y, w, h])) or w <= 0 or h <= 0:
        raise ValidationError(f"item {where}: box {(x, y, w, h)} needs finite numbers and a positive width and height")
    return x, y, w, h


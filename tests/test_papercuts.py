"""What a new user runs into first (issue 13): every message names what the user gave, says
what to do next, and is never a traceback."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("each_db")   # every test on SQLite and on PostgreSQL

LABELLOOP = [sys.executable, "-m", "labelloop.cli"]


def run(*args, check=True):
    proc = subprocess.run([*LABELLOOP, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"labelloop {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def text_project(project_factory, tmp_path, n=12, classes=()):
    from test_quality_project import make_project  # texts t0..t{n-1}

    return make_project(project_factory, tmp_path, n=n, classes=classes)


# ------------------------------------------------------------------ 1. first labels
def test_first_labels_of_a_project_without_classes_define_them(project_factory, tmp_path):
    p = text_project(project_factory, tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("item,label\nt0,spam\nt1,ham\nnope,spam\n")
    r = p.label_csv(labels)
    assert r.appended == 2 and sorted(r.classes_added) == ["ham", "spam"]
    # the skipped row is named by the file, line and the reference as written
    assert [s.where for s in r.skipped] == ["labels.csv:4 item 'nope'"]
    # once classes exist, a new name is a typo until the user says otherwise
    r = p.label([("t2", "spma")])
    assert r.appended == 0 and r.skipped[0].where == "item 't2'"
    assert "unknown class 'spma'" in r.skipped[0].reason and "ham, spam" in r.skipped[0].reason


def test_cli_label_csv_names_the_line_and_item_not_internal_ids(project_factory, tmp_path):
    p = text_project(project_factory, tmp_path)
    root = p.root
    p.close()
    labels = tmp_path / "labels.csv"
    labels.write_text("item,label\nt0,spam\nt1,ham\n")
    r = run("label", "-p", root, "--csv", labels)
    assert r.stdout.startswith("2 labels added (human); new classes: ham, spam")
    more = tmp_path / "more.csv"
    more.write_text("item,label\nt2,spam\nt3,eggs\n")
    r = run("label", "-p", root, "--csv", more, check=False)
    assert r.returncode == 1
    assert "more.csv:3 item 't3'" in r.stderr and "unknown class 'eggs'" in r.stderr
    assert "--new-classes" in r.stderr and "create_classes" not in r.stderr
    r = run("label", "-p", root, "--csv", more, "--new-classes")
    assert r.stdout.startswith("2 labels added (human); new classes: eggs")


# ------------------------------------------------------- 4. status counts and next step
def test_status_counts_agree_with_export(project_factory, tmp_path):
    """A machine label on an item that a person (or an import) labels later, and a withdrawn
    machine label, made status count more machine labels than export wrote (733 vs 727)."""
    p = text_project(project_factory, tmp_path, n=10, classes=["a", "b"])
    a, b = p.store.class_ids()["a"], p.store.class_ids()["b"]
    ids = [int(i) for i in p.store.item_ids()]
    p.store.add_annotations([(i, a) for i in ids[:6]], source="machine", annotator="autolabel")
    p.label([(ids[0], "b"), (ids[1], "a")])               # people label two machine-labeled items
    p.store.add_annotations([(ids[2], b)], source="import", annotator="import")
    p.store.add_annotations([(ids[3], None)], source="machine", annotator="autolabel")  # withdrawn
    p.label([(ids[7], "a")])
    p.store.add_annotations([(ids[7], b)], source="import", annotator="import")  # human wins
    st = p.status()
    exported = {}
    for row in p.rows():
        exported[row["source"]] = exported.get(row["source"], 0) + 1
    assert st["labeled"] == {"human": 3, "import": 1, "machine": 2}
    assert {k: exported.get(k, 0) for k in st["labeled"]} == st["labeled"]
    per = st["per_class"]
    assert (per["a"]["human"], per["b"]["human"], per["b"]["import"], per["a"]["machine"]) == (2, 1, 1, 2)
    assert p.current_labels()[ids[0]] == (b, "human")


def test_status_says_what_to_run_next(project_factory, tmp_path):
    p = project_factory("text")
    root = p.root
    assert "labelloop import" in p.status()["next_step"]
    p.close()
    f = tmp_path / "items.csv"
    f.write_text("id,text\n" + "".join(f"t{i},text number {i}\n" for i in range(8)))
    run("import", "-p", root, f)
    out = run("status", "-p", root).stdout
    assert "labelloop embed" in out and "refresh" not in out
    run("embed", "-p", root, "--backbone", "tfidf", "--no-progress")
    assert "labelloop label" in run("status", "-p", root).stdout
    run("label", "-p", root, "t0=x", "t1=y", "t2=x", "t3=y")
    assert "run `labelloop refresh`" in run("status", "-p", root).stdout
    run("refresh", "-p", root)
    out = run("status", "-p", root).stdout
    assert "{" not in out and '"' not in out, out   # readable text, not JSON
    assert "estimate" in out
    st = json.loads(run("status", "-p", root, "--json").stdout)
    assert st["labeled"]["human"] == 4 and st["next_step"] is None


# ------------------------------------------------------------------------- 5. import
def test_a_file_that_is_not_an_image_is_named_without_python_internals(project_factory, tmp_path):
    from conftest import write_image

    folder = tmp_path / "photos"
    write_image(folder / "ok.png")
    (folder / "holiday.jpg").write_text("<html>a web page saved as .jpg</html>")
    p = project_factory("image")
    r = p.import_(folder)
    assert r.added == 1 and r.skipped[0].where == "holiday.jpg"
    assert r.skipped[0].reason.startswith("not a readable image")
    out = run("import", "-p", p.root, folder, check=False)
    assert out.returncode == 1
    assert "skipped holiday.jpg: not a readable image" in out.stderr and "BytesIO" not in out.stderr


def test_empty_tables_and_folders_say_so_and_fail(project_factory, tmp_path, next_db):
    p = project_factory("text")
    root = p.root
    p.close()
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("id,text\n")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    for name, what in (("empty.csv", "is empty"), ("header.csv", "has a header but no rows"),
                       ("blank.jsonl", "is empty")):
        r = run("import", "-p", root, tmp_path / name, check=False)
        assert r.returncode == 2 and f"{name} {what}: nothing to import" in r.stderr, r.stderr
    img = tmp_path / "img"
    next_db()
    run("init", "-p", img, "--modality", "image")
    (tmp_path / "nothing").mkdir()
    r = run("import", "-p", img, tmp_path / "nothing", check=False)
    assert r.returncode == 2 and "has no files" in r.stderr


def test_labels_from_folders_on_a_flat_folder_warns(project_factory, tmp_path):
    from conftest import write_image

    flat = tmp_path / "flat"
    for i in range(3):
        write_image(flat / f"{i}.png", seed=i)
    p = project_factory("image")
    r = p.import_(flat, labels_from_folders=True)
    assert r.added == 3 and r.labeled == 0 and not r.ok
    assert "no class subfolders found" in r.warnings[0]
    write_image(flat / "cat" / "c.png", seed=9)
    r = p.import_(flat, labels_from_folders=True)
    assert r.labeled == 1 and r.warnings == [f"3 images lie directly in {flat}, not in a class subfolder: "
                                             "imported without a label"]
    out = run("import", "-p", p.root, flat, "--labels-from-folders", check=False)
    assert out.returncode == 1 and "warning: 3 images lie directly in" in out.stderr


def test_latin1_file_gets_one_hint_and_imports_with_encoding(project_factory, tmp_path):
    p = project_factory("text")
    f = tmp_path / "avis.csv"
    rows = ["id,text", "1,un film génial", "2,plain ascii", "3,très ennuyeux", "4,à voir", "5,ok"]
    f.write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    r = p.import_(f)
    assert r.added == 2 and [s.where for s in r.skipped] == ["avis.csv:2", "avis.csv:4", "avis.csv:5"]
    assert r.skipped[0].reason == "not valid UTF-8 (byte 0xe9)"
    assert len(r.warnings) == 1
    assert "avis.csv: 3 lines are not valid UTF-8 (first: line 2)" in r.warnings[0]
    assert "looks like Latin-1" in r.warnings[0] and "--encoding latin-1" in r.warnings[0]
    root = p.root
    p.close()
    out = run("import", "-p", root, f, "--encoding", "latin-1")
    assert out.stdout.startswith(f"{f}: 3 added, 2 already in the project")
    from labelloop import Project

    with Project(root) as q:
        assert {"un film génial", "très ennuyeux", "à voir"} <= {row["text"] for row in q.rows()}
    r = run("import", "-p", root, f, "--encoding", "klingon", check=False)
    assert r.returncode == 2 and "unknown encoding 'klingon'" in r.stderr


def test_windows_file_gets_the_windows_encoding(project_factory, tmp_path):
    p = project_factory("text")
    f = tmp_path / "notes.csv"
    f.write_bytes("text\nit\u2019s fine\n".encode("cp1252"))
    r = p.import_(f)
    assert r.warnings == ["notes.csv: 1 line is not valid UTF-8 (first: line 2). The file looks like "
                          "Windows-1252 text: import it again with --encoding cp1252 (the lines already "
                          "imported are not added twice)"]
    assert p.import_(f, encoding="cp1252").added == 1 and p.rows()[0]["text"] == "it\u2019s fine"


def test_mixed_file_gets_a_generic_encoding_hint(project_factory, tmp_path):
    p = project_factory("text")
    f = tmp_path / "mixed.jsonl"
    f.write_bytes('{"text": "déjà vu"}\n'.encode() + b'{"text": "caf\xe9"}\n')
    r = p.import_(f)
    assert r.added == 1 and r.skipped[0].where == "mixed.jsonl:2"
    assert "--encoding NAME" in r.warnings[0] and "looks like" not in r.warnings[0]


# ------------------------------------------------------ 3. what next / audit show
def test_next_and_audit_show_the_text_not_only_ids(project_factory, tmp_path):
    p = project_factory("text")
    f = tmp_path / "reviews.csv"
    words = {"pos": "wonderful superb moving delightful", "neg": "dreadful boring awful tedious"}
    lines = ["id,text"]
    for i in range(30):
        lab = "pos" if i % 2 else "neg"
        lines.append(f"r{i},review {i}: a {words[lab]} film {'!' * (i % 3)}")
    f.write_text("\n".join(lines) + "\n")
    p.import_(f)
    p.embed("tfidf")
    p.label([(f"r{i}", "pos" if i % 2 else "neg") for i in range(8)] + [("r9", "neg")])
    p.refresh()
    root = p.root
    p.close()
    out = run("next", "-p", root, "--n", "3", "--strategy", "margin").stdout.splitlines()
    assert len(out) == 3 and all(": review " in line and "guess" in line for line in out), out
    out = run("audit", "-p", root, "--classifier", "none").stdout
    assert "r9: review 9: a wonderful superb" in out, out


def test_item_snippets_keep_what_identifies_the_item():
    from labelloop.store import Item

    img = Item(1, "holidays/2019/very/long/folder/name/beach_0001.jpg", "/x", None, "h", "image")
    assert img.snippet(24) == "…der/name/beach_0001.jpg" and len(img.snippet(24)) == 24
    txt = Item(2, None, None, "  a  long\ntext " + "word " * 40, "h", "text")
    assert txt.snippet(20) == "a long text word wo…"
    assert Item(3, "r3", None, "short", "h", "text").snippet() == "r3: short"


# ----------------------------------------------------------- 2. embed input size
@pytest.mark.parametrize("side, size", [(8, 64), (28, 64), (32, 64), (40, 96), (56, 112), (60, 128),
                                        (100, 224), (112, 224), (600, 224)])
def test_input_size_is_about_twice_the_images_capped_at_the_default(side, size):
    from labelloop.embed.efficientnet import EfficientNetLite0Backbone
    from labelloop.embed.sizing import choose_image_size

    assert choose_image_size(side, EfficientNetLite0Backbone.image_sizes) == size


def test_median_short_side_reads_headers(tmp_path):
    from conftest import write_image

    from labelloop.embed.sizing import median_short_side

    paths = [write_image(tmp_path / f"{i}.png", size=(28 + i, 20 + 2 * i), seed=i) for i in range(5)]
    assert median_short_side([str(p) for p in paths] + [str(tmp_path / "gone.png")]) == 24
    assert median_short_side([]) is None


@pytest.fixture
def tiny_images(project_factory, tmp_path, monkeypatch):
    """An image project of 28 px images, EfficientNet's network replaced by a stand-in (real
    weights are for the slow tests)."""
    from conftest import write_image

    from labelloop.embed.efficientnet import EfficientNetLite0Backbone

    sizes_seen = []

    def fake_embed_prepared(self, prepared):   # the runner prepares batches, then embeds them
        sizes_seen.append(self.image_size)
        return np.ones((len(prepared), 8), dtype=np.float32)

    monkeypatch.setattr(EfficientNetLite0Backbone, "embed_prepared", fake_embed_prepared)
    p = project_factory("image")
    for i in range(6):
        write_image(tmp_path / "tiny" / f"{i}.png", mode="L", size=(28, 28), seed=i)
    p.import_(tmp_path / "tiny")
    return p, sizes_seen


def test_embed_chooses_the_size_from_the_images_and_keys_the_cache_by_it(tiny_images):
    p, sizes_seen = tiny_images
    heard = []
    r = p.embed(echo=heard.append)
    assert r.backbone == "efficientnet-lite0-64" and r.embedded == 6 and set(sizes_seen) == {64}
    assert heard == [r.note] and "64 px" in r.note and "median short side 28 px" in r.note
    assert "--image-size" in r.note
    assert p.store.get_meta("backbone")["options"] == {"image_size": 64}
    # the chosen size sticks: embedding again is all cache, and says nothing new
    r = p.embed()
    assert (r.embedded, r.cached, r.note) == (0, 6, None)
    # an explicit size is another cache: nothing of the 64 px vectors is reused for it
    r = p.embed("efficientnet-lite0", image_size=224)
    assert r.backbone == "efficientnet-lite0-224" and r.embedded == 6 and r.note is None
    assert p.store.embedding_backbones() == {"efficientnet-lite0-64": 6, "efficientnet-lite0-224": 6}
    assert p.embed().backbone == "efficientnet-lite0-224"


def test_cli_embed_says_which_size_it_chose(tiny_images):
    from click.testing import CliRunner

    from labelloop.cli import cli

    p, _ = tiny_images
    out = CliRunner().invoke(cli, ["embed", "-p", str(p.root), "--no-progress"])
    assert out.exit_code == 0, out.output
    first, second = out.output.splitlines()[:2]
    assert first.startswith("efficientnet-lite0: input size 64 px") and "--image-size N" in first
    assert second.startswith("efficientnet-lite0-64: 6 embedded")


@pytest.mark.slow
def test_real_efficientnet_embeds_tiny_images_at_the_chosen_size(project_factory, tmp_path):
    from conftest import write_image

    p = project_factory("image")
    for i in range(4):
        write_image(tmp_path / "tiny" / f"{i}.png", mode="L", size=(28, 28), seed=i)
    p.import_(tmp_path / "tiny")
    r = p.embed()
    assert r.backbone == "efficientnet-lite0-64" and r.embedded == 4
    ids, X = p.embeddings()
    assert X.shape == (4, 1280) and np.isfinite(X).all() and np.linalg.norm(X, axis=1).min() > 0


# ------------------------------------------------------------------------ 6. demo
def test_demo_ends_with_what_to_try_next(tmp_path):
    from labelloop.demo import run_demo

    lines = []
    r = run_demo(dataset="digits", directory=tmp_path / "demo", n=300, rounds=1, echo=lines.append)
    out = "\n".join(lines)
    assert "embedded with pixels-16-gray (raw pixels: on 8x8 digits they beat ImageNet features" in out
    tail = out[out.index("Next, try"):]
    for cmd in ("serve", "next", "label", "refresh", "autolabel", "status", "export"):
        assert f"labelloop {cmd} -p {tmp_path / 'demo'}" in tail
    assert r["next_steps"][0].startswith(f"labelloop serve -p {tmp_path / 'demo'}")

import json

from conftest import write_image

from labelloop.ingest import load_image


def _reasons(report):
    return {s.where: s.reason for s in report.skipped}


def test_image_folder_with_labels_from_folders(project_factory, image_folder):
    p = project_factory("image")
    r = p.import_(image_folder, labels_from_folders=True)
    assert r.ok, r.skipped
    assert (r.added, r.labeled) == (6, 6)
    assert sorted(r.classes_added) == ["cat", "dog"]
    rows = {row["external_id"]: row for row in p.rows()}
    assert rows["cat/c3.gif"]["label"] == "cat" and rows["dog/d3.png"]["source"] == "import"


def test_every_decoded_image_is_rgb(image_folder):
    for path in image_folder.rglob("*.*"):
        assert load_image(path).mode == "RGB"


def test_bad_images_are_reported_one_by_one_and_nothing_is_lost(project_factory, image_folder):
    p = project_factory("image")
    assert p.import_(image_folder, labels_from_folders=True).ok
    before = p.rows()
    good = (image_folder / "cat" / "c1.jpg").read_bytes()
    (image_folder / "cat" / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (image_folder / "cat" / "notes.jpg").write_text("this is not an image")
    (image_folder / "cat" / "empty.png").write_bytes(b"")
    (image_folder / "cat" / "readme.txt").write_text("hello")
    (image_folder / "dog" / "copy_of_c1.jpg").write_bytes(good)
    write_image(image_folder / "dog" / "new.png", seed=42)

    r = p.import_(image_folder, labels_from_folders=True)
    reasons = _reasons(r)
    assert set(reasons) == {"cat/truncated.jpg", "cat/notes.jpg", "cat/empty.png", "cat/readme.txt",
                            "dog/copy_of_c1.jpg"}
    assert "not a readable image" in reasons["cat/truncated.jpg"]
    assert "not a readable image" in reasons["cat/notes.jpg"]
    assert reasons["cat/empty.png"] == "empty file"
    assert "not an image file" in reasons["cat/readme.txt"]
    # the copy has the content of an item that is already stored: not a new item, no error
    assert r.added == 1 and r.unchanged == 6
    after = {row["item"]: row for row in p.rows()}
    for row in before:
        assert after[row["item"]] == row


def test_reimport_is_idempotent(project_factory, image_folder):
    p = project_factory("image")
    p.import_(image_folder, labels_from_folders=True)
    n_ann = len(p.store.annotations())
    r = p.import_(image_folder, labels_from_folders=True)
    assert (r.added, r.unchanged, r.labeled) == (0, 6, 0)
    assert p.store.item_count() == 6 and len(p.store.annotations()) == n_ann


def test_file_changed_on_disk_is_reported_not_duplicated(project_factory, image_folder):
    p = project_factory("image")
    p.import_(image_folder)
    write_image(image_folder / "cat" / "c1.jpg", seed=99, fmt="JPEG")
    r = p.import_(image_folder)
    assert "changed on disk" in _reasons(r)["cat/c1.jpg"]
    assert p.store.item_count() == 6


def test_csv_bad_rows(project_factory, tmp_path):
    p = project_factory("text")
    f = tmp_path / "reviews.csv"
    f.write_bytes(
        b"id,text,label\n"
        b"1,great film,pos\n"
        b"2,,neg\n"                        # empty text
        b"3,\xff\xfe broken bytes,neg\n"   # undecodable
        b"1,another text with id 1,pos\n"  # duplicate id
        b"4,great film,pos\n"              # same text as line 2
        b"5,dull,neg,extra\n"              # too many fields
        b"6,\"multi\nline text\",neg\n"
        b"7,fine,\n"                       # no label: fine
    )
    r = p.import_(f, text_column="text", label_column="label")
    reasons = _reasons(r)
    assert reasons == {
        "reviews.csv:3": "empty text",
        "reviews.csv:4": "not valid UTF-8 (byte 0xff)",
        "reviews.csv:5": "duplicate id '1' (first on line 2)",
        "reviews.csv:6": "same text as line 2 (duplicate)",
        "reviews.csv:7": "4 fields but the header has 3",
    }
    assert r.added == 3 and r.labeled == 2
    assert {row["text"] for row in p.rows()} == {"great film", "multi\nline text", "fine"}


def test_csv_missing_column_is_reported_and_imports_nothing(project_factory, tmp_path):
    p = project_factory("text")
    f = tmp_path / "t.csv"
    f.write_text("body,label\nhello,a\n")
    r = p.import_(f, text_column="text")
    assert not r.ok and r.added == 0
    assert "missing column 'text'" in r.skipped[0].reason and "body, label" in r.skipped[0].reason


def test_jsonl_bad_lines(project_factory, tmp_path):
    p = project_factory("text")
    f = tmp_path / "t.jsonl"
    lines = [json.dumps({"text": "a good one", "label": "x"}).encode(),
             b"{not json",
             json.dumps(["a", "list"]).encode(),
             json.dumps({"body": "no text field"}).encode(),
             b'{"text": "\xff bad"}',
             json.dumps({"text": "   "}).encode(),
             json.dumps({"text": 12345, "label": 7}).encode()]
    f.write_bytes(b"\n".join(lines) + b"\n")
    r = p.import_(f, label_column="label")
    reasons = _reasons(r)
    assert set(reasons) == {"t.jsonl:2", "t.jsonl:3", "t.jsonl:4", "t.jsonl:5", "t.jsonl:6"}
    assert "not valid JSON" in reasons["t.jsonl:2"]
    assert "expected a JSON object" in reasons["t.jsonl:3"]
    assert "missing field 'text'" in reasons["t.jsonl:4"]
    assert "not valid UTF-8" in reasons["t.jsonl:5"]
    assert reasons["t.jsonl:6"] == "empty text"
    assert r.added == 2 and sorted(p.classes) == ["7", "x"]
    # and again: nothing new
    r2 = p.import_(f, label_column="label")
    assert r2.added == 0 and r2.unchanged == 2 and r2.labeled == 0


def test_text_id_already_used_by_other_text(project_factory, tmp_path):
    p = project_factory("text")
    (tmp_path / "a.csv").write_text("id,text\nr1,first\n")
    (tmp_path / "b.csv").write_text("id,text\nr1,something else\n")
    p.import_(tmp_path / "a.csv")
    r = p.import_(tmp_path / "b.csv")
    assert "already has a different text" in r.skipped[0].reason
    assert [row["text"] for row in p.rows()] == ["first"]

"""What a new user runs into first (issue 13): every message names what the user gave, says
what to do next, and is never a traceback."""

import csv
import json
import os
import subprocess
import sys

import pytest

LABELLOOP = [sys.executable, "-m", "labelloop.cli"]


def run(*args, check=True):
    proc = subprocess.run([*LABELLOOP, *map(str, args)], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"labelloop {' '.join(map(str, args))} exited {proc.returncode}:\n"
                             f"{proc.stdout}\n{proc.stderr}")
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def text_project(project_factory, tmp_path, n=12, classes=None):
    p = project_factory("text", classes=classes)
    f = tmp_path / "items.csv"
    f.write_text("id,text\n" + "".join(f"t{i},text number {i}\n" for i in range(n)))
    p.import_(f)
    return p


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

"""The query runs a Project reads (what was served and why) are parsed once per Project: the
server's refresher reads them at every refresh and records one run per page it serves."""

from __future__ import annotations

from labelloop import Project


def _served(item: int, kind: str) -> dict:
    return {"item": item, "kind": kind, "guess": None, "confidence": None}


def test_query_runs_are_parsed_once_and_new_ones_from_another_connection_are_read(each_db, project_factory):
    p = project_factory("text", classes=["a", "b"])
    p.record_query("margin", 2, 0, [_served(1, "strategy"), _served(2, "random")])
    assert p.actively_chosen() == {1}   # the random share is not actively chosen
    first = p._query_runs()
    with Project(p.root) as other:   # e.g. the server's writer, or a CLI `next`
        other.record_query("margin", 1, 0, [_served(3, "strategy")])
        other.record_query("random", 1, 0, [_served(4, "strategy")])
        running = other.store.start_run("query", {"strategy": "margin"})   # not finished: not read yet
    assert p.actively_chosen() == {1, 3}
    again = p._query_runs()
    assert again == p.store.runs("query") and len(again) == 3   # the same records as a full read
    assert again[0] is first[0]   # parsed once
    with Project(p.root) as other:
        other.store.finish_run(running, {"items": [5], "random": []})
    assert p.actively_chosen() == {1, 3, 5}

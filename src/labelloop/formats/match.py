"""Which file under an import folder a record of an annotation file means.

Annotation files name images in their own way: COCO ``file_name`` relative to some images
folder, Label Studio an upload name or a local-storage path. A record matches, in order: the
same relative path; the one file whose path ends with the record's (or the record's path ends
with the file's); the one file with the same file name.
"""

from __future__ import annotations

from collections import defaultdict

from .model import Record


def match_paths(records: list[Record], rel_paths: list[str]
                ) -> tuple[dict[str, Record], list[tuple[Record, str]]]:
    """(relative path -> record, [(record, why it matched no file)]). A file two records
    match keeps the first; the second is unmatched, with the reason."""
    rels = set(rel_paths)
    by_name: dict[str, list[str]] = defaultdict(list)
    for rel in rel_paths:
        by_name[rel.rsplit("/", 1)[-1]].append(rel)
    matched: dict[str, Record] = {}
    first: dict[str, int] = {}
    unmatched: list[tuple[Record, str]] = []
    for n, rec in enumerate(records, start=1):
        p = (rec.path or "").replace("\\", "/").removeprefix("./")
        hit, why = _match(p, rels, by_name)
        if hit is None:
            unmatched.append((rec, why))
        elif hit in matched:
            unmatched.append((rec, f"record {first[hit]} of the file already names {hit}; one label source per image"))
        else:
            matched[hit], first[hit] = rec, n
    return matched, unmatched


def _match(p: str, rels: set[str], by_name: dict[str, list[str]]) -> tuple[str | None, str]:
    if p in rels:
        return p, ""
    name = p.rsplit("/", 1)[-1]
    same_name = by_name.get(name, [])
    ends = [r for r in same_name if r.endswith("/" + p) or p.endswith("/" + r)]
    if len(ends) == 1:
        return ends[0], ""
    if len(same_name) == 1:
        return same_name[0], ""
    if same_name:
        return None, (f"{len(same_name)} files are named {name} ({', '.join(sorted(same_name)[:3])}); "
                      "write the path relative to the import folder in the annotation file")
    return None, "no image with this name in the import folder"

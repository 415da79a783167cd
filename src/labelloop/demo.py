"""``labelloop demo``: the loop end to end on a dataset that ships inside a package."""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import ProjectError, ValidationError
from .store import is_project

DEFAULT_BACKBONE = {"digits": "pixels"}  # ImageNet features are weaker on 8x8 digits (ASSETS.md)
BACKBONE_WHY = {"digits": "raw pixels: on 8x8 digits they beat ImageNet features"}  # ASSETS.md


def next_steps(directory: str | Path) -> list[str]:
    """What to try after the demo, on the project it leaves behind (the README's loop)."""
    p = f"-p {shlex.quote(str(directory))}"
    steps = [
        (f"labelloop serve {p}", "label in the browser: queue, review, audit, dashboard"),
        (f"labelloop next {p} --n 10", "or here: what to label next, and why"),
        (f"labelloop label {p} ITEM=LABEL ...", "your answers (or --csv labels.csv)"),
        (f"labelloop refresh {p}", "propagate them to every item"),
        (f"labelloop autolabel {p}", "accept the machine labels that meet the target precision"),
        (f"labelloop status {p}", "counts, estimated accuracy, when to stop"),
        (f"labelloop export {p} --out labels.csv", "one row per item with its label"),
    ]
    width = max(len(cmd) for cmd, _ in steps)
    return [f"{cmd:<{width}}  # {why}" for cmd, why in steps]


def run_demo(*, dataset: str = "digits", directory: str | Path | None = None, backbone: str | None = None,
             labels_per_class: int = 3, n: int | None = None, seed: int = 0, rounds: int = 7,
             batch: int = 10, target_precision: float | None = None, max_checks: int = 150,
             echo: Callable[[str], None] | None = print) -> dict:
    """Build a project from a bundled dataset, label ``labels_per_class`` items per class from
    the ground truth (an oracle standing in for a person), refresh, and measure the accuracy of
    the predicted labels on every other item; then ``rounds`` active-learning rounds of
    ``batch`` items chosen by ``Project.next``, and auto-labeling at ``target_precision``: when
    it cannot certify yet, up to ``max_checks`` verify checks (``next --strategy verify``)
    answered by the oracle, as a person would do."""
    from .datasets import load_dataset, write_image_folder, write_text_csv
    from .project import Project

    say = echo or (lambda s: None)
    if labels_per_class < 1:
        raise ValidationError("--labels-per-class must be at least 1")
    ds = load_dataset(dataset, n=n, seed=seed)
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix=f"labelloop-demo-{dataset}-"))
    directory = Path(directory)
    if is_project(directory):
        raise ProjectError(f"{directory} already holds a project; pass a new --dir")
    t0 = time.perf_counter()
    say(f"dataset {dataset}: {len(ds.items)} {ds.modality} items, {len(ds.class_names)} classes")
    project = Project.init(directory, modality=ds.modality, classes=ds.class_names)
    target_precision = target_precision or project.setting("target_precision")
    data_dir = directory / "data"
    if ds.modality == "image":
        paths = write_image_folder(ds, data_dir)
        report = project.import_(data_dir)
        refs = [p.relative_to(data_dir).as_posix() for p in paths]
    else:
        path = write_text_csv(ds, data_dir / f"{dataset}.csv")
        report = project.import_(path, text_column="text", id_column="id")
        refs = [str(i) for i in range(len(ds.items))]
    say(report.summary())
    chosen_by_demo = backbone is None and dataset in DEFAULT_BACKBONE
    backbone = backbone or DEFAULT_BACKBONE.get(dataset)
    emb = project.embed(backbone, echo=say)
    why = (BACKBONE_WHY.get(dataset, "") if chosen_by_demo else "your choice") if backbone else \
        f"the default for {ds.modality}s"
    say(f"embedded with {emb.backbone} ({why}; `labelloop backbones` lists the others): "
        f"{emb.embedded} items in {emb.seconds:.1f} s")

    rng = np.random.default_rng(seed)
    chosen = np.concatenate([
        rng.choice(np.flatnonzero(ds.labels == c), size=min(labels_per_class, int((ds.labels == c).sum())),
                   replace=False)
        for c in range(len(ds.class_names))
    ])
    project.label([(refs[i], ds.class_names[ds.labels[i]]) for i in chosen], annotator="demo-oracle")
    say(f"labeled {len(chosen)} items ({labels_per_class} per class) from the ground truth")
    summary = project.refresh()
    say(f"refresh: {summary['seconds']:.2f} s, mean confidence {summary['mean_confidence']:.3f}")

    truth = {r: ds.class_names[ds.labels[i]] for i, r in enumerate(refs)}
    item_truth = {it.id: truth[it.external_id if ds.modality == "image" else it.external_id]
                  for it in project.store.items()}

    def accuracy_of(source: str | None = None) -> tuple[float, int]:
        rows = [r for r in project.rows() if r["source"] != "human" and (source is None or r["source"] == source)]
        return (sum(r["label"] == item_truth[r["item"]] for r in rows) / max(len(rows), 1), len(rows))

    first, n_rest = accuracy_of()
    say(f"accuracy of the predicted labels on the other {n_rest} items: {first:.3f}")
    human = len(chosen)
    for r in range(rounds):
        picks = project.next(batch, strategy="auto")
        project.label([(p["item"], item_truth[p["item"]]) for p in picks], annotator="demo-oracle")
        summary = project.refresh()
        human += len(picks)
        acc, _ = accuracy_of()
        say(f"active-learning round {r + 1}: +{len(picks)} labels chosen by `next` ({picks[0]['reason']}, ...)"
            f" -> {human} labels, accuracy on the rest {acc:.3f} ({summary['seconds']:.2f} s refresh)")
    auto = project.autolabel(target_precision=target_precision)
    checks = 0
    while not auto["accepted"] and auto.get("certificate", {}).get("more_needed") and checks < max_checks:
        # what the tool tells a person to do: label a random sample of what it would accept
        want = min(auto["certificate"]["more_needed"], batch * 2, max_checks - checks)
        picks = project.next(want, strategy="verify")
        if not picks:
            break
        project.label([(p["item"], item_truth[p["item"]]) for p in picks], annotator="demo-oracle")
        project.refresh()
        checks += len(picks)
        human += len(picks)
        auto = project.autolabel(target_precision=target_precision)
        say(f"verify: +{len(picks)} random checks of the machine labels (`next --strategy verify`) -> "
            f"{auto['reason']}")
    final, n_rest = accuracy_of()
    machine_acc, n_machine = accuracy_of("machine")
    if auto["accepted"]:
        say(f"autolabel at target precision {target_precision}: {auto['accepted']} machine labels accepted "
            f"(true precision {machine_acc:.3f}), {auto['needs_person']} items left for people")
    else:
        say(f"autolabel at target precision {target_precision}: nothing accepted yet — {auto['reason']}")
    out = project.root / "labels.csv"
    project.export(out)
    project.close()
    say(f"accuracy of every non-human label: {final:.3f} with {human} human labels of {len(ds.items)} "
        f"({100 * human / len(ds.items):.1f}%)")
    say(f"labels written to {out}; project at {directory} ({time.perf_counter() - t0:.1f} s in all)")
    steps = next_steps(directory)
    say("\nNext, try the loop yourself on this project (README.md, \"Use\"):\n  " + "\n  ".join(steps)
        + "\nYour own data: labelloop init -p myproj --modality image (or text), labelloop import, "
          "labelloop embed, then the loop above.")
    return {"dataset": dataset, "project": str(directory), "items": len(ds.items), "backbone": emb.backbone,
            "initial_labels": int(len(chosen)), "accuracy_after_initial": first, "human_labels": human,
            "accuracy_on_rest": final, "machine_accepted": auto["accepted"],
            "machine_precision": machine_acc if n_machine else None, "export": str(out),
            "next_steps": steps}

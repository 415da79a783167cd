"""The ``labelloop`` command: parses, calls :class:`labelloop.Project`, prints.

Every user mistake is a :class:`labelloop.errors.LabelloopError`, printed as one line
``error: ...`` with a non-zero exit code; never a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from .config import SETTINGS
from .errors import LabelloopError

EXIT_SKIPPED = 1   # the command ran, but some input was skipped (see the report)

project_option = click.option(
    "-p", "--project", "project", default=".", envvar="LABELLOOP_PROJECT", show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Project folder (env LABELLOOP_PROJECT).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _open(project: Path):
    from .project import Project

    return Project(project)


def _echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, default=_json_default))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _print_skipped(skipped, limit: int = 50) -> None:
    for s in skipped[:limit]:
        click.echo(f"  skipped {s.where}: {s.reason}", err=True)
    if len(skipped) > limit:
        click.echo(f"  ... and {len(skipped) - limit} more (use --json for all)", err=True)


class Main(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LabelloopError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="labelloop")
def cli() -> None:
    """labelloop — label image and text datasets with as few human labels as possible.

    \b
    A typical loop:
      labelloop init -p proj --modality image
      labelloop import -p proj ./photos --labels-from-folders
      labelloop embed -p proj
      labelloop label -p proj --csv my_labels.csv
      labelloop refresh -p proj
      labelloop status -p proj
      labelloop export -p proj --out labels.csv
    Or see it all at once, offline:  labelloop demo
    """
    _idle_blas_threads_sleep()


def _idle_blas_threads_sleep() -> None:
    """OpenBLAS's worker threads spin for ~0.1 s (2^28 cycles) after they start and after every
    call before they sleep: every command paid ~0.1 CPU-s at numpy's import alone on 2 cores
    (``labelloop status`` on a 20k project: 0.46 -> 0.37 CPU-s), and a server paid it after
    each BLAS call, on the core its requests need. Sleeping at once (the shortest timeout, 2^4
    cycles) keeps the threads for large products (a 100k kNN graph build: 14.9 -> 14.5 CPU-s,
    wall 7.9 -> 8.3 s in the same run; benchmarks/results/blas_idle.md). Read once, when numpy
    is loaded, so only before that; a value the user set is kept."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")


@cli.command()
@project_option
@click.option("--modality", type=click.Choice(["image", "text"]), required=True)
@click.option("--classes", default="", help="Comma-separated class names (optional; can grow later).")
@click.option("--task", type=click.Choice(["classification", "multilabel", "detection"]), default="classification",
              show_default=True, help="classification: one label per item; multilabel: each class applies or not "
                                      "(label with `label ITEM --classes a,b`); detection: boxes on images.")
@click.option("--db", default=None, metavar="URL",
              help="Keep the rows in this PostgreSQL database (postgresql://user@host:port/dbname, no password: "
                   "PGPASSWORD or ~/.pgpass give it; or env:VAR, a variable holding the URL) instead of an SQLite "
                   "file in the folder. Default: $LABELLOOP_DB, else SQLite.")
def init(project: Path, modality: str, classes: str, task: str, db: str | None) -> None:
    """Create a project folder."""
    from .project import Project

    names = [c.strip() for c in classes.split(",") if c.strip()]
    p = Project.init(project, modality=modality, classes=names, task=task, db=db)
    where = "" if p.store.dialect == "sqlite" else " (rows in PostgreSQL)"
    p.close()
    kind = f"{modality} {task}" if task != "classification" else modality
    click.echo(f"created {kind} project at {project.resolve()}{where}"
               + (f" with classes {', '.join(names)}" if names else ""))


@cli.command("import")
@project_option
@click.argument("source", type=click.Path(path_type=Path), required=False)
@click.option("--labels-from-folders", is_flag=True, help="Images: class subfolders are labels (an ImageFolder tree).")
@click.option("--annotations", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Images: a COCO JSON file; its image-level classes become labels of the images it names "
                   "(a detection project: its boxes become import boxes).")
@click.option("--labelstudio", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A Label Studio JSON export: its annotations' choices become labels (images: of the images "
                   "under SOURCE; texts: the tasks are the texts, no SOURCE; a detection project: its rectangles).")
@click.option("--yolo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Detection projects: a folder of YOLO .txt label files (with classes.txt or data.yaml) for the "
                   "images under SOURCE.")
@click.option("--voc", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Detection projects: a folder of Pascal VOC .xml files for the images under SOURCE.")
@click.option("--text-column", default="text", show_default=True, help="Texts: column / field with the text.")
@click.option("--label-column", default=None,
              help="Texts: column with existing (possibly noisy) labels. A multi-label project reads each cell as "
                   "the set of classes that apply: a|b, or a JSON list [\"a\", \"b\"] (a JSONL list too); [] = none "
                   "applies; an empty cell = no decision.")
@click.option("--id-column", default=None, help="Texts: column with your item ids (default: 'id' if present).")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None, help="Table format (default: by extension).")
@click.option("--encoding", default=None, help="Texts: the file's encoding, e.g. latin-1 or cp1252 (default utf-8).")
@click.option("--batch", default=None,
              help="Name of the batch these items come in, e.g. week-48 (default: none; such items are listed "
                   "as 'unbatched'). Items already in the project keep their first batch.")
@click.option("--as-gold", is_flag=True,
              help="SOURCE is a CSV of gold-standard labels (columns item,label; text projects also text,label) "
                   "used to benchmark annotators.")
@json_option
def import_cmd(project, source, labels_from_folders, annotations, labelstudio, yolo, voc, text_column, label_column,
               id_column, fmt, encoding, batch, as_gold, as_json):
    """Import a folder of images or a CSV / JSONL of texts, with labels from class subfolders,
    a column, a COCO file or a Label Studio export, optionally as a named batch. Imported
    labels are `import` labels (soft evidence when `config import_trust` is below 1). A
    detection project (init --task detection) imports boxes instead, from COCO, Label Studio,
    YOLO or Pascal VOC, as `import` boxes; a classification project skips boxes and says so.
    Exit code 1 if anything was skipped or a warning was given (e.g. --labels-from-folders
    found no class subfolders)."""
    given = {k: v for k, v in (("coco", annotations), ("labelstudio", labelstudio), ("yolo", yolo), ("voc", voc))
             if v is not None}
    if len(given) > 1:
        raise click.UsageError("give one annotation source: --annotations (COCO), --labelstudio, --yolo or --voc")
    annotation_format, annotation_file = next(iter(given.items()), ("coco", None))
    with _open(project) as p:
        if as_gold:
            if source is None:
                raise click.UsageError("--as-gold needs SOURCE, the CSV of gold labels")
            report = p.import_gold(source, text_column=text_column, label_column=label_column or "label")
            if as_json:
                _echo_json(report.to_dict())
            else:
                click.echo(f"{report.appended} gold labels added"
                           + (f"; new classes: {', '.join(report.classes_added)}" if report.classes_added else ""))
                _print_skipped(report.skipped)
            sys.exit(0 if report.ok else EXIT_SKIPPED)
        report = p.import_(source, labels_from_folders=labels_from_folders, text_column=text_column,
                           label_column=label_column, id_column=id_column, fmt=fmt, encoding=encoding,
                           annotations=annotation_file, annotation_format=annotation_format, batch=batch)
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(report.summary())
        _print_skipped(report.skipped)
        for w in report.warnings:
            click.echo(f"warning: {w}", err=True)
    sys.exit(0 if report.ok else EXIT_SKIPPED)


@cli.command()
@project_option
@click.option("--backbone", default=None, help="Backbone id (default: the project's, or the modality's default). See `labelloop backbones`.")
@click.option("--batch-size", type=int, default=None)
@click.option("--image-size", type=int, default=None,
              help="Image backbones: input size in pixels (default: the size used before in this project, else "
                   "chosen from the images: about twice their median size, at most the backbone's default, "
                   "224 for efficientnet-lite0).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="local", default=None, metavar="[ADDRESS]",
              help="Embed on a Ray cluster (Ray Data actors; needs the ray extra): at ADDRESS (host:port of its "
                   "head, or 'auto'), or without one on a local Ray started for this run. Same cache, resumable. "
                   "Workers read images at the project's paths: on several machines they must be shared.")
@click.option("--no-progress", is_flag=True)
@json_option
def embed(project, backbone, batch_size, image_size, ray_address, no_progress, as_json):
    """Embed every item (cached; resumable after an interrupt)."""
    options = {"image_size": image_size} if image_size else {}
    with _open(project) as p:
        report = p.embed(backbone, batch_size=batch_size, progress=not (no_progress or as_json),
                         echo=None if as_json else click.echo, ray_address=ray_address, **options)
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(f"{report.backbone}: {report.embedded} embedded, {report.cached} cached, "
                   f"{len(report.skipped)} skipped in {report.seconds:.1f} s")
        _print_skipped(report.skipped)
    if report.interrupted:
        click.echo("interrupted: finished batches are saved; run the same command to resume", err=True)
        sys.exit(130)
    sys.exit(0 if not report.skipped else EXIT_SKIPPED)


@cli.command()
@project_option
@click.argument("key", required=False)
@click.argument("value", required=False)
def config(project, key, value):
    """Show or set project settings: `config` lists them, `config KEY VALUE` sets one.

    
    Environment variables LABELLOOP_<KEY> override both (e.g. LABELLOOP_K=15).
    import_trust below 1 makes imported labels soft evidence that neighbours can overrule.
    head_weight (auto: where held-out labels show it helps) averages a classifier head into the
    predictions; a number in [0, 1] fixes the weight."""
    from .config import SETTINGS

    with _open(project) as p:
        if key is not None and value is not None:
            p.set_setting(key, value)
        elif key is not None:
            click.echo(p.setting(key))
            return
        for name, spec in SETTINGS.items():
            click.echo(f"{name:<16} {p.setting(name)!s:<10} {spec.help}")


@cli.command()
@click.option("--modality", type=click.Choice(["image", "text"]), default=None)
def backbones(modality):
    """List the available backbones."""
    from .embed import available_backbones

    for b in available_backbones(modality):
        click.echo(b)


def _refresh_kind(s: dict) -> str:
    """How a refresh propagated: full, warm, or warm plus steps past its error bound."""
    if not s["warm"]:
        return "full"
    if s.get("refit"):
        return "warm start past its error bound: full propagation"
    return f"warm start + {s['drain_steps']} steps to its error bound" if s.get("drain_steps") else "warm start"


def _one_blas_thread() -> None:
    """A warm refresh does almost no dense linear algebra, yet OpenBLAS's worker threads spin
    after each small call it makes: one thread took a 100k refresh from 0.37 to 0.29 CPU-s
    (wall 0.27 -> 0.29 s; benchmarks/results/e2e_latency_100000.md). Read once, when numpy is
    loaded, so only before that; a value the user set is kept."""
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@cli.command()
@project_option
@click.option("--full", is_flag=True, help="Recompute from scratch instead of warm-starting.")
@json_option
def refresh(project, full, as_json):
    """Build (or reuse) the kNN graph and propagate the labels to every item."""
    if not full:
        _one_blas_thread()
    with _open(project) as p:
        s = p.refresh(full=full)
    if as_json:
        _echo_json(s)
    elif s.get("task") == "multilabel":
        click.echo(f"refreshed {s['items']} items x {len(s['classes'])} classes from {s['decided_items']} decided "
                   f"items ({s['seconds']:.2f} s); {s['applies_predicted']} undecided (item, class) pairs scored "
                   "as applying" + (f"; {s['unreached']} items unreached" if s['unreached'] else "")
                   + (f"; {s['changed']} pairs changed side" if s.get('changed') is not None else ""))
    else:
        click.echo(f"refreshed {s['items']} items from {s['labeled']} labels "
                   f"({_refresh_kind(s)}, {s['seconds']:.2f} s); "
                   f"mean confidence {s['mean_confidence']:.3f}"
                   + (f"; {s['unreached']} items unreached by any label" if s['unreached'] else "")
                   + (f"; {s['changed']} predictions changed" if s.get('changed') is not None else ""))


@cli.command()
@project_option
@click.argument("assignments", nargs=-1)
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None, help="CSV with columns item,label (multi-label projects: item,labels).")
@click.option("--source", type=click.Choice(["human", "import"]), default="human", show_default=True,
              help="human: verified by a person; import: from elsewhere, may be noisy.")
@click.option("--annotator", default=None, envvar="LABELLOOP_ANNOTATOR", help="Who labeled (env LABELLOOP_ANNOTATOR).")
@click.option("--new-classes", is_flag=True,
              help="Create classes that do not exist yet (a project without classes gets them from its first labels).")
@click.option("--classes", "class_set", default=None, metavar="A,B",
              help="Multi-label projects: the classes that apply to each ITEM given, comma-separated; every other "
                   "class is recorded as not applying ('' = none applies). --csv then takes columns item,labels "
                   "(a|b or a JSON list).")
@json_option
def label(project, assignments, csv_path, source, annotator, new_classes, class_set, as_json):
    """Add labels: ITEM=LABEL ... or --csv file. A multi-label project: ITEM ... --classes a,b
    (each item's full decision). Exit code 1 if any row was skipped."""
    from .errors import ValidationError

    with _open(project) as p:
        if class_set is not None or p.task == "multilabel":
            _label_classes(p, assignments, class_set, csv_path, source, annotator, as_json)
            return
    pairs = []
    for a in assignments:
        if "=" not in a:
            raise ValidationError(f"{a!r} is not ITEM=LABEL (e.g. cat_01.jpg=cat)")
        ref, lab = a.rsplit("=", 1)
        pairs.append((ref, lab))
    if not pairs and csv_path is None:
        raise ValidationError("give ITEM=LABEL arguments or --csv FILE")
    with _open(project) as p:
        kw = dict(source=source, annotator=annotator, create_classes=new_classes)
        report = p.label(pairs, **kw)
        if csv_path is not None:
            r2 = p.label_csv(csv_path, **kw)
            report.appended += r2.appended
            report.classes_added += r2.classes_added
            report.skipped += r2.skipped
    _finish_label_report(report, as_json, f"{report.appended} labels added ({source})"
                         + (f"; new classes: {', '.join(report.classes_added)}" if report.classes_added else ""))


def _finish_label_report(report, as_json: bool, line: str) -> None:
    """Print what `label` did (``line``, then the skipped rows), exit 1 if any row was skipped."""
    if as_json:
        _echo_json(report.to_dict())
    else:
        click.echo(line + (f"; {len(report.skipped)} skipped" if report.skipped else ""))
        _print_skipped(report.skipped)
    sys.exit(0 if report.ok else EXIT_SKIPPED)


def _label_classes(p, items, class_set, csv_path, source, annotator, as_json) -> None:
    """`label` on a multi-label project: ITEM ... --classes a,b and / or --csv item,labels."""
    from .errors import ValidationError
    from .project import LabelReport

    p._require_multilabel("label --classes")
    if any("=" in i for i in items) or (items and class_set is None):
        raise ValidationError("a multi-label project takes each item's set of classes: "
                              "labelloop label -p PROJECT ITEM [ITEM ...] --classes a,b ('' = none applies)")
    if not items and csv_path is None:
        raise ValidationError("give ITEM ... --classes a,b, or --csv FILE with columns item,labels")
    names = [c.strip() for c in (class_set or "").split(",") if c.strip()]
    report = LabelReport()
    if items:
        report.appended = p.label_many_classes([(i, names) for i in items], annotator=annotator, source=source)
    if csv_path is not None:
        r2 = p.label_classes_csv(csv_path, annotator=annotator, source=source)
        report.appended += r2.appended
        report.skipped += r2.skipped
    _finish_label_report(report, as_json, f"{report.appended} items decided ({source})")


batch_option = click.option("--batch", default=None,
                            help="Only the items of this batch (`import --batch`; 'unbatched': imported without one).")


@cli.command()
@project_option
@batch_option
@json_option
def status(project, batch, as_json):
    """Items, labels, per-class counts, predictions, estimated accuracy and the next step.

    Each labeled item counts once, by the source of its current label (human, else import,
    else machine): the same counts as `export` and the dashboard. With --batch: that batch's
    items only; without it, a project with batches also shows the drift report."""
    with _open(project) as p:
        s = p.status(batch=batch)
    if as_json:
        _echo_json(s)
        return
    if s.get("task") == "multilabel":
        _echo_multilabel_status(s, batch)
        return
    lab = s["labeled"]
    click.echo(f"project   {s['project']} ({s['modality']})" + (f", batch {batch}" if batch else ""))
    click.echo(f"items     {s['items']}  embedded by {s['active_backbone'] or '(nothing yet)'}")
    click.echo(f"labels    human {lab['human']}, import {lab['import']}, machine {lab['machine']}")
    if s.get("detection"):
        d = s["detection"]
        click.echo(f"images    reviewed {d['reviewed']} ({d['reviewed_empty']} empty), imported {d['imported']}, "
                   f"auto-accepted {d['auto_accepted']}, to do {d['to_do']}; pre-labeled {d['prelabeled']}")
        click.echo("boxes by class: human / import / auto-accepted (machine) / pre-labels not accepted (predicted)")
    elif s["predicted"]:
        c = s["confidence"]
        click.echo(f"predicted {s['predicted']} (unreached {s['unreached']}); confidence mean {c['mean']:.3f}, "
                   f"median {c['median']:.3f}, {100 * c['share_ge_0.9']:.1f}% at >= 0.9")
        cal = s.get("calibration") or {}
        if cal.get("ece_heldout") is not None:
            click.echo(f"calibrated on {cal.get('heldout_items', 0)} held-out human labels: expected calibration "
                       f"error {cal['ece_heldout']:.3f}")
    else:
        click.echo("predicted 0")
    if s["per_class"]:
        width = max(len(c) for c in s["per_class"])
        click.echo(f"{'class':<{width}}  human  import  machine  predicted")
        for name, n in s["per_class"].items():
            click.echo(f"{name:<{width}}  {n['human']:>5}  {n['import']:>6}  {n['machine']:>7}  {n['predicted']:>9}")
    for key in ("estimate", "stopping", "audit"):
        if s.get(key):
            click.echo(f"{key:<9} {_describe(key, s[key])}")
    if s.get("drift"):
        click.echo("batches   (drift: `labelloop drift`)")
        _echo_drift(s["drift"])
    if s.get("next_step"):
        click.echo(f"next      {s['next_step']}")


def _echo_multilabel_status(s: dict, batch: str | None) -> None:
    lab = s["labeled"]
    click.echo(f"project   {s['project']} ({s['modality']}, multi-label)" + (f", batch {batch}" if batch else ""))
    click.echo(f"items     {s['items']}  embedded by {s['active_backbone'] or '(nothing yet)'}")
    click.echo(f"decided   items with decisions by human {lab['human']}, import {lab['import']}, "
               f"machine {lab['machine']}")
    click.echo(f"scored    {s['predicted']}" + (f" (unreached {s['unreached']})" if s.get("unreached") else ""))
    if s["per_class"]:
        width = max(len(c) for c in s["per_class"])
        click.echo(f"{'class':<{width}}  applies by: human  import  machine  predicted   undecided")
        for name, n in s["per_class"].items():
            click.echo(f"{name:<{width}}              {n['human']:>5}  {n['import']:>6}  {n['machine']:>7}  "
                       f"{n['predicted']:>9}   {n['undecided']:>9}")
    for bar in s.get("bars") or []:
        click.echo(f"bar       {_bar_line(bar)}")
    if s.get("next_step"):
        click.echo(f"next      {s['next_step']}")


def _bar_line(bar: dict) -> str:
    """One class's auto-label bars (multi-label autolabel / status); where a side has none, the
    reason, which names the class and how many more labeled items it needs."""
    parts = []
    if bar.get("upper") is not None:
        parts.append(f"applies at score >= {bar['upper']:.3f}")
        if bar.get("precision_estimate") is not None:
            parts[-1] += (f" (precision {bar['precision_estimate']:.3f}, lower bound "
                          f"{bar.get('precision_lower_bound') or 0:.3f})")
    if bar.get("lower") is not None:
        parts.append(f"does not apply at score <= {bar['lower']:.3f}")
    if parts:
        parts[0] = f"{bar['class']}: {parts[0]}"
        parts.append(f"{bar.get('checked', 0)} held-out decisions")
        if bar.get("accepted") is not None:
            parts.append(f"{bar['accepted']} machine decisions")
    if bar.get("upper") is None or bar.get("lower") is None:
        parts.append(bar.get("reason") or f"{bar['class']}: no bar yet")
    return "; ".join(parts)


def _echo_drift(rows: list[dict]) -> None:
    width = max(len(r["batch"]) for r in rows)
    click.echo(f"  {'batch':<{width}}  items  human  auto-labeled  est. accuracy (interval)  shift  largest change")
    for r in rows:
        e, ch = r["estimate"], r["largest_change"]
        change = f"{ch['class']} {100 * ch['earlier']:.1f}% -> {100 * ch['now']:.1f}%" if ch else "-"
        shift = "-" if r["shift"] is None else f"{r['shift']:.3f}"
        click.echo(f"  {r['batch']:<{width}}  {r['items']:>5}  {r['human']:>5}  {100 * r['auto_labeled_share']:>11.1f}%"
                   f"  {e['accuracy']:.3f} ({e['lower']:.3f}-{e['upper']:.3f})      {shift:>5}  {change}")


def _describe(key: str, value) -> str:
    """One readable line for a part of ``status`` (``--json`` gives the raw numbers)."""
    if not isinstance(value, dict):
        return _plain(value)
    if key == "estimate" and "accuracy" in value:
        parts = [f"accuracy {_plain(value['accuracy'])} if exported now"]
        if "lower" in value and "upper" in value:
            parts[0] += f" (interval {_plain(value['lower'])}-{_plain(value['upper'])})"
        if "target" in value:
            parts.append(f"target {_plain(value['target'])}")
        if "needs_person" in value:
            parts.append(f"{value['needs_person']} items still need a person")
        rest = {k: v for k, v in value.items() if k not in ("accuracy", "lower", "upper", "target", "needs_person")}
        return "; ".join(parts + ([_plain(rest)] if rest else []))
    if key == "stopping" and "advice" in value:
        return str(value["advice"])
    return _plain(value)


def _plain(value) -> str:
    """Numbers rounded, dicts as ``key value, ...``, lists comma-separated: no JSON syntax."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "-"}[value]
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{str(k).replace('_', ' ')} {_plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_plain(v) for v in value) + "]"
    return str(value)


@cli.command("next")
@project_option
@click.option("--n", "n", type=int, default=20, show_default=True, help="How many items.")
@click.option("--strategy", default="auto", show_default=True,
              help="auto, random, least-confidence, margin, entropy, medium-confidence, coreset, typicality, "
                   "diverse, conflict (items where labeling functions disagree, with each other or with the "
                   "graph, first; then margin; auto does this after its cold start when rules exist); or "
                   "verify: a random sample of the machine labels auto-labeling could accept, whose labels "
                   "certify it (see `labelloop autolabel`). Detection projects: auto (the images whose "
                   "pre-labels the detector is least sure of, one per cluster of similar images; before any "
                   "pre-label, typical images of uncovered clusters) or random.")
@click.option("--seed", type=int, default=None)
@click.option("--batch", default=None,
              help="Only items of this batch: what the model misses in new data (the model learns from all labels).")
@json_option
def next_cmd(project, n, strategy, seed, batch, as_json):
    """The items a person should label next, with the machine's guess and why each was picked.
    A multi-label project: the items whose undecided classes are most uncertain, plus a random
    share that certifies auto-labeling (--strategy does not apply)."""
    with _open(project) as p:
        rows = p.next(n, strategy=strategy, seed=seed, batch=batch)
        if as_json:
            _echo_json(rows)
            return
        shown = p.snippets([r["item"] for r in rows], width=50)
    for r in rows:
        if "undecided" in r:   # a multi-label project: the classes it would say apply, and how sure
            guess = ("-" if r["scores"] is None else
                     ",".join(f"{c} {r['scores'][c]:.2f}" for c in r["guess"]) or "none applies")
            click.echo(f"{r['item']:>7}  {shown[r['item']]:<50}  guess {guess:<30}  {r['reason']}")
            continue
        guess = f"{r['guess']} ({r['confidence']:.2f})" if r["guess"] is not None else "-"
        click.echo(f"{r['item']:>7}  {shown[r['item']]:<50}  guess {guess:<20}  {r['reason']}")


@cli.command()
@project_option
@click.option("--target-precision", type=float, default=None,
              help="Precision the accepted machine labels must reach [default: the project's "
                   "target_precision setting, 0.95].")
@click.option("--global-threshold", is_flag=True, help="One threshold for all classes instead of per class.")
@json_option
def autolabel(project, target_precision, global_threshold, as_json):
    """Accept machine labels whose precision random checks by people certify; the rest go to
    people. When it cannot certify yet, it says how many checks it needs: serve them with
    `labelloop next --strategy verify --n N` and label them as usual.

    Detection projects: accept whole images (all their pre-labeled boxes at once) whose image
    confidence clears a bar certified on images people reviewed after a detector that never
    trained on them pre-labeled them."""
    with _open(project) as p:
        s = p.autolabel(target_precision=target_precision, per_class=not global_threshold)
    if as_json:
        _echo_json(s)
        return
    if s.get("task") == "detection":
        _echo_detection_autolabel(s)
        return
    if s.get("task") == "multilabel":
        click.echo(f"accepted {s['accepted']} machine decisions on (item, class) pairs ({s['new_or_changed']} new or "
                   f"changed, {s['withdrawn']} withdrawn); {s['needs_person']} items still have undecided classes")
        for bar in s["classes"]:
            click.echo(f"  {_bar_line(bar)}")
        if s.get("suggest"):
            click.echo(f"next: {s['suggest']}   (label those items, then run `labelloop refresh` and "
                       "`labelloop autolabel` again)")
        return
    click.echo(f"accepted {s['accepted']} machine labels ({100 * s['coverage']:.1f}% of items; "
               f"{s['new_or_changed']} new or changed, {s['withdrawn']} withdrawn); "
               f"{s['needs_person']} items still need a person")
    if s["accepted"]:
        click.echo(f"estimated precision {s['estimated_precision']:.3f} (lower bound {s['precision_lower']:.3f}) "
                   f"from {s['calibration_items']} random checks by people")
    click.echo(s["reason"])
    if s.get("suggest"):
        click.echo(f"next: {s['suggest']}   (then label those items and run `labelloop refresh` and "
                   "`labelloop autolabel` again)")
    for b, c in (s.get("per_batch") or {}).items():
        click.echo(f"  batch {b}: {c['accepted']} of {c['items']} accepted, {c['needs_person']} need a person")


@cli.command()
@project_option
@click.option("--top", type=int, default=100, show_default=True, help="How many suspects to list.")
@click.option("--classifier", type=click.Choice(["auto", "logreg", "none"]), default="auto", show_default=True,
              help="Second signal: out-of-fold logistic regression (auto: up to 20k items) or graph only.")
@json_option
def audit(project, top, classifier, as_json):
    """Suspected wrong labels, most suspicious first, with a suggested label and the evidence.
    Confirm or fix with `labelloop label` (giving the same label again confirms it)."""
    with _open(project) as p:
        r = p.audit(top=top, classifier=classifier)
        if as_json:
            _echo_json(r)
            return
        shown = p.snippets([i["item"] for i in r["issues"]], width=40)
    if r.get("task") == "multilabel":
        click.echo(f"{r['flagged']} of {r['decisions']} class decisions flagged (estimated noise rate "
                   f"{100 * r['estimated_noise_rate']:.1f}%)")
        for i in r["issues"]:
            said = "applies" if i["given"] else "does not apply"
            click.echo(f"{i['item']:>7}  {shown[i['item']]:<40}  {i['class']}: {i['source']} said {said}; "
                       f"P(wrong) {i['score']:.3f}, held-out P(applies) {i['p_applies']:.3f}")
        return
    click.echo(f"{r['flagged']} labels flagged (estimated noise rate {100 * r['estimated_noise_rate']:.1f}%); "
               f"{r['confirmed_skipped']} confirmed earlier and not shown")
    for i in r["issues"]:
        nb = ", ".join(f"{n['item']}:{n['label']}" for n in i["disagreeing_neighbours"][:5])
        click.echo(f"{i['item']:>7}  {shown[i['item']]:<40}  given {i['given']!s:<12} suggested {i['suggested']!s:<12} "
                   f"score {i['score']:.3f}  neighbours {nb}")


@cli.command()
@project_option
@json_option
def diagnose(project, as_json):
    """How good are the current embeddings for this project's classes? Scored by cross-validated
    propagation on the labels active learning did not pick (random and first labels), with advice."""
    with _open(project) as p:
        d = p.diagnose()
    if as_json:
        _echo_json(d)
    else:
        click.echo(d["summary"])


@cli.command()
@project_option
@click.option("--method", type=click.Choice(["simclr", "byol", "swav"]), default="simclr", show_default=True,
              help="simclr: contrastive pairs; byol: momentum target; swav: online clustering "
                   "with prototypes and small extra crops (multi-crop).")
@click.option("--epochs", type=int, default=None, help="Training epochs (default 30).")
@click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
@click.option("--image-size", type=int, default=None, help="Training input size in pixels (default 64).")
@click.option("--max-images", type=int, default=None, help="Train on a random subset of this many images.")
@click.option("--augment", type=click.Choice(["auto", "photo", "grayscale", "characters"]), default="auto",
              show_default=True,
              help="Augmentations. auto: photo for colour images, grayscale otherwise; characters: "
                   "grayscale without mirror flips, for digits, letters and scanned text.")
@click.option("--prototypes", type=int, default=None,
              help="swav: number of prototypes (default 3 per class of the project, else sqrt(images), within 10..3000).")
@click.option("--local-crops", type=int, default=None,
              help="swav: small crops per image besides the 2 full-size ones (default 6).")
@click.option("--local-size", type=int, default=None,
              help="swav: small-crop size in pixels, >= 32 (default 96/224 of --image-size, at least 32).")
@json_option
def adapt(project, method, epochs, device, image_size, max_images, augment, prototypes, local_crops, local_size,
          as_json):
    """Self-supervised adaptation of the image backbone to this project's images (resumable)."""
    with _open(project) as p:
        r = p.adapt(method=method, epochs=epochs, device=device, image_size=image_size, max_images=max_images,
                    augment=augment, prototypes=prototypes, local_crops=local_crops, local_size=local_size,
                    progress=not as_json)
    if as_json:
        _echo_json(r)
    else:
        click.echo(f"saved adapted backbone {r['backbone']}; use it with: "
                   f"labelloop embed -p {project} --backbone {r['backbone']}")


def _echo_detection_autolabel(s: dict) -> None:
    bar = s["bar"]
    click.echo(f"accepted {s['accepted']} images whole ({s['boxes_accepted']} boxes; {100 * s['coverage']:.1f}% of "
               f"images); {s['needs_person']} images still need a person"
               + (f" ({s['not_prelabeled']} not pre-labeled yet)" if s["not_prelabeled"] else ""))
    click.echo(f"bar: {bar['reviewed']} reviewed images the detector pre-labeled before review (held out), "
               f"{bar['right']} exactly right at box threshold {bar['box_threshold']:.2f}")
    if bar["precision_estimate"] is not None:
        where = "above the bar" if bar["certified"] else "in the best band"
        click.echo(f"precision {where}: estimate {bar['precision_estimate']:.3f}, 95% lower bound "
                   f"{bar['precision_lower']:.3f} ({bar['correct']} of {bar['checked']} right)")
    click.echo(s["reason"])
    if s.get("suggest"):
        click.echo(f"next: {s['suggest']}   (at least that many random pre-labeled images, all exactly right, "
                   "would certify the band; review them, then `labelloop autolabel` again)")


@cli.command()
@project_option
@click.option("--schedule", type=click.Choice(["auto", "prototype", "linear", "finetune"]), default="auto",
              show_default=True, help="auto: prototypes for 1-5 labels per class, a linear head, then fine-tuning.")
@click.option("--epochs", type=int, default=None,
              help="Classifier: default 30. Detector: default from the number of images.")
@click.option("--device", default=None,
              help="cpu, cuda or auto. Classifier default: cpu; detector default: auto (cuda if there is a GPU).")
@json_option
def train(project, schedule, epochs, device, as_json):
    """Fine-tune a classifier on the human labels (transfer learning); a second opinion.
    In a detection project: train the detector on the boxes people drew or imported
    (resumes an interrupted run)."""
    with _open(project) as p:
        r = p.train(schedule=schedule, epochs=epochs, device=device, progress=not as_json)
    if as_json:
        _echo_json(r)
    elif "boxes" in r:
        click.echo(f"trained the detector on {r['images']} images ({r['boxes']} boxes): {r['epochs']} epochs, "
                   f"{r['trainable_blocks']} backbone blocks trained, on {r['device']}; saved {r['path']}")
    else:
        click.echo(f"trained ({r['schedule']}) on {r['labels']} labels; training accuracy {r['training_accuracy']:.3f}"
                   + (f"; agrees with propagation on {100 * r['agreement_with_propagation']:.1f}% of items"
                      if "agreement_with_propagation" in r else ""))


@cli.command()
@project_option
@click.option("--item", "items", multiple=True, help="Only this image (repeatable). Default: every image "
              "without human or imported boxes.")
@click.option("--score-threshold", type=float, default=None, help="Drop boxes scoring below this (default 0.05).")
@json_option
def prelabel(project, items, score_threshold, as_json):
    """Detection: boxes and scores from the latest detector on the images not yet done."""
    with _open(project) as p:
        r = p.prelabel(items=list(items) or None, score_threshold=score_threshold)
    if as_json:
        _echo_json(r)
    else:
        click.echo(f"pre-labeled {r['images']} images with {r['boxes']} boxes (detector of run {r['detector_run']})")


@cli.command()
@project_option
@json_option
def annotators(project, as_json):
    """Annotator quality: accuracy on gold items and against consensus, Dawid–Skene, kappas."""
    with _open(project) as p:
        r = p.annotators()
    if as_json:
        _echo_json(r)
        return
    if not r["annotators"]:
        click.echo("no attributed human labels yet (label with --annotator NAME)")
        return
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    click.echo(f"{'annotator':<16} labels  gold  gold acc  compared  consensus acc  Dawid-Skene acc")
    for a in r["annotators"]:
        click.echo(f"{str(a['annotator']):<16} {a['annotations']:>6}  {a['gold_items']:>4}  {fmt(a['gold_accuracy']):>8}"
                   f"  {a['compared']:>8}  {fmt(a['consensus_accuracy']):>13}  {fmt(a['dawid_skene_accuracy']):>15}")
    for pr in r["pairs"]:
        click.echo(f"Cohen's kappa {pr['a']} / {pr['b']}: {fmt(pr['cohen_kappa'])} on {pr['shared_items']} shared items")
    click.echo(f"Fleiss' kappa: {fmt(r['fleiss_kappa'])}" + (f" ({r['fleiss_kappa_note']})" if r.get("fleiss_kappa_note") else "")
               + f"; {r['items_with_several']} items labeled by several annotators, {r['consensus_ties']} ties")


@cli.command()
@project_option
@click.option("--fraction", type=float, required=True, help="Share of the unlabeled items labeled by several people.")
@click.option("--times", type=int, default=3, show_default=True, help="How many different annotators each.")
@click.option("--annotators", "names", default="", help="Comma-separated annotators (default: the project's annotator users).")
@click.option("--seed", type=int, default=0, show_default=True)
@json_option
def consensus(project, fraction, times, names, seed, as_json):
    """Route a fraction of the items to several annotators (their queues in the web app)."""
    with _open(project) as p:
        r = p.consensus(fraction=fraction, times=times, seed=seed,
                        annotators=[n.strip() for n in names.split(",") if n.strip()] or None)
    if as_json:
        _echo_json(r)
        return
    click.echo(f"routed {r['items']} items to {len(r['annotators'])} annotators; {r['items_to_several']} go to "
               f"{times} people each; queue sizes: " + ", ".join(f"{k} {v}" for k, v in r["queue_sizes"].items()))


@cli.command()
@click.option("--dataset", default="digits", show_default=True,
              help="digits, fashion-mnist, rotten-tomatoes, or a project folder with ground-truth labels.")
@click.option("--strategies", default="random,margin,typicality,coreset,auto", show_default=True)
@click.option("--budget", type=int, default=300, show_default=True, help="Human labels to spend.")
@click.option("--step", type=int, default=10, show_default=True, help="Labels per query batch.")
@click.option("--seeds", type=int, default=5, show_default=True)
@click.option("--backbone", default=None)
@click.option("--n", "n_items", type=int, default=None, help="Subset size of the dataset.")
@click.option("--baseline", is_flag=True, help="Also: margin sampling with logistic regression, no graph.")
@click.option("--target-precision", type=float, default=SETTINGS["target_precision"].default, show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"), show_default=True)
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder to cache embeddings of bundled datasets.")
def simulate(dataset, strategies, budget, step, seeds, backbone, n_items, baseline, target_precision, out, cache):
    """Replay the loop with an oracle on a dataset with known labels: table + plot + JSON."""
    from .simulate import project_simulation_data, simulate as run, write_report
    from .store import is_project

    data = dataset
    if Path(dataset).is_dir() and is_project(dataset):
        data = project_simulation_data(Path(dataset))
    result = run(data, strategies=[s.strip() for s in strategies.split(",") if s.strip()], budget=budget,
                 step=step, seeds=seeds, backbone=backbone, n=n_items, baseline=baseline,
                 target_precision=target_precision, cache_dir=cache, progress=click.echo)
    paths = write_report(result, out)
    from .simulate import markdown_table

    click.echo(markdown_table(result))
    click.echo("wrote " + ", ".join(str(p) for p in paths.values()))


@cli.command()
@project_option
@click.option("--format", "fmt",
              type=click.Choice(["csv", "jsonl", "coco", "labelstudio", "imagefolder", "hf", "yolo", "voc"]),
              default="csv", show_default=True,
              help="csv / jsonl: one row per item. coco (images), labelstudio: a JSON file; human and import "
                   "labels as annotations, the rest as predictions with their confidence. imagefolder (images): "
                   "a new folder class/file of the labeled images. hf: a new Hugging Face datasets folder "
                   "(save_to_disk) with a ClassLabel column. Detection projects: coco, labelstudio, yolo, voc "
                   "(people's and imported boxes as annotations, prelabel's boxes as predictions with scores). "
                   "Multi-label projects: csv / jsonl with the classes that apply per item (csv: a|b, [] = none "
                   "applies; jsonl also each class's decision and source, and the scores), hf with a "
                   "List(ClassLabel) 'labels' column, labelstudio with choice=\"multiple\", coco (images).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="A file (csv, jsonl, coco, labelstudio) or a folder that does not exist yet (imagefolder, hf, "
                   "yolo, voc).")
@click.option("--image-url-prefix", default="", help="labelstudio: put before each image path, e.g. "
              "'/data/local-files/?d=photos/' for Label Studio local storage.")
@batch_option
def export(project, fmt, out, image_url_prefix, batch):
    """Write the current labels (of one batch with --batch): a person's, else an import's, else
    an accepted machine label; csv / jsonl also the predictions of the other items and each
    item's batch. A detection project writes its boxes (coco, labelstudio, yolo, voc); a
    multi-label project each item's set of classes, per class by the same precedence."""
    with _open(project) as p:
        if fmt in ("csv", "jsonl"):
            click.echo(f"wrote {p.export(out, format=fmt, batch=batch)}")
        else:
            click.echo(p.export_dataset(out, format=fmt, image_url_prefix=image_url_prefix, batch=batch).summary())


@cli.command()
@click.option("--dataset", default="digits", show_default=True, help="Bundled dataset: digits, fashion-mnist, rotten-tomatoes.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Project folder to create (default: a temporary folder).")
@click.option("--backbone", default=None, help="Backbone (default: pixels for digits, the modality default otherwise).")
@click.option("--labels-per-class", type=int, default=3, show_default=True)
@click.option("--n", "n_items", type=int, default=None, help="Use a subset of this many items.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rounds", type=int, default=7, show_default=True, help="Active-learning rounds after the first labels.")
@click.option("--batch", type=int, default=10, show_default=True, help="Labels per active-learning round.")
@json_option
def demo(dataset, directory, backbone, labels_per_class, n_items, seed, rounds, batch, as_json):
    """The whole loop on a bundled dataset, offline: import, embed, label a few, refresh, score."""
    from .demo import run_demo

    result = run_demo(dataset=dataset, directory=directory, backbone=backbone,
                      labels_per_class=labels_per_class, n=n_items, seed=seed,
                      rounds=rounds, batch=batch, echo=None if as_json else click.echo)
    if as_json:
        _echo_json(result)


@cli.group()
@project_option
@click.pass_context
def rules(ctx, project: Path) -> None:
    """Labeling functions: keyword, metadata and Python rules as noisy annotators.

    \b
      labelloop rules -p P add refund --label billing --contains refund,chargeback
      labelloop rules -p P add night --label night --where "meta.camera == 7"
      labelloop rules -p P add-py mylfs.py     # runs YOUR code: item -> class name | None
      labelloop rules -p P report
    Their votes never overwrite a label: a label model combines them into soft evidence for
    propagation (setting rule_trust; 0 = report only) that human labels overrule.
    `labelloop next --strategy conflict` asks first where they disagree (auto does after its
    cold start); `labelloop serve` shows the report at /rules, where admins switch rules.
    """
    ctx.obj = project


# -p works before the subcommand (`rules -p P add`) and after it (`rules add -p P`)
rules_project_option = click.option("-p", "--project", "project", default=None, type=click.Path(
    file_okay=False, path_type=Path), help="Project folder (default: the one given to `rules`).")


def _rules_open(project: Path | None):
    return _open(project if project is not None else click.get_current_context().obj)


@rules.command("add")
@rules_project_option
@click.argument("name")
@click.option("--label", required=True, help="The class the rule votes for.")
@click.option("--contains", default=None, help="Comma-separated keywords (whole words, any case).")
@click.option("--where", default=None, help='Expression over the metadata kept at import, e.g. "meta.camera == 7".')
@click.option("--new-classes", is_flag=True, help="Create the class if the project does not have it.")
@click.option("--author", default=None, envvar="USER", help="Who wrote the rule (default: $USER).")
@json_option
def rules_add(project, name, label, contains, where, new_classes, author, as_json):
    """Add a keyword (--contains) or metadata (--where) rule and run it on every item."""
    with _rules_open(project) as p:
        r = p.add_rule(name, label=label, where=where, new_classes=new_classes, author=author,
                       contains=None if contains is None else contains.split(","))
    if as_json:
        _echo_json(r)
    else:
        click.echo(f"rule {name!r} added: votes {label!r} on {r['votes'] or 0} items")


@rules.command("add-py")
@rules_project_option
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--new-classes", is_flag=True, help="Create the classes the functions return if missing.")
@click.option("--author", default=None, envvar="USER", help="Who wrote the rules (default: $USER).")
@json_option
def rules_add_py(project, file, new_classes, author, as_json):
    """Add every public function of FILE (item -> class name | None) as a rule.

    This RUNS THE CODE IN FILE in this process, with your rights; its source is stored in the
    project and run again for items imported later. An item has .id, .text, .meta (dict of the
    columns kept at import), .external_id, .uri (image path) and .modality."""
    with _rules_open(project) as p:
        out = p.add_python_rules(file, new_classes=new_classes, author=author)
    if as_json:
        _echo_json(out)
    else:
        for r in out:
            click.echo(f"rule {r['name']!r} added: votes on {r['votes']} items")


@rules.command("list")
@rules_project_option
@json_option
def rules_list(project, as_json):
    """Every rule with who added it, when, and whether it is on."""
    import datetime

    with _rules_open(project) as p:
        rows = p.rules()
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("no rules yet (labelloop rules add NAME --label L --contains WORDS)")
    for r in rows:
        d = r["definition"]
        what = {"contains": lambda: "contains " + ",".join(d["keywords"]), "where": lambda: "where " + d["expression"],
                "python": lambda: f"python {d['function']}() from {d['file']}"}[r["kind"]]()
        when = datetime.datetime.fromtimestamp(r["created"]).strftime("%Y-%m-%d %H:%M")
        click.echo(f"{'on ' if r['active'] else 'off'} {r['name']:<20} -> {r['class'] or '(returned)'}: {what}"
                   f"  [{r['author'] or '?'}, {when}]")


def _switch(project, name, active, as_json):
    with _rules_open(project) as p:
        r = p.set_rule_active(name, active, by=None)
    if as_json:
        _echo_json(r)
    else:
        click.echo(f"rule {name!r} is {'on' if active else 'off'}")


@rules.command("off")
@rules_project_option
@click.argument("name")
@json_option
def rules_off(project, name, as_json):
    """Switch a rule off: its votes are kept but no longer used."""
    _switch(project, name, False, as_json)


@rules.command("on")
@rules_project_option
@click.argument("name")
@json_option
def rules_on(project, name, as_json):
    """Switch a rule back on."""
    _switch(project, name, True, as_json)


@rules.command("report")
@rules_project_option
@json_option
def rules_report(project, as_json):
    """Coverage, overlap, conflict, estimated accuracy (label model) and measured accuracy
    (human labels, with n) per rule."""
    with _rules_open(project) as p:
        r = p.rules_report()
    if as_json:
        _echo_json(r)
        return
    pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
    click.echo(f"{'rule':<20} {'label':<12} votes  coverage  overlap  conflict  est.acc  measured (n)")
    for r_ in r["rules"]:
        if not r_["active"]:
            click.echo(f"{r_['name']:<20} {str(r_['label'] or '-'):<12} (off)")
            continue
        click.echo(f"{r_['name']:<20} {str(r_['label'] or '(python)'):<12} {r_['votes']:>5}  {pct(r_['coverage']):>8}"
                   f"  {pct(r_['overlap']):>7}  {pct(r_['conflict']):>8}  {pct(r_['estimated_accuracy']):>7}"
                   f"  {pct(r_['measured_accuracy'])} ({r_['measured_n']})")
    t = r["totals"]
    click.echo(f"rules cover {t['covered']} of {t['items']} items ({pct(t['coverage'])}); conflict on "
               f"{pct(t['conflict'])} of them; label model {r['label_model']}"
               + (f", measured accuracy {pct(r['label_model_measured_accuracy'])} on {r['label_model_measured_n']} "
                  "human labels" if r["label_model_measured_n"] else "")
               + f"; rule_trust {r['rule_trust']}")


@cli.command()
@project_option
@json_option
def drift(project, as_json):
    """Per batch: items, human labels, share auto-labeled, estimated accuracy, and how far its
    predicted class mix moved from the earlier batches (shift: total variation distance)."""
    with _open(project) as p:
        d = p.drift()
    if as_json:
        _echo_json(d)
        return
    _echo_drift(d["batches"])


@cli.command()
@project_option
@batch_option
@click.option("--examples", "n_examples", type=int, default=5, show_default=True, help="Example items per cluster.")
@click.option("--min-size", type=int, default=None, help="Smallest cluster to report [default: 5].")
@click.option("--quantile", type=float, default=None,
              help="Novel = scoring above this share of the known items, each scored against the others "
                   "[default: 0.95].")
@click.option("--add-class", "add_class", default=None, help="Add this class for --cluster K of the last run.")
@click.option("--cluster", type=int, default=None, help="With --add-class: the cluster number `novel` listed.")
@click.option("--confirm", is_flag=True,
              help="With --add-class: you looked at the examples listed and they are all of the class: label them.")
@click.option("--annotator", default=None, envvar="LABELLOOP_ANNOTATOR", help="Who confirms (env LABELLOOP_ANNOTATOR).")
@json_option
def novel(project, batch, n_examples, min_size, quantile, add_class, cluster, confirm, annotator, as_json):
    """Candidate new classes: clusters of unlabeled items far from every labeled item (with
    --batch B: also from every item of the batches before B), relative to how dense their
    neighbourhood is; each with examples, the nearest known class and what the model says now.

    \b
      labelloop novel -p P --batch week-48              # list the clusters with examples
      labelloop novel -p P --add-class NAME --cluster 1 # add the class; its examples to label
      labelloop novel -p P --add-class NAME --cluster 1 --confirm   # ... you checked them: labeled NAME
    Nothing is labeled by the machine: without --confirm the examples are listed for you to label."""
    from .errors import ValidationError

    if (add_class is None) != (cluster is None):
        raise ValidationError("--add-class NAME and --cluster K go together (K from the list `labelloop novel` prints)")
    if confirm and add_class is None:
        raise ValidationError("--confirm labels the examples of --add-class NAME --cluster K")
    with _open(project) as p:
        if add_class is not None:
            r = p.add_class_from_cluster(add_class, cluster, confirm=confirm, annotator=annotator)
            if as_json:
                _echo_json(r)
                return
            click.echo(f"class {r['class']!r} added for cluster {cluster}")
            if r["labeled"]:
                click.echo(f"{r['labeled']} examples labeled {r['class']!r}" + (f" by {annotator}" if annotator else ""))
            elif r["examples"]:
                shown = p.snippets([e["item"] for e in r["examples"]], width=50)
                click.echo("label its examples (give another class to any that is not one):")
                for e in r["examples"]:
                    click.echo(f"{e['item']:>7}  {shown[e['item']]}")
                click.echo(f"  labelloop label -p {project} " + " ".join(f"{e['item']}={r['class']}" for e in r["examples"]))
            return
        r = p.novel(batch=batch, quantile=quantile, min_size=min_size, n_examples=n_examples)
        if as_json:
            _echo_json(r)
            return
        shown = p.snippets([e["item"] for c in r["clusters"] for e in c["examples"]], width=50)
    click.echo(f"{r['novel_items']} of {r['candidates']} unlabeled items" + (f" in batch {batch}" if batch else "")
               + f" are far from every labeled item (score > {r['threshold']:.2f}); {len(r['clusters'])} clusters")
    for c in r["clusters"]:
        now = c["predicted_now"]
        said = ""
        if now and now["class"] is not None:
            said = f"; predicted now {now['class']!r} for {100 * now['share']:.0f}%"
        if now and now["unreached"]:
            said += f"; {100 * now['unreached']:.0f}% unreached by any label"
        click.echo(f"cluster {c['cluster']}: {c['size']} items; nearest known class {c['nearest_class']!r} "
                   f"(similarity {c['similarity']:.2f}){said}")
        for e in c["examples"]:
            click.echo(f"  {e['item']:>7}  {shown[e['item']]}")
    if r["clusters"]:
        click.echo(f"a new class? labelloop novel -p {project} --add-class NAME --cluster K")


def _add_web_commands() -> None:
    # importing the module is cheap: it loads FastAPI only when a command runs
    from .web.cli_commands import serve, users

    cli.add_command(serve)
    cli.add_command(users)


_add_web_commands()


def main() -> None:
    cli(prog_name="labelloop")


if __name__ == "__main__":
    main()

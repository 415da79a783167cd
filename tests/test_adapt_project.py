"""Issue 6 through the Project API: diagnose, adapt -> embed with the adapted id, train."""

import numpy as np
import pytest

from labelloop.datasets import load_dataset, write_image_folder
from labelloop.errors import ValidationError


@pytest.fixture
def digits_project(project_factory, tmp_path):
    ds = load_dataset("digits", n=200)
    paths = write_image_folder(ds, tmp_path / "img")
    p = project_factory("image")
    p.import_(tmp_path / "img", labels_from_folders=False)
    p.embed("pixels")
    rng = np.random.default_rng(0)
    pick = rng.choice(len(paths), 60, replace=False)
    p.label([(paths[i].relative_to(tmp_path / "img").as_posix(), ds.class_names[ds.labels[i]]) for i in pick],
            create_classes=True)
    return p


def test_diagnose_reports_accuracy_interval_and_advice(digits_project):
    d = digits_project.diagnose()
    lo, hi = d["loo_interval"]
    assert 0 <= lo <= d["loo_accuracy"] <= hi <= 1
    assert d["verdict"] in ("good", "fair", "poor", "too few labels") and d["advice"]
    assert digits_project.store.runs("diagnose")


def test_diagnose_scores_the_labels_active_learning_did_not_choose(digits_project):
    """Active learning asks about boundary items; scoring them would call good features poor.
    The propagation estimate uses the 60 random labels, not the 20 a strategy picked."""
    p = digits_project
    p.refresh()
    picks = p.next(20, strategy="margin")
    assert p.actively_chosen() == {r["item"] for r in picks}
    p.label([(r["ref"], r["ref"].split("/")[0]) for r in picks])  # <class folder>/<index>.png
    d = p.diagnose()
    assert d["propagation_checked"] == 60 and d["propagation_scope"] == "labels not chosen by active learning"
    # the auto strategy's random share is representative
    auto = p.next(10, strategy="auto")
    chosen = p.actively_chosen()
    assert [r["item"] in chosen for r in auto] == [True] * 8 + [False] * 2


def test_head_weight_averages_a_classifier_head_into_the_predictions(digits_project):
    from labelloop.adapt.finetune import fit_head
    from labelloop.graph import normalize_rows
    from labelloop.loop import Calibrator, mix_head
    from labelloop.propagate import LabelPropagation

    p = digits_project
    with pytest.raises(ValidationError, match=r"weight in \[0, 1\]"):
        p.set_setting("head_weight", 1.5)
    p.set_setting("head_weight", 0.5)
    p.refresh(full=True)
    ids, X = p.embeddings()
    y = p.label_vector(ids)
    _, graph = p.propagation_graph()
    P_lp = LabelPropagation().fit(graph, y, n_classes=len(p.classes)).predict_proba()
    head = fit_head(normalize_rows(X), y, n_classes=len(p.classes)).predict_proba(normalize_rows(X))
    pred = p.predictions()
    # the predictions are the calibrated mixture: the stored calibrator (a power, then the
    # top-label map) over 0.5 propagation + 0.5 head
    np.testing.assert_allclose(pred.proba, Calibrator.from_dict(pred.calibration)(mix_head(P_lp, head, 0.5)),
                               atol=1e-4)
    # calibration scored the same mixture held out: autolabel and status run on it
    assert pred.calibration["heldout_items"] > 0
    assert p.autolabel(target_precision=0.9)["certificate"]["random_checks"] == 0
    assert p.estimate() is not None


def test_adapt_rejects_an_unknown_augmentation_and_names_the_presets(digits_project):
    with pytest.raises(ValidationError, match="characters"):
        digits_project.adapt(augment="mirror", epochs=1)
    assert not digits_project.store.runs("adapt", status=None)   # nothing started


def test_adapt_refuses_swav_settings_for_other_methods(digits_project):
    with pytest.raises(ValidationError, match="prototypes: only for method swav"):
        digits_project.adapt(method="simclr", prototypes=30, epochs=1)
    assert not digits_project.store.runs("adapt", status=None)


def test_adapt_refuses_text_projects(project_factory):
    with pytest.raises(ValidationError, match="text project"):
        project_factory("text").adapt(epochs=1)


@pytest.mark.slow
def test_adapt_then_embed_with_the_adapted_backbone_then_train(digits_project):
    p = digits_project
    r = p.adapt(method="simclr", epochs=1, image_size=32, max_images=64)
    bid = r["backbone"]
    assert bid.startswith("adapted-simclr-") and r["provenance"]["method"] == "simclr"
    e = p.embed(bid)
    assert e.embedded == 200
    s = p.refresh()
    assert s["items"] == 200
    t = p.train(schedule="linear", epochs=5)
    assert 0 <= t["training_accuracy"] <= 1 and "agreement_with_propagation" in t
    assert (p.store.run_dir(t["run"]) / "classifier_proba.npy").exists()


def test_adapt_swav_through_the_project_then_embed(project_factory, tmp_path):
    """A tiny SwAV run on a handful of images with the packaged weights: the prototypes follow
    the project's classes, the characters preset holds for the small crops, and the saved
    backbone embeds."""
    import torch

    ds = load_dataset("digits", n=12)
    write_image_folder(ds, tmp_path / "img")
    p = project_factory("image")
    p.import_(tmp_path / "img", labels_from_folders=True)
    n_classes = len(p.classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread avoids OpenMP spin-waiting on a shared machine
    try:
        r = p.adapt(method="swav", epochs=1, image_size=48, local_crops=2, augment="characters")
    finally:
        torch.set_num_threads(threads)
    bid, prov = r["backbone"], r["provenance"]
    assert bid.startswith("adapted-swav-") and prov["method"] == "swav" and prov["n_images"] == 12
    assert prov["parameters"]["prototypes"] == max(10, 3 * n_classes)
    assert prov["parameters"]["local_crops"] == 2 and prov["augment"]["flip"] == 0.0
    assert prov["parameters"]["local_size"] is None and prov["image_size"] == 48   # small crops: 32 px
    assert p.embed(bid).embedded == 12
    with pytest.raises(ValidationError, match="local_size"):
        p.adapt(method="swav", epochs=1, image_size=32, local_size=64)

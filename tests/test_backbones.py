"""Backbones: registry, the contract every backbone meets, and each backbone's own truths."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from labelloop.embed import (
    Backbone,
    FakeBackbone,
    available_backbones,
    default_backbone,
    get_backbone,
    register_backbone,
    register_backbone_loader,
)
from labelloop.embed import base as embed_base
from labelloop.errors import MissingDependencyError, NotReadyError, ValidationError

# ----------------------------------------------------------------------------- inputs


def odd_images() -> list[Image.Image]:
    """Images of awkward modes and sizes, all deterministic."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, rng.integers(0, 256, size=(30, 40), dtype=np.uint8)])
    huge = np.broadcast_to(np.linspace(0, 255, 2600, dtype=np.uint8)[None, :, None], (1800, 2600, 3))
    gray16 = rng.integers(0, 65536, size=(20, 25), dtype=np.uint16)
    return [
        Image.fromarray(rgb[:1, :1]),                                   # 1x1
        Image.fromarray(np.ascontiguousarray(huge)),                    # 2600x1800
        Image.fromarray(rgba, "RGBA"),                                  # alpha
        Image.fromarray(rgb).convert("P"),                              # palette
        Image.fromarray(rgb[..., 0], "L"),                              # grayscale
        Image.fromarray(rgb[:7, :50]),                                  # very wide
        Image.fromarray(gray16.astype(np.int32)).convert("I;16"),       # 16-bit
        Image.fromarray(rgb[..., 0] > 128),                             # 1-bit
        Image.fromarray(rgb).convert("CMYK"),
        Image.fromarray(rgba, "RGBA").convert("LA"),
    ]


def five_images() -> list[Image.Image]:
    return odd_images()[:5]


TEXTS = [
    "a",
    "The cat sat on the mat.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "   ",
    "Une phrase en français, avec des accents : élève, où, Noël.",
]
CORPUS = TEXTS + [
    "A dog slept on the rug.",
    "The bank lowered interest rates again.",
    "Kittens and puppies play in the garden.",
]

# (backbone id, options, slow?) — one case per registered id, more for modalities
CASES = [
    ("fake", {"modality": "image"}, False),
    ("fake", {"modality": "text"}, False),
    ("pixels", {}, False),
    ("pixels", {"size": 5, "grayscale": False}, False),
    ("tfidf", {}, False),
    ("efficientnet-lite0", {}, True),
    ("efficientnet-lite0", {"image_size": 64}, True),
    ("minilm-l6", {}, True),
]


def _param(bid, opts, slow):
    marks = [pytest.mark.slow] if slow else []
    return pytest.param(bid, opts, marks=marks, id=f"{bid}-{'-'.join(f'{k}={v}' for k, v in opts.items())}")


def _ready(bid: str, opts: dict) -> Backbone:
    bb = get_backbone(bid, **opts)
    if bb.needs_fit:
        bb.fit(CORPUS)
    return bb


def _inputs(bb: Backbone) -> list:
    return five_images() if bb.modality == "image" else list(TEXTS)


def test_every_registered_backbone_has_a_contract_case():
    assert {c[0] for c in CASES} == set(available_backbones(include_hidden=True))


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize(("bid", "opts"), [_param(*c) for c in CASES])
class TestBackboneContract:
    def test_shape_dtype_finite(self, bid, opts):
        bb = _ready(bid, opts)
        X = bb.embed_batch(_inputs(bb))
        assert X.shape == (5, bb.dim) and bb.dim > 0
        assert X.dtype == np.float32
        assert np.isfinite(X).all()

    def test_deterministic_across_calls_and_instances(self, bid, opts):
        bb = _ready(bid, opts)
        X1 = bb.embed_batch(_inputs(bb))
        X2 = bb.embed_batch(_inputs(bb))
        X3 = _ready(bid, opts).embed_batch(_inputs(bb))
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_allclose(X1, X3, rtol=0, atol=1e-6)
        assert _ready(bid, opts).cache_id == bb.cache_id

    def test_batch_size_independent(self, bid, opts):
        bb = _ready(bid, opts)
        inputs = _inputs(bb)
        together = bb.embed_batch(inputs)                                   # (5, dim)
        alone = np.concatenate([bb.embed_batch([x]) for x in inputs])      # (5, dim)
        np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(bb.embed(inputs, batch_size=2), together, rtol=1e-4, atol=1e-4)

    def test_odd_inputs(self, bid, opts):
        bb = _ready(bid, opts)
        inputs = odd_images() if bb.modality == "image" else ["a", "", "!!!", "x" * 5000, "\u00e9\u00e8 \U0001f600"]
        X = bb.embed_batch(inputs)
        assert X.shape == (len(inputs), bb.dim) and X.dtype == np.float32
        assert np.isfinite(X).all()

    def test_metadata_and_empty_batch(self, bid, opts):
        bb = _ready(bid, opts)
        assert bb.modality in ("image", "text")
        assert isinstance(bb.cache_id, str) and bb.cache_id.startswith(bb.id)
        assert bb.batch_size >= 1
        assert bb.embed_batch([]).shape == (0, bb.dim)

    def test_wrong_input_type_is_a_validation_error(self, bid, opts):
        bb = _ready(bid, opts)
        wrong = ["some text"] if bb.modality == "image" else [Image.new("RGB", (4, 4))]
        with pytest.raises(ValidationError, match="item 0"):
            bb.embed_batch(wrong)


# ----------------------------------------------------------------------------- registry


def test_registry_listing_and_defaults():
    assert available_backbones("image") == ["efficientnet-lite0", "pixels"]
    assert available_backbones("text") == ["minilm-l6", "tfidf"]
    assert "fake" not in available_backbones() and "fake" in available_backbones(include_hidden=True)
    assert default_backbone("image") == "efficientnet-lite0"
    assert default_backbone("text") == "minilm-l6"
    with pytest.raises(ValidationError, match="audio"):
        default_backbone("audio")
    with pytest.raises(ValidationError, match="audio"):
        available_backbones("audio")


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ValidationError, match="unknown backbone 'resnet'.*efficientnet-lite0.*pixels"):
        get_backbone("resnet")


def test_unknown_option_names_the_allowed_ones():
    with pytest.raises(ValidationError, match="no option 'colour'.*grayscale.*size"):
        get_backbone("pixels", colour=True)
    with pytest.raises(ValidationError, match="image_size"):
        get_backbone("efficientnet-lite0", image_size=8)


def test_project_dir_is_accepted_by_builtin_backbones(tmp_path):
    assert get_backbone("pixels", project_dir=tmp_path).id == "pixels"


def test_register_a_new_backbone(monkeypatch):
    monkeypatch.setattr(embed_base, "_REGISTRY", dict(embed_base._REGISTRY))

    @register_backbone
    class Ones(Backbone):
        id = "ones"
        modality = "text"
        dim = 3

        def __init__(self, *, scale: float = 1.0):
            self.scale = scale

        def embed_batch(self, inputs):
            return np.full((len(self._check_inputs(inputs)), 3), self.scale, dtype=np.float32)

    assert "ones" in available_backbones("text")
    bb = get_backbone("ones", scale=2.0)
    np.testing.assert_array_equal(bb.embed(["x"] * 5, batch_size=2), np.full((5, 3), 2.0))


def test_loader_hook_resolves_project_backbones(monkeypatch, tmp_path):
    monkeypatch.setattr(embed_base, "_LOADERS", {})
    seen = []

    def loader(bid, project_dir):
        seen.append((bid, project_dir))
        return FakeBackbone(dim=4) if bid == "adapted-simclr-1a2b3c" else None

    register_backbone_loader("adapted-", loader)
    bb = get_backbone("adapted-simclr-1a2b3c", project_dir=tmp_path)
    assert bb.dim == 4 and seen == [("adapted-simclr-1a2b3c", tmp_path)]
    with pytest.raises(ValidationError, match="unknown backbone 'adapted-other'"):
        get_backbone("adapted-other", project_dir=tmp_path)


def test_plugins_from_entry_points_are_loaded_once(monkeypatch, tmp_path):
    import importlib.metadata as md
    import types

    calls = []
    plugin = types.ModuleType("fake_plugin")

    def load():
        calls.append(1)
        register_backbone_loader("plug-", lambda bid, pdir: FakeBackbone(dim=3))
        return plugin

    ep = types.SimpleNamespace(name="plug", value="fake_plugin", load=load)
    broken = types.SimpleNamespace(name="broken", value="nowhere", load=lambda: 1 / 0)
    monkeypatch.setattr(md, "entry_points", lambda group: [ep, broken] if group == embed_base.PLUGIN_GROUP else [])
    monkeypatch.setattr(embed_base, "_LOADERS", {})
    monkeypatch.setattr(embed_base, "_plugins_loaded", False)
    with pytest.warns(RuntimeWarning, match="plugin 'broken'.*division by zero"):
        assert get_backbone("plug-x", project_dir=tmp_path).dim == 3
    get_backbone("plug-y")
    assert calls == [1]


def test_importing_embed_and_building_baselines_imports_nothing_heavy():
    code = (
        "import sys; from labelloop.embed import get_backbone, available_backbones; "
        "import labelloop.datasets; available_backbones(); "
        "get_backbone('pixels').embed_batch([__import__('PIL.Image').Image.new('L', (3, 3))]); "
        "get_backbone('efficientnet-lite0'); get_backbone('minilm-l6'); get_backbone('tfidf'); "
        "print(sorted(m for m in ('torch', 'sklearn', 'sentence_transformers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- fake


def test_fake_equal_content_equal_vectors():
    bb = FakeBackbone(modality="image", dim=8)
    a = Image.new("RGB", (5, 5), (1, 2, 3))
    b = Image.new("RGB", (5, 5), (1, 2, 3))
    c = Image.new("RGB", (5, 5), (1, 2, 4))
    X = bb.embed_batch([a, b, c])
    np.testing.assert_array_equal(X[0], X[1])
    assert not np.allclose(X[0], X[2])
    # same palette indices, different palettes: different content
    p1, p2 = Image.new("P", (2, 2), 0), Image.new("P", (2, 2), 0)
    p1.putpalette([255, 0, 0] * 256)
    p2.putpalette([0, 0, 255] * 256)
    P = bb.embed_batch([p1, p2])
    assert not np.allclose(P[0], P[1])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text(max_size=20), min_size=1, max_size=6))
def test_fake_text_vectors_depend_only_on_content(texts):
    bb = FakeBackbone(modality="text", dim=6)
    X = bb.embed_batch(texts)
    for i, s in enumerate(texts):
        for j, t in enumerate(texts):
            assert np.array_equal(X[i], X[j]) == (s == t)


def test_fake_rejects_bad_options():
    with pytest.raises(ValidationError, match="dim"):
        get_backbone("fake", dim=0)
    with pytest.raises(ValidationError, match="modality"):
        get_backbone("fake", modality="audio")


# ----------------------------------------------------------------------------- to_rgb


def test_to_rgb_composites_alpha_on_white_and_rescales_16_bit():
    rgba = Image.new("RGBA", (2, 1))
    rgba.putpixel((0, 0), (10, 20, 30, 0))      # fully transparent -> white
    rgba.putpixel((1, 0), (10, 20, 30, 255))    # opaque -> itself
    assert np.asarray(embed_base.to_rgb(rgba)).tolist() == [[[255, 255, 255], [10, 20, 30]]]
    g16 = Image.fromarray(np.array([[0, 65535, 257 * 100]], dtype=np.int32)).convert("I;16")
    assert np.asarray(embed_base.to_rgb(g16)).tolist() == [[[0] * 3, [255] * 3, [100] * 3]]
    pal = Image.new("P", (1, 1), 0)
    pal.putpalette([200, 100, 50] + [0] * 765)
    assert embed_base.to_rgb(pal).getpixel((0, 0)) == (200, 100, 50)


# ----------------------------------------------------------------------------- pixels


def test_pixels_at_native_size_are_the_raw_values():
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    X = get_backbone("pixels", size=8).embed_batch([Image.fromarray(arr)])
    np.testing.assert_array_equal(X[0], arr.reshape(-1).astype(np.float32) / 255)


def test_pixels_rgb_layout_and_alias():
    img = Image.new("RGB", (3, 3), (255, 0, 51))
    bb = get_backbone("pixels", image_size=3, grayscale=False)
    assert bb.size == 3 and bb.dim == 27 and bb.cache_id == "pixels-3-rgb"
    np.testing.assert_allclose(bb.embed_batch([img])[0], np.tile([1.0, 0.0, 0.2], 9), atol=1e-7)
    with pytest.raises(ValidationError, match="disagree"):
        get_backbone("pixels", size=4, image_size=5)
    with pytest.raises(ValidationError, match="size"):
        get_backbone("pixels", size=0)


def test_pixels_digits_saved_as_png_reach_raw_pixel_knn_accuracy(tmp_path):
    """ASSETS.md: raw 8x8 digits give ~0.98 10-NN accuracy; the PNG round trip keeps it."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    from labelloop.datasets import load_dataset, write_image_folder

    ds = load_dataset("digits")
    paths = write_image_folder(ds, tmp_path / "digits")
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.copy())
    X = get_backbone("pixels").embed(images)
    knn = KNeighborsClassifier(n_neighbors=10, metric="cosine")
    acc = cross_val_score(knn, X, ds.labels, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
    assert acc >= 0.97


# ----------------------------------------------------------------------------- tfidf


def test_tfidf_needs_fit_and_caps_dim_by_vocabulary():
    bb = get_backbone("tfidf")
    assert bb.needs_fit
    with pytest.raises(NotReadyError, match="fit"):
        bb.embed_batch(["x"])
    with pytest.raises(NotReadyError, match="fit"):
        _ = bb.cache_id
    bb.fit(["red apple", "green apple"])   # vocabulary: red, apple, green, + 2 bigrams = 5 terms
    assert bb.dim == 2                     # capped by the 2 documents
    with pytest.raises(ValidationError, match="no words"):
        get_backbone("tfidf").fit(["!!", "  "])


def test_tfidf_cache_id_tracks_the_fitted_corpus():
    a = get_backbone("tfidf").fit(CORPUS)
    b = get_backbone("tfidf").fit(CORPUS)
    c = get_backbone("tfidf").fit(CORPUS + ["one more document about rockets"])
    assert a.cache_id == b.cache_id != c.cache_id


def test_tfidf_neighbours_share_topic():
    sport = [f"the {t} team won the {g} match in extra time" for t in ("home", "away", "local", "red")
             for g in ("football", "cup", "league")]
    cook = [f"simmer the {v} with garlic and {s} for ten minutes" for v in ("onions", "beans", "tomatoes", "leeks")
            for s in ("butter", "oil", "salt")]
    bb = get_backbone("tfidf", dim=8).fit(sport + cook)
    X = bb.embed(sport + cook)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    topic = np.array([0] * len(sport) + [1] * len(cook))
    assert (topic[S.argmax(1)] == topic).all()


# ----------------------------------------------------------------------------- efficientnet


def test_efficientnet_preprocessing_crops_the_centre():
    pytest.importorskip("torch")
    from labelloop.embed.efficientnet import preprocess_images

    # 200x100: short side 100 -> 73 px (64 * 256/224), width 146; crop 64 drops 41 px each side,
    # i.e. 28 % of the width: a red stripe on the left 25 % must vanish entirely
    arr = np.zeros((100, 200, 3), dtype=np.uint8)
    arr[:, :50] = (255, 0, 0)
    arr[:, 50:] = (0, 0, 255)
    x = preprocess_images([Image.fromarray(arr), Image.new("L", (1, 1), 255)], 64)
    assert tuple(x.shape) == (2, 3, 64, 64)
    assert x.is_contiguous(memory_format=__import__("torch").channels_last)
    red, blue = x[0, 0].numpy(), x[0, 2].numpy()
    np.testing.assert_allclose(red, -1.0, atol=0.02)     # (0 - 0.5) / 0.5
    np.testing.assert_allclose(blue, 1.0, atol=0.02)     # (1 - 0.5) / 0.5
    np.testing.assert_allclose(x[1].numpy(), 1.0, atol=1e-6)   # white 1x1 -> all ones


def test_missing_torch_names_the_install_command(monkeypatch):
    from labelloop.embed import efficientnet, minilm

    monkeypatch.setitem(sys.modules, "torch", None)   # makes `import torch` raise ImportError
    monkeypatch.setattr(efficientnet, "_NET_CACHE", {})
    monkeypatch.setattr(minilm, "_MODEL", None)
    with pytest.raises(MissingDependencyError, match=r"pip install -c constraints.txt 'labelloop\[image\]'"):
        get_backbone("efficientnet-lite0").embed_batch([Image.new("RGB", (4, 4))])
    with pytest.raises(MissingDependencyError, match=r"pip install -c constraints.txt 'labelloop\[text\]'"):
        get_backbone("minilm-l6").embed_batch(["hello"])


def test_missing_sentence_transformers_names_the_install_command(monkeypatch):
    from labelloop.embed import minilm

    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    monkeypatch.setattr(minilm, "_MODEL", None)
    with pytest.raises(MissingDependencyError, match=r"sentence-transformers.*labelloop\[text\]"):
        get_backbone("minilm-l6").embed_batch(["hello"])


@pytest.mark.slow
def test_efficientnet_has_imagenet_weights():
    """The packaged head classifies scikit-learn's sample photos: china.jpg is a palace (698),
    flower.jpg a daisy (985), both in the top 5 of the 1000 ImageNet classes."""
    import torch
    from sklearn.datasets import load_sample_images

    from labelloop.embed.efficientnet import features, load_efficientnet_lite0, preprocess_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    net = load_efficientnet_lite0(pretrained=True)
    x = preprocess_images([china, flower], 224)
    with torch.inference_mode():
        logits = net(x)                                    # (2, 1000)
        f = features(net, x)                               # (2, 1280)
    top5 = logits.topk(5, dim=1).indices.tolist()
    assert 698 in top5[0] and 985 in top5[1]
    # the backbone's vectors are exactly these pooled features
    bb = get_backbone("efficientnet-lite0")
    np.testing.assert_allclose(bb.embed_batch([china, flower]), f.numpy(), rtol=1e-5, atol=1e-5)
    # an untrained net does not know a daisy
    with torch.inference_mode():
        rnd = load_efficientnet_lite0(pretrained=False)(x)
    assert not torch.allclose(rnd, logits)


@pytest.mark.slow
def test_minilm_similar_sentences_are_closer():
    bb = get_backbone("minilm-l6")
    pairs = [
        ("A man is playing a guitar on stage.", "Someone performs a song with a guitar."),
        ("The stock market crashed today.", "Share prices fell sharply this afternoon."),
        ("How do I bake bread at home?", "What is a good recipe for homemade bread?"),
        ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ]
    X = bb.embed([s for p in pairs for s in p])   # (8, 384)
    assert X.shape == (8, 384)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    S = X @ X.T
    for i in range(len(pairs)):
        same = S[2 * i, 2 * i + 1]
        others = [S[2 * i, 2 * j + 1] for j in range(len(pairs)) if j != i]
        assert same > max(others) + 0.2

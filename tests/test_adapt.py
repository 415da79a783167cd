"""Self-supervised adaptation: losses against hand-written references, augmentations, the
trainer (one step lowers the loss, resume = uninterrupted run), the adapted backbone round
trip, and the transfer / few-shot heads."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from labelloop.adapt import augment as A  # noqa: E402
from labelloop.adapt.losses import (  # noqa: E402
    byol_loss,
    byol_momentum,
    ema_update,
    nt_xent_loss,
    sinkhorn_knopp,
    swav_loss,
)
from labelloop.adapt.train import (  # noqa: E402
    CHECKPOINT_FILE,
    LOCAL_VIEWS_FILE,
    VIEWS_FILE,
    AdaptConfig,
    SplitEncoder,
    _build_model,
    build_view_cache,
    default_prototypes,
    efficientnet_encoder,
    train_ssl,
)
from labelloop.errors import NotReadyError, ValidationError  # noqa: E402


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These nets are tiny: one thread avoids OpenMP spin-waiting on a shared 2-core machine
    (measured 20x faster here with other jobs running)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_encoder(seed: int = 0):
    """A small conv net split like the real one: frozen conv trunk, trainable conv tail."""
    from torch import nn

    g = torch.Generator().manual_seed(seed)
    trunk = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
    tail = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())
    with torch.no_grad():
        for p in (*trunk.parameters(), *tail.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return SplitEncoder(trunk, tail, 16)


def toy_images(n: int = 24, size: int = 16, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) uint8: coloured squares at random places on noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 60, (n, 3, size, size), generator=g, dtype=torch.uint8)
    for i in range(n):
        r, c = torch.randint(0, size // 2, (2,), generator=g).tolist()
        colour = torch.randint(100, 256, (3,), generator=g, dtype=torch.uint8)
        x[i, :, r : r + size // 2, c : c + size // 2] = colour.view(3, 1, 1)
    return x


def small_config(**kw) -> AdaptConfig:
    base = dict(epochs=2, batch_size=8, image_size=16, proj_hidden=32, proj_dim=8, view_cache=0,
                lr=1e-2, prototypes=6, local_crops=2)
    base.update(kw)
    return AdaptConfig(**base)


# -------------------------------------------------------------------------------- losses
def nt_xent_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> float:
    """Explicit loops over the 2N anchors, as written in the SimCLR paper."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    n2 = z.shape[0]
    n = n2 // 2
    total = 0.0
    for i in range(n2):
        pos = i + n if i < n else i - n
        num = math.exp(float(z[i] @ z[pos]) / t)
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


@pytest.mark.parametrize("t", [0.1, 0.5, 1.0])
def test_nt_xent_equals_reference(t):
    rng = np.random.default_rng(0)
    z1, z2 = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    got = nt_xent_loss(torch.tensor(z1), torch.tensor(z2), t).item()
    assert got == pytest.approx(nt_xent_reference(z1, z2, t), rel=1e-9)


def test_nt_xent_is_low_for_matching_views_and_symmetric():
    rng = np.random.default_rng(1)
    z = torch.tensor(rng.normal(size=(6, 5)))
    other = torch.tensor(rng.normal(size=(6, 5)))
    assert nt_xent_loss(z, z, 0.1) < nt_xent_loss(z, other, 0.1)
    assert nt_xent_loss(z, other, 0.2).item() == pytest.approx(nt_xent_loss(other, z, 0.2).item())


def test_byol_loss_equals_reference():
    rng = np.random.default_rng(2)
    p1, z2, p2, z1 = (rng.normal(size=(5, 4)) for _ in range(4))

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    ref = np.mean([(2 - 2 * cos(p1[i], z2[i])) + (2 - 2 * cos(p2[i], z1[i])) for i in range(5)])
    got = byol_loss(*(torch.tensor(a) for a in (p1, z2, p2, z1))).item()
    assert got == pytest.approx(ref, rel=1e-12)


def test_byol_loss_sends_no_gradient_to_targets():
    p = torch.randn(3, 4, requires_grad=True)
    z = torch.randn(3, 4, requires_grad=True)
    byol_loss(p, z, p, z).backward()
    assert p.grad is not None and z.grad is None


def test_ema_update_is_exponential_moving_average():
    from torch import nn

    torch.manual_seed(0)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for old, new, theta in zip(before, target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * theta, rtol=0, atol=1e-7)


def test_byol_momentum_schedule():
    assert byol_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert byol_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert byol_momentum(50, 100, 0.99) == pytest.approx(0.995)
    steps = [byol_momentum(k, 100, 0.99) for k in range(101)]
    assert all(a <= b for a, b in zip(steps, steps[1:]))


def test_byol_target_follows_ema_during_training():
    """After an optimiser step the model's target equals tau * old target + (1 - tau) * online."""
    cfg = small_config(method="byol", momentum=0.9)
    enc = tiny_encoder()
    model = _build_model(enc.tail, enc.dim, cfg)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    h = enc.forward_trunk(toy_images(8).float() / 255)
    old_target = [p.detach().clone() for p in model.target_tail.parameters()]
    loss = model.loss(h, h.flip(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    online = [p.detach().clone() for p in model.tail.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(old_target, online))  # online moved
    model.after_step(1, 10)
    tau = byol_momentum(1, 10, 0.9)
    for old, new, theta in zip(old_target, model.target_tail.parameters(), online, strict=True):
        torch.testing.assert_close(new, tau * old + (1 - tau) * theta, rtol=0, atol=1e-6)


def sinkhorn_reference(S: np.ndarray, eps: float, iters: int) -> np.ndarray:
    """SwAV eq. 3 with loops: Q = Diag(u) exp(S^T / eps) Diag(v), u and v by alternately
    scaling the prototype sums to 1/K and the sample sums to 1/B; returned (B, K), times B."""
    B, K = S.shape
    P = [[math.exp(S[b][k] / eps) for b in range(B)] for k in range(K)]
    u, v = [1.0] * K, [1.0] * B
    for _ in range(iters):
        for k in range(K):
            u[k] = (1.0 / K) / sum(P[k][b] * v[b] for b in range(B))
        for b in range(B):
            v[b] = (1.0 / B) / sum(u[k] * P[k][b] for k in range(K))
    return np.array([[B * u[k] * P[k][b] * v[b] for k in range(K)] for b in range(B)])


def swav_reference(scores, n_assign, t, eps, iters, queue=None) -> float:
    """SwAV eq. 1-2 with multi-crop, loops over crops, samples and prototypes."""
    V, B, K = len(scores), scores[0].shape[0], scores[0].shape[1]
    total = 0.0
    for i in range(n_assign):
        s = scores[i] if queue is None else np.concatenate([queue[i], scores[i]])
        q = sinkhorn_reference(s, eps, iters)[-B:]
        for v in range(V):
            if v == i:
                continue
            for b in range(B):
                lse = math.log(sum(math.exp(scores[v][b][k] / t) for k in range(K)))
                total -= sum(q[b][k] * (scores[v][b][k] / t - lse) for k in range(K)) / B
    return total / (n_assign * (V - 1))


def cosine_scores(rng, n_crops: int, b: int, k: int, d: int = 5) -> list[np.ndarray]:
    """Scores of unit projections against unit prototypes, as the model forms them."""
    c = rng.normal(size=(k, d))
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = []
    for _ in range(n_crops):
        z = rng.normal(size=(b, d))
        out.append((z / np.linalg.norm(z, axis=1, keepdims=True)) @ c.T)   # (B, K)
    return out


@pytest.mark.parametrize("eps,iters", [(0.05, 3), (0.1, 1), (0.5, 10)])
def test_sinkhorn_equals_reference(eps, iters):
    S = cosine_scores(np.random.default_rng(3), 1, 7, 4)[0]
    got = sinkhorn_knopp(torch.tensor(S), eps, iters).numpy()
    np.testing.assert_allclose(got, sinkhorn_reference(S, eps, iters), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n_crops,n_assign,with_queue", [(2, 2, False), (5, 2, False), (4, 1, False),
                                                        (4, 2, True)])
def test_swav_loss_equals_reference(n_crops, n_assign, with_queue):
    rng = np.random.default_rng(4)
    scores = cosine_scores(rng, n_crops, 6, 5)
    queue = cosine_scores(rng, n_assign, 3, 5) if with_queue else None
    got = swav_loss([torch.tensor(s) for s in scores], n_assign=n_assign, temperature=0.1, epsilon=0.05,
                    iterations=3, queue_scores=[torch.tensor(q) for q in queue] if queue else None).item()
    assert got == pytest.approx(swav_reference(scores, n_assign, 0.1, 0.05, 3, queue), rel=1e-9)


def test_sinkhorn_spreads_a_lopsided_batch_equally_over_the_prototypes():
    """Every sample is closest to prototype 0: a softmax would put the batch there; the codes
    keep each sample's row a distribution and give every prototype ~B / K of the mass."""
    rng = np.random.default_rng(5)
    B, K = 24, 4
    S = torch.tensor(np.concatenate([np.full((B, 1), 0.9), rng.uniform(-0.2, 0.6, size=(B, K - 1))], axis=1))
    assert (S.argmax(1) == 0).all()
    softmax_cols = torch.softmax(S / 0.05, dim=1).sum(0)                     # (K,)
    assert softmax_cols[0] > 0.9 * B
    for iters, tol in ((3, 0.25), (10, 0.05), (200, 1e-9)):
        Q = sinkhorn_knopp(S, 0.05, iters)
        assert (Q >= 0).all()
        torch.testing.assert_close(Q.sum(1), torch.ones(B, dtype=S.dtype), rtol=0, atol=1e-12)
        cols = Q.sum(0)                                                       # (K,)
        assert float((cols - B / K).abs().max()) <= tol * B / K, (iters, cols)


@settings(max_examples=30, deadline=None)
@given(b=st.integers(2, 20), k=st.integers(2, 12), seed=st.integers(0, 10_000),
       eps=st.sampled_from([0.03, 0.05, 0.5]))
def test_sinkhorn_rows_are_distributions(b, k, seed, eps):
    S = torch.tensor(cosine_scores(np.random.default_rng(seed), 1, b, k)[0], dtype=torch.float32)
    Q = sinkhorn_knopp(S, eps, 3)
    assert Q.shape == (b, k) and Q.dtype == torch.float32 and torch.isfinite(Q).all() and (Q >= 0).all()
    torch.testing.assert_close(Q.sum(1), torch.ones(b), rtol=0, atol=1e-5)
    assert float(Q.sum()) == pytest.approx(b, rel=1e-5)


def swav_model(**kw):
    cfg = small_config(method="swav", **kw)
    enc = tiny_encoder()
    torch.manual_seed(0)
    model = _build_model(enc.tail, enc.dim, cfg)
    model.train()
    x = toy_images(8)
    g = torch.Generator().manual_seed(0)
    h1, h2 = (enc.forward_trunk(A.augment_batch(x, 16, g)) for _ in range(2))
    local = torch.cat([enc.forward_trunk(A.augment_batch(x, 8, g)) for _ in range(cfg.local_crops)])
    return model, h1, h2, local


def test_swav_prototypes_stay_on_the_unit_sphere():
    model, h1, h2, local = swav_model()
    w = model.prototypes.weight
    assert w.shape == (6, 8)
    torch.testing.assert_close(w.norm(dim=1), torch.ones(6))
    opt = torch.optim.SGD(model.parameters(), lr=5.0)
    loss = model.loss(h1, h2, local)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert not torch.allclose(w.norm(dim=1), torch.ones(6))   # the update leaves the sphere
    model.after_step(1, 10)
    torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(6))


def test_swav_frozen_prototypes_get_no_gradient():
    model, h1, h2, local = swav_model()
    model.loss(h1, h2, local, frozen=True).backward()
    assert model.prototypes.weight.grad is None and model.projector[0].weight.grad is not None
    model.loss(h1, h2, local, frozen=False).backward()
    assert model.prototypes.weight.grad is not None


def test_swav_small_crops_leave_the_running_batchnorm_statistics_alone():
    """Embedding uses the running statistics at the global size: small crops must not move them."""
    import copy

    model, h1, h2, local = swav_model()
    other = copy.deepcopy(model)
    model.loss(h1, h2, local)
    other.loss(h1, h2)
    bn, bn_other = model.tail[1], other.tail[1]
    assert bn.num_batches_tracked.item() == 1
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(bn, name), getattr(bn_other, name))
    assert bn.momentum == other.tail[1].momentum                  # restored after the small crops


def test_swav_prototypes_frozen_for_the_first_epoch_by_default(tmp_path):
    cfg = small_config(method="swav", epochs=1, view_cache=3)
    enc, twin = tiny_encoder(), tiny_encoder()
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)   # train_ssl builds the model first from this seed
        initial = _build_model(twin.tail, twin.dim, cfg).prototypes.weight.detach().clone()
    train_ssl(toy_images(16), cfg, encoder=enc, checkpoint_dir=tmp_path / "a", progress=False)
    trained = torch.load(tmp_path / "a" / CHECKPOINT_FILE, weights_only=False)["model"]["prototypes.weight"]
    torch.testing.assert_close(trained, initial, rtol=0, atol=1e-6)
    train_ssl(toy_images(16), small_config(method="swav", epochs=1, view_cache=3, freeze_prototypes=0),
              encoder=tiny_encoder(), checkpoint_dir=tmp_path / "b", progress=False)
    moved = torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=False)["model"]["prototypes.weight"]
    assert not torch.allclose(moved, initial, atol=1e-4)


def test_swav_small_crops_follow_the_preset():
    cfg = AdaptConfig(method="swav")
    chars = cfg.local_augment(A.augment_preset("characters"))
    assert chars.flip == 0.0 and chars.crop_scale == (0.05, 0.3) and chars.rotation == 10.0
    assert cfg.local_augment(A.augment_preset("photo")).crop_scale == (0.05, 0.2)
    assert AdaptConfig(local_scale=[0.1, 0.25]).local_augment(A.augment_preset("photo")).crop_scale == (0.1, 0.25)
    assert cfg.local_px == 32 and AdaptConfig(image_size=224).local_px == 96
    assert AdaptConfig(image_size=112).local_px == 48 and AdaptConfig(image_size=16).local_px == 16
    assert cfg.local_views == 12 and AdaptConfig(method="simclr").local_views == 0
    assert AdaptConfig(method="swav", device="cuda").local_views == 0   # fresh crops on CUDA


def test_swav_local_view_cache_shape():
    x = toy_images(6, size=32)
    cfg = small_config(method="swav", image_size=48, local_size=32, view_cache=3, local_crops=2)
    enc = tiny_encoder()
    assert build_view_cache(x, cfg, enc, progress=False).shape == (6, 3, 8, 24, 24)
    assert build_view_cache(x, cfg, enc, progress=False, local=True).shape == (6, 4, 8, 16, 16)
    with pytest.raises(ValidationError, match="swav"):
        build_view_cache(x, small_config(view_cache=3), enc, progress=False, local=True)


def test_default_prototypes():
    assert default_prototypes(1797, 10) == 30
    assert default_prototypes(1797) == 42 and default_prototypes(5000) == 71
    assert default_prototypes(5) == 10 and default_prototypes(10**9) == 3000
    res = train_ssl(toy_images(16), small_config(method="swav", epochs=1, prototypes=None), encoder=tiny_encoder(),
                    progress=False, n_classes=4)
    assert res.config.prototypes == 12


@pytest.mark.parametrize("method", ["simclr", "byol", "swav"])
def test_one_step_lowers_the_loss(method):
    cfg = small_config(method=method)
    enc = tiny_encoder()
    torch.manual_seed(0)
    model = _build_model(enc.tail, enc.dim, cfg)
    model.train()
    g = torch.Generator().manual_seed(0)
    x = toy_images(16)
    h1 = enc.forward_trunk(A.augment_batch(x, 16, g, A.augment_preset("photo")))
    h2 = enc.forward_trunk(A.augment_batch(x, 16, g, A.augment_preset("photo")))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    torch.manual_seed(1)
    before = model.loss(h1, h2)
    opt.zero_grad()
    before.backward()
    opt.step()
    torch.manual_seed(1)
    after = model.loss(h1, h2)
    assert after.item() < before.item()


def test_trunk_is_frozen_and_tail_trains():
    x = toy_images(16)
    enc = tiny_encoder()
    trunk_before = [p.detach().clone() for p in enc.trunk.parameters()]
    tail_before = [p.detach().clone() for p in enc.tail.parameters()]
    res = train_ssl(x, small_config(epochs=1), encoder=enc, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(trunk_before, res.encoder.trunk.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(tail_before, res.encoder.tail.parameters()))
    assert res.steps == 2 and res.epochs == 1 and len(res.history) == 1


def test_training_lowers_the_loss_over_epochs():
    res = train_ssl(toy_images(32), small_config(epochs=8, view_cache=4), encoder=tiny_encoder(),
                    progress=False)
    assert res.history[-1] < res.history[0]


# -------------------------------------------------------------------------------- resume
class Crash(Exception):
    pass


def _crash_after(epoch: int):
    def hook(e, loss):
        if e == epoch:
            raise Crash

    return hook


@pytest.mark.parametrize("method,view_cache,queue", [("simclr", 0, 0), ("simclr", 3, 0), ("byol", 3, 0),
                                                     ("swav", 0, 0), ("swav", 3, 12)])
def test_resume_continues_the_same_run(tmp_path, method, view_cache, queue):
    x = toy_images(24)
    cfg = small_config(method=method, epochs=3, view_cache=view_cache, queue=queue)
    full = train_ssl(x, cfg, encoder=tiny_encoder(), checkpoint_dir=tmp_path / "a", progress=False)

    with pytest.raises(Crash):
        train_ssl(x, cfg, encoder=tiny_encoder(), checkpoint_dir=tmp_path / "b",
                  progress=False, on_epoch_end=_crash_after(2))
    assert (tmp_path / "b" / CHECKPOINT_FILE).exists()
    assert (tmp_path / "b" / VIEWS_FILE).exists() == bool(view_cache)
    assert (tmp_path / "b" / LOCAL_VIEWS_FILE).exists() == bool(view_cache and method == "swav")
    resumed = train_ssl(x, cfg, encoder=tiny_encoder(), checkpoint_dir=tmp_path / "b", progress=False)

    assert resumed.resumed_from == 2
    assert resumed.steps == full.steps == 3 * (24 // 8)
    assert resumed.history == full.history
    for a, b in zip(full.encoder.tail.state_dict().values(), resumed.encoder.tail.state_dict().values()):
        assert torch.equal(a, b)


def test_finished_checkpoint_returns_at_once(tmp_path):
    x = toy_images(16)
    cfg = small_config(epochs=1)
    first = train_ssl(x, cfg, encoder=tiny_encoder(), checkpoint_dir=tmp_path, progress=False)
    again = train_ssl(x, cfg, encoder=tiny_encoder(), checkpoint_dir=tmp_path, progress=False)
    assert again.steps == first.steps and again.history == first.history and again.step_losses == []


def test_resume_refuses_other_config_or_data(tmp_path):
    x = toy_images(16)
    train_ssl(x, small_config(epochs=1), encoder=tiny_encoder(), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValidationError, match="configuration"):
        train_ssl(x, small_config(epochs=1, lr=0.5), encoder=tiny_encoder(), checkpoint_dir=tmp_path,
                  progress=False)
    with pytest.raises(ValidationError, match="training images"):
        train_ssl(toy_images(16, seed=5), small_config(epochs=1), encoder=tiny_encoder(),
                  checkpoint_dir=tmp_path, progress=False)
    # resume=False starts over
    res = train_ssl(x, small_config(epochs=1, lr=0.5), encoder=tiny_encoder(), checkpoint_dir=tmp_path,
                    resume=False, progress=False)
    assert res.resumed_from == 0


def test_training_leaves_the_global_rng_alone():
    enc = tiny_encoder()  # (building modules draws from the global RNG)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_ssl(toy_images(16), small_config(epochs=1), encoder=enc, progress=False)
    torch.testing.assert_close(torch.rand(3), expected)


@pytest.mark.parametrize("bad", [dict(method="dino"), dict(epochs=0), dict(view_cache=1),
                                 dict(augment="sepia"), dict(device="tpu"), dict(temperature=0),
                                 dict(prototypes=1), dict(sinkhorn_iterations=0), dict(sinkhorn_epsilon=0),
                                 dict(swav_temperature=-1), dict(local_crops=-1), dict(local_size=28),
                                 dict(local_size=65), dict(local_scale=(0.5, 0.2)), dict(queue=-5),
                                 dict(freeze_prototypes=1.5)])
def test_config_validation(bad):
    with pytest.raises(ValidationError):
        AdaptConfig(**bad)


def test_bad_training_input():
    with pytest.raises(ValidationError, match="uint8"):
        train_ssl(toy_images(8).float(), small_config(), encoder=tiny_encoder(), progress=False)
    with pytest.raises(ValidationError, match="at least 2"):
        train_ssl(toy_images(1), small_config(), encoder=tiny_encoder(), progress=False)


def test_run_key_holds_swav_settings_only_for_swav():
    assert "prototypes" not in AdaptConfig().run_key() and AdaptConfig(prototypes=50).run_key() == AdaptConfig().run_key()
    assert AdaptConfig(method="swav", prototypes=50).run_key() != AdaptConfig(method="swav").run_key()


def test_view_cache_default_depends_on_device():
    assert AdaptConfig().views == 8
    assert AdaptConfig(device="cuda").views == 0
    assert AdaptConfig(view_cache=3).views == 3


# --------------------------------------------------------------------------- augmentation
def test_identity_crop_is_exact():
    x = torch.rand(4, 3, 10, 10)
    g = torch.Generator().manual_seed(0)
    y = A.random_resized_crop(x, 10, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=0.0)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)
    y = A.random_resized_crop(x, 10, g, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=1.0)
    torch.testing.assert_close(y, x.flip(-1), rtol=0, atol=1e-6)


def test_crop_keeps_a_region_of_the_requested_area():
    # a horizontal ramp: a crop of width fraction w spans a ramp interval of length w
    ramp = torch.linspace(0, 1, 200).view(1, 1, 1, 200).expand(1, 3, 200, 200).contiguous()
    g = torch.Generator().manual_seed(0)
    y = A.random_resized_crop(ramp, 50, g, scale=(0.25, 0.25), ratio=(1.0, 1.0), flip=0.0)
    span = (y[0, 0, 0, -1] - y[0, 0, 0, 0]).item()
    assert span == pytest.approx(0.5, abs=0.03)


def test_grayscale_blur_and_jitter_behave():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 12, 12)
    gray = A.random_grayscale(x, g, p=1.0)
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
    const = torch.full((2, 3, 12, 12), 0.3)
    torch.testing.assert_close(A.gaussian_blur(const, g, p=1.0), const)
    blurred = A.gaussian_blur(x, g, p=1.0, sigma=(20.0, 20.0))
    assert blurred.std() < x.std()
    # saturation and hue change nothing on a gray image
    g_img = A.to_grayscale(x).contiguous()
    out = A.color_jitter(g_img, g, p=1.0, brightness=0.0, contrast=0.0, saturation=0.5, hue=0.3)
    torch.testing.assert_close(out, g_img, rtol=0, atol=1e-5)
    # p = 0 leaves the batch unchanged
    assert torch.equal(A.color_jitter(x, g, p=0.0), x)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(8, 24), preset=st.sampled_from(["photo", "grayscale", "characters"]))
def test_augment_batch_shape_range_and_determinism(seed, size, preset):
    x = toy_images(3, size=20, seed=seed % 1000)
    cfg = A.augment_preset(preset)
    a = A.augment_batch(x, size, torch.Generator().manual_seed(seed), cfg)
    b = A.augment_batch(x, size, torch.Generator().manual_seed(seed), cfg)
    assert a.shape == (3, 3, size, size)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)


def test_choose_augment_detects_grayscale():
    gray = toy_images(4)[:, :1].expand(4, 3, 16, 16).contiguous()
    assert A.choose_augment(gray)[0] == "grayscale"
    assert A.choose_augment(toy_images(4))[0] == "photo"


def test_augment_config_validation():
    with pytest.raises(ValidationError):
        A.AugmentConfig(crop_scale=(0.5, 1.5))
    with pytest.raises(ValidationError):
        A.AugmentConfig(flip=2.0)


# ------------------------------------------------------------------------ adapted backbone
def pil_images(n: int = 12, size: int = 20):
    from PIL import Image

    x = toy_images(n, size=size)
    return [Image.fromarray(x[i].permute(1, 2, 0).numpy()) for i in range(n)]


def _random_lite0_result(images, tmp_path):
    from labelloop.adapt.train import images_to_tensor

    cfg = small_config(image_size=32, trainable_blocks=1, epochs=1, batch_size=4, view_cache=2)
    enc = efficientnet_encoder(trainable_blocks=1, image_size=32, pretrained=False)
    return train_ssl(images_to_tensor(images, 32), cfg, encoder=enc, progress=False)


def test_adapted_backbone_round_trip(tmp_path):
    from labelloop.adapt.backbone import list_adapted_backbones, save_adapted_backbone
    from labelloop.embed import get_backbone
    from labelloop.embed.efficientnet import features, preprocess_images

    images = pil_images()
    res = _random_lite0_result(images, tmp_path)
    bid = save_adapted_backbone(tmp_path, res, data_sha256="d" * 64, n_images=len(images))
    assert bid.startswith("adapted-simclr-") and len(bid) == len("adapted-simclr-") + 8

    folder = tmp_path / "backbones" / bid
    prov = json.loads((folder / "provenance.json").read_text())
    assert (folder / "weights.pt").is_file()
    assert prov["method"] == "simclr" and prov["epochs"] == 1 and prov["image_size"] == 32
    assert prov["base_backbone"] == "efficientnet-lite0" and prov["data_hash"] == "d" * 64
    assert prov["parameters"]["trainable_blocks"] == 1
    assert [p["id"] for p in list_adapted_backbones(tmp_path)] == [bid]

    bb = get_backbone(bid, project_dir=tmp_path)
    assert bb.id == bid and bb.dim == 1280 and bb.cache_id == f"{bid}-32"
    got = bb.embed(images, batch_size=5)
    with torch.inference_mode():
        want = features(res.encoder.net.eval(), preprocess_images(images, 32)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # saving the same weights again gives the same id
    assert save_adapted_backbone(tmp_path, res, data_sha256="d" * 64, n_images=len(images)) == bid


def test_unknown_adapted_backbone_messages(tmp_path):
    from labelloop.embed import get_backbone

    with pytest.raises(ValidationError, match="none yet"):
        get_backbone("adapted-simclr-00000000", project_dir=tmp_path)
    with pytest.raises(ValidationError, match="inside a project"):
        get_backbone("adapted-simclr-00000000")


def test_saving_needs_an_efficientnet_encoder(tmp_path):
    from labelloop.adapt.backbone import save_adapted_backbone

    res = train_ssl(toy_images(16), small_config(epochs=1), encoder=tiny_encoder(), progress=False)
    with pytest.raises(ValidationError, match="EfficientNet"):
        save_adapted_backbone(tmp_path, res, data_sha256="x", n_images=16)


@pytest.mark.slow
def test_adapt_backbone_end_to_end(tmp_path):
    """Packaged ImageNet weights: adapt, save, embed through the registry."""
    from labelloop.adapt.backbone import adapt_backbone
    from labelloop.embed import get_backbone

    images = pil_images(24)
    cfg = AdaptConfig(epochs=2, batch_size=8, image_size=32, view_cache=2, proj_hidden=64, proj_dim=16)
    out = adapt_backbone(images, tmp_path, cfg, progress=False)
    assert out.provenance["n_images"] == 24 and len(out.provenance["loss_history"]) == 2
    assert not any((tmp_path / "backbones" / ".runs").iterdir())  # checkpoints cleaned up
    X = get_backbone(out.backbone_id, project_dir=tmp_path).embed(images)
    assert X.shape == (24, 1280) and np.isfinite(X).all()


# ------------------------------------------------------------------------------- heads
def blobs(n_per: int = 20, c: int = 3, d: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d)) * 5
    X = np.concatenate([centres[k] + rng.normal(size=(n_per, d)) for k in range(c)])
    y = np.repeat(np.arange(c), n_per)
    return X.astype(np.float32), y


def test_prototype_classifier_matches_hand_computation():
    from labelloop.adapt.finetune import PrototypeClassifier

    X = np.array([[1, 0], [0, 2], [3, 0], [1, 1], [5, 5]], dtype=np.float32)
    y = np.array([0, 1, 0, -1, -1])
    clf = PrototypeClassifier(temperature=0.5).fit(X, y)
    mu = np.array([[1.0, 0.0], [0.0, 1.0]])           # class means of the unit vectors
    q = X / np.linalg.norm(X, axis=1, keepdims=True)
    logits = q @ mu.T / 0.5
    ref = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(clf.predict_proba(X), ref, rtol=1e-6)


def test_prototype_classifier_gives_unlabeled_classes_zero_probability():
    from labelloop.adapt.finetune import PrototypeClassifier

    X, y = blobs()
    y = np.where(y == 1, -1, y)
    P = PrototypeClassifier(n_classes=4).fit(X, y).predict_proba(X)
    assert P.shape == (60, 4)
    np.testing.assert_allclose(P.sum(1), 1, rtol=1e-6)
    assert (P[:, 1] == 0).all() and (P[:, 3] == 0).all()
    with pytest.raises(NotReadyError):
        PrototypeClassifier().predict_proba(X)


def test_linear_head_learns_separable_blobs():
    from labelloop.adapt.finetune import LinearHead

    X, y = blobs(seed=3)
    y_few = np.full_like(y, -1)
    y_few[::4] = y[::4]
    head = LinearHead(epochs=200).fit(X, y_few)
    assert head.mixup_alpha_ == 0.2                 # small data: mixup on
    assert (head.predict(X) == y).mean() >= 0.95
    np.testing.assert_allclose(head.predict_proba(X).sum(1), 1, rtol=1e-5)


def test_fit_head_picks_prototypes_for_few_shot():
    from labelloop.adapt.finetune import LinearHead, PrototypeClassifier, fit_head

    X, y = blobs()
    assert isinstance(fit_head(X, np.where(np.arange(60) % 12 == 0, y, -1)), PrototypeClassifier)
    assert isinstance(fit_head(X, y), LinearHead)


def test_package_exports():
    import labelloop.adapt as adapt

    assert sorted(adapt.__all__) == sorted(set(adapt.__all__))
    for name in adapt.__all__:
        assert hasattr(adapt, name), name


def test_choose_schedule_follows_labels_per_class():
    from labelloop.adapt.finetune import choose_schedule

    assert choose_schedule(np.array([0, 1, 1, -1] + [0] * 10)) == "prototype"
    assert choose_schedule(np.repeat([0, 1], 20)) == "linear"
    assert choose_schedule(np.repeat([0, 1], 60)) == "finetune"
    with pytest.raises(ValidationError):
        choose_schedule(np.full(5, -1))


@pytest.mark.parametrize("schedule", ["prototype", "linear", "finetune"])
def test_finetune_classifier_schedules(schedule):
    from labelloop.adapt.finetune import FineTuneClassifier
    from labelloop.embed.efficientnet import load_efficientnet_lite0

    images = pil_images(16, size=24)
    y = np.array([0, 1] * 6 + [-1] * 4)
    torch.manual_seed(0)
    net = load_efficientnet_lite0(pretrained=False, image_size=32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clf = FineTuneClassifier(schedule=schedule, network=net, image_size=32, epochs=2, views=2,
                             batch_size=8).fit(images, y)
    assert clf.schedule_ == schedule
    P = clf.predict_proba(images)
    assert P.shape == (16, 2) and np.isfinite(P).all()
    np.testing.assert_allclose(P.sum(1), 1, rtol=1e-5)
    if schedule == "finetune":
        assert clf.unfreeze_blocks_ == 2 and clf.mixup_alpha_ == 0.2 and len(clf.history_) == 2
    # the caller's network is not modified (the classifier works on a copy)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())

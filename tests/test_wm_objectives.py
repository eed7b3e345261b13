"""World-model transition objectives on a tiny world model built here, against naive references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels.base import ActionEncoder, WorldModel, WorldModelBatch
from worldssl.worldmodels.objectives import (
    OBJECTIVES,
    ContrastiveHinge,
    GenerativeAE,
    GenerativeVAE,
    SelfPredictive,
    TransitionInfoNCE,
    build_objective,
    energy,
    pairwise_energy,
)

OBS = (3, 8, 8)
B, L, N_ACTIONS, K, D = 6, 3, 4, 2, 3


class SlotEncoder(nn.Module):
    """uint8 (B, 3, 8, 8) -> (B, K, D): a 1x1 conv to K maps, a shared MLP per map."""

    def __init__(self):
        super().__init__()
        self.maps = nn.Conv2d(3, K, 1)
        self.mlp = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, D))

    def forward(self, obs):
        return self.mlp(torch.sigmoid(self.maps(obs.float() / 255.0)).flatten(2))


class FlatEncoder(nn.Module):
    """uint8 (B, 3, 8, 8) -> (B, D)."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, D))

    def forward(self, obs):
        return self.mlp(obs.float() / 255.0)


class ResidualMLP(nn.Module):
    """z' = z + MLP([z, a]) over the last dimension (per slot for (B, K, D))."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(D + action_dim, 16), nn.ReLU(), nn.Linear(16, D))

    def forward(self, z, a):
        return z + self.mlp(torch.cat([z, a], dim=-1))


class TinyDecoder(nn.Module):
    """Latent -> (B, 3, 8, 8) with ``logits`` (as the suite's decoders) or without."""

    def __init__(self, latent_size: int):
        super().__init__()
        self.net = nn.Linear(latent_size, 192)

    def logits(self, z):
        return self.net(z.flatten(1)).reshape(-1, *OBS)

    def forward(self, z):
        return torch.sigmoid(self.logits(z))


class ProbDecoder(nn.Module):
    """A decoder with only ``forward`` (probabilities)."""

    def __init__(self, latent_size: int):
        super().__init__()
        self.net = nn.Linear(latent_size, 192)

    def forward(self, z):
        return torch.sigmoid(self.net(z.flatten(1)).reshape(-1, *OBS))


def make_model(slots: bool = True, reward: bool = False, decoder: str | None = None, seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    if slots:
        enc, act = SlotEncoder(), ActionEncoder(True, N_ACTIONS, num_slots=K, mode="copy")
        size = K * D
    else:
        enc, act = FlatEncoder(), ActionEncoder(True, N_ACTIONS)
        size = D
    head = nn.Linear(size + act.out_dim * (K if slots else 1), 1) if reward else None
    dec = {None: None, "logits": TinyDecoder, "prob": ProbDecoder}[decoder]
    return WorldModel(enc, ResidualMLP(act.out_dim), act, reward_head=head, decoder=dec(size) if dec else None)


def make_batch(seed: int = 0, steps: int = L) -> WorldModelBatch:
    gen = torch.Generator().manual_seed(seed)
    return WorldModelBatch(torch.randint(0, 256, (B, steps + 1, *OBS), dtype=torch.uint8, generator=gen),
                           torch.randint(0, N_ACTIONS, (B, steps), generator=gen),
                           torch.randn(B, steps, generator=gen))


def naive_energy(x, y, sigma=0.5):
    """One sample: x, y (D,) or (K, D)."""
    if x.dim() == 1:
        x, y = x[None], y[None]
    total = 0.0
    for k in range(x.shape[0]):
        total += sum(float(x[k, d] - y[k, d]) ** 2 for d in range(x.shape[1]))
    return total / x.shape[0] / (2 * sigma**2)


def grad_norm(module: nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


# ---------------------------------------------------------------- energy


@pytest.mark.parametrize("shape", [(5, 3), (5, 4, 2)])
@pytest.mark.parametrize("sigma", [0.5, 1.3])
def test_energy_matches_loop(shape, sigma):
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    want = torch.tensor([naive_energy(x[i], y[i], sigma) for i in range(shape[0])])
    torch.testing.assert_close(energy(x, y, sigma), want, rtol=1e-5, atol=1e-6)
    y2 = torch.randn(7, *shape[1:], generator=gen)
    pair = pairwise_energy(x, y2, sigma)
    assert pair.shape == (5, 7)
    want = torch.tensor([[naive_energy(x[i], y2[j], sigma) for j in range(7)] for i in range(5)])
    torch.testing.assert_close(pair, want, rtol=1e-4, atol=1e-5)


def test_energy_checks_shapes():
    with pytest.raises(ValueError):
        energy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError):
        pairwise_energy(torch.zeros(2, 3, 2), torch.zeros(2, 2, 2))


# ---------------------------------------------------------------- contrastive hinge


def naive_hinge(model, batch, perm, negatives, target, horizon=1, sigma=0.5, hinge=1.0):
    with torch.no_grad():
        z = [model.encode(batch.obs[:, t]) for t in range(horizon + 1)]
        total = 0.0
        for i in range(B):
            zi = z[0][i:i + 1]
            for k in range(horizon):  # positive: summed over the rolled-out steps
                zi = model.next(zi, batch.actions[i:i + 1, k])
                total += naive_energy(zi[0], z[k + 1][i], sigma) / B
            for k in range(horizon):  # hinge at every step, same permutation
                neg = (z[k] if negatives == "in_batch" else z[k + 1])[perm[i]]
                anchor = (z[k + 1] if target == "paper" else z[k])[i]
                total += max(0.0, hinge - naive_energy(neg, anchor, sigma)) / B
    return total


@pytest.mark.parametrize("negatives,target,horizon,slots",
                         [(n, t, 1, True) for n, t in itertools.product(["in_batch", "time_aligned"],
                                                                       ["paper", "code"])]
                         + [("in_batch", "paper", 2, True), ("time_aligned", "code", 2, False)])
def test_contrastive_hinge_matches_naive(negatives, target, horizon, slots):
    model, batch = make_model(slots=slots), make_batch()
    # a hinge large enough that the negative term is active
    obj = ContrastiveHinge(negatives=negatives, target=target, horizon=horizon, hinge=20.0,
                           generator=torch.Generator().manual_seed(7))
    loss, metrics = obj.loss(model, batch)
    perm = torch.randperm(B, generator=torch.Generator().manual_seed(7))
    want = naive_hinge(model, batch, perm, negatives, target, horizon, hinge=20.0)
    assert math.isclose(loss.item(), want, rel_tol=1e-5)
    assert math.isclose(metrics["wm/loss"], want, rel_tol=1e-5)
    assert {"wm/positive_energy", "wm/negative_energy", "wm/hinge"} <= set(metrics)


def test_contrastive_global_rng_and_paper_default():
    model, batch = make_model(), make_batch()
    obj = ContrastiveHinge()
    torch.manual_seed(3)
    loss, _ = obj.loss(model, batch)
    torch.manual_seed(3)
    perm = torch.randperm(B)
    assert math.isclose(loss.item(), naive_hinge(model, batch, perm, "in_batch", "paper"), rel_tol=1e-5)


# ---------------------------------------------------------------- InfoNCE


def naive_infonce(model, batch, temperature, horizon, distance):
    with torch.no_grad():
        z = [model.encode(batch.obs[:, t]) for t in range(horizon + 1)]
        pred = model.rollout(z[0], batch.actions[:, :horizon])
        total, correct = 0.0, 0
        for k in range(horizon):
            for i in range(B):
                row = []
                for j in range(B):
                    if distance == "energy":
                        row.append(-naive_energy(pred[i, k], z[k + 1][j]) / temperature)
                    else:
                        p, q = pred[i, k].flatten(), z[k + 1][j].flatten()
                        row.append(float(p @ q / (p.norm() * q.norm())) / temperature)
                lse = math.log(sum(math.exp(s) for s in row))
                total += (lse - row[i]) / (B * horizon)
                correct += int(max(range(B), key=lambda j, r=row: r[j]) == i)
    return total, correct / (B * horizon)


@pytest.mark.parametrize("distance,horizon,temperature,slots",
                         [("energy", 1, 1.0, True), ("energy", 2, 0.5, False), ("cosine", 1, 0.1, True),
                          ("cosine", 2, 0.2, False)])
def test_infonce_matches_naive(distance, horizon, temperature, slots):
    model, batch = make_model(slots=slots), make_batch()
    obj = TransitionInfoNCE(temperature=temperature, horizon=horizon, distance=distance)
    loss, metrics = obj.loss(model, batch)
    want, acc = naive_infonce(model, batch, temperature, horizon, distance)
    assert math.isclose(loss.item(), want, rel_tol=1e-4)
    assert math.isclose(metrics["wm/accuracy"], acc, abs_tol=1e-6)


# ---------------------------------------------------------------- generative


def hand_recon(probs_or_logits, frames, kind, logits):
    target = frames.float() / 255.0
    if kind == "mse":
        p = torch.sigmoid(probs_or_logits) if logits else probs_or_logits
        per = (p - target) ** 2
    elif logits:
        x = probs_or_logits  # stable BCE with logits: max(x, 0) - x t + log(1 + exp(-|x|))
        per = x.clamp_min(0) - x * target + torch.log1p(torch.exp(-x.abs()))
    else:
        p = probs_or_logits
        per = -(target * torch.log(p) + (1 - target) * torch.log(1 - p))
    return float(per.flatten(1).sum(1).mean())


@pytest.mark.parametrize("kind,decoder", [("bce", "logits"), ("bce", "prob"), ("mse", "logits")])
@pytest.mark.parametrize("recon_current", [True, False])
def test_generative_ae_recon_by_hand(kind, decoder, recon_current):
    model, batch = make_model(decoder=decoder), make_batch()
    obj = GenerativeAE(loss=kind, recon_current=recon_current, horizon=2)
    loss, metrics = obj.loss(model, batch)
    uses_logits = decoder == "logits"
    out = model.decoder.logits if uses_logits else model.decoder
    with torch.no_grad():
        z0 = model.encode(batch.obs[:, 0])
        z1 = model.next(z0, batch.actions[:, 0])
        z2 = model.next(z1, batch.actions[:, 1])
        want = (hand_recon(out(z1), batch.obs[:, 1], kind, uses_logits)
                + hand_recon(out(z2), batch.obs[:, 2], kind, uses_logits))
        if recon_current:
            want += hand_recon(out(z0), batch.obs[:, 0], kind, uses_logits)
    assert math.isclose(loss.item(), want, rel_tol=1e-5)
    assert math.isclose(metrics["wm/recon"], want, rel_tol=1e-5)
    assert obj.needs_decoder


def test_generative_ae_mean_reduction():
    model, batch = make_model(decoder="logits"), make_batch()
    loss_sum, _ = GenerativeAE(loss="mse", recon_current=False).loss(model, batch)
    loss_mean, _ = GenerativeAE(loss="mse", recon_current=False, reduction="mean").loss(model, batch)
    assert math.isclose(loss_sum.item() / 192, loss_mean.item(), rel_tol=1e-5)


@pytest.mark.parametrize("slots", [True, False])
def test_generative_ae_latent_transition_by_hand(slots):
    """World Models' split: the encoder / decoder learn only from reconstructing o_0, the transition only from
    regressing the detached encodings of o_1 .. o_H from the detached z_0."""
    model, batch = make_model(slots=slots, decoder="logits"), make_batch()
    obj = GenerativeAE(horizon=2, transition_loss="latent")
    loss, metrics = obj.loss(model, batch)
    with torch.no_grad():
        z = [model.encode(batch.obs[:, t]) for t in range(3)]
        p1 = model.next(z[0], batch.actions[:, 0])
        p2 = model.next(p1, batch.actions[:, 1])
        latent = 0.0
        for i in range(B):  # one sample at a time, squared error summed over every latent entry
            latent += (float(((p1[i] - z[1][i]) ** 2).sum()) + float(((p2[i] - z[2][i]) ** 2).sum())) / B
        recon = hand_recon(model.decoder.logits(z[0]), batch.obs[:, 0], "bce", True)
    assert math.isclose(metrics["wm/latent_next"], latent, rel_tol=1e-5)
    assert math.isclose(metrics["wm/recon"], recon, rel_tol=1e-5)
    assert math.isclose(loss.item(), recon + latent, rel_tol=1e-5)
    # the gradients split: the encoder and decoder get exactly the reconstruction's, the transition the latent's
    loss.backward()
    enc_grads = [p.grad.clone() for p in model.encoder.parameters()]
    trans_grad = grad_norm(model.transition)
    assert trans_grad > 0
    model.zero_grad()
    hand = model.decoder.logits(model.encode(batch.obs[:, 0]))
    F_bce = torch.nn.functional.binary_cross_entropy_with_logits
    F_bce(hand, batch.obs[:, 0].float() / 255.0, reduction="none").flatten(1).sum(1).mean().backward()
    for got, want in zip(enc_grads, model.encoder.parameters()):
        torch.testing.assert_close(got, want.grad, rtol=1e-5, atol=1e-6)
    assert grad_norm(model.transition) == 0


def test_generative_latent_transition_needs_recon_current():
    with pytest.raises(ConfigError, match="recon_current"):
        GenerativeAE(transition_loss="latent", recon_current=False)
    with pytest.raises(ConfigError, match="transition_loss"):
        GenerativeVAE(transition_loss="pixels")


def test_generative_vae_latent_transition():
    model, batch = make_model(decoder="logits"), make_batch()
    obj = GenerativeVAE(latent_dim=D, transition_loss="latent", generator=torch.Generator().manual_seed(3))
    loss, metrics = obj.loss(model, batch)
    assert set(metrics) >= {"wm/recon", "wm/kl", "wm/latent_next", "wm/recon_current"}
    assert "wm/recon_next" not in metrics
    assert math.isclose(loss.item(), metrics["wm/recon"] + metrics["wm/kl"] + metrics["wm/latent_next"],
                        rel_tol=1e-5)
    loss.backward()
    assert grad_norm(model.transition) > 0 and grad_norm(obj.logvar_head) > 0


@pytest.mark.parametrize("slots", [True, False])
def test_generative_vae_terms(slots):
    model, batch = make_model(slots=slots, decoder="logits"), make_batch()
    obj = GenerativeVAE(beta=0.7, latent_shape=(K, D) if slots else (D,), generator=torch.Generator().manual_seed(5))
    loss, metrics = obj.loss(model, batch)
    with torch.no_grad():
        mu = model.encode(batch.obs[:, 0])
        logvar = obj.logvar_head(mu)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5))
        z0 = mu + eps * torch.exp(0.5 * logvar)
        z1 = model.next(z0, batch.actions[:, 0])
        recon = (hand_recon(model.decoder.logits(z0), batch.obs[:, 0], "bce", True)
                 + hand_recon(model.decoder.logits(z1), batch.obs[:, 1], "bce", True))
        var = logvar.exp()
        kl = 0.0
        for i in range(B):  # closed form, one sample and one dimension at a time
            for m, v, lv in zip(mu[i].flatten().tolist(), var[i].flatten().tolist(), logvar[i].flatten().tolist()):
                kl += 0.5 * (m * m + v - 1.0 - lv) / B
    assert math.isclose(metrics["wm/kl"], kl, rel_tol=1e-5)
    assert math.isclose(metrics["wm/recon"], recon, rel_tol=1e-5)
    assert math.isclose(loss.item(), recon + 0.7 * kl, rel_tol=1e-5)
    # KL against torch.distributions
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    ref = torch.distributions.kl_divergence(q, p).flatten(1).sum(1).mean()
    assert math.isclose(metrics["wm/kl"], float(ref), rel_tol=1e-5)


def test_generative_vae_reparameterisation():
    model, batch = make_model(decoder="logits"), make_batch()
    obj = GenerativeVAE(beta=0.0, recon_current=False, latent_dim=D)
    loss, _ = obj.loss(model, batch)
    loss.backward()
    # the reconstruction of o_1 from next(z~) reaches both the mean (encoder) and the log-variance head
    assert grad_norm(model.encoder) > 0
    assert grad_norm(obj.logvar_head) > 0
    # sampling is random: two calls differ
    l1, _ = obj.loss(model, batch)
    l2, _ = obj.loss(model, batch)
    assert l1.item() != l2.item()


def test_generative_vae_lazy_head_and_state_dict():
    model, batch = make_model(decoder="logits"), make_batch()
    lazy = GenerativeVAE()
    assert lazy.logvar_head is None
    lazy.loss(model, batch)
    assert lazy.logvar_head.in_features == D
    fresh = GenerativeVAE()
    fresh.load_state_dict(lazy.state_dict())
    torch.testing.assert_close(fresh.logvar_head.weight, lazy.logvar_head.weight)
    attached = GenerativeVAE().attach(model, latent_shape=(K, D))
    assert attached.logvar_head.in_features == D
    with pytest.raises(ConfigError):
        GenerativeVAE(latent_dim=4, latent_shape=(K, D))


# ---------------------------------------------------------------- self-predictive


FIRST_FORM = {"projection_dim": None, "consistency_weight": 0.0}  # latents compared directly (no heads)


def test_selfpredictive_cosine_and_target():
    model, batch = make_model(), make_batch()
    obj = SelfPredictive(loss="cosine", horizon=2, **FIRST_FORM).attach(model)
    loss, metrics = obj.loss(model, batch)
    with torch.no_grad():
        z = model.encode(batch.obs[:, 0])
        want = 0.0
        for k in range(2):
            z = model.next(z, batch.actions[:, k])
            t = obj.target_encoder(batch.obs[:, k + 1])
            for i in range(B):
                p, q = z[i].flatten(), t[i].flatten()
                want += -float(p @ q / (p.norm() * q.norm())) / B
    assert math.isclose(loss.item(), want, rel_tol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in obj.target_encoder.parameters())
    assert all(not p.requires_grad for p in obj.target_encoder.parameters())
    assert grad_norm(model.encoder) > 0 and grad_norm(model.transition) > 0
    assert metrics["wm/cos"] == pytest.approx(-want / 2, rel=1e-5)


def test_selfpredictive_mse_by_hand():
    model, batch = make_model(slots=False), make_batch()
    obj = SelfPredictive(loss="mse", horizon=1, **FIRST_FORM).attach(model)
    loss, _ = obj.loss(model, batch)
    with torch.no_grad():
        p = model.next(model.encode(batch.obs[:, 0]), batch.actions[:, 0])
        t = obj.target_encoder(batch.obs[:, 1])
        want = sum(float(p[i, d] - t[i, d]) ** 2 for i in range(B) for d in range(D)) / (B * D)
    assert math.isclose(loss.item(), want, rel_tol=1e-5)


def test_selfpredictive_update_momentum_exact():
    model, batch = make_model(), make_batch()
    obj = SelfPredictive(momentum=0.9, projection_dim=8, hidden_dim=16, latent_shape=(K, D)).attach(model)
    opt = torch.optim.SGD([*model.parameters(), *obj.parameters()], lr=0.5)
    loss, _ = obj.loss(model, batch)
    loss.backward()
    opt.step()
    old_target = [p.clone() for p in obj.target_encoder.parameters()]
    old_proj = [p.clone() for p in obj.target_projector.parameters()]
    obj.update_momentum(model)

    def ema(old, online):  # the exact EMA, in float64
        return (0.9 * old.double() + 0.1 * online.double()).float()

    # float32 rounding only: two rounded float32 ops (mul, then add) are within ~1 ulp of the exact EMA, and a
    # float32 reference written as 0.9 * old + 0.1 * online rounds differently (observed: 1.0011 is 1 ulp =
    # 1.19e-7 from it, a flat atol=1e-7 is below one ulp for |x| >= 1); so: float64 reference, 1 ulp relative
    tol = {"rtol": torch.finfo(torch.float32).eps, "atol": 1e-7}
    for new, old, online in zip(obj.target_encoder.parameters(), old_target, model.encoder.parameters()):
        assert not torch.equal(old, online)
        torch.testing.assert_close(new, ema(old, online), **tol)
    for new, old, online in zip(obj.target_projector.parameters(), old_proj, obj.projector.parameters()):
        torch.testing.assert_close(new, ema(old, online), **tol)


def test_selfpredictive_state_dict_roundtrip():
    model, batch = make_model(), make_batch()
    obj = SelfPredictive(**FIRST_FORM).attach(model)
    with torch.no_grad():
        for p in obj.target_encoder.parameters():
            p.add_(1.0)
    other = SelfPredictive(**FIRST_FORM).attach(make_model(seed=1))
    other.load_state_dict(obj.state_dict())
    for a, b in zip(obj.target_encoder.parameters(), other.target_encoder.parameters()):
        assert torch.equal(a, b)
    lazy = SelfPredictive(horizon=1)  # loss attaches lazily when attach() was skipped, heads sized by the latent
    lazy.loss(model, batch)
    assert lazy.target_encoder is not None and lazy.projector[0].in_features == K * D
    deferred = SelfPredictive(projection_dim=8, hidden_dim=16)  # heads sized by attach(model, latent_shape)
    assert deferred.projector is None
    deferred.attach(model, (K, D))
    assert deferred.projector is not None and deferred.predictor is not None
    with pytest.raises(ConfigError, match="projection_dim"):
        SelfPredictive(projection_dim=8).attach(model)


# ---------------------------------------------------------------- every objective


def every_objective(horizon: int = 1, reward_weight: float = 0.0):
    """(name, objective, decoder kind) for each registered objective."""
    common = {"horizon": horizon, "reward_weight": reward_weight}
    return [("contrastive", ContrastiveHinge(**common), None),
            ("infonce", TransitionInfoNCE(**common), None),
            ("generative_ae", GenerativeAE(**common), "logits"),
            ("generative_vae", GenerativeVAE(latent_dim=D, **common), "logits"),
            ("selfpredictive", SelfPredictive(projection_dim=8, hidden_dim=16, latent_shape=(K, D), **common), None)]


def test_registry_covers_every_objective():
    assert sorted(OBJECTIVES) == sorted(name for name, _, _ in every_objective())
    assert isinstance(build_objective("contrastive", hinge=2.0), ContrastiveHinge)
    with pytest.raises(ConfigError, match="contrastive"):
        build_objective("nope")
    with pytest.raises(ConfigError):
        build_objective("infonce", nope=1)
    with pytest.raises(ConfigError):
        ContrastiveHinge(negatives="other")


@pytest.mark.parametrize("index", range(5))
def test_objective_trains(index):
    name, obj, decoder = every_objective()[index]
    model, batch = make_model(decoder=decoder), make_batch()
    obj.attach(model, latent_shape=(K, D))
    loss, metrics = obj.loss(model, batch)
    assert math.isfinite(loss.item()) and metrics["wm/loss"] == pytest.approx(loss.item())
    assert all(key.startswith("wm/") for key in metrics)
    loss.backward()
    assert grad_norm(model.encoder) > 0, name
    assert grad_norm(model.transition) > 0, name
    # a few Adam steps on a fixed batch lower the loss (fixed permutation / noise / BN-free model)
    torch.manual_seed(0)
    opt = torch.optim.Adam([*model.parameters(), *obj.parameters()], lr=3e-3)
    first = None
    for _ in range(25):
        torch.manual_seed(1)
        loss, _ = obj.loss(model, batch)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.update_momentum(model)
    torch.manual_seed(1)
    assert obj.loss(model, batch)[0].item() < first, name


@pytest.mark.parametrize("index", range(5))
@pytest.mark.parametrize("horizon", [1, 2])
def test_reward_term_by_hand(index, horizon):
    name, obj, decoder = every_objective(horizon=horizon, reward_weight=0.5)[index]
    _, base, _ = every_objective(horizon=horizon)[index]
    model, batch = make_model(decoder=decoder, reward=True), make_batch()
    obj.attach(model)
    base.attach(model)
    base.load_state_dict(obj.state_dict())  # the same heads (VAE log-variance, SelfPredictive projections)
    torch.manual_seed(2)
    loss, metrics = obj.loss(model, batch)
    torch.manual_seed(2)
    loss0, _ = base.loss(model, batch)
    with torch.no_grad():
        torch.manual_seed(2)
        z = model.encode(batch.obs[:, 0])
        if name == "generative_vae":
            z = z + torch.randn_like(z) * torch.exp(0.5 * obj.logvar_head(z))
        want = 0.0
        for k in range(horizon):  # z_0, then the rolled-out latents
            r = model.reward(z, batch.actions[:, k])
            want += sum((float(r[i]) - float(batch.rewards[i, k])) ** 2 for i in range(B)) / (B * horizon)
            z = model.next(z, batch.actions[:, k])
    assert math.isclose(metrics["wm/reward_loss"], want, rel_tol=1e-5), name
    assert math.isclose(loss.item(), loss0.item() + 0.5 * want, rel_tol=1e-5), name


@pytest.mark.parametrize("index", range(5))
def test_horizon_uses_that_many_steps(index):
    """Horizon 2 depends on frame 2 and action 1; horizon 1 on neither; frames beyond are ignored."""
    name, obj2, decoder = every_objective(horizon=2)[index]
    _, obj1, _ = every_objective(horizon=1)[index]
    model, batch = make_model(decoder=decoder), make_batch()
    obj1.attach(model)
    obj2.attach(model)
    if name == "generative_vae":
        obj1.load_state_dict(obj2.state_dict())
    changed = WorldModelBatch(batch.obs.clone(), batch.actions.clone(), batch.rewards)
    changed.obs[:, 2] = 255 - changed.obs[:, 2]
    changed.actions[:, 1] = (changed.actions[:, 1] + 1) % N_ACTIONS
    changed.obs[:, 3] = 0  # beyond both horizons

    def value(obj, b):
        torch.manual_seed(4)
        return obj.loss(model, b)[0].item()

    assert value(obj1, batch) == pytest.approx(value(obj1, changed), rel=1e-6), name
    assert value(obj2, batch) != pytest.approx(value(obj2, changed), rel=1e-6), name
    with pytest.raises(ValueError):
        every_objective(horizon=4)[index][1].attach(model).loss(model, batch)


@pytest.mark.parametrize("index", range(5))
def test_nonfinite_loss_raises(index):
    _, obj, decoder = every_objective()[index]
    model, batch = make_model(decoder=decoder), make_batch()
    obj.attach(model)
    with torch.no_grad():
        for p in model.transition.parameters():
            p.fill_(float("nan"))
    with pytest.raises(FloatingPointError):
        obj.loss(model, batch)


def test_flat_latents_every_objective():
    model_kw = {"slots": False}
    for name, obj, decoder in [("contrastive", ContrastiveHinge(), None),
                               ("infonce", TransitionInfoNCE(distance="cosine"), None),
                               ("generative_ae", GenerativeAE(loss="mse"), "logits"),
                               ("generative_vae", GenerativeVAE(), "prob"),
                               ("selfpredictive", SelfPredictive(projection_dim=4, hidden_dim=8, latent_dim=D), None)]:
        model = make_model(decoder=decoder, **model_kw)
        obj.attach(model, latent_shape=(D,))
        loss, _ = obj.loss(model, make_batch())
        loss.backward()
        assert math.isfinite(loss.item()) and grad_norm(model.encoder) > 0, name

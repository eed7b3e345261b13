"""World-model families: slot encoder, transitions, decoders, action encoding and the builder."""

from __future__ import annotations

import pytest
import torch

from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels import (
    ActionEncoder,
    FlatDecoder,
    FlatMapEncoder,
    GNNTransition,
    MLPTransition,
    RecurrentTransition,
    SlotDecoder,
    SlotEncoder,
    WorldModel,
    build_world_model,
)

SHAPES = (3, 50, 50)
DISCRETE20 = {"type": "discrete", "n": 20}
BOX2 = {"type": "box", "shape": [2]}
SMALL = {"hidden_dim": 32}


def frames(b: int, shape=SHAPES) -> torch.Tensor:
    return torch.randint(0, 256, (b, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(b))


def discrete_actions(b: int, n: int = 20, steps: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, n, (b,) if steps is None else (b, steps), generator=g)


# ------------------------------------------------------------------------------------------ slot encoder
@pytest.mark.parametrize("size, maps", [("small", (5, 5)), ("medium", (10, 10)), ("large", (50, 50))])
def test_slot_encoder_sizes(size, maps):
    enc = SlotEncoder(SHAPES, num_slots=5, embedding_dim=2, hidden_dim=64, extractor=size)
    x = frames(3)
    assert enc.kind == "slots" and enc.out_shape == (5, 2) and enc.out_dim == 10
    assert enc(x).shape == (3, 5, 2)
    m = enc.object_maps(x)
    assert m.shape == (3, 5, *maps) and m.min() >= 0 and m.max() <= 1
    assert SlotEncoder(SHAPES, **enc.arch_config()).arch_config() == enc.arch_config()


def test_slot_encoder_layers_and_normalisation():
    enc = SlotEncoder(SHAPES, hidden_dim=512)
    first = enc.extractor[0]
    assert (first.kernel_size, first.stride, first.out_channels) == ((10, 10), (10, 10), 32)
    kinds = [type(m).__name__ for m in enc.object_encoder]
    assert kinds == ["Linear", "ReLU", "Linear", "LayerNorm", "ReLU", "Float32Linear"]
    x = torch.full((1, *SHAPES), 255, dtype=torch.uint8)
    assert torch.allclose(enc.normalize(x), torch.ones(1, *SHAPES))
    with pytest.raises(ValueError):
        SlotEncoder(SHAPES, extractor="huge")
    with pytest.raises(ValueError):
        enc(frames(2, (3, 64, 64)))


@pytest.mark.parametrize("cls", [SlotEncoder, FlatMapEncoder])
def test_extractor_xavier_init_is_cswm_code(cls):
    """init=xavier: every extractor conv has zero biases and weights spread like Glorot-uniform (bound
    sqrt(6 / (fan_in + fan_out))), not PyTorch's default (bound 1 / sqrt(fan_in), biases too)."""
    torch.manual_seed(0)
    enc = cls(SHAPES, hidden_dim=512, extractor="large", init="xavier")
    torch.manual_seed(0)
    default = cls(SHAPES, hidden_dim=512, extractor="large")
    convs = [m for m in enc.extractor if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4
    for conv, ref in zip(convs, [m for m in default.extractor if isinstance(m, torch.nn.Conv2d)]):
        fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        bound = (6.0 / (fan_in + fan_out)) ** 0.5
        w = conv.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
        assert torch.count_nonzero(conv.bias) == 0
        assert ref.weight.detach().abs().max() <= 1 / fan_in ** 0.5  # PyTorch's default bound
        assert torch.count_nonzero(ref.bias) > 0
    with pytest.raises(ConfigError, match="init"):
        build_world_model(SHAPES, DISCRETE20, {"kind": "slots", "init": "he"}, "gnn")


def test_medium_extractor_uses_leaky_relu_as_cswm():
    enc = SlotEncoder(SHAPES, extractor="medium")
    assert [type(m).__name__ for m in enc.extractor] == ["Conv2d", "BatchNorm2d", "LeakyReLU", "Conv2d", "Sigmoid"]


def test_flat_map_encoder():
    enc = FlatMapEncoder(SHAPES, num_maps=32, latent_dim=32, hidden_dim=64)
    assert enc.out_shape == (32,) and enc(frames(2)).shape == (2, 32)


# ------------------------------------------------------------------------------------------ actions
def test_action_encoder_per_slot_cswm_layout():
    enc = ActionEncoder(True, 20, num_slots=5, mode="per_slot")
    a = torch.arange(20)
    out = enc(a)
    assert out.shape == (20, 5, 4) and enc.out_dim == 4
    for action in range(20):
        hot = torch.nonzero(out[action])
        assert hot.tolist() == [[action // 4, action % 4]]
    assert out.sum() == 20


def test_action_encoder_other_modes():
    a = torch.tensor([3, 0])
    flat = ActionEncoder(True, 6)(a)
    assert flat.shape == (2, 6) and flat[0, 3] == 1 and flat.sum() == 2
    copy = ActionEncoder(True, 6, num_slots=3, mode="copy")(a)
    assert copy.shape == (2, 3, 6) and torch.equal(copy[:, 1], flat)
    box = ActionEncoder(False, 2, num_slots=3, mode="copy")(torch.randn(4, 2))
    assert box.shape == (4, 3, 2)
    with pytest.raises(ValueError):
        ActionEncoder(True, 6, num_slots=4, mode="per_slot")


# ------------------------------------------------------------------------------------------ GNN
@pytest.mark.parametrize("k", [1, 2, 5])
def test_gnn_factored_equals_naive(k):
    torch.manual_seed(0)
    fast = GNNTransition(3, 4, k, hidden_dim=32)
    naive = GNNTransition(3, 4, k, hidden_dim=32, naive=True)
    naive.load_state_dict(fast.state_dict())
    z = torch.randn(6, k, 3, requires_grad=True)
    a = torch.randn(6, k, 4)
    out_fast, out_naive = fast(z, a), naive(z, a)
    assert out_fast.shape == (6, k, 3)
    assert torch.allclose(out_fast, out_naive, atol=1e-5)
    g_fast, = torch.autograd.grad(out_fast.square().sum(), z)
    g_naive, = torch.autograd.grad(out_naive.square().sum(), z)
    assert torch.allclose(g_fast, g_naive, atol=1e-5)


def test_gnn_has_no_self_loops():
    """K=1: the aggregate is zero. K=3: slot 0 receives f_edge([z_0, z_1]) + f_edge([z_0, z_2]), no [z_0, z_0]."""
    gnn = GNNTransition(2, 0, 1, hidden_dim=16, ignore_action=True)
    assert torch.equal(gnn.aggregate(torch.randn(3, 1, 2)), torch.zeros(3, 1, 16))
    gnn = GNNTransition(2, 0, 3, hidden_dim=16, ignore_action=True)
    z = torch.randn(1, 3, 2)
    expected = gnn.edge_mlp(torch.cat([z[0, 0], z[0, 1]])) + gnn.edge_mlp(torch.cat([z[0, 0], z[0, 2]]))
    for aggregate in (gnn.aggregate, gnn.aggregate_naive):
        assert torch.allclose(aggregate(z)[0, 0], expected, atol=1e-5)


@pytest.mark.parametrize("naive", [False, True])
def test_gnn_permutation_equivariant(naive):
    torch.manual_seed(1)
    gnn = GNNTransition(2, 4, 5, hidden_dim=32, naive=naive)
    z, a = torch.randn(4, 5, 2), torch.randn(4, 5, 4)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.allclose(gnn(z, a)[:, perm], gnn(z[:, perm], a[:, perm]), atol=1e-5)


def test_gnn_action_options():
    z = torch.randn(2, 3, 2)
    copy = GNNTransition(2, 6, 3, hidden_dim=16, copy_action=True)
    assert copy(z, torch.randn(2, 6)).shape == (2, 3, 2)
    ignore = GNNTransition(2, 6, 3, hidden_dim=16, ignore_action=True)
    assert torch.equal(ignore(z, torch.randn(2, 3, 6)), ignore(z, torch.randn(2, 3, 6)))
    with pytest.raises(ValueError):
        GNNTransition(2, 6, 3, hidden_dim=16)(z, torch.randn(2, 6))


# ------------------------------------------------------------------------------------------ MLP / recurrent
def test_mlp_transition_flat_and_slots():
    t = MLPTransition(10, 3, hidden_dim=16)
    z = torch.randn(4, 10)
    assert t(z, torch.randn(4, 3)).shape == (4, 10)
    slots = MLPTransition(10, 20, hidden_dim=16)  # K*D = 5*2, per-slot actions flattened: 5*4
    assert slots(torch.randn(4, 5, 2), torch.randn(4, 5, 4)).shape == (4, 5, 2)
    plain = MLPTransition(10, 3, hidden_dim=16, residual=False)
    plain.load_state_dict(t.state_dict())
    a = torch.randn(4, 3)
    assert torch.allclose(t(z, a) - z, plain(z, a), atol=1e-6)


def test_recurrent_deterministic():
    t = RecurrentTransition(12, 3, hidden_dim=16)
    z = torch.tanh(torch.randn(4, 12))
    out = t(z, torch.randn(4, 3))
    assert out.shape == (4, 12) and out.abs().max() < 1
    with pytest.raises(RuntimeError):
        t.prior(z)


def test_recurrent_stochastic():
    torch.manual_seed(0)
    t = RecurrentTransition(12, 3, hidden_dim=16, stochastic_dim=4)
    assert (t.deterministic_dim, t.stochastic_dim) == (8, 4)
    z, a = torch.randn(5, 12), torch.randn(5, 3)
    h, s = t.split(z)
    mean, std = t.prior(h)
    assert mean.shape == std.shape == (5, 4) and (std >= t.min_std).all()
    t.eval()
    out = t(z, a)
    h_next = out[:, :8]
    assert torch.allclose(out[:, 8:], t.prior(h_next)[0]) and torch.equal(out, t(z, a))  # eval: the prior mean
    t.train()
    assert not torch.equal(t(z, a), t(z, a))  # training: reparameterised samples
    torch.manual_seed(3)
    first = t(z, a)
    torch.manual_seed(3)
    assert torch.equal(first, t(z, a))


# ------------------------------------------------------------------------------------------ decoders
@pytest.mark.parametrize("shape", [(3, 50, 50), (3, 64, 64), (9, 84, 84), (1, 40, 60)])
def test_flat_decoder(shape):
    dec = FlatDecoder(16, shape, hidden_dim=32, channels=8)
    z = torch.randn(2, 16)
    out = dec(z)
    assert out.shape == (2, *shape) and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(torch.sigmoid(dec.logits(z)), out)


def test_slot_decoder():
    dec = SlotDecoder(5, 2, SHAPES, hidden_dim=32, channels=8)
    out = dec(torch.randn(3, 5, 2))
    assert out.shape == (3, *SHAPES) and out.min() >= 0 and out.max() <= 1
    assert dec.logits(torch.randn(3, 5, 2)).shape == (3, *SHAPES)
    with pytest.raises(ValueError):
        dec(torch.randn(3, 4, 2))


# ------------------------------------------------------------------------------------------ whole models
CASES = {
    "cswm": (SHAPES, DISCRETE20, {"kind": "slots", "size": "small", "hidden_dim": 32}, "gnn", SMALL, (5, 2)),
    "cswm_medium_copy": (SHAPES, DISCRETE20, {"kind": "slots", "size": "medium", "num_slots": 3,
                                              "embedding_dim": 4, "hidden_dim": 32}, "gnn",
                         {"hidden_dim": 32, "action_mode": "copy"}, (3, 4)),
    "cswm_no_gnn": (SHAPES, DISCRETE20, {"kind": "slots", "hidden_dim": 32}, "mlp", SMALL, (5, 2)),
    "ae_baseline": (SHAPES, DISCRETE20, {"kind": "cswm_flat", "hidden_dim": 32}, "mlp", SMALL, (32,)),
    "conv64_mlp": ((3, 64, 64), BOX2, {"kind": "conv", "num_layers": 2, "num_filters": 8}, "mlp", SMALL, (50,)),
    "conv64_gru": ((3, 64, 64), BOX2, "conv", "recurrent", {"hidden_dim": 16}, (50,)),
    "conv64_rssm": ((3, 64, 64), DISCRETE20, {"kind": "conv", "num_layers": 2, "num_filters": 8}, "recurrent",
                    {"hidden_dim": 16, "stochastic_dim": 6, "deterministic_dim": 10}, (16,)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_world_model_families(name):
    obs_shape, space, encoder, transition, latent, latent_shape = CASES[name]
    model = build_world_model(obs_shape, space, encoder, transition, latent, objective_needs_decoder=True,
                              reward=True)
    assert isinstance(model, WorldModel)
    b, steps = 3, 4
    obs = frames(b, obs_shape)
    actions = discrete_actions(b, steps=steps) if space["type"] == "discrete" else torch.randn(b, steps, 2)
    z = model.encode(obs)
    assert z.shape == (b, *latent_shape)
    assert model.next(z, actions[:, 0]).shape == z.shape
    assert model.reward(z, actions[:, 0]).shape == (b,)
    recon = model.decode(z)
    assert recon.shape == (b, *obs_shape) and recon.min() >= 0 and recon.max() <= 1
    model.eval()  # recurrent stochastic latents are sampled in training mode
    with torch.no_grad():
        z = model.encode(obs)
        rolled = model.rollout(z, actions)
        assert rolled.shape == (b, steps, *latent_shape)
        for t in range(steps):
            z = model.next(z, actions[:, t])
            assert torch.allclose(rolled[:, t], z)


def test_world_model_gradients_reach_everything():
    model = build_world_model(SHAPES, DISCRETE20, {"kind": "slots", "hidden_dim": 32}, "gnn", SMALL,
                              objective_needs_decoder=True, reward=True)
    obs, a = frames(4), discrete_actions(4)
    z = model.encode(obs)
    loss = model.next(z, a).square().sum() + model.reward(z, a).sum() + model.decode(z).sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_build_uses_checkpoint_encoder(tmp_path):
    from worldssl import encoders

    enc = encoders.build("conv", (3, 64, 64), num_layers=2, num_filters=8, feature_dim=12)
    encoders.save(enc, tmp_path / "enc")
    model = build_world_model((3, 64, 64), BOX2, {"checkpoint": str(tmp_path / "enc"), "freeze": True}, "mlp",
                              SMALL)
    assert model.encoder.frozen and model.transition.latent_dim == 12
    x = frames(2, (3, 64, 64))
    assert torch.equal(model.encode(x), enc.eval()(x))


@pytest.mark.parametrize("encoder, transition, space, latent, match", [
    ("conv", "gnn", DISCRETE20, {}, "slot latents"),
    ({"kind": "slots", "num_slots": 4}, "gnn", {"type": "discrete", "n": 6}, {"action_mode": "per_slot"}, "divisible"),
    ("slots", "gnn", BOX2, {"action_mode": "per_slot"}, "divisible"),
    ("slots", "gnn", DISCRETE20, {"action_mode": "sideways"}, "action_mode"),
    ("slots", "recurrent", DISCRETE20, {}, "flat latents"),
    ("slots", "transformer", DISCRETE20, {}, "unknown transition"),
    ("slots", "mlp", DISCRETE20, {"stochastic_dim": 3}, "no latent option"),
    ({"kind": "slots", "size": "huge"}, "gnn", DISCRETE20, {}, "size"),
    ({"kind": "slots", "colour": 1}, "gnn", DISCRETE20, {}, "cannot build"),
    ({"kind": "nope"}, "mlp", DISCRETE20, {}, "unknown encoder kind"),
    ("nope", "mlp", DISCRETE20, {}, "unknown encoder"),
    ("slots", "gnn", {"type": "multibinary"}, {}, "action_space"),
    ("slots", "gnn", {"type": "discrete", "n": 0}, {}, "n >= 1"),
    ("conv", "recurrent", BOX2, {"stochastic_dim": -1}, "stochastic_dim"),
])
def test_build_errors(encoder, transition, space, latent, match):
    obs_shape = SHAPES if encoder != "conv" else (3, 64, 64)
    with pytest.raises(ConfigError, match=match):
        build_world_model(obs_shape, space, encoder, transition, latent)


def test_build_sizes_follow_the_encoder():
    model = build_world_model(SHAPES, DISCRETE20, {"kind": "slots", "num_slots": 4, "embedding_dim": 3,
                                                   "hidden_dim": 32}, "gnn", {"hidden_dim": 16, "action_mode": "copy"})
    t = model.transition
    assert (t.num_slots, t.embedding_dim, t.action_dim, t.copy_action) == (4, 3, 20, True)
    assert model.reward_head is None and model.decoder is None
    with pytest.raises(RuntimeError):
        model.decode(torch.zeros(1, 4, 3))


def test_gnn_default_action_mode_falls_back_to_copy():
    """Discrete actions that cannot be split over the slots (a 4-action maze, 5 slots) are copied to every slot."""
    model = build_world_model(SHAPES, {"type": "discrete", "n": 4}, "slots", "gnn", SMALL)
    assert model.action_encoder.mode == "copy"
    assert build_world_model(SHAPES, DISCRETE20, "slots", "gnn", SMALL).action_encoder.mode == "per_slot"


def test_latents_stay_float32_under_bf16_autocast():
    """Latents and deltas come out of Float32Linear layers: bf16 rounding of latents broke a Shapes run."""
    model = build_world_model(SHAPES, DISCRETE20, "slots", "gnn", SMALL)
    x = frames(3, SHAPES)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = model.encode(x)
        z_next = model.next(z, torch.tensor([0, 5, 19]))
    assert z.dtype == z_next.dtype == torch.float32
    with torch.no_grad():
        assert torch.allclose(z, model.encode(x), atol=0.05)

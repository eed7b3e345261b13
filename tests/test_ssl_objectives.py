"""SSL objectives on tiny encoders, and the batched augmentations they use."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worldssl.data.augment import Augment, color_jitter, random_resized_crop, random_shift
from worldssl.encoders.base import Encoder
from worldssl.runtime.errors import ConfigError
from worldssl.ssl import MAE, OBJECTIVES, SSLBatch, build, update_momentum
from worldssl.ssl.losses import info_nce_logits

OBS = (6, 32, 32)  # two stacked RGB frames
B = 8
L = 4


class TinyConv(Encoder):
    kind = "tiny_conv"

    def __init__(self, obs_shape=OBS, width: int = 8):
        super().__init__(obs_shape)
        self.net = nn.Sequential(nn.Conv2d(obs_shape[0], width, 3, stride=2), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, stride=2), nn.ReLU(), nn.Flatten())
        self.width = width
        self.finish_init()

    def forward_features(self, x):
        return self.net(x)

    def arch_config(self):
        return {"obs_shape": list(self.obs_shape), "width": self.width}


class TinyViT(Encoder):
    """The shape of worldssl's ViTEncoder that MAE relies on: a timm VisionTransformer as ``.vit``."""

    kind = "tiny_vit"

    def __init__(self, obs_shape=OBS, patch_size: int = 8, embed_dim: int = 32, depth: int = 2, num_heads: int = 2,
                 **vit_kwargs):
        super().__init__(obs_shape)
        from timm.models.vision_transformer import VisionTransformer

        self.cfg = {"obs_shape": list(obs_shape), "patch_size": patch_size, "embed_dim": embed_dim,
                    "depth": depth, "num_heads": num_heads, **vit_kwargs}
        self.vit = VisionTransformer(img_size=obs_shape[1], patch_size=patch_size, in_chans=obs_shape[0],
                                     embed_dim=embed_dim, depth=depth, num_heads=num_heads, num_classes=0,
                                     **vit_kwargs)
        self.finish_init()

    def forward_features(self, x):
        return self.vit(x)

    def arch_config(self):
        return dict(self.cfg)


def tiny_vit_encoder(**kw) -> TinyViT:
    return TinyViT(**kw)


def frames(gen, shape=(B, *OBS)):
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)


def make_batch(kind: str, seed: int = 0, discrete: bool = True) -> SSLBatch:
    gen = torch.Generator().manual_seed(seed)
    if kind == "frames":
        return SSLBatch(frames(gen))
    if kind == "pairs":
        obs = frames(gen)
        # a "later frame": the same image slightly moved, plus noise
        positive = (obs.roll(2, dims=-1).int() + torch.randint(-8, 9, obs.shape, generator=gen)).clamp(0, 255)
        return SSLBatch(obs, positive=positive.to(torch.uint8))
    obs = frames(gen, (B, L + 1, *OBS))
    acts = torch.randint(0, 4, (B, L), generator=gen) if discrete else torch.randn(B, L, 2, generator=gen)
    return SSLBatch(obs, actions=acts)


# name, kwargs, expected batch_kind, has a momentum target
CASES = {
    "moco_v2": ("moco", {"queue_size": 256}, "frames", True),
    "moco_v2_temporal": ("moco", {"positive": "temporal", "queue_size": 256}, "pairs", True),
    "moco_v2_sym": ("moco", {"symmetric": True, "queue_size": 256}, "frames", True),
    "moco_v3": ("moco", {"version": 3}, "frames", True),
    "moco_v3_temporal": ("moco", {"version": 3, "positive": "temporal"}, "pairs", True),
    "simclr": ("simclr", {}, "frames", False),
    "simclr_temporal": ("simclr", {"positive": "temporal"}, "pairs", False),
    "byol": ("byol", {}, "frames", True),
    "byol_temporal": ("byol", {"positive": "temporal"}, "pairs", True),
    "mae": ("mae", {}, "frames", False),
    "cpc": ("cpc", {}, "sequences", False),
    "cpc_discrete_actions": ("cpc", {"action_conditioned": True, "action_dim": 4, "discrete": True}, "sequences",
                             False),
    "cpc_continuous_actions": ("cpc", {"action_conditioned": True, "action_dim": 2}, "sequences", False),
}
SMALL_HEADS = {"moco": {"hidden_dim": 64, "proj_dim": 32}, "simclr": {"hidden_dim": 64, "proj_dim": 32},
               "byol": {"hidden_dim": 64, "proj_dim": 32}, "mae": {"decoder_dim": 32, "decoder_heads": 2},
               "cpc": {"latent_dim": 32, "context_dim": 32}}


def make_objective(case: str, seed: int = 0):
    name, kwargs, _, _ = CASES[case]
    torch.manual_seed(seed)
    encoder = TinyViT() if name == "mae" else TinyConv()
    return build(name, encoder, **SMALL_HEADS[name], **kwargs)


def batch_for(case: str, seed: int = 0) -> SSLBatch:
    kind = CASES[case][2]
    return make_batch(kind, seed, discrete=CASES[case][1].get("discrete", False))


@pytest.mark.parametrize("case", list(CASES))
def test_loss_is_finite_scalar_with_encoder_gradients(case):
    obj = make_objective(case)
    assert obj.batch_kind == CASES[case][2]
    loss, metrics = obj.loss(batch_for(case))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert metrics["ssl/loss"] == pytest.approx(loss.item())
    assert all(k.startswith("ssl/") and isinstance(v, float) for k, v in metrics.items())
    loss.backward()
    grads = [p.grad for p in obj.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    targets = [m for n, m in obj.named_children() if n.startswith("target_")]
    assert all(p.grad is None for t in targets for p in t.parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_update_momentum_is_exact_ema(case):
    obj = make_objective(case)
    has_target = CASES[case][3]
    with torch.no_grad():  # move the online weights away from the target
        for p in obj.encoder.parameters():
            p.add_(torch.randn_like(p))
    before = copy.deepcopy(obj.state_dict())
    obj.update_momentum()
    after = obj.state_dict()
    if not has_target:
        assert all(torch.equal(before[k], after[k]) for k in before)
        return
    m = obj.momentum
    for name, online in [("encoder", obj.encoder), ("projector", obj.projector)]:
        for pname, p in online.named_parameters():
            old = before[f"target_{name}.{pname}"]
            torch.testing.assert_close(after[f"target_{name}.{pname}"], m * old + (1 - m) * p.detach())
        for bname, buf in online.named_buffers():
            torch.testing.assert_close(after[f"target_{name}.{bname}"], buf)


def test_update_momentum_function():
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    w_t, w_o = target.weight.detach().clone(), online.weight.detach().clone()
    update_momentum(online, target, 0.9)
    torch.testing.assert_close(target.weight, 0.9 * w_t + 0.1 * w_o)
    update_momentum(online, target, 0.0)
    torch.testing.assert_close(target.weight, online.weight)
    with pytest.raises(ValueError):
        update_momentum(online, target, 1.5)


def _eval_loss(obj, batch, queue=None) -> float:
    torch.manual_seed(123)  # the same augmentations / masks as the training steps
    if queue is not None:  # score against the initial negatives, not the batch's own enqueued keys
        obj.queue.copy_(queue)
    with torch.no_grad():
        return obj.loss(batch)[0].item()


@pytest.mark.parametrize("case", list(CASES))
def test_few_steps_lower_the_loss(case):
    obj = make_objective(case)
    batch = batch_for(case)
    queue = obj.queue.clone() if getattr(obj, "queue", None) is not None else None
    opt = torch.optim.Adam([p for p in obj.parameters() if p.requires_grad], lr=1e-3)
    start = _eval_loss(obj, batch, queue)
    for _ in range(10):
        torch.manual_seed(123)
        if queue is not None:  # a fixed batch would otherwise fill the queue with its own positives
            obj.queue.copy_(queue)
        loss, _ = obj.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.update_momentum()
    assert _eval_loss(obj, batch, queue) < start


# -- MoCo specifics ----------------------------------------------------------------------------------------
def test_moco_queue_enqueue_and_wraparound():
    obj = make_objective("moco_v2")
    size = len(obj.queue)
    keys = torch.randn(B, obj.queue.shape[1])
    obj.queue_ptr.fill_(size - 3)
    obj.enqueue(keys)
    unit = F.normalize(keys, dim=1)
    torch.testing.assert_close(obj.queue[size - 3:], unit[:3])
    torch.testing.assert_close(obj.queue[: B - 3], unit[3:])
    assert int(obj.queue_ptr) == B - 3


def test_moco_enqueues_in_training_only():
    obj = make_objective("moco_v2")
    batch = batch_for("moco_v2")
    obj.loss(batch)
    assert int(obj.queue_ptr) == B
    with torch.no_grad():
        obj.loss(batch)
    obj.eval()
    obj.loss(batch)
    assert int(obj.queue_ptr) == B


def test_moco_queue_matches_lightly_memory_bank():
    """After a training step, the queue holds the normalised keys where lightly's memory bank puts them."""
    lightly_loss = pytest.importorskip("lightly.loss")
    obj = make_objective("moco_v2")
    d, size = obj.queue.shape[1], len(obj.queue)
    crit = lightly_loss.NTXentLoss(temperature=obj.temperature, memory_bank_size=(size, d))
    crit.memory_bank.bank.copy_(obj.queue)
    crit.memory_bank.bank_ptr.zero_()
    for _ in range(2):  # size is a multiple of B: both wrap the same way
        q, k = torch.randn(B, d, requires_grad=True), torch.randn(B, d)
        ref = crit(q, k)
        logits, labels = info_nce_logits(q, k, obj.queue, obj.temperature)
        torch.testing.assert_close(F.cross_entropy(logits, labels), ref, rtol=1e-5, atol=1e-6)
        obj.enqueue(k)
        torch.testing.assert_close(obj.queue, crit.memory_bank.bank)


def test_moco_defaults():
    v2, v3 = make_objective("moco_v2"), make_objective("moco_v3")
    assert (v2.temperature, v3.temperature) == (0.2, 1.0)
    assert v2.momentum == v3.momentum == 0.99
    assert OBJECTIVES["moco"](TinyConv()).queue.shape[0] == 4096
    assert v3.queue is None and v3.symmetric


# -- MAE specifics -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask_ratio", [0.75, 0.5])
def test_mae_encoder_sees_only_visible_patches(mask_ratio):
    torch.manual_seed(0)
    enc = TinyViT(obs_shape=(9, 64, 64), patch_size=8, embed_dim=192, depth=2, num_heads=3)
    mae = MAE(enc, mask_ratio=mask_ratio, decoder_dim=32, decoder_heads=2)
    seen = []
    enc.vit.blocks[0].register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    imgs = enc.normalize(frames(torch.Generator().manual_seed(1), (4, 9, 64, 64)))
    latent, mask, ids_restore = mae.forward_encoder(imgs, mask_ratio)
    num_patches = 64
    keep = int(num_patches * (1 - mask_ratio))
    assert seen == [(4, 1 + keep, 192)]  # cls token + visible patches only
    assert latent.shape == (4, 1 + keep, 192)
    assert mask.shape == (4, num_patches) and torch.all(mask.sum(1) == num_patches - keep)
    assert float(mask.mean()) == pytest.approx(mask_ratio)
    assert not torch.equal(mask[0], mask[1])  # per-sample masks
    pred = mae.forward_decoder(latent, ids_restore)
    assert pred.shape == (4, num_patches, 8 * 8 * 9)
    loss = mae.forward_loss(imgs, pred, mask)
    assert torch.isfinite(loss)
    with pytest.raises(FloatingPointError):
        mae.forward_loss(imgs, torch.full_like(pred, float("nan")), mask)


@pytest.mark.parametrize("vit_kwargs", [{"reg_tokens": 2}, {"no_embed_class": True}, {"class_token": False,
                                                                                      "global_pool": "avg"}])
def test_mae_handles_timm_prefix_token_variants(vit_kwargs):
    torch.manual_seed(0)
    enc = TinyViT(**vit_kwargs)
    mae = MAE(enc, decoder_dim=32, decoder_heads=2)
    latent, mask, ids_restore = mae.forward_encoder(enc.normalize(make_batch("frames").obs), 0.75)
    assert latent.shape[1] == enc.vit.num_prefix_tokens + 4
    loss, _ = mae.loss(make_batch("frames"))
    loss.backward()
    assert torch.isfinite(loss) and enc.vit.patch_embed.proj.weight.grad is not None


def test_mae_augment_from_a_config_mapping_crops_its_input():
    from worldssl.data.augment import Augment

    mae = MAE(TinyViT(), decoder_dim=32, decoder_heads=2, augment={"shift": False, "crop": True,
                                                                   "crop_scale": [0.35, 1.0]})
    assert isinstance(mae.augment, Augment) and mae.augment.crop and not mae.augment.shift
    assert mae.augment.crop_scale == (0.35, 1.0)
    seen = []
    mae.encoder.vit.patch_embed.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    batch = make_batch("frames")
    torch.manual_seed(0)
    mae.loss(batch)
    assert not torch.equal(seen[0], mae.encoder.normalize(batch.obs))  # the crop changed the pixels


def test_mae_config_sets_its_own_optimiser_recipe():
    """ssl=mae brings MAE's lr / weight decay; a command-line value still wins."""
    from hydra import compose, initialize_config_module

    with initialize_config_module("configs", version_base=None):
        mae = compose("pretrain", overrides=["ssl=mae", "data=x"])
        mine = compose("pretrain", overrides=["ssl=mae", "data=x", "lr=1e-3"])
        moco = compose("pretrain", overrides=["ssl=moco", "data=x"])
    assert (mae.lr, mae.weight_decay, mae.backbone.kind) == (3e-4, 0.05, "vit")
    assert mae.ssl.kwargs.augment.crop and mine.lr == 1e-3
    assert (moco.lr, moco.weight_decay) == (1e-3, 0.0)


def test_mae_restore_puts_visible_tokens_back_in_place():
    torch.manual_seed(0)
    mae = MAE(TinyViT(), decoder_dim=32, decoder_heads=2)
    x = torch.arange(16.0).view(1, 16, 1).expand(3, 16, 2).contiguous()
    kept, mask, ids_restore = mae.random_masking(x, 0.75)
    assert kept.shape == (3, 4, 2)
    for n in range(3):  # the kept tokens are exactly the unmasked positions
        assert sorted(kept[n, :, 0].long().tolist()) == torch.nonzero(mask[n] == 0).flatten().tolist()
    shuffled = torch.cat([kept, torch.full((3, 12, 2), -1.0)], dim=1)
    restored = shuffled.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, 2))
    torch.testing.assert_close(restored[mask == 0], x[mask == 0])


def test_mae_patchify_matches_lightly():
    lightly_utils = pytest.importorskip("lightly.models.utils")
    mae = MAE(TinyViT(), decoder_dim=32, decoder_heads=2)
    imgs = torch.randn(2, *OBS)
    torch.testing.assert_close(mae.patchify(imgs), lightly_utils.patchify(imgs, mae.patch_size))
    torch.testing.assert_close(mae.unpatchify(mae.patchify(imgs)), imgs)


def test_mae_needs_a_vit():
    with pytest.raises(TypeError):
        MAE(TinyConv())


def test_mae_on_the_project_vit_encoder():
    encoders = pytest.importorskip("worldssl.encoders")
    if not hasattr(encoders, "ViTEncoder"):
        pytest.skip("worldssl.encoders.ViTEncoder not available yet")
    try:
        enc = encoders.ViTEncoder(obs_shape=OBS)
    except TypeError as e:
        pytest.skip(f"ViTEncoder signature differs: {e}")
    loss, metrics = MAE(enc, decoder_dim=32, decoder_heads=2).loss(make_batch("frames"))
    loss.backward()
    assert torch.isfinite(loss) and metrics["ssl/mask_ratio"] == pytest.approx(0.75, abs=0.05)


# -- CPC specifics -----------------------------------------------------------------------------------------
def test_cpc_action_conditioning_uses_the_actions():
    for case, other in [("cpc_discrete_actions", lambda a: (a + 1) % 4),
                        ("cpc_continuous_actions", lambda a: a + 1.0)]:
        obj = make_objective(case).eval()
        batch = batch_for(case)
        with torch.no_grad():
            l1 = obj.loss(batch)[0]
            l2 = obj.loss(batch._replace(actions=other(batch.actions)))[0]
        assert not torch.allclose(l1, l2)


def test_cpc_predict_window_is_a_t_to_a_t_plus_k_minus_1():
    obj = make_objective("cpc_continuous_actions")
    acts = torch.arange(B * L * 2, dtype=torch.float).view(B, L, 2)
    window = acts.unfold(1, 2, 1).transpose(2, 3).flatten(2)  # what predict builds for k=2
    assert window.shape == (B, L - 1, 4)
    torch.testing.assert_close(window[:, 1], torch.cat([acts[:, 1], acts[:, 2]], dim=1))
    assert obj.predict(torch.zeros(B, L + 1, 32), 2, obj.action_features(acts)).shape == (B, L - 1, 32)


def test_cpc_rejects_bad_batches():
    obj = make_objective("cpc_discrete_actions")
    batch = batch_for("cpc_discrete_actions")
    with pytest.raises(ValueError):
        obj.loss(batch._replace(actions=None))
    with pytest.raises(ValueError):
        obj.loss(SSLBatch(batch.obs[:, :3], actions=batch.actions[:, :2]))  # L=2 < steps=3
    with pytest.raises(ValueError):
        make_objective("cpc").loss(make_batch("frames"))
    with pytest.raises(ValueError):
        build("cpc", TinyConv(), action_conditioned=True)


# -- registry ----------------------------------------------------------------------------------------------
def test_build_unknown_objective_lists_valid_names():
    with pytest.raises(ConfigError, match="byol, cpc, mae, moco, simclr"):
        build("swav", TinyConv())
    assert set(OBJECTIVES) == {"moco", "mae", "cpc", "simclr", "byol"}


def test_pairs_objective_needs_a_positive():
    with pytest.raises(ValueError, match="positive"):
        make_objective("moco_v2_temporal").loss(make_batch("frames"))


def test_objectives_on_real_dataset_batches(shapes_dataset):
    from worldssl.data import EpisodeDataset

    ds = EpisodeDataset(shapes_dataset)
    rng = np.random.default_rng(0)
    tr = ds.sample_transitions(4, k=2, rng=rng)
    obs, nxt = torch.from_numpy(tr.obs), torch.from_numpy(tr.next_obs)
    moco = build("moco", TinyConv(tuple(obs.shape[1:])), positive="temporal", queue_size=64, hidden_dim=32)
    assert torch.isfinite(moco.loss(SSLBatch(obs, positive=nxt))[0])
    seq = ds.sample_sequences(4, 3, rng=rng)
    actions = torch.from_numpy(seq.actions)
    discrete = not actions.is_floating_point()
    action_dim = int(actions.max()) + 1 if discrete else int(actions[0, 0].numel())
    cpc = build("cpc", TinyConv(tuple(seq.obs.shape[2:])), action_conditioned=True, action_dim=action_dim,
                discrete=discrete, latent_dim=16, context_dim=16)
    assert torch.isfinite(cpc.loss(SSLBatch(torch.from_numpy(seq.obs), actions=actions))[0])


# -- augmentations -----------------------------------------------------------------------------------------
AUGS = {
    "shift": lambda x, g: random_shift(x, 4, generator=g),
    "crop": lambda x, g: random_resized_crop(x, (0.5, 1.0), generator=g),
    "jitter": lambda x, g: color_jitter(x, 0.4, 0.4, 0.4, p=1.0, generator=g),
    "all": lambda x, g: Augment(shift=True, crop=True, jitter=True)(x, generator=g),
}


@pytest.mark.parametrize("aug", list(AUGS))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_keeps_shape_and_dtype(aug, dtype):
    x = frames(torch.Generator().manual_seed(0))
    x = x if dtype == torch.uint8 else x.float() / 255
    out = AUGS[aug](x, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype
    if dtype == torch.float32:
        assert out.min() >= 0 and out.max() <= 1


def test_shift_is_a_crop_of_the_replicate_padded_image():
    pad = 3
    x = frames(torch.Generator().manual_seed(0), (6, 6, 16, 16))
    out = random_shift(x, pad, generator=torch.Generator().manual_seed(2))
    padded = F.pad(x.float(), (pad,) * 4, mode="replicate").to(torch.uint8)
    offsets = []
    for b in range(len(x)):  # naive: find the per-sample offset whose crop equals the output
        hits = [(dy, dx) for dy, dx in itertools.product(range(2 * pad + 1), repeat=2)
                if torch.equal(padded[b, :, dy:dy + 16, dx:dx + 16], out[b])]
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # offsets are drawn per sample


@pytest.mark.parametrize("aug", list(AUGS))
@pytest.mark.parametrize("channels", [3, 1])
def test_same_augmentation_for_every_frame_of_a_stack(aug, channels):
    frame = frames(torch.Generator().manual_seed(0), (B, channels, 32, 32))
    stack = frame.repeat(1, 3, 1, 1)  # three identical frames
    out = AUGS[aug](stack, torch.Generator().manual_seed(3))
    for f in (1, 2):
        assert torch.equal(out[:, :channels], out[:, f * channels:(f + 1) * channels])
    assert not torch.equal(out, stack)


@pytest.mark.parametrize("aug", list(AUGS))
def test_augment_is_deterministic_under_a_seed(aug):
    x = frames(torch.Generator().manual_seed(0))
    a = AUGS[aug](x, torch.Generator().manual_seed(7))
    b = AUGS[aug](x, torch.Generator().manual_seed(7))
    c = AUGS[aug](x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = AUGS[aug](x, None)
    torch.manual_seed(5)
    assert torch.equal(d, AUGS[aug](x, None))


def test_full_scale_crop_is_identity_and_jitter_factors():
    x = torch.rand(4, 6, 16, 16)
    torch.testing.assert_close(random_resized_crop(x, (1.0, 1.0), (1.0, 1.0)), x)
    assert torch.equal(color_jitter(x, p=0.0), x)
    small = 0.1 + 0.5 * x
    out = color_jitter(small, brightness=0.5, contrast=0.0, saturation=0.0, p=1.0)
    ratio = out / small
    for b in range(len(x)):  # one brightness factor per sample, shared by all frames and pixels
        assert torch.allclose(ratio[b], ratio[b].mean(), atol=1e-4)
        assert 0.5 <= ratio[b].mean() <= 1.5


def test_augment_from_config():
    aug = Augment.from_config({"shift": False, "crop": True, "crop_scale": [0.8, 1.0]})
    assert (aug.shift, aug.crop, aug.jitter, aug.crop_scale) == (False, True, False, (0.8, 1.0))
    x = frames(torch.Generator().manual_seed(0))
    assert torch.equal(Augment(shift=False)(x), x)

"""Encoders: the forward contract for every kind, safetensors round trips, published checkpoints, errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
from timm.models.vision_transformer import VisionTransformer

import worldssl.encoders as encoders
from worldssl.encoders import FrameWise, build, load, load_weights, save
from worldssl.runtime.errors import CheckpointError, ConfigError, WorldsslError

OBS = (9, 64, 64)  # three stacked RGB frames
# name -> (kind, kwargs, obs_shape, out_shape)
CASES = {
    "conv": ("conv", {}, OBS, (50,)),
    "conv_small": ("conv", {"feature_dim": 16, "num_filters": 8, "num_layers": 2}, (3, 32, 32), (16,)),
    "resnet18": ("resnet", {"arch": "resnet18"}, OBS, (512,)),
    "resnet50": ("resnet", {"arch": "resnet50"}, (3, 32, 32), (2048,)),
    "vit_tiny": ("vit", {"depth": 2}, OBS, (192,)),
    "vit_tiny_avg": ("vit", {"depth": 1, "global_pool": "avg", "patch_size": 16}, OBS, (192,)),
    "vit_small": ("vit", {"arch": "vit_small", "depth": 1, "patch_size": 16}, (3, 32, 32), (384,)),
}
ROUND_TRIP = ["conv", "resnet18", "vit_tiny", "vit_tiny_avg"]


def make(case: str, seed: int = 0):
    kind, kwargs, obs_shape, _ = CASES[case]
    torch.manual_seed(seed)
    return build(kind, obs_shape, **kwargs)


def frames(obs_shape, batch: int = 4, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, *obs_shape), dtype=torch.uint8, generator=gen)


def randomize_bn_stats(model: torch.nn.Module, seed: int = 1) -> None:
    """Give BatchNorm running stats non-trivial values, so a missed buffer shows up in the outputs."""
    gen = torch.Generator().manual_seed(seed)
    for name, buf in model.named_buffers():
        if name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
        elif name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)


class NotATensor:
    """A custom class: a checkpoint pickling one needs full unpickling, which the loader refuses."""

    def __init__(self):
        self.value = 3


# -- the forward contract ----------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_forward_contract(case):
    enc = make(case).eval()
    _, _, obs_shape, out_shape = CASES[case]
    assert enc.out_shape == out_shape and enc.out_dim == int(torch.tensor(out_shape).prod())
    with torch.no_grad():
        out = enc(frames(obs_shape, batch=3))
        one = enc(frames(obs_shape, batch=1))
    assert out.shape == (3, *out_shape) and one.shape == (1, *out_shape)
    assert out.dtype == torch.float32 and torch.isfinite(out).all() and torch.isfinite(one).all()
    with pytest.raises(ValueError, match="expects"):
        enc(frames((obs_shape[0] + 1, *obs_shape[1:]), batch=2))
    with pytest.raises(ValueError, match="expects"):
        enc(frames(obs_shape, batch=2)[0])  # no batch dimension


@pytest.mark.parametrize("case", ["conv", "resnet18", "vit_tiny"])
def test_freeze(case):
    enc = make(case).freeze()
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())


def test_conv_encoder_trunk_and_head():
    enc = make("conv").eval()
    obs = frames(OBS)
    with torch.no_grad():
        trunk = enc.forward_conv(obs)
        assert trunk.shape == (4, enc.conv_out_dim) and enc.conv_out_dim == 32 * 25 * 25  # 64 -> 31 -> 29 -> 27 -> 25
        assert torch.equal(enc.head(trunk), enc(obs))
    assert enc(obs).abs().max() <= 1.0  # tanh
    with pytest.raises(ValueError, match="expects"):
        enc.forward_conv(frames((3, 64, 64)))


def test_imagenet_normalisation_per_frame():
    enc = build("resnet", (6, 32, 32))
    white = torch.full((1, 6, 32, 32), 255, dtype=torch.uint8)
    x = enc.normalize(white)[0, :, 0, 0]
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(x, expected.repeat(2))
    gray = build("vit", (4, 32, 32), depth=1).normalize(white[:, :4])[0, :, 0, 0]  # not RGB frames: [-1, 1]
    torch.testing.assert_close(gray, torch.ones(4))
    assert "pixel_mean" not in enc.state_dict()  # stats follow obs_shape, they are not weights


def test_vit_exposes_timm_parts_for_mae():
    enc = make("vit_tiny")
    vit = enc.vit
    assert isinstance(vit, VisionTransformer) and vit.num_prefix_tokens == 1
    assert vit.pos_embed.shape == (1, 1 + 8 * 8, 192) and vit.cls_token.shape == (1, 1, 192)
    assert len(vit.blocks) == 2 and vit.patch_embed.proj.in_channels == 9 and vit.norm is not None


def test_build_errors():
    with pytest.raises(ConfigError, match="valid: conv, resnet, vit"):
        build("mlp", OBS)
    with pytest.raises(ConfigError, match="no option"):
        build("conv", OBS, width=3)
    with pytest.raises(ConfigError, match="patch_size 8 must divide"):
        build("vit", (9, 84, 84), patch_size=8)
    with pytest.raises(ConfigError, match="unknown ResNet arch"):
        build("resnet", OBS, arch="resnet152")


# -- save / load ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ROUND_TRIP)
def test_save_load_round_trip_is_bit_identical(case, tmp_path):
    enc = make(case, seed=3)
    kind, _, obs_shape, out_shape = CASES[case]
    obs = frames(obs_shape)
    with torch.no_grad():
        expected = enc.eval()(obs)
    meta = {"ssl": "moco", "dataset": "data/shapes", "env_id": "worldssl/Shapes-v0", "step": 7}
    assert save(enc, tmp_path / "ckpt", meta=meta) == tmp_path / "ckpt"
    doc = json.loads((tmp_path / "ckpt" / "encoder.json").read_text())
    assert doc["format"] == "worldssl-encoder" and doc["version"] == 1 and doc["kind"] == kind
    assert doc["arch_config"] == enc.arch_config() and doc["meta"] == meta
    assert tuple(doc["obs_shape"]) == obs_shape and tuple(doc["out_shape"]) == out_shape
    assert doc["normalization"]["input"] == "uint8 [0, 255] or float [0, 1] (pixel / 255)"
    for path in (tmp_path / "ckpt", tmp_path / "ckpt" / "encoder.json", tmp_path / "ckpt" / "encoder.safetensors"):
        loaded = load(path)
        assert type(loaded) is type(enc) and loaded.checkpoint_meta == meta
        with torch.no_grad():
            assert torch.equal(loaded.eval()(obs), expected)
    frozen = load(tmp_path / "ckpt", freeze=True)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())


def test_load_for_another_image_size(tmp_path):
    resnet, vit = make("resnet18"), make("vit_tiny")
    save(resnet, tmp_path / "resnet")
    save(vit, tmp_path / "vit")
    bigger = load(tmp_path / "resnet", obs_shape=(9, 96, 96))
    assert bigger.obs_shape == (9, 96, 96) and torch.equal(bigger.net.conv1.weight, resnet.net.conv1.weight)
    small_vit = load(tmp_path / "vit", obs_shape=(9, 32, 32))
    assert small_vit.vit.pos_embed.shape == (1, 1 + 4 * 4, 192)
    assert torch.equal(small_vit.vit.cls_token, vit.vit.cls_token)
    assert torch.isfinite(small_vit(frames((9, 32, 32)))).all()


def test_framewise_applies_the_encoder_per_frame(tmp_path):
    inner = build("resnet", (3, 32, 32)).eval()
    enc = FrameWise(inner, frames=3).eval()
    obs = frames((9, 32, 32))
    assert enc.obs_shape == (9, 32, 32) and enc.out_shape == (3 * 512,)
    with torch.no_grad():
        expected = torch.cat([inner(obs[:, 3 * i: 3 * i + 3]) for i in range(3)], dim=1)
        torch.testing.assert_close(enc(obs), expected)
        save(enc, tmp_path / "fw")
        assert torch.equal(load(tmp_path / "fw").eval()(obs), enc(obs))


# -- published checkpoints -------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_moco_resnet50_checkpoint(version, tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    ref = torchvision.models.resnet50()
    randomize_bn_stats(ref)
    sd = ref.state_dict()
    head = {"fc.weight": torch.randn(128, 2048), "fc.bias": torch.randn(128)} if version == "v1" else {
        "fc.0.weight": torch.randn(2048, 2048), "fc.0.bias": torch.randn(2048),
        "fc.2.weight": torch.randn(128, 2048), "fc.2.bias": torch.randn(128)}
    body = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    state = {**{f"module.encoder_q.{k}": v for k, v in {**body, **head}.items()},
             **{f"module.encoder_k.{k}": v.clone() for k, v in body.items()},
             "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)}
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state, "optimizer": {"state": {}}},
               tmp_path / "moco_v2_800ep_pretrain.pth.tar")

    enc = load(tmp_path / "moco_v2_800ep_pretrain.pth.tar", freeze=True)
    assert enc.kind == "resnet" and enc.arch == "resnet50" and enc.obs_shape == (3, 224, 224)
    assert enc.out_shape == (2048,) and enc.checkpoint_meta["source_format"] == "moco"
    for key in ("conv1.weight", "layer4.2.bn3.running_var", "layer1.0.downsample.0.weight"):
        assert torch.equal(enc.net.state_dict()[key], sd[key])

    small = load(tmp_path / "moco_v2_800ep_pretrain.pth.tar", obs_shape=(3, 64, 64)).eval()
    ref.fc = torch.nn.Identity()
    obs = frames((3, 64, 64), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(small(obs), ref.eval()(small.normalize(obs)), rtol=1e-4, atol=1e-4)


def test_mae_vit_checkpoint(tmp_path):
    torch.manual_seed(0)
    ref = VisionTransformer(img_size=32, patch_size=8, in_chans=3, embed_dim=192, depth=2, num_heads=3,
                            num_classes=0, global_pool="token").eval()
    sd = ref.state_dict()
    decoder = {"mask_token": torch.randn(1, 1, 64), "decoder_embed.weight": torch.randn(64, 192),
               "decoder_pos_embed": torch.randn(1, 17, 64), "decoder_blocks.0.norm1.weight": torch.randn(64),
               "decoder_pred.weight": torch.randn(8 * 8 * 3, 64)}
    args = argparse.Namespace(model="mae_vit_tiny", mask_ratio=0.75)  # MAE checkpoints carry their args
    torch.save({"model": {**sd, **decoder}, "epoch": 799, "args": args}, tmp_path / "mae_pretrain.pth")

    enc = load(tmp_path / "mae_pretrain.pth")
    assert enc.kind == "vit" and enc.obs_shape == (3, 32, 32) and enc.out_shape == (192,)
    assert enc.arch_config() == {"arch": "vit_tiny", "patch_size": 8, "global_pool": "token", "depth": 2,
                                 "embed_dim": 192, "num_heads": 3, "mlp_ratio": 4.0}
    for key in ("pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "norm.weight"):
        assert torch.equal(enc.vit.state_dict()[key], sd[key])
    obs = frames((3, 32, 32), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(obs), ref(enc.normalize(obs)))

    resized = load(tmp_path / "mae_pretrain.pth", obs_shape=(3, 48, 48))
    assert resized.vit.pos_embed.shape == (1, 1 + 6 * 6, 192)
    assert torch.isfinite(resized(frames((3, 48, 48)))).all()
    with pytest.raises(CheckpointError, match="FrameWise"):
        load(tmp_path / "mae_pretrain.pth", obs_shape=(9, 32, 32))


def test_r3m_resnet18_checkpoint(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()  # torchvision key names
    randomize_bn_stats(ref)
    sd = ref.state_dict()
    state = {**{f"module.convnet.{k}": v for k, v in sd.items()},
             "module.lang_enc.proj.weight": torch.randn(4, 4), "module.lang_rew.0.weight": torch.randn(4, 4),
             "module.normlayer.mean": torch.zeros(3)}
    torch.save({"r3m": state, "global_step": 10}, tmp_path / "r3m_18.pt")
    enc = load(tmp_path / "r3m_18.pt", obs_shape=(3, 64, 64))
    assert enc.arch == "resnet18" and enc.out_shape == (512,) and enc.checkpoint_meta["source_format"] == "r3m"
    assert torch.equal(enc.net.state_dict()["layer3.1.bn2.running_var"], sd["layer3.1.bn2.running_var"])
    obs = frames((3, 64, 64), batch=2)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(obs), ref(enc.normalize(obs)))
    target = build("resnet", (3, 64, 64))
    load_weights(target, tmp_path / "r3m_18.pt")
    assert torch.equal(target.net.conv1.weight, sd["conv1.weight"])


# -- errors ------------------------------------------------------------------------------------------------------
@pytest.fixture
def conv_ckpt(tmp_path) -> Path:
    return save(make("conv"), tmp_path / "conv")


def test_truncated_weights_are_refused(conv_ckpt):
    weights = conv_ckpt / "encoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load(conv_ckpt)
    doc = json.loads((conv_ckpt / "encoder.json").read_text())
    del doc["weights_sha256"]  # without the checksum, safetensors itself must notice
    (conv_ckpt / "encoder.json").write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load(conv_ckpt)


def test_bad_json_is_refused(conv_ckpt):
    config = conv_ckpt / "encoder.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load(conv_ckpt)
    config.write_text(json.dumps({"format": "worldssl-dataset", "version": 1}))
    with pytest.raises(CheckpointError, match="not a worldssl encoder checkpoint"):
        load(conv_ckpt / "encoder.safetensors")
    config.write_text(json.dumps({**json.loads(text), "kind": "transformer"}))
    with pytest.raises(CheckpointError, match="unknown encoder kind 'transformer'"):
        load(conv_ckpt)


def test_missing_files(tmp_path, conv_ckpt):
    with pytest.raises(CheckpointError, match="no encoder checkpoint"):
        load(tmp_path / "nope")
    (conv_ckpt / "encoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match="encoder.safetensors is missing"):
        load(conv_ckpt)


def test_checkpoint_of_another_architecture(tmp_path, conv_ckpt):
    # the JSON says resnet18 but the weights are a conv encoder's
    config = conv_ckpt / "encoder.json"
    doc = json.loads(config.read_text())
    config.write_text(json.dumps({**doc, "kind": "resnet", "arch_config": {"arch": "resnet18"}}))
    with pytest.raises(CheckpointError, match=r"does not match resnet18 \(in_chans 9, 64x64\): missing \d+: net\."):
        load(conv_ckpt)
    config.write_text(json.dumps(doc))
    # 9-channel conv weights into a 3-channel conv: a wrong-shape report, and the target left untouched
    target = build("conv", (3, 64, 64))
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"wrong shape .*convs\.0\.weight \(32, 9, 3, 3\) vs \(32, 3, 3, 3\)"):
        load_weights(target, conv_ckpt)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    # the conv head fixes the input size
    with pytest.raises(CheckpointError, match=r"saved for obs_shape \(9, 64, 64\).*head\.0\.weight"):
        load(conv_ckpt, obs_shape=(9, 84, 84))


def test_published_checkpoint_errors(tmp_path):
    sd = {f"module.encoder_q.{k}": v for k, v in build("resnet", (3, 32, 32)).net.state_dict().items()}
    torch.save({"state_dict": sd, "extra": NotATensor()}, tmp_path / "pickled.pth")
    with pytest.raises(CheckpointError, match="needs full unpickling.*NotATensor"):
        load(tmp_path / "pickled.pth")
    torch.save({"weights": sd}, tmp_path / "odd.pth")
    with pytest.raises(CheckpointError, match="unknown checkpoint layout.*MoCo.*MAE.*R3M"):
        load(tmp_path / "odd.pth")
    torch.save({"state_dict": {"module.encoder_k.conv1.weight": torch.zeros(1)}}, tmp_path / "no_q.pth")
    with pytest.raises(CheckpointError, match="no keys under module.encoder_q."):
        load(tmp_path / "no_q.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "odd.pth").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="corrupt, truncated"):
        load(tmp_path / "cut.pth")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="cannot tell the format"):
        load(tmp_path / "weights.npz")
    torch.save({"state_dict": sd}, tmp_path / "moco.pth")
    with pytest.raises(CheckpointError, match="3-channel.*FrameWise"):
        load(tmp_path / "moco.pth", obs_shape=(9, 64, 64))
    assert issubclass(CheckpointError, WorldsslError)


def test_registry_and_reexports():
    assert set(encoders.ENCODERS) == {"conv", "resnet", "vit"}
    assert encoders.Encoder is encoders.base.Encoder and callable(encoders.save) and callable(encoders.load)

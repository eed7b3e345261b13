"""``worldssl bench ssl``: SSL training-step throughput (images/s), ours against lightly's implementation.

For every objective and backbone one full training step is timed: the view augmentation, the forward pass,
the loss, the backward pass, an AdamW step and the momentum (EMA) update, at a fixed batch and image size.
Where lightly has the same method (MoCo v2, SimCLR, BYOL, MAE) its implementation is built around a fresh
instance of the *same* worldssl backbone (a timm ViT for MAE), with heads of the same widths, the same
hyperparameters, the same optimiser, and the views made by the same
:class:`worldssl.data.augment.Augment` from the same uint8 batch, so only the model / loss / momentum code
and the precision differ. Precision: each side runs as its user gets it by default. Ours follows the
pretrainer (``amp=auto``: bf16 autocast on CUDA, and on CPUs with bf16 matrix units, with the losses in
float32); lightly's runs in a plain PyTorch loop (bf16 autocast on CUDA, float32 on CPU). Where the two
differ, ours is timed a third time in float32, and that row shows the ratio at equal precision. Ours and lightly's are timed in alternation (repeat after repeat), so load from other processes on
the machine hits both alike; the figure is the median over the repeats, after warm-up steps.

CPC has no lightly counterpart; it runs on sequences of ``ssl_sequence_length`` frames, ``batch / length``
sequences per step, so the images per step match the other rows.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from worldssl.bench.common import Row, setting_reader

#: backbone label -> (worldssl encoder kind, build kwargs)
BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    "conv": ("conv", {}),
    "resnet18": ("resnet", {"arch": "resnet18"}),
    "vit_tiny": ("vit", {"arch": "vit_tiny", "patch_size": 8}),
}
OBJECTIVES = ("moco", "simclr", "byol", "mae", "cpc")
#: objectives lightly also implements (the baseline of their rows)
LIGHTLY = ("moco", "simclr", "byol", "mae")
LABELS = {"moco": "moco v2", "simclr": "simclr", "byol": "byol", "mae": "mae", "cpc": "cpc"}


@dataclass
class Settings:
    objectives: list[str] = field(default_factory=lambda: list(OBJECTIVES))
    backbones: list[str] = field(default_factory=lambda: list(BACKBONES))
    batch: int = 64
    image_size: int = 64
    channels: int = 9            # three stacked RGB frames
    sequence_length: int = 8     # CPC: frames per sequence (batch / length sequences per step)
    steps: int = 1               # training steps per timed repeat
    repeats: int = 3             # at least this many timed repeats per implementation
    max_repeats: int = 7         # more repeats (cheap rows) while a row has used less than row_seconds
    row_seconds: float = 10.0
    warmup: int = 1              # untimed steps first (allocator, autotuning, lazy init)
    lr: float = 1e-3
    vit_depth: int | None = None  # override the ViT depth (None: the arch's 12) for quick runs
    device: str = "auto"
    amp: bool | str = "auto"
    threads: int | None = 1      # CPU intra-op threads while timing (None: torch's default)
    seed: int = 0

    @classmethod
    def from_cfg(cls, cfg: Any) -> Settings:
        get = setting_reader(cfg)

        d = cls()
        return cls(objectives=[str(o) for o in get("ssl_objectives", d.objectives)],
                   backbones=[str(b) for b in get("ssl_backbones", d.backbones)],
                   batch=int(get("ssl_batch", d.batch)), image_size=int(get("ssl_image_size", d.image_size)),
                   channels=int(get("ssl_channels", d.channels)),
                   sequence_length=int(get("ssl_sequence_length", d.sequence_length)),
                   steps=int(get("ssl_steps", d.steps)), repeats=int(get("repeats", d.repeats)),
                   max_repeats=int(get("ssl_max_repeats", d.max_repeats)),
                   row_seconds=float(get("ssl_row_seconds", d.row_seconds)),
                   warmup=int(get("ssl_warmup", d.warmup)), lr=float(get("ssl_lr", d.lr)),
                   vit_depth=get("ssl_vit_depth", None), device=str(get("device", d.device)),
                   amp=get("amp", d.amp), seed=int(get("seed", d.seed)),
                   threads=_threads(cfg.get("ssl_threads", d.threads) if hasattr(cfg, "get") else d.threads))

    def validate(self) -> None:
        from worldssl.runtime.errors import ConfigError

        bad = [o for o in self.objectives if o not in OBJECTIVES]
        if bad:
            raise ConfigError(f"unknown ssl_objectives {bad}; valid: {', '.join(OBJECTIVES)}")
        bad = [b for b in self.backbones if b not in BACKBONES]
        if bad:
            raise ConfigError(f"unknown ssl_backbones {bad}; valid: {', '.join(BACKBONES)}")
        if min(self.batch, self.image_size, self.channels, self.steps, self.repeats) < 1 or self.warmup < 0 \
                or self.max_repeats < 0 or self.row_seconds < 0:
            raise ConfigError("ssl_batch, ssl_image_size, ssl_channels, ssl_steps, repeats must be >= 1, "
                              "ssl_warmup >= 0")
        if "cpc" in self.objectives and (self.sequence_length < 4 or self.batch % self.sequence_length):
            raise ConfigError(f"ssl_sequence_length ({self.sequence_length}) must be >= 4 (CPC predicts 3 steps) "
                              f"and divide ssl_batch ({self.batch})")


def _threads(value: Any) -> int | None:
    return None if value is None or str(value).lower() in ("null", "none", "auto") else int(value)


# -- shared pieces --------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _encoder(backbone: str, s: Settings) -> nn.Module:
    from worldssl import encoders

    kind, kwargs = BACKBONES[backbone]
    kwargs = dict(kwargs)
    if kind == "vit" and s.vit_depth is not None:
        kwargs["depth"] = int(s.vit_depth)
    return encoders.build(kind, (s.channels, s.image_size, s.image_size), **kwargs)


def _optimizer(module: nn.Module, lr: float) -> torch.optim.Optimizer:
    """AdamW over the parameters that take gradients (targets and fixed embeddings excluded), as the trainer."""
    return torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)


def _train_step(model: nn.Module, loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer,
                device: torch.device, amp: bool | str, cpu_auto: bool) -> Callable[[], None]:
    """One optimiser step, in the order of :class:`worldssl.ssl.train.Pretrainer`. ``cpu_auto``: whether
    ``amp=auto`` also means bf16 on a CPU with bf16 matrix units (the pretrainer's policy) or CUDA only
    (what a plain PyTorch loop around lightly's modules gets)."""
    from worldssl.runtime.device import autocast

    def step() -> None:
        with autocast(device, amp, cpu_auto=cpu_auto):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.update_momentum()

    return step


# -- ours -----------------------------------------------------------------------------------------------
def ours_step(name: str, backbone: str, obs: torch.Tensor, s: Settings, device: torch.device,
              cpu_auto: bool = True) -> tuple[nn.Module, Callable[[], None]]:
    from worldssl import ssl
    from worldssl.ssl import SSLBatch

    objective = ssl.build(name, _encoder(backbone, s)).to(device).train()
    if objective.batch_kind == "sequences":
        obs = obs.view(-1, s.sequence_length, *obs.shape[1:])  # [B/T, T, C, H, W]
    batch = SSLBatch(obs)
    opt = _optimizer(objective, s.lr)
    return objective, _train_step(objective, lambda: objective.loss(batch)[0], opt, device, s.amp, cpu_auto)


# -- lightly --------------------------------------------------------------------------------------------
class _LightlyTwoView(nn.Module):
    """Shared shape of the lightly two-view models: a backbone, the same Augment for both views."""

    def __init__(self, backbone: nn.Module, augment: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.augment = augment

    def update_momentum(self) -> None:
        pass


class LightlyMoCo(_LightlyTwoView):
    """MoCo v2 with lightly's head, NT-Xent memory bank and momentum utilities."""

    def __init__(self, backbone: nn.Module, augment: nn.Module, hidden: int, out: int, queue: int,
                 temperature: float, momentum: float):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__(backbone, augment)
        self.head = MoCoProjectionHead(backbone.out_dim, hidden, out)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.head_momentum = copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(queue, out))
        self.momentum = momentum

    def loss(self, obs: torch.Tensor) -> torch.Tensor:
        x_q, x_k = self.augment(obs), self.augment(obs)
        query = self.head(self.backbone(x_q).flatten(1))
        key = self.head_momentum(self.backbone_momentum(x_k).flatten(1)).detach()
        return self.criterion(query, key)

    def update_momentum(self) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=self.momentum)
        update_momentum(self.head, self.head_momentum, m=self.momentum)


class LightlySimCLR(_LightlyTwoView):
    def __init__(self, backbone: nn.Module, augment: nn.Module, hidden: int, out: int, temperature: float):
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__(backbone, augment)
        self.head = SimCLRProjectionHead(backbone.out_dim, hidden, out)
        self.criterion = NTXentLoss(temperature=temperature)

    def loss(self, obs: torch.Tensor) -> torch.Tensor:
        x0, x1 = self.augment(obs), self.augment(obs)
        return self.criterion(self.head(self.backbone(x0).flatten(1)), self.head(self.backbone(x1).flatten(1)))


class LightlyBYOL(_LightlyTwoView):
    def __init__(self, backbone: nn.Module, augment: nn.Module, hidden: int, out: int, momentum: float):
        from lightly.loss import NegativeCosineSimilarity
        from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        super().__init__(backbone, augment)
        self.projection_head = BYOLProjectionHead(backbone.out_dim, hidden, out)
        self.prediction_head = BYOLPredictionHead(out, hidden, out)
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.momentum = momentum

    def online(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(1)))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(1)).detach()

    def loss(self, obs: torch.Tensor) -> torch.Tensor:
        x0, x1 = self.augment(obs), self.augment(obs)
        p0, p1 = self.online(x0), self.online(x1)
        z0, z1 = self.target(x0), self.target(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))

    def update_momentum(self) -> None:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, m=self.momentum)
        update_momentum(self.projection_head, self.projection_head_momentum, m=self.momentum)


class LightlyMAE(nn.Module):
    """MAE from lightly's timm pieces around the encoder's own timm ``VisionTransformer`` (weights kept)."""

    def __init__(self, encoder: nn.Module, augment: nn.Module | None, mask_ratio: float, decoder_dim: int,
                 decoder_depth: int, decoder_heads: int):
        from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM

        super().__init__()
        vit = encoder.vit
        self.encoder = encoder  # for its uint8 -> float normalisation, as our MAE
        self.augment = augment
        self.mask_ratio = mask_ratio
        self.patch_size = int(encoder.patch_size)
        self.backbone = MaskedVisionTransformerTIMM(vit=vit, weight_initialization="skip",
                                                    pos_embed_initialization="skip")
        self.sequence_length = self.backbone.sequence_length
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(num_patches=vit.patch_embed.num_patches,
                                                          embed_dim=decoder_dim, depth=decoder_depth,
                                                          num_heads=decoder_heads,
                                                          num_prefix_tokens=vit.num_prefix_tokens)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_size ** 2 * int(encoder.obs_shape[0]))

    def loss(self, obs: torch.Tensor) -> torch.Tensor:
        from lightly.models import utils

        if self.augment is not None:
            obs = self.augment(obs)
        images = self.encoder.normalize(obs)
        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(size=(b, self.sequence_length), mask_ratio=self.mask_ratio,
                                                     device=images.device)
        x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
        x_embedded = self.decoder_embed(x_encoded)
        x_masked = utils.repeat_token(self.decoder.mask_token, (b, self.sequence_length))
        x_masked = utils.set_at_index(x_masked, idx_keep, x_embedded.type_as(x_masked))
        x_decoded = self.decoder(x_masked)
        x_pred = self.decoder_pred(utils.get_at_index(x_decoded, idx_mask))
        patches = utils.patchify(images, self.patch_size)
        target = utils.normalize_mean_var(utils.get_at_index(patches, idx_mask - 1))  # norm_pix_loss
        return F.mse_loss(x_pred, target)

    def update_momentum(self) -> None:
        pass


def lightly_step(name: str, backbone: str, obs: torch.Tensor, ours: nn.Module, s: Settings,
                 device: torch.device) -> Callable[[], None]:
    """lightly's implementation of ``name`` around a fresh ``backbone``, with ``ours``'s hyperparameters."""
    from worldssl.ssl.base import default_augment

    encoder = _encoder(backbone, s)
    if name == "mae":
        block = ours.decoder_blocks[0]
        model: nn.Module = LightlyMAE(encoder, copy.deepcopy(ours.augment), ours.mask_ratio,
                                      ours.decoder_embed.out_features, len(ours.decoder_blocks),
                                      block.attn.num_heads)
    else:
        augment = default_augment(ours.positive)  # the same Augment as ours (a separate instance)
        hidden = ours.projector[0].out_features
        out = ours.projector.out_dim
        if name == "moco":
            model = LightlyMoCo(encoder, augment, hidden, out, len(ours.queue), ours.temperature, ours.momentum)
        elif name == "simclr":
            model = LightlySimCLR(encoder, augment, hidden, out, ours.temperature)
        elif name == "byol":
            model = LightlyBYOL(encoder, augment, hidden, out, ours.momentum)
        else:
            raise ValueError(f"lightly has no {name!r} here")
    model = model.to(device).train()
    opt = _optimizer(model, s.lr)
    return _train_step(model, lambda: model.loss(obs), opt, device, s.amp, cpu_auto=False)


# -- timing ---------------------------------------------------------------------------------------------
def time_alternating(steps: dict[str, Callable[[], None]], images: int, s: Settings,
                     device: torch.device) -> dict[str, float]:
    """Median images/s of each step function over the timed repeats, which alternate between the functions
    (order flipped every repeat), so a slow spell of a shared machine hits both alike.

    ``s.repeats`` repeats at least; up to ``s.max_repeats`` while the row has taken under ``s.row_seconds``
    (more samples where a step is cheap, for the same wall time)."""
    start = time.perf_counter()
    for fn in steps.values():
        for _ in range(s.warmup):
            fn()
        _sync(device)
    rates: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    r = 0
    while r < s.repeats or (r < s.max_repeats and time.perf_counter() - start < s.row_seconds):
        for k in names if r % 2 == 0 else names[::-1]:
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(s.steps):
                steps[k]()
            _sync(device)
            rates[k].append(images * s.steps / (time.perf_counter() - t0))
        r += 1
    return {k: statistics.median(v) for k, v in rates.items()}


def mixed_precision_differs(device: torch.device, amp: bool | str) -> bool:
    """True where our pretrainer runs bf16 but a plain loop around lightly runs float32: ``amp=auto`` on a
    CPU with bf16 matrix units (AMX)."""
    from worldssl.runtime.device import cpu_has_bf16_matmul

    return amp == "auto" and device.type == "cpu" and cpu_has_bf16_matmul()


def _lightly_version() -> str | None:
    try:
        import lightly
    except ImportError:
        return None
    return str(lightly.__version__)


def measure(name: str, backbone: str, s: Settings, device: torch.device,
            lightly_version: str | None) -> list[Row]:
    shape = f"{s.channels}x{s.image_size}x{s.image_size}"
    label = f"{LABELS[name]} / {backbone} {shape} b{s.batch}"
    if name == "cpc":
        label += f" ({s.batch // s.sequence_length} seq x {s.sequence_length})"
    gen = torch.Generator().manual_seed(s.seed)
    obs = torch.randint(0, 256, (s.batch, s.channels, s.image_size, s.image_size), dtype=torch.uint8,
                        generator=gen).to(device)
    torch.manual_seed(s.seed)
    ours, ours_fn = ours_step(name, backbone, obs, s, device)
    steps = {"ours": ours_fn}
    with_baseline = name in LIGHTLY and lightly_version is not None
    if with_baseline:
        torch.manual_seed(s.seed)
        steps["lightly"] = lightly_step(name, backbone, obs, ours, s, device)
        if mixed_precision_differs(device, s.amp):
            # the same precision as lightly's side too, so the table separates code from precision
            torch.manual_seed(s.seed)
            steps["ours_same_precision"] = ours_step(name, backbone, obs, s, device, cpu_auto=False)[1]
    rates = time_alternating(steps, s.batch, s, device)
    baseline = rates.get("lightly")
    row = Row(label, "train images/s", rates["ours"], baseline,
              f"lightly {lightly_version} same backbone+aug" if with_baseline else "",
              ">= 1.0x" if with_baseline else "")
    rows = [row]
    if "ours_same_precision" in rates:
        rows.append(Row(f"{label} (ours in float32 too)", "train images/s", rates["ours_same_precision"],
                        baseline, row.baseline_name, ""))
    if baseline is not None:
        line = f"  {label}: ours {row.ours:,.1f} vs lightly {baseline:,.1f} images/s ({row.ratio:.2f}x)"
        if "ours_same_precision" in rates:
            same = rates["ours_same_precision"]
            line += f"; ours in float32 like lightly {same:,.1f} ({same / baseline:.2f}x)"
        print(line, flush=True)
    else:
        print(f"  {label}: ours {row.ours:,.1f} images/s (no lightly counterpart)", flush=True)
    del steps, ours
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def run(cfg: Any) -> list[Row]:
    from worldssl.runtime.device import resolve_device

    s = Settings.from_cfg(cfg)
    s.validate()
    device = resolve_device(s.device)
    version = _lightly_version()
    threads = torch.get_num_threads()
    if device.type == "cpu" and s.threads is not None:
        torch.set_num_threads(s.threads)
    try:
        return _run(s, device, version)
    finally:
        torch.set_num_threads(threads)


def _run(s: Settings, device: torch.device, version: str | None) -> list[Row]:
    where = f"{device}" + (f" ({torch.get_num_threads()} thread(s))" if device.type == "cpu" else "")
    print(f"bench ssl: train images/s (augment + forward + loss + backward + AdamW + momentum) on {where}, "
          f"batch {s.batch}, {s.channels}x{s.image_size}x{s.image_size}, median of {s.repeats}-{max(s.repeats, s.max_repeats)} "
          f"repeats of {s.steps} step(s) after {s.warmup} warm-up, ours and lightly alternating", flush=True)
    if s.amp == "auto" and device.type == "cpu":
        print("  precision: each side's default here: ours " + ("bf16 autocast (this CPU has AMX), also timed in "
              "float32" if mixed_precision_differs(device, s.amp) else "float32") + "; lightly's loop float32",
              flush=True)
    if version is None:
        print("  lightly is not installed: no baselines")
    rows = []
    for backbone in s.backbones:
        for name in s.objectives:
            if name == "mae" and BACKBONES[backbone][0] != "vit":
                continue  # MAE needs a ViT
            rows.extend(measure(name, backbone, s, device, version))
    return rows

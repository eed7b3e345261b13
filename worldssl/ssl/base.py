"""The shared shape of every SSL objective."""

from __future__ import annotations

import math

import torch
from torch import nn

from worldssl.encoders.base import Encoder
from worldssl.ssl.batch import SSLBatch

BATCH_KINDS = ("frames", "pairs", "sequences")


class SSLObjective(nn.Module):
    """A self-supervised objective over a pixel :class:`~worldssl.encoders.base.Encoder`.

    ``encoder`` is the online encoder (the one saved and handed to downstream agents). ``batch_kind``
    tells the trainer what to sample (see :class:`~worldssl.ssl.batch.SSLBatch`). The trainer calls
    ``loss(batch)``, steps the optimiser, then calls ``update_momentum()`` (a no-op without a target).
    """

    batch_kind: str = "frames"

    def __init__(self, encoder: Encoder):
        super().__init__()
        if not isinstance(encoder, nn.Module) or not hasattr(encoder, "out_dim"):
            raise TypeError(f"encoder must be a worldssl Encoder, got {type(encoder).__name__}")
        self.encoder = encoder

    def loss(self, batch: SSLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss (with graph) and namespaced float metrics (``ssl/loss``, ...)."""
        raise NotImplementedError

    @torch.no_grad()
    def update_momentum(self) -> None:
        """Move target networks toward the online ones; call after ``optimizer.step()``."""

    def check_batch(self, batch: SSLBatch) -> None:
        """Raise a ValueError naming the problem if ``batch`` does not fit ``self.batch_kind``."""
        obs = batch.obs
        want = 5 if self.batch_kind == "sequences" else 4
        if obs.dim() != want:
            raise ValueError(f"{type(self).__name__} (batch_kind={self.batch_kind!r}) expects obs with {want} dims, "
                             f"got {tuple(obs.shape)}")
        if self.batch_kind == "pairs" and (batch.positive is None or batch.positive.shape != obs.shape):
            got = None if batch.positive is None else tuple(batch.positive.shape)
            raise ValueError(f"{type(self).__name__} expects positive of shape {tuple(obs.shape)}, got {got}")
        if self.batch_kind == "sequences" and getattr(self, "needs_actions", False):
            if batch.actions is None or batch.actions.shape[:2] != (obs.shape[0], obs.shape[1] - 1):
                got = None if batch.actions is None else tuple(batch.actions.shape)
                raise ValueError(f"{type(self).__name__} expects actions (B, L, ...) with B, L = "
                                 f"{obs.shape[0]}, {obs.shape[1] - 1}; got {got}")

    def extra_repr(self) -> str:
        return f"batch_kind={self.batch_kind!r}"


class TwoViewObjective(SSLObjective):
    """An objective on two views of a sample: two augmentations of one frame (``positive="augment"``,
    batch_kind ``frames``) or the augmented frames ``t`` and ``t + k`` of one episode (``positive="temporal"``,
    batch_kind ``pairs``, as in ATC, Stooke et al. 2021)."""

    def __init__(self, encoder: Encoder, positive: str = "augment", augment: nn.Module | None = None):
        super().__init__(encoder)
        if positive not in ("augment", "temporal"):
            raise ValueError(f"positive must be 'augment' or 'temporal', got {positive!r}")
        self.positive = positive
        self.batch_kind = "frames" if positive == "augment" else "pairs"  # instance attribute
        self.augment = augment if augment is not None else default_augment(positive)
        # two views may share one encoder pass when no layer mixes the samples of a batch (BatchNorm) or
        # draws random masks (dropout): each view's features are then the same as from its own pass (up to
        # float rounding). None (auto): on accelerators only, where it halves the kernel launches; on CPU one
        # pass over 2B images measured slower than two over B. True / False: always / never.
        self.batch_independent = batch_independent(encoder)
        self.shared_pass: bool | None = None

    def views(self, batch: SSLBatch) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_batch(batch)
        other = batch.obs if self.positive == "augment" else batch.positive
        return self.augment(batch.obs), self.augment(other)

    def encode_pair(self, encoder: nn.Module, v1: torch.Tensor,
                    v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``encoder(v1), encoder(v2)`` flattened to ``(B, D)``: one batched pass of both views where the
        encoder is :attr:`batch_independent` and :attr:`shared_pass` allows it, two passes otherwise (BatchNorm
        statistics per view, as in the papers' code)."""
        shared = self.batch_independent and v1.shape == v2.shape and v1.dtype == v2.dtype and (
            v1.device.type != "cpu" if self.shared_pass is None else bool(self.shared_pass))
        if shared:
            h = encoder(torch.cat([v1, v2])).flatten(1)
            return h[: len(v1)], h[len(v1):]
        return encoder(v1).flatten(1), encoder(v2).flatten(1)


def read_metrics(objective: str, **values: torch.Tensor) -> dict[str, float]:
    """Scalar tensors -> ``{"ssl/<name>": float}`` in one device-to-host copy (one sync on an accelerator
    instead of one per metric). The first value is the loss: FloatingPointError when it is not finite."""
    host = torch.stack([v.detach().float().reshape(()) for v in values.values()]).tolist()
    if not math.isfinite(host[0]):
        raise FloatingPointError(f"{objective} loss is {host[0]}")
    return {f"ssl/{k}": x for k, x in zip(values, host, strict=True)}


def batch_independent(module: nn.Module) -> bool:
    """True when, in training mode, every sample's output depends on that sample alone: no BatchNorm
    (batch statistics) and no dropout / drop-path with a non-zero rate (random draws per call)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            return False
        rate = getattr(m, "p", None) if isinstance(m, nn.modules.dropout._DropoutNd) else getattr(m, "drop_prob", None)
        if rate:
            return False
    return True


def default_augment(positive: str) -> nn.Module:
    """Two augmentations of one frame need strong ones (crop + shift + jitter); temporal pairs use the
    DrQ/ATC random shift only."""
    from worldssl.data.augment import Augment

    if positive == "augment":
        return Augment(shift=True, crop=True, jitter=True, crop_scale=(0.6, 1.0))
    return Augment(shift=True)

"""The shared shape of every SSL objective."""

from __future__ import annotations

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

    def views(self, batch: SSLBatch) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_batch(batch)
        other = batch.obs if self.positive == "augment" else batch.positive
        return self.augment(batch.obs), self.augment(other)


def default_augment(positive: str) -> nn.Module:
    """Two augmentations of one frame need strong ones (crop + shift + jitter); temporal pairs use the
    DrQ/ATC random shift only."""
    from worldssl.data.augment import Augment

    if positive == "augment":
        return Augment(shift=True, crop=True, jitter=True, crop_scale=(0.6, 1.0))
    return Augment(shift=True)

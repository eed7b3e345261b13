"""BYOL: an online network regresses an EMA target network's projection of another view; no negatives.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS 2020.
Online: encoder -> projector -> predictor; target: EMA copy of encoder -> projector, no gradient. The
loss is the negative cosine between prediction and target projection, symmetrised over the two views
(we report the mean of the two directions, in ``[-1, 1]``; the paper's summed ``2 - 2 cos`` form is
``4 + 4 * ours``). Momentum 0.99 (the paper: 0.996 rising to 1 with a cosine schedule).
"""

from __future__ import annotations

import torch
from torch import nn

from worldssl.encoders.base import Encoder
from worldssl.ssl.base import TwoViewObjective, read_metrics
from worldssl.ssl.batch import SSLBatch
from worldssl.ssl.heads import BYOLPredictionHead, BYOLProjectionHead
from worldssl.ssl.losses.negative_cosine import negative_cosine
from worldssl.ssl.momentum import make_target, update_momentum


class BYOL(TwoViewObjective):
    """BYOL over an :class:`Encoder`.

    Args:
        momentum: EMA coefficient of the target encoder and projector.
        positive: ``"augment"`` (two augmentations of a frame) or ``"temporal"`` (frames ``t``, ``t + k``).
        hidden_dim, proj_dim: projector / predictor widths.
        augment: the view augmentation (default: :func:`worldssl.ssl.base.default_augment`).
    """

    def __init__(self, encoder: Encoder, momentum: float = 0.99, positive: str = "augment",
                 hidden_dim: int = 512, proj_dim: int = 128, augment: nn.Module | None = None):
        super().__init__(encoder, positive, augment)
        self.momentum = float(momentum)
        self.projector = BYOLProjectionHead(encoder.out_dim, hidden_dim, proj_dim)
        self.predictor = BYOLPredictionHead(proj_dim, hidden_dim, proj_dim)
        self.target_encoder = make_target(encoder)
        self.target_projector = make_target(self.projector)

    def online(self, obs: torch.Tensor) -> torch.Tensor:
        """Online prediction ``q(g(f(obs)))``: ``(B, C, H, W)`` uint8 -> ``(B, proj_dim)``."""
        return self.predictor(self.projector(self.encoder(obs).flatten(1)))

    @torch.no_grad()
    def target(self, obs: torch.Tensor) -> torch.Tensor:
        """Target projection ``g'(f'(obs))``, no gradient: ``(B, C, H, W)`` uint8 -> ``(B, proj_dim)``."""
        return self.target_projector(self.target_encoder(obs).flatten(1))

    def loss(self, batch: SSLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        v1, v2 = self.views(batch)
        h1, h2 = self.encode_pair(self.encoder, v1, v2)
        p1, p2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))  # heads per view (BN)
        with torch.no_grad():
            g1, g2 = self.encode_pair(self.target_encoder, v1, v2)
            t1, t2 = self.target_projector(g1), self.target_projector(g2)
        loss = 0.5 * (negative_cosine(p1, t2) + negative_cosine(p2, t1))
        metrics = read_metrics("BYOL", loss=loss)
        metrics["ssl/cos"] = -metrics["ssl/loss"]
        return loss, metrics

    @torch.no_grad()
    def update_momentum(self) -> None:
        update_momentum(self.encoder, self.target_encoder, self.momentum)
        update_momentum(self.projector, self.target_projector, self.momentum)

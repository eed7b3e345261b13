"""SimCLR: two augmented views, a projection head, NT-Xent with in-batch negatives.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Temperature 0.5 (their CIFAR-10 setting; 0.1 for large ImageNet batches).
``positive="temporal"`` uses frames ``t`` and ``t + k`` as the pair (``batch_kind`` ``"pairs"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldssl.encoders.base import Encoder
from worldssl.ssl.base import TwoViewObjective, read_metrics
from worldssl.ssl.batch import SSLBatch
from worldssl.ssl.heads import SimCLRProjectionHead
from worldssl.ssl.losses.nt_xent import nt_xent_logits


class SimCLR(TwoViewObjective):
    """SimCLR over an :class:`Encoder`; no target network (``update_momentum`` is a no-op).

    Args:
        temperature: NT-Xent temperature (0.5).
        positive: ``"augment"`` (two augmentations of a frame) or ``"temporal"``.
        hidden_dim, proj_dim: projection head widths.
        augment: the view augmentation (default: :func:`worldssl.ssl.base.default_augment`).
    """

    def __init__(self, encoder: Encoder, temperature: float = 0.5, positive: str = "augment",
                 hidden_dim: int = 512, proj_dim: int = 128, augment: nn.Module | None = None):
        super().__init__(encoder, positive, augment)
        self.temperature = float(temperature)
        self.projector = SimCLRProjectionHead(encoder.out_dim, hidden_dim, proj_dim)

    def embed(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` uint8 -> projections ``(B, proj_dim)``."""
        return self.projector(self.encoder(obs).flatten(1))

    def loss(self, batch: SSLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        v1, v2 = self.views(batch)
        h1, h2 = self.encode_pair(self.encoder, v1, v2)
        z1, z2 = self.projector(h1), self.projector(h2)  # per view: BatchNorm statistics of one view
        logits, labels = nt_xent_logits(z1, z2, self.temperature)
        loss = F.cross_entropy(logits, labels)
        acc = (logits.argmax(dim=1) == labels).float().mean()
        return loss, read_metrics("SimCLR", loss=loss, acc=acc, pos_cos=F.cosine_similarity(z1, z2, dim=1).mean())

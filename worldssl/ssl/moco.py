"""MoCo: momentum contrast with a key encoder updated as an EMA of the query encoder.

* v2: Chen, Fan, Girshick & He, "Improved Baselines with Momentum Contrastive Learning", 2020 (on top of
  He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020): a 2-layer
  MLP projection head, a queue of ``queue_size`` past keys as negatives, InfoNCE at temperature 0.2.
  The queue holds 65536 keys on ImageNet; we default to 4096 for small RL datasets.
* v3: Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021:
  no queue (the other keys of the batch are the negatives), a 3-layer BN projector plus a 2-layer
  predictor on the query branch, and the symmetrised loss ``ctr(q1, k2) + ctr(q2, k1)`` (we average
  the two). Temperature defaults to 1.0, the default of the v3 code and its ResNet recipe; the ViT
  recipe uses 0.2 (pass ``temperature=0.2``). The v3 code scales the loss by ``2 * t``; we do not.

``positive="temporal"`` takes frames ``t`` and ``t + k`` of one episode as the positive pair (ATC,
Stooke et al., "Decoupling Representation Learning from Reinforcement Learning", ICML 2021), making
``batch_kind`` ``"pairs"``; ``positive="augment"`` takes two augmentations of one frame (``"frames"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldssl.encoders.base import Encoder
from worldssl.ssl.base import TwoViewObjective, read_metrics
from worldssl.ssl.batch import SSLBatch
from worldssl.ssl.heads import MoCoV2ProjectionHead, MoCoV3PredictionHead, MoCoV3ProjectionHead
from worldssl.ssl.losses.info_nce import info_nce_logits
from worldssl.ssl.momentum import make_target, update_momentum


class MoCo(TwoViewObjective):
    """MoCo v2 / v3 over an :class:`Encoder`.

    Args:
        version: 2 (key queue) or 3 (in-batch negatives, predictor, symmetric loss).
        positive: ``"augment"`` or ``"temporal"`` (see the module docstring).
        momentum: EMA coefficient of the key encoder and key projector (0.99; MoCo used 0.999 for
            ImageNet-length schedules, v3 0.99 to 1.0 with a cosine schedule).
        temperature: InfoNCE temperature; ``None`` picks 0.2 for v2 and 1.0 for v3.
        queue_size: number of negative keys kept (v2 only); must be at least the batch size.
        symmetric: v2 only: also contrast the second view's query with the first's key (v3 always does).
        hidden_dim, proj_dim: head widths.
        augment: the view augmentation (default: :func:`worldssl.ssl.base.default_augment`).
    """

    def __init__(self, encoder: Encoder, version: int = 2, positive: str = "augment", momentum: float = 0.99,
                 temperature: float | None = None, queue_size: int = 4096, symmetric: bool = False,
                 hidden_dim: int = 512, proj_dim: int = 128, augment: nn.Module | None = None):
        super().__init__(encoder, positive, augment)
        if version not in (2, 3):
            raise ValueError(f"MoCo version must be 2 or 3, got {version}")
        self.version = version
        self.momentum = float(momentum)
        self.temperature = float(temperature if temperature is not None else (0.2 if version == 2 else 1.0))
        self.symmetric = bool(symmetric) or version == 3
        if version == 2:
            self.projector = MoCoV2ProjectionHead(encoder.out_dim, hidden_dim, proj_dim)
            self.predictor = nn.Identity()
            if queue_size < 1:
                raise ValueError(f"queue_size must be >= 1 for MoCo v2, got {queue_size}")
            self.register_buffer("queue", F.normalize(torch.randn(queue_size, proj_dim), dim=1))  # [K, D]
            self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        else:
            self.projector = MoCoV3ProjectionHead(encoder.out_dim, hidden_dim, proj_dim)
            self.predictor = MoCoV3PredictionHead(proj_dim, hidden_dim, proj_dim)
            self.queue = None
        self.target_encoder = make_target(encoder)
        self.target_projector = make_target(self.projector)

    # -- branches -----------------------------------------------------------------------------------
    def query(self, obs: torch.Tensor) -> torch.Tensor:
        """Online branch: ``(B, C, H, W)`` uint8 -> ``(B, proj_dim)`` (predictor applied in v3)."""
        return self.predictor(self.projector(self.encoder(obs).flatten(1)))

    @torch.no_grad()
    def key(self, obs: torch.Tensor) -> torch.Tensor:
        """Momentum branch, no gradient: ``(B, C, H, W)`` uint8 -> ``(B, proj_dim)``."""
        return self.target_projector(self.target_encoder(obs).flatten(1))

    # -- queue --------------------------------------------------------------------------------------
    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest keys of the queue with ``keys`` (normalised), wrapping around its end."""
        if self.queue is None:
            return
        keys = F.normalize(keys.detach(), dim=1)[-len(self.queue):]
        n, size = len(keys), len(self.queue)
        # the pointer stays on the device: no host sync per step
        idx = (self.queue_ptr + torch.arange(n, device=keys.device)) % size
        self.queue.index_copy_(0, idx, keys.to(self.queue.dtype))
        self.queue_ptr.add_(n).remainder_(size)

    # -- objective ----------------------------------------------------------------------------------
    def loss(self, batch: SSLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """InfoNCE of queries against momentum keys. In training mode (grad enabled) the keys of this batch
        are enqueued after the loss is formed, as in MoCo; in eval mode the queue is left untouched."""
        v1, v2 = self.views(batch)
        if self.symmetric:  # both views through both branches: one shared pass per branch when possible
            h1, h2 = self.encode_pair(self.encoder, v1, v2)
            q1, q2 = (self.predictor(self.projector(h)) for h in (h1, h2))  # heads per view (BN)
            with torch.no_grad():
                g1, g2 = self.encode_pair(self.target_encoder, v1, v2)
                k1, k2 = self.target_projector(g1), self.target_projector(g2)
            pairs = [(q1, k2), (q2, k1)]
        else:
            pairs = [(self.query(v1), self.key(v2))]
        queue = self.queue.clone() if self.queue is not None else None
        losses, accs, pos = [], [], []
        for q, k in pairs:
            logits, labels = info_nce_logits(q, k, queue, self.temperature)
            losses.append(F.cross_entropy(logits, labels))
            accs.append((logits.argmax(dim=1) == labels).float().mean())
            pos.append(F.cosine_similarity(q, k, dim=1).mean())
        loss = torch.stack(losses).mean()
        metrics = read_metrics("MoCo", loss=loss, acc=torch.stack(accs).mean(), pos_cos=torch.stack(pos).mean())
        if self.training and torch.is_grad_enabled():
            for _, k in pairs:
                self.enqueue(k)
        return loss, metrics

    @torch.no_grad()
    def update_momentum(self) -> None:
        update_momentum(self.encoder, self.target_encoder, self.momentum)
        update_momentum(self.projector, self.target_projector, self.momentum)

    def extra_repr(self) -> str:
        return (f"version={self.version}, positive={self.positive!r}, batch_kind={self.batch_kind!r}, "
                f"temperature={self.temperature}, momentum={self.momentum}")

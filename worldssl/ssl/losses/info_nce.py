"""InfoNCE with a key queue (MoCo v2) or with in-batch negatives (MoCo v3).

van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018;
He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020 (eq. 1);
Chen et al., "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021 (MoCo v3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldssl.ssl.losses.precision import float32_loss


@float32_loss
def info_nce_logits(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor | None = None,
                    temperature: float = 0.2, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels of the InfoNCE classification task.

    Args:
        query: ``(B, D)`` queries; ``key``: ``(B, D)`` their positive keys.
        queue: ``(K, D)`` negative keys. With a queue the logits are ``[q.k+, q.queue]`` ``(B, 1+K)`` and
            the label is 0 (MoCo v2); without, the logits are ``q.key^T`` ``(B, B)`` and the label of row
            ``i`` is ``i`` (the other keys of the batch are the negatives, MoCo v3).
        normalize: L2-normalise query, key and queue first (cosine similarities).
    """
    if query.shape != key.shape or query.dim() != 2:
        raise ValueError(f"query and key must both be (B, D), got {tuple(query.shape)} and {tuple(key.shape)}")
    if normalize:
        query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
        queue = F.normalize(queue, dim=1) if queue is not None else None
    if queue is not None:
        pos = (query * key).sum(dim=1, keepdim=True)  # [B, 1]
        neg = query @ queue.t()  # [B, K]
        logits = torch.cat([pos, neg], dim=1) / temperature  # [B, 1+K]
        labels = torch.zeros(len(query), dtype=torch.long, device=query.device)
    else:
        logits = query @ key.t() / temperature  # [B, B]
        labels = torch.arange(len(query), device=query.device)
    return logits, labels


def info_nce(query: torch.Tensor, key: torch.Tensor, queue: torch.Tensor | None = None,
             temperature: float = 0.2, normalize: bool = True) -> torch.Tensor:
    """Mean InfoNCE loss ``-log exp(q.k+/t) / sum exp(q.k/t)``; see :func:`info_nce_logits`.

    MoCo v3's reference code multiplies this by ``2 * t``; we do not (only the learning-rate scale differs).
    """
    logits, labels = info_nce_logits(query, key, queue, temperature, normalize)
    return F.cross_entropy(logits, labels)

"""The CPC InfoNCE loss for one prediction offset ``k``, negatives drawn from the whole batch.

van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018 (eq. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldssl.ssl.losses.precision import float32_loss


@float32_loss
def cpc_logits(pred: torch.Tensor, z: torch.Tensor, k: int,
               temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels for predicting ``z_{t+k}`` from step ``t``.

    Args:
        pred: ``(B, T-k, D)``; ``pred[b, t]`` predicts ``z[b, t+k]``.
        z: ``(B, T, D)`` the latents of every frame in the batch; all ``B * T`` of them are the candidate
            set (the positive plus the other time steps of the same sequence and of the other sequences).
        k: the offset, ``1 <= k < T``.

    Returns:
        logits ``(B * (T-k), B * T)`` (log-bilinear scores ``pred . z / temperature``) and, per row, the
        flat index ``b * T + t + k`` of its positive.
    """
    b, t, d = z.shape
    if not 1 <= k < t or pred.shape != (b, t - k, d):
        raise ValueError(f"pred must be (B, T-k, D) = {(b, t - k, d)} for k={k}, got {tuple(pred.shape)}")
    logits = pred.reshape(-1, d) @ z.reshape(-1, d).t() / temperature  # [B*(T-k), B*T]
    steps = torch.arange(t - k, device=z.device) + k
    labels = (torch.arange(b, device=z.device)[:, None] * t + steps[None, :]).reshape(-1)
    return logits, labels


def cpc_info_nce(pred: torch.Tensor, z: torch.Tensor, k: int, temperature: float = 1.0) -> torch.Tensor:
    """Mean ``-log softmax`` of each prediction's positive among all ``B * T`` latents; see :func:`cpc_logits`."""
    logits, labels = cpc_logits(pred, z, k, temperature)
    return F.cross_entropy(logits, labels)

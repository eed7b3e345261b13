"""NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020 (eq. 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldssl.ssl.losses.precision import float32_loss


@float32_loss
def nt_xent_logits(z1: torch.Tensor, z2: torch.Tensor,
                   temperature: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(2B, 2B)`` (self-similarity masked to ``-inf``) and the index of each row's positive.

    Rows ``0..B-1`` are the first views, ``B..2B-1`` the second; the positive of ``i`` is ``i +- B``.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    b = len(z1)
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)  # [2B, D]
    logits = z @ z.t() / temperature  # [2B, 2B]
    eye = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))
    idx = torch.arange(b, device=z.device)
    labels = torch.cat([idx + b, idx])
    return logits, labels


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """Mean over the ``2B`` anchors of ``-log exp(s(i,j)/t) / sum_{k != i} exp(s(i,k)/t)``.

    ``s`` is cosine similarity; the ``2B - 2`` other views of the batch are the negatives.
    """
    logits, labels = nt_xent_logits(z1, z2, temperature)
    return F.cross_entropy(logits, labels)

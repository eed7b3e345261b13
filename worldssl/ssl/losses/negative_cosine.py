"""Negative cosine similarity, the regression loss of BYOL / SimSiam.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (eq. 2: ``2 - 2 cos(p, z')``);
Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (eq. 1: ``-cos(p, z)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldssl.ssl.losses.precision import float32_loss


@float32_loss
def negative_cosine(p: torch.Tensor, z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``-mean_i cos(p_i, z_i)`` over ``(B, D)`` rows, in ``[-1, 1]``.

    BYOL's per-pair loss ``||p/|p| - z/|z|||^2 = 2 - 2 cos`` is ``2 + 2 * negative_cosine``: same
    gradient direction, twice the scale. The stop-gradient on the target ``z`` is the caller's job.
    """
    if p.shape != z.shape:
        raise ValueError(f"p and z must have the same shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    return -F.cosine_similarity(p, z, dim=-1, eps=eps).mean()

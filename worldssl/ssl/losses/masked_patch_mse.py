"""The MAE reconstruction loss: mean squared error on the masked patches only.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (sec. 3, "Reconstruction
target"; the per-patch normalised target is their ``norm_pix_loss`` variant, Table 1c).
"""

from __future__ import annotations

import torch

from worldssl.ssl.losses.precision import float32_loss


@float32_loss
def masked_patch_mse(target: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True,
                     eps: float = 1e-6) -> torch.Tensor:
    """MSE between predicted and true patches, averaged over the masked patches.

    Args:
        target: ``(N, L, P)`` true patches (``P = p * p * C`` pixels each).
        pred: ``(N, L, P)`` decoder output.
        mask: ``(N, L)``, 1 for a masked (removed) patch, 0 for a visible one.
        norm_pix: normalise each target patch by its own mean and (unbiased) variance first.
    """
    if target.shape != pred.shape or mask.shape != target.shape[:2]:
        raise ValueError(f"shapes disagree: target {tuple(target.shape)}, pred {tuple(pred.shape)}, "
                         f"mask {tuple(mask.shape)}")
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # [N, L]
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)

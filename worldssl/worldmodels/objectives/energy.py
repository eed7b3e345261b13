"""The C-SWM energy: a scaled squared distance between latents, mean over object slots.

Kipf, van der Pol & Welling, "Contrastive Learning of Structured World Models", ICLR 2020 (eq. 3-5):
``d(x, y) = 1 / (2 sigma^2) * mean_k ||x_k - y_k||^2`` with ``sigma = 0.5`` (so ``d = 2 * mean_k ||.||^2``).
A flat latent ``(B, D)`` is one slot (``K = 1``).
"""

from __future__ import annotations

import torch


def _as_slots(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(B, D)`` -> ``(B, 1, D)``; ``(B, K, D)`` unchanged."""
    if x.dim() == 2:
        return x.unsqueeze(1)
    if x.dim() == 3:
        return x
    raise ValueError(f"{name} must be (B, D) or (B, K, D), got {tuple(x.shape)}")


def energy(x: torch.Tensor, y: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """Per-sample energy ``(B,)``: sum over ``D`` of ``(x - y)^2``, mean over slots ``K``, times ``1 / (2 sigma^2)``."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    diff = _as_slots(x, "x") - _as_slots(y, "y")  # [B, K, D]
    return diff.pow(2).sum(-1).mean(-1) / (2.0 * sigma**2)


def pairwise_energy(x: torch.Tensor, y: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """``out[i, j] = energy(x[i], y[j])``: ``(N, ...)`` and ``(M, ...)`` -> ``(N, M)``.

    Computed as ``|x|^2 + |y|^2 - 2 x.y`` over the flattened latent (divided by ``K``), one matrix product
    instead of an ``(N, M, K, D)`` difference tensor; clamped at 0 against rounding.
    """
    xs, ys = _as_slots(x, "x"), _as_slots(y, "y")
    if xs.shape[1:] != ys.shape[1:]:
        raise ValueError(f"x and y must have the same latent shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    k = xs.shape[1]
    xf, yf = xs.flatten(1), ys.flatten(1)  # [N, K*D], [M, K*D]
    sq = xf.pow(2).sum(1)[:, None] + yf.pow(2).sum(1)[None, :] - 2.0 * xf @ yf.t()  # [N, M]
    return sq.clamp_min(0.0) / k / (2.0 * sigma**2)

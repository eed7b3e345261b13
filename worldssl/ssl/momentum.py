"""Exponential-moving-average ("momentum") target networks, updated by an explicit call."""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def update_momentum(online: nn.Module, target: nn.Module, m: float) -> None:
    """``target <- m * target + (1 - m) * online`` for every parameter; buffers (BN statistics) are copied.

    Call it from the training step after ``optimizer.step()`` (MoCo, He et al. 2020, eq. 2; BYOL,
    Grill et al. 2020, eq. 1). ``m = 1`` freezes the target, ``m = 0`` copies the online weights.
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.mul_(m).add_(p_o.detach(), alpha=1.0 - m)
    for b_t, b_o in zip(target.buffers(), online.buffers(), strict=True):
        b_t.copy_(b_o)


def make_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` with gradients off: the initial momentum target."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target

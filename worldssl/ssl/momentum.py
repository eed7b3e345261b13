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
    targets, onlines = list(target.parameters()), list(online.parameters())
    if len(targets) != len(onlines):
        raise ValueError(f"target has {len(targets)} parameters, online {len(onlines)}")
    if targets:
        # one fused multi-tensor kernel per op instead of two small kernels per parameter (same arithmetic)
        torch._foreach_mul_(targets, m)
        torch._foreach_add_(targets, [p.detach() for p in onlines], alpha=1.0 - m)
    buffers = list(zip(target.buffers(), online.buffers(), strict=True))
    if buffers:
        torch._foreach_copy_([b for b, _ in buffers], [b for _, b in buffers])


def make_target(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` with gradients off: the initial momentum target."""
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target

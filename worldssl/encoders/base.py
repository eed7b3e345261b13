"""The encoder contract: a batch of frames ``(B, C, H, W)`` in, features ``(B, D)`` (or slots ``(B, K, D)``) out.

The input is **uint8 in [0, 255], or float in [0, 1] meaning pixel / 255** (what Stable-Baselines3 hands a
features extractor with ``normalize_images=True``, and what the float augmentations of
:mod:`worldssl.data.augment` return). Both give the same features: ``encoder(x)`` equals
``encoder(x.float() / 255)``. Each family applies its own normalisation inside, from that unit range
(:meth:`Encoder.standardize`): ``x - 0.5`` for the conv encoder, ``x`` for C-SWM's slot encoders, the ImageNet
mean / std for timm backbones. Callers never normalise themselves.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def to_unit(obs: torch.Tensor) -> torch.Tensor:
    """uint8 ``[0, 255]`` -> float ``[0, 1]`` (``x.float() / 255``); float input is already in that range."""
    if obs.dtype == torch.uint8:
        return obs.float().div_(255.0)
    if not obs.is_floating_point():
        raise TypeError(f"encoders take uint8 [0, 255] or float [0, 1] frames, got {obs.dtype}")
    return obs


class Encoder(nn.Module):
    """Base class of every pixel encoder.

    Subclasses set ``self.kind`` (a registry name), implement :meth:`forward_features` on normalised float
    input (override :meth:`standardize` to choose the normalisation), and return the constructor kwargs from :meth:`arch_config` so ``encoders.build(kind, **cfg)``
    rebuilds the same architecture. ``out_shape`` is measured once with a dummy forward pass.
    """

    kind: str = "base"

    def __init__(self, obs_shape: tuple[int, int, int]):
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"obs_shape must be (C, H, W), got {obs_shape}")
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.frozen = False

    # -- to implement ---------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float ``(B, C, H, W)`` -> features."""
        raise NotImplementedError

    def arch_config(self) -> dict[str, Any]:
        """Constructor kwargs (JSON-serialisable) that rebuild this architecture."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------------
    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Float pixels in ``[0, 1]`` -> this family's network input (here ``[-0.5, 0.5]``, as DrQ / CURL).
        ``x`` may be the caller's tensor: do not modify it in place."""
        return x - 0.5

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """The input contract (uint8 ``[0, 255]``, or float ``[0, 1]`` = pixel / 255) -> network input."""
        return self.standardize(to_unit(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dim() != 4 or tuple(obs.shape[1:]) != self.obs_shape:
            raise ValueError(f"{type(self).__name__} expects (B, {', '.join(map(str, self.obs_shape))}), "
                             f"got {tuple(obs.shape)}")
        return self.forward_features(self.normalize(obs))

    def finish_init(self) -> None:
        """Call at the end of a subclass ``__init__``: measures ``out_shape`` with a dummy forward pass."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            out = self(torch.zeros(2, *self.obs_shape, dtype=torch.uint8))
        self.train(was_training)
        self.out_shape = tuple(out.shape[1:])

    @property
    def out_dim(self) -> int:
        return int(torch.tensor(self.out_shape).prod())

    def freeze(self) -> Encoder:
        """No gradients, eval mode (kept in eval mode by :meth:`train`)."""
        for p in self.parameters():
            p.requires_grad_(False)
        self.frozen = True
        return super().train(False)

    def train(self, mode: bool = True) -> Encoder:
        return super().train(False if self.frozen else mode)

"""The encoder contract: a uint8 batch ``(B, C, H, W)`` in, features ``(B, D)`` (or slots ``(B, K, D)``) out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Encoder(nn.Module):
    """Base class of every pixel encoder.

    Subclasses set ``self.kind`` (a registry name), implement :meth:`forward_features` on normalised float
    input, and return the constructor kwargs from :meth:`arch_config` so ``encoders.build(kind, **cfg)``
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
    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 ``[0, 255]`` -> float in ``[-0.5, 0.5]``; float input is taken as already normalised."""
        if obs.dtype == torch.uint8:
            return obs.float().div_(255.0).sub_(0.5)
        return obs

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

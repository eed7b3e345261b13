"""Pixel decoders for the generative objectives (C-SWM's AE / VAE baselines, World Models).

Both decoders return float ``(B, C, H, W)``: ``logits(z)`` unbounded (for ``binary_cross_entropy_with_logits``)
and ``forward(z) = sigmoid(logits(z))``, pixel values in ``[0, 1]`` (the target is ``uint8 / 255``).

The upsampling trunk (:class:`Upsampler`) starts from a small ``c x h0 x w0`` map, doubles it ``n`` times
with ``ConvTranspose2d(4, stride 2, padding 1)`` + ReLU, maps to ``C`` channels with a 3x3 conv and crops the
top-left ``H x W``. ``n`` is the largest number (at most 4) of doublings that keeps ``h0, w0 >= 4``, with
``h0 = ceil(H / 2^n)``: 50 -> 7 x 2^3 = 56 cropped to 50, 64 -> 4 x 2^4, 84 -> 6 x 2^4 = 96 cropped to 84.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from worldssl.worldmodels.transitions import mlp


class Upsampler(nn.Module):
    """``(B, channels, h0, w0)`` -> ``(B, C, H, W)`` logits: transposed-conv doublings, a 3x3 conv, a crop."""

    def __init__(self, obs_shape: tuple[int, int, int], channels: int = 32, max_doublings: int = 4):
        super().__init__()
        self.obs_shape = tuple(int(s) for s in obs_shape)
        c, h, w = self.obs_shape
        n = 0
        while n < max_doublings and min(h, w) / 2 ** (n + 1) >= 4:
            n += 1
        self.doublings, self.channels = n, int(channels)
        self.start_shape = (math.ceil(h / 2**n), math.ceil(w / 2**n))
        layers: list[nn.Module] = []
        for _ in range(n):
            layers += [nn.ConvTranspose2d(self.channels, self.channels, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(self.channels, c, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w = self.obs_shape
        return self.net(x)[:, :, :h, :w]


class FlatDecoder(nn.Module):
    """Flat latent ``(B, latent_dim)`` -> frame ``(B, C, H, W)``: ``mlp`` to a ``channels x h0 x w0`` map, ReLU,
    then :class:`Upsampler`. Slot latents ``(B, K, D)`` are flattened first (``latent_dim = K*D``).

    Args:
        latent_dim: width of the (flattened) latent.
        obs_shape: ``(C, H, W)`` to reconstruct (any ``H, W >= 4``).
        hidden_dim: MLP width (512).
        channels: channels of the upsampling trunk (32).
    """

    def __init__(self, latent_dim: int, obs_shape: tuple[int, int, int], hidden_dim: int = 512, channels: int = 32):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.up = Upsampler(obs_shape, channels)
        self.obs_shape = self.up.obs_shape
        h0, w0 = self.up.start_shape
        self.mlp = mlp(self.latent_dim, hidden_dim, self.up.channels * h0 * w0)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> pixel logits ``(B, C, H, W)``."""
        z = z.reshape(z.shape[0], -1)
        if z.shape[1] != self.latent_dim:
            raise ValueError(f"FlatDecoder expects latents of {self.latent_dim} values, got {tuple(z.shape)}")
        x = torch.relu(self.mlp(z)).view(z.shape[0], self.up.channels, *self.up.start_shape)
        return self.up(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> pixels in ``[0, 1]``."""
        return torch.sigmoid(self.logits(z))


class SlotDecoder(nn.Module):
    """Slots ``(B, K, D)`` -> frame ``(B, C, H, W)``, after C-SWM's decoder baseline: a shared MLP decodes
    each slot to its own ``h0 x w0`` map, the ``K`` maps are stacked as channels (slot ``k`` -> channel
    ``k``), and :class:`Upsampler` turns them into the frame.

    Args:
        num_slots: ``K``.
        embedding_dim: ``D``.
        obs_shape: ``(C, H, W)`` to reconstruct.
        hidden_dim: width of the per-slot MLP (512).
        channels: channels of the upsampling trunk (32).
    """

    def __init__(self, num_slots: int, embedding_dim: int, obs_shape: tuple[int, int, int], hidden_dim: int = 512,
                 channels: int = 32):
        super().__init__()
        self.num_slots, self.embedding_dim = int(num_slots), int(embedding_dim)
        self.up = Upsampler(obs_shape, channels)
        self.obs_shape = self.up.obs_shape
        h0, w0 = self.up.start_shape
        self.slot_mlp = mlp(self.embedding_dim, hidden_dim, h0 * w0)
        self.mix = nn.Conv2d(self.num_slots, self.up.channels, 1)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Slots -> pixel logits ``(B, C, H, W)``."""
        if z.dim() != 3 or tuple(z.shape[1:]) != (self.num_slots, self.embedding_dim):
            raise ValueError(f"SlotDecoder expects slots (B, {self.num_slots}, {self.embedding_dim}), "
                             f"got {tuple(z.shape)}")
        maps = self.slot_mlp(z).view(z.shape[0], self.num_slots, *self.up.start_shape)  # [B, K, h0, w0]
        return self.up(torch.relu(self.mix(torch.relu(maps))))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Slots -> pixels in ``[0, 1]``."""
        return torch.sigmoid(self.logits(z))

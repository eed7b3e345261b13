"""Pixel decoders for the generative objectives (C-SWM's AE / VAE baselines, World Models).

Both decoders return float ``(B, C, H, W)``: ``logits(z)`` unbounded (for ``binary_cross_entropy_with_logits``)
and ``forward(z) = sigmoid(logits(z))``, pixel values in ``[0, 1]`` (the target is ``uint8 / 255``).

The trunk (:class:`Upsampler`) turns a small ``c x h0 x w0`` map into the frame, either patch-wise (one
transposed conv with kernel = stride = ``p``, C-SWM's small decoder; the default) or by repeated doubling,
and crops the top-left ``H x W``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from worldssl.worldmodels.transitions import mlp


class Upsampler(nn.Module):
    """``(B, channels, h0, w0)`` -> ``(B, C, H, W)`` logits, in one of two styles, then a crop to ``H x W``.

    - ``"patch"`` (default): one ``ConvTranspose2d(channels, C, p, stride p)``: each cell of the start map
      paints its own ``p x p`` patch (``h0 = ceil(H / p)``). The mirror of C-SWM's small extractor, and the
      decoder of its Shapes baselines; cheap at any resolution.
    - ``"upsample"``: ``n`` doublings with ``ConvTranspose2d(4, stride 2, padding 1)`` + ReLU, then a 3x3 conv
      to ``C``; ``n`` is the largest number (at most 4) that keeps ``h0, w0 >= 4`` with ``h0 = ceil(H / 2^n)``.
      More expressive, and about 10x the cost of the whole C-SWM model per step on a CPU at 50x50.

    Convolutions run channels-last (about 2x faster on CPUs with oneDNN).
    """

    def __init__(self, obs_shape: tuple[int, int, int], channels: int = 32, style: str = "patch", patch: int = 10,
                 max_doublings: int = 4):
        super().__init__()
        if style not in ("patch", "upsample"):
            raise ValueError(f"decoder style must be 'patch' or 'upsample', got {style!r}")
        if int(patch) < 1:
            raise ValueError(f"decoder patch must be >= 1, got {patch!r}")
        self.obs_shape = tuple(int(s) for s in obs_shape)
        c, h, w = self.obs_shape
        self.style, self.channels = style, int(channels)
        layers: list[nn.Module] = []
        if style == "patch":
            self.doublings, self.patch = 0, int(patch)
            self.start_shape = (math.ceil(h / self.patch), math.ceil(w / self.patch))
            layers.append(nn.ConvTranspose2d(self.channels, c, self.patch, stride=self.patch))
        else:
            n = 0
            while n < max_doublings and min(h, w) / 2 ** (n + 1) >= 4:
                n += 1
            self.doublings, self.patch = n, 2**n
            self.start_shape = (math.ceil(h / 2**n), math.ceil(w / 2**n))
            for _ in range(n):
                layers += [nn.ConvTranspose2d(self.channels, self.channels, 4, stride=2, padding=1), nn.ReLU()]
            layers.append(nn.Conv2d(self.channels, c, 3, padding=1))
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h, w = self.obs_shape
        return self.net(x.contiguous(memory_format=torch.channels_last))[:, :, :h, :w].contiguous()


class FlatDecoder(nn.Module):
    """Flat latent ``(B, latent_dim)`` -> frame ``(B, C, H, W)``: ``mlp`` to a ``channels x h0 x w0`` map, ReLU,
    then :class:`Upsampler`. Slot latents ``(B, K, D)`` are flattened first (``latent_dim = K*D``).

    Args:
        latent_dim: width of the (flattened) latent.
        obs_shape: ``(C, H, W)`` to reconstruct (any ``H, W >= 4``).
        hidden_dim: MLP width (512).
        channels: channels of the upsampling trunk (32).
        style, patch: the trunk (see :class:`Upsampler`).
    """

    def __init__(self, latent_dim: int, obs_shape: tuple[int, int, int], hidden_dim: int = 512, channels: int = 32,
                 style: str = "patch", patch: int = 10):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.up = Upsampler(obs_shape, channels, style=style, patch=patch)
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
        style, patch: the trunk (see :class:`Upsampler`).
    """

    def __init__(self, num_slots: int, embedding_dim: int, obs_shape: tuple[int, int, int], hidden_dim: int = 512,
                 channels: int = 32, style: str = "patch", patch: int = 10):
        super().__init__()
        self.num_slots, self.embedding_dim = int(num_slots), int(embedding_dim)
        self.up = Upsampler(obs_shape, channels, style=style, patch=patch)
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

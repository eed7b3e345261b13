"""C-SWM's object-slot encoder: a CNN object extractor giving one feature map per slot, and a shared MLP
object encoder turning each map into a ``D``-dimensional slot.

Kipf, van der Pol & Welling, "Contrastive Learning of Structured World Models", ICLR 2020, sec. 3 and app. C.
Extractors (``hidden`` channels, ``hidden_dim // 16`` = 32 by default, ``K`` = ``num_slots``):

- ``small`` (2D Shapes): ``Conv 10x10 stride 10 -> BN -> ReLU -> Conv 1x1 to K -> sigmoid``; 50x50 gives 5x5
  maps, one pixel per grid cell.
- ``medium``: ``Conv 9x9 pad 4 -> BN -> LeakyReLU -> Conv 5x5 stride 5 to K -> sigmoid``; 50x50 gives 10x10
  maps.
- ``large`` (3D Cubes, Atari): ``(Conv 3x3 pad 1 -> BN -> ReLU) x 3 -> Conv 3x3 pad 1 to K -> sigmoid`` at
  full resolution.

Initialisation (``init``): ``"torch"`` keeps PyTorch's default (Kaiming-uniform with ``a = sqrt(5)``);
``"xavier"`` is the released C-SWM code's: Glorot-uniform weights and zero biases on every extractor conv.
For the large extractor the bounds are 0.7x the default's on the first conv and 1.7x (hidden convs) to 2.3x
(the last conv) on the others.

Object encoder, shared over slots: ``flattened map -> Linear -> ReLU -> Linear -> LayerNorm -> ReLU -> Linear``
to ``embedding_dim`` (512 hidden units; ``D = 2`` for Shapes / Cubes).

Any :mod:`worldssl.encoders` encoder (``(B, D)`` out) can serve as a world model's encoder as it is; this
module only adds the slot-structured one and :class:`FlatMapEncoder`, the same CNN flattened into one vector
(C-SWM's AE / VAE baselines: 32 maps, one MLP to a 32-dim latent).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worldssl.encoders.base import Encoder
from worldssl.worldmodels.transitions import mlp

EXTRACTORS = ("small", "medium", "large")
INITS = ("torch", "xavier")


def object_extractor(size: str, in_channels: int, hidden: int, num_maps: int, init: str = "torch") -> nn.Sequential:
    """C-SWM's CNN object extractor of ``size`` small / medium / large: ``(B, C, H, W)`` -> ``(B, K, h, w)`` in [0, 1].

    ``init="xavier"`` gives every conv Glorot-uniform weights and zero biases (C-SWM's code); ``"torch"`` keeps
    PyTorch's default."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if size == "small":
        layers = [nn.Conv2d(in_channels, hidden, 10, stride=10), nn.BatchNorm2d(hidden), nn.ReLU(),
                  nn.Conv2d(hidden, num_maps, 1)]
    elif size == "medium":
        layers = [nn.Conv2d(in_channels, hidden, 9, padding=4), nn.BatchNorm2d(hidden), nn.LeakyReLU(),
                  nn.Conv2d(hidden, num_maps, 5, stride=5)]
    elif size == "large":
        layers = []
        ch = in_channels
        for _ in range(3):
            layers += [nn.Conv2d(ch, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU()]
            ch = hidden
        layers.append(nn.Conv2d(hidden, num_maps, 3, padding=1))
    else:
        raise ValueError(f"extractor must be one of {', '.join(EXTRACTORS)}, got {size!r}")
    if init == "xavier":
        for layer in layers:
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers, nn.Sigmoid())


def object_mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """``Linear -> ReLU -> Linear -> LayerNorm -> ReLU -> Linear`` (C-SWM's object encoder); the last layer
    computes in float32 under autocast (see :class:`~worldssl.worldmodels.transitions.Float32Linear`)."""
    return mlp(in_dim, hidden_dim, out_dim, float32_out=True)


class _MapEncoder(Encoder):
    """Shared parts: ``[0, 1]`` input scaling, the extractor, and its measured map size."""

    def _init_extractor(self, extractor: str, num_maps: int, cnn_channels: int, init: str = "torch") -> None:
        if extractor not in EXTRACTORS:
            raise ValueError(f"extractor must be one of {', '.join(EXTRACTORS)}, got {extractor!r}")
        self.extractor_size, self.cnn_channels = extractor, int(cnn_channels)
        # channels-last: oneDNN's convolutions run about 2x faster on CPU (the large extractor dominates Cubes)
        self.extractor = object_extractor(extractor, self.obs_shape[0], self.cnn_channels, num_maps, init).to(
            memory_format=torch.channels_last)
        was_training = self.extractor.training
        self.extractor.eval()
        with torch.no_grad():
            maps = self.extractor(torch.zeros(1, *self.obs_shape))
        self.extractor.train(was_training)
        if maps.shape[-1] < 1 or maps.shape[-2] < 1:
            raise ValueError(f"obs_shape {self.obs_shape} is too small for the {extractor} extractor")
        self.map_shape = (int(maps.shape[-2]), int(maps.shape[-1]))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Float pixels in ``[0, 1]`` stay as they are (C-SWM's input range), laid out channels-last."""
        return x.contiguous(memory_format=torch.channels_last)

    def normalization(self) -> dict[str, Any]:
        return {"type": "unit", "formula": "x / 255", "input": "uint8 [0, 255] or float [0, 1] (pixel / 255)"}

    def object_maps(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation ``(B, C, H, W)`` -> the extractor's maps ``(B, K, h, w)`` in ``[0, 1]`` (for visualising)."""
        if obs.dim() != 4 or tuple(obs.shape[1:]) != self.obs_shape:
            raise ValueError(f"{type(self).__name__} expects (B, {', '.join(map(str, self.obs_shape))}), "
                             f"got {tuple(obs.shape)}")
        return self.extractor(self.normalize(obs))


class SlotEncoder(_MapEncoder):
    """C-SWM object-slot encoder: uint8 ``(B, C, H, W)`` -> slots ``(B, K, D)``; ``out_shape = (K, D)``.

    Args:
        obs_shape: ``(C, H, W)``.
        num_slots: ``K``, the number of object maps / slots (5 for Shapes and Cubes).
        embedding_dim: ``D``, width of each slot (2 for Shapes and Cubes).
        hidden_dim: hidden width of the object MLP (512).
        extractor: ``"small"`` (Shapes), ``"medium"`` or ``"large"`` (Cubes, Atari).
        cnn_channels: channels of the extractor's hidden convs; default ``hidden_dim // 16`` (32).
        init: the extractor convs' initialisation, ``"torch"`` or ``"xavier"`` (C-SWM's code).
    """

    kind = "slots"

    def __init__(self, obs_shape: tuple[int, int, int], num_slots: int = 5, embedding_dim: int = 2,
                 hidden_dim: int = 512, extractor: str = "small", cnn_channels: int | None = None,
                 init: str = "torch"):
        super().__init__(obs_shape)
        if min(num_slots, embedding_dim, hidden_dim) < 1:
            raise ValueError(f"num_slots, embedding_dim and hidden_dim must be >= 1, "
                             f"got {num_slots}, {embedding_dim}, {hidden_dim}")
        self.num_slots, self.embedding_dim, self.hidden_dim = int(num_slots), int(embedding_dim), int(hidden_dim)
        self._init_extractor(extractor, self.num_slots, cnn_channels or max(1, self.hidden_dim // 16), init)
        h, w = self.map_shape
        self.object_encoder = object_mlp(h * w, self.hidden_dim, self.embedding_dim)
        self.finish_init()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.extractor(x)  # [B, K, h, w]
        return self.object_encoder(maps.flatten(2))  # [B, K, D]

    def arch_config(self) -> dict[str, Any]:
        return {"num_slots": self.num_slots, "embedding_dim": self.embedding_dim, "hidden_dim": self.hidden_dim,
                "extractor": self.extractor_size, "cnn_channels": self.cnn_channels}


class FlatMapEncoder(_MapEncoder):
    """C-SWM's AE / VAE baseline encoder: the same CNN with ``num_maps`` maps, all flattened into one vector,
    then ``Linear -> ReLU -> Linear -> LayerNorm -> ReLU -> Linear`` to ``latent_dim``: ``(B, latent_dim)``.

    Args:
        obs_shape: ``(C, H, W)``.
        num_maps: extractor maps (32 in C-SWM's baselines).
        latent_dim: output width (32).
        hidden_dim: MLP width (512).
        extractor: ``"small"``, ``"medium"`` or ``"large"``.
        cnn_channels: hidden conv channels; default ``hidden_dim // 16``.
        init: as :class:`SlotEncoder`.
    """

    kind = "cswm_flat"

    def __init__(self, obs_shape: tuple[int, int, int], num_maps: int = 32, latent_dim: int = 32,
                 hidden_dim: int = 512, extractor: str = "small", cnn_channels: int | None = None,
                 init: str = "torch"):
        super().__init__(obs_shape)
        if min(num_maps, latent_dim, hidden_dim) < 1:
            raise ValueError(f"num_maps, latent_dim and hidden_dim must be >= 1, "
                             f"got {num_maps}, {latent_dim}, {hidden_dim}")
        self.num_maps, self.latent_dim, self.hidden_dim = int(num_maps), int(latent_dim), int(hidden_dim)
        self._init_extractor(extractor, self.num_maps, cnn_channels or max(1, self.hidden_dim // 16), init)
        h, w = self.map_shape
        self.mlp = object_mlp(self.num_maps * h * w, self.hidden_dim, self.latent_dim)
        self.finish_init()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.extractor(x).flatten(1))  # [B, latent_dim]

    def arch_config(self) -> dict[str, Any]:
        return {"num_maps": self.num_maps, "latent_dim": self.latent_dim, "hidden_dim": self.hidden_dim,
                "extractor": self.extractor_size, "cnn_channels": self.cnn_channels}

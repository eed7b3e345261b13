"""The shallow conv encoder of SAC-AE / CURL / DrQ: a few 3x3 convs, a linear head, LayerNorm and tanh.

Yarats et al., "Improving Sample Efficiency in Model-Free RL from Images" (SAC-AE, 2019); Laskin et al.,
CURL (2020); Kostrikov, Yarats & Fergus, DrQ (2020). ``num_layers`` 3x3 convolutions with ``num_filters``
channels (stride 2 for the first, 1 for the rest), ReLU after each, flatten, ``Linear -> LayerNorm -> tanh``
to ``feature_dim``. Weights use the delta-orthogonal init of those papers' code.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from worldssl.encoders.base import Encoder


class ConvEncoder(Encoder):
    """DrQ/CURL conv encoder: uint8 ``(B, C, H, W)`` -> ``(B, feature_dim)`` in ``[-1, 1]``.

    Args:
        obs_shape: ``(C, H, W)`` of the (frame-stacked) observation.
        feature_dim: width of the head's output (50 in CURL / DrQ).
        num_filters: channels of every conv (32).
        num_layers: number of 3x3 convs (4); the first has stride 2, the rest stride 1.
    """

    kind = "conv"

    def __init__(self, obs_shape: tuple[int, int, int], feature_dim: int = 50, num_filters: int = 32,
                 num_layers: int = 4):
        super().__init__(obs_shape)
        if min(feature_dim, num_filters, num_layers) < 1:
            raise ValueError(f"feature_dim, num_filters and num_layers must be >= 1, "
                             f"got {feature_dim}, {num_filters}, {num_layers}")
        self.feature_dim, self.num_filters, self.num_layers = int(feature_dim), int(num_filters), int(num_layers)
        layers: list[nn.Module] = []
        in_ch = self.obs_shape[0]
        for i in range(self.num_layers):
            layers += [nn.Conv2d(in_ch, self.num_filters, 3, stride=2 if i == 0 else 1), nn.ReLU(inplace=True)]
            in_ch = self.num_filters
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.conv_out_dim = self._measure_trunk()
        self.head = nn.Sequential(nn.Linear(self.conv_out_dim, self.feature_dim), nn.LayerNorm(self.feature_dim),
                                  nn.Tanh())
        self.apply(_delta_orthogonal_init)
        self.finish_init()

    def _measure_trunk(self) -> int:
        """Width of the flattened conv output, measured with one dummy pass (never computed by hand)."""
        with torch.no_grad():
            out = self.convs(torch.zeros(1, *self.obs_shape))
        if out.shape[1] < 1:
            raise ValueError(f"obs_shape {self.obs_shape} is too small for {self.num_layers} 3x3 convs")
        return int(out.shape[1])

    def forward_conv(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation (uint8, or float pixel / 255) -> flattened conv trunk ``(B, conv_out_dim)``."""
        self.check_input(obs)
        return self.convs(self.normalize(obs))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))  # [B, feature_dim]

    def check_input(self, obs: torch.Tensor) -> None:
        if obs.dim() != 4 or tuple(obs.shape[1:]) != self.obs_shape:
            raise ValueError(f"{type(self).__name__} expects (B, {', '.join(map(str, self.obs_shape))}), "
                             f"got {tuple(obs.shape)}")

    def arch_config(self) -> dict[str, Any]:
        return {"feature_dim": self.feature_dim, "num_filters": self.num_filters, "num_layers": self.num_layers}

    def normalization(self) -> dict[str, Any]:
        return {"type": "center", "formula": "x / 255 - 0.5", "input": "uint8 [0, 255] or float [0, 1] (pixel / 255)"}


def _delta_orthogonal_init(m: nn.Module) -> None:
    """Orthogonal linear layers; convs are zero except an orthogonal centre tap (delta-orthogonal)."""
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.zeros_(m.weight)
        nn.init.zeros_(m.bias)
        mid = m.weight.shape[2] // 2
        with torch.no_grad():
            centre = torch.empty(m.weight.shape[:2])
            nn.init.orthogonal_(centre, gain=nn.init.calculate_gain("relu"))
            m.weight[:, :, mid, mid] = centre

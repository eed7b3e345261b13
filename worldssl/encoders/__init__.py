"""Pixel encoders: a registry of kinds, ``build`` from a config, and safetensors checkpoints (``save`` / ``load``).

``load`` also reads published MoCo v1/v2 ResNet-50, MAE / MVP ViT and R3M checkpoints (weights only).
"""

from __future__ import annotations

import inspect
from typing import Any

from worldssl.encoders.base import Encoder
from worldssl.encoders.conv import ConvEncoder
from worldssl.encoders.timm_backbones import ResNetEncoder, ViTEncoder
from worldssl.runtime.errors import ConfigError

ENCODERS: dict[str, type[Encoder]] = {"conv": ConvEncoder, "resnet": ResNetEncoder, "vit": ViTEncoder}


def build(kind: str, obs_shape: tuple[int, int, int], **kwargs: Any) -> Encoder:
    """A randomly initialised encoder of registry ``kind`` for observations ``obs_shape = (C, H, W)``."""
    if kind not in ENCODERS:
        raise ConfigError(f"unknown encoder kind {kind!r}; valid: {', '.join(ENCODERS)}")
    cls = ENCODERS[kind]
    accepted = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", "obs_shape")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"encoder kind {kind!r} has no option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(accepted)}")
    try:
        return cls(tuple(obs_shape), **kwargs)
    except ValueError as e:
        raise ConfigError(f"cannot build a {kind!r} encoder for obs_shape {tuple(obs_shape)}: {e}") from e


# imported last: checkpoint.py uses ENCODERS / build
from worldssl.encoders.checkpoint import FrameWise, load, load_weights, save  # noqa: E402

__all__ = ["ENCODERS", "ConvEncoder", "Encoder", "FrameWise", "ResNetEncoder", "ViTEncoder", "build", "load",
           "load_weights", "save"]

"""Losses are computed in float32 even inside a bfloat16 autocast region.

Mixed precision speeds up the backbone, but similarity logits divided by a small temperature, or squared
pixel errors summed over a patch, lose too many digits in bfloat16 (8 bits of mantissa: a cosine of 0.95
is stored with an error of about 0.004, which a temperature of 0.2 turns into 0.02 in the logit).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import torch

F = TypeVar("F", bound=Callable)


def _to_float32(x):
    return x.float() if isinstance(x, torch.Tensor) and x.is_floating_point() else x


def float32_loss(fn: F) -> F:
    """Run ``fn`` with autocast off and its floating-point tensor arguments cast to float32."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device_type = next((a.device.type for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), "cpu")
        with torch.autocast(device_type=device_type, enabled=False):
            return fn(*(_to_float32(a) for a in args), **{k: _to_float32(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]

"""Device auto-selection, mixed precision and seeding."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from worldssl.runtime.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA if present, else MPS, else CPU; an unavailable explicit choice is a ConfigError."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=auto or device=cpu")
    return device


def autocast(device: torch.device, enabled: bool | str = "auto"):
    """bfloat16 autocast on CUDA when ``enabled`` is True or ``auto``; a no-op context elsewhere."""
    use = device.type == "cuda" and enabled in (True, "auto", "true")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

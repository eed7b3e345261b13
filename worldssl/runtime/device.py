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


def cpu_has_bf16_matmul() -> bool:
    """True on CPUs with native bfloat16 matrix units (Intel AMX), where bf16 autocast runs MLPs several
    times faster than float32; False where bf16 would be emulated (and slower)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_bf16" in line.split()
    except OSError:
        pass
    return False


def autocast(device: torch.device, enabled: bool | str = "auto", cpu_auto: bool = False):
    """bfloat16 autocast, or a no-op context.

    ``enabled``: ``True`` / ``"true"`` / ``"bf16"`` always (CUDA or CPU), ``False`` / ``"false"`` never,
    ``"auto"`` on CUDA, and on CPU too when ``cpu_auto`` and the CPU has native bf16 matmul (AMX).
    """
    if enabled in (False, "false", "off", None):
        return contextlib.nullcontext()
    if enabled == "auto":
        use = device.type == "cuda" or (cpu_auto and device.type == "cpu" and cpu_has_bf16_matmul())
    elif enabled in (True, "true", "bf16", "on"):
        use = device.type in ("cuda", "cpu")
    else:
        raise ConfigError(f"amp must be auto, true or false, got {enabled!r}")
    if not use:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def compile_enabled(enabled: bool | str, device: torch.device) -> bool:
    """``compile``: ``auto`` compiles on CUDA only (on a CPU, inductor's C++ build costs minutes of a short run and
    the small models here are not launch-bound); ``True`` / ``False`` force it."""
    if enabled == "auto":
        return device.type == "cuda"
    if isinstance(enabled, bool):
        return enabled
    raise ConfigError(f"compile must be auto, true or false, got {enabled!r}")


def compile_modules(modules: list[torch.nn.Module], enabled: bool | str, device: torch.device) -> bool:
    """``torch.compile`` each module in place (``nn.Module.compile``: its state_dict keys, hence checkpoints, stay
    as they were) when :func:`compile_enabled`; returns whether it did."""
    if not compile_enabled(enabled, device):
        return False
    for module in modules:
        module.compile()
    return True


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)

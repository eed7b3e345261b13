"""Policy learners and the loop that trains them.

An agent exposes ``act(obs, eval_mode) -> action`` and ``update(batch) -> dict[str, float]`` and never logs,
steps an env or writes a file; :mod:`agents.loop` owns all of that. ``AGENTS`` maps a name (``agent=`` on the
command line, ``configs/agent/<name>.yaml``) to a builder that takes the plain spec stored in a run's
``checkpoints/agent.json``, so a trained agent is rebuilt from that file alone (:func:`agents.loop.load_agent`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _build_sac(spec: dict[str, Any], device: str | torch.device = "cpu") -> Any:
    from agents.encoders import build_features
    from agents.sac import SACAgent, SACConfig

    features = build_features(spec["mode"], tuple(spec["obs_shape"]), spec.get("encoder_checkpoint"),
                              spec.get("conv"))
    return SACAgent(features, int(spec["action_dim"]), spec["mode"], SACConfig(**spec.get("config", {})), device)


#: agent name -> builder(spec, device)
AGENTS: dict[str, Callable[..., Any]] = {"sac": _build_sac}


def build_agent(spec: dict[str, Any], device: str | torch.device = "cpu") -> Any:
    """An agent from its spec (``{"agent": name, "mode": ..., "obs_shape": ..., "action_dim": ..., ...}``)."""
    from worldssl.runtime.errors import ConfigError

    name = spec.get("agent")
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; valid agents: {', '.join(AGENTS)}")
    return AGENTS[name](spec, device)


__all__ = ["AGENTS", "build_agent"]

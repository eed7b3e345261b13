"""Turn an ``env`` config group entry (configs/env/*.yaml) into an env id and constructor kwargs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from envs.registry import DMC_STANDARD_TASKS, ENVS, make


@dataclass(frozen=True)
class EnvConfig:
    id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    frame_stack: int | None = None
    max_episode_steps: int | None = None
    name: str = ""

    def make(self, **overrides: Any):
        kwargs = {**self.kwargs, **overrides}
        frame_stack = kwargs.pop("frame_stack", self.frame_stack)
        steps = kwargs.pop("max_episode_steps", self.max_episode_steps)
        return make(self.id, frame_stack=frame_stack, max_episode_steps=steps, **kwargs)


def env_config(cfg: Any) -> EnvConfig:
    """Read an env config (a mapping with id, kwargs, frame_stack, max_episode_steps and, for DMC, task)."""
    from worldssl.runtime.errors import ConfigError

    cfg = _plain(cfg)
    env_id = cfg.get("id")
    if env_id not in ENVS:
        raise ConfigError(f"unknown env id {env_id!r}; valid ids: {', '.join(sorted(ENVS))}")
    kwargs = {k: v for k, v in dict(cfg.get("kwargs") or {}).items() if v is not None}
    if "task" in cfg and env_id.startswith("worldssl/DMC"):
        env_id, kwargs = _dmc(str(cfg["task"]), kwargs)
    for key in ("frame_stack", "max_episode_steps"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"env.{key} must be a positive integer or null, got {value!r}")
    return EnvConfig(env_id, kwargs, cfg.get("frame_stack"), cfg.get("max_episode_steps"), str(cfg.get("name", "")))


def _dmc(task: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    from envs.dmc import valid_tasks
    from worldssl.runtime.errors import ConfigError

    if task not in valid_tasks():
        raise ConfigError(f"unknown DMC task {task!r} (write domain-task); valid: {', '.join(valid_tasks())}")
    if task in DMC_STANDARD_TASKS:
        return f"worldssl/DMC-{task}-v0", kwargs
    domain, _, name = task.partition("-")
    return "worldssl/DMC-v0", {**kwargs, "domain": domain, "task": name}


def _plain(cfg: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)

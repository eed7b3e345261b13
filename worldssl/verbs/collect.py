"""``worldssl collect``: fill a dataset directory with episodes from an env."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from envs.config import env_config
from worldssl.data import CollectSpec, collect
from worldssl.data.collect import POLICIES
from worldssl.runtime.errors import ConfigError
from worldssl.runtime.io import atomic_open
from worldssl.runtime.logger import Logger
from worldssl.verbs._run import run_dir, save_config

log = logging.getLogger("worldssl.collect")


def validate(cfg: Any) -> None:
    env_config(cfg.env)
    if not isinstance(cfg.episodes, int) or cfg.episodes < 1:
        raise ConfigError(f"episodes must be a positive integer, got {cfg.episodes!r}")
    if not isinstance(cfg.workers, int) or cfg.workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {cfg.workers!r}")
    if cfg.policy not in POLICIES:
        raise ConfigError(f"unknown policy {cfg.policy!r}; valid: {', '.join(POLICIES)}")


def spec_from_config(cfg: Any) -> CollectSpec:
    env = env_config(cfg.env)
    return CollectSpec(env_id=env.id, env_kwargs=env.kwargs, out=str(cfg.out), episodes=int(cfg.episodes),
                       seed=int(cfg.seed), policy=str(cfg.policy), max_episode_steps=env.max_episode_steps,
                       frame_stack=env.frame_stack)


def run(cfg: Any) -> dict[str, Any]:
    validate(cfg)
    directory = run_dir()
    save_config(cfg, directory)
    spec = spec_from_config(cfg)
    with Logger(directory) as logger:
        def on_episode(index: int, ret: float, length: int) -> None:
            logger.log({"collect/return": ret, "collect/length": length}, step=index)

        result = collect(spec, workers=int(cfg.workers), progress=bool(cfg.progress), on_episode=on_episode)
        summary = {"dataset": str(Path(spec.out).resolve()), "env_id": spec.env_id, "episodes": result.episodes,
                   "transitions": result.transitions, "new_episodes": result.new_episodes,
                   "seconds": round(result.seconds, 2),
                   "steps_per_second": round(result.steps_per_second, 1) if result.new_transitions else None,
                   "mean_return": (sum(result.returns) / len(result.returns)) if result.returns else None}
        logger.summary(summary)
    if cfg.preview:
        from worldssl.verbs.preview import dataset_preview

        path = dataset_preview(spec.out, Path(spec.out) / "preview.png")
        with atomic_open(directory / "preview.png", "wb") as f:  # the same picture in the run dir
            f.write(path.read_bytes())
        summary["preview"] = str(path)
    log.info("dataset %s: %d episodes, %d transitions (%d new episodes in %.1fs)", spec.out, result.episodes,
             result.transitions, result.new_episodes, result.seconds)
    print(f"collect: {result.episodes} episodes / {result.transitions} transitions in {spec.out} "
          f"({result.new_episodes} new); run dir {directory}")
    return summary

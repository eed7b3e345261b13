"""``worldssl collect``: fill a dataset directory with episodes from an env."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from envs.config import env_config
from worldssl.data import CollectSpec, collect
from worldssl.data.collect import POLICIES
from worldssl.runtime.io import atomic_open
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import (
    Check,
    Settings,
    boolean,
    integer,
    one_of,
    positive_int,
    setting,
    settings_from,
)
from worldssl.verbs._run import run_dir, save_config

log = logging.getLogger("worldssl.collect")


@dataclasses.dataclass
class CollectSettings(Settings):
    """The verb's checked keys (the env group is checked by :func:`envs.config.env_config`)."""

    out: str = setting("data", Check("a directory path", lambda v: isinstance(v, str) and v != ""),
                       "dataset directory; rerunning appends / resumes")
    episodes: int = setting(100, positive_int, "total episodes wanted in out (existing ones count)")
    seed: int = setting(0, integer, "episode i is seeded from (seed, i)")
    policy: str = setting("random", one_of(*POLICIES), "how actions are chosen")
    workers: int = setting(1, positive_int, "parallel worker processes")
    preview: bool = setting(True, boolean, "write preview.png to the run dir and the dataset")
    progress: bool = setting(True, boolean, "show a progress bar")


def validate(cfg: Any) -> None:
    env_config(cfg.env)
    settings_from(CollectSettings, cfg)


def spec_from_config(cfg: Any) -> CollectSpec:
    env = env_config(cfg.env)
    s = settings_from(CollectSettings, cfg)
    return CollectSpec(env_id=env.id, env_kwargs=env.kwargs, out=s.out, episodes=s.episodes, seed=s.seed,
                       policy=s.policy, max_episode_steps=env.max_episode_steps, frame_stack=env.frame_stack)


def run(cfg: Any) -> dict[str, Any]:
    validate(cfg)
    directory = run_dir()
    save_config(cfg, directory)
    settings = settings_from(CollectSettings, cfg)
    spec = spec_from_config(cfg)
    with Logger(directory) as logger:
        def on_episode(index: int, ret: float, length: int) -> None:
            logger.log({"collect/return": ret, "collect/length": length}, step=index)

        result = collect(spec, workers=settings.workers, progress=settings.progress, on_episode=on_episode)
        summary = {"dataset": str(Path(spec.out).resolve()), "env_id": spec.env_id, "episodes": result.episodes,
                   "transitions": result.transitions, "new_episodes": result.new_episodes,
                   "seconds": round(result.seconds, 2),
                   "steps_per_second": round(result.steps_per_second, 1) if result.new_transitions else None,
                   "mean_return": (sum(result.returns) / len(result.returns)) if result.returns else None}
        logger.summary(summary)
    if settings.preview:
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

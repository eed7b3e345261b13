"""``worldssl collect``: fill a dataset directory with episodes from an env.

    worldssl collect env=cubes episodes=100 workers=2                  # uniform random actions
    worldssl collect policy=runs/train/... episodes=50 out=data/point-sac # a trained agent acts (its run's env)
    worldssl collect policy=runs/train/... policy_mode=mean env.max_episode_steps=100

With ``policy=RUN_DIR`` the env is the run's own (from its config.yaml); ``env.<key>=`` overrides apply on top of
it, and ``env=NAME`` picks another env, which must give frames of the agent's size and its action space.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Any

from envs.config import env_config
from worldssl.data import CollectSpec, collect
from worldssl.data.collect import POLICIES, POLICY_MODES, load_policy, resolve_policy
from worldssl.runtime.errors import ConfigError
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
    policy: str = setting("random", Check("random or a `worldssl train` run directory",
                                          lambda v: isinstance(v, str) and v != ""),
                          "how actions are chosen: random, or a trained agent's run directory")
    policy_mode: str = setting("sample", one_of(*POLICY_MODES),
                               "agent policies: sample (stochastic, as in training) or mean (as in evaluation)")
    workers: int = setting(1, positive_int, "parallel worker processes")
    preview: bool = setting(True, boolean, "write preview.png to the run dir and the dataset")
    progress: bool = setting(True, boolean, "show a progress bar")


def validate(cfg: Any) -> None:
    env_config(cfg.env)
    settings = settings_from(CollectSettings, cfg)
    resolve_policy(settings.policy)


def _given_keys() -> set[str] | None:
    """The keys given on the command line, or None outside hydra (API use)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    except ValueError:
        return None


def run_env(run: str | Path) -> dict[str, Any]:
    """The env config a ``worldssl train`` run trained in: its config.yaml's ``env``, or (a run trained through
    the API) what its replay manifest records."""
    import json

    from omegaconf import OmegaConf

    run = Path(run)
    if (run / "config.yaml").is_file():
        env = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=True).get("env")
        if isinstance(env, dict) and env.get("id"):
            return env
    manifest = run / "replay" / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        return {"name": str(m["env_id"]).split("/")[-1], "id": m["env_id"], "kwargs": m.get("env_kwargs") or {},
                "max_episode_steps": m.get("max_episode_steps"), "frame_stack": m.get("frame_stack")}
    raise ConfigError(f"policy={run} records no env (no config.yaml with env, no replay/manifest.json); give env=")


def with_policy_env(cfg: Any, given: set[str] | None = None) -> Any:
    """``cfg`` with ``env`` set to the policy run's env when the command line picked none (``env.<key>=`` overrides
    apply on top of it). Unchanged for ``policy=random``, for ``env=NAME``, and outside hydra unless ``given``
    (the command-line keys) is passed."""
    from omegaconf import OmegaConf, open_dict

    policy = resolve_policy(str(cfg.policy))
    given = _given_keys() if given is None else given
    if policy in POLICIES or given is None or "env" in given:
        return cfg
    env = OmegaConf.create(run_env(policy))
    for key in sorted(k for k in given if k.startswith("env.")):
        OmegaConf.update(env, key[len("env."):], OmegaConf.select(cfg, key), merge=False)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.env = env
        cfg.policy = policy
    return cfg


def spec_from_config(cfg: Any) -> CollectSpec:
    env = env_config(cfg.env)
    s = settings_from(CollectSettings, cfg)
    return CollectSpec(env_id=env.id, env_kwargs=env.kwargs, out=s.out, episodes=s.episodes, seed=s.seed,
                       policy=resolve_policy(s.policy), max_episode_steps=env.max_episode_steps,
                       frame_stack=env.frame_stack, policy_mode=s.policy_mode)


def check_policy(spec: CollectSpec) -> None:
    """A one-line error unless the spec's agent (if any) can act in its env."""
    if spec.policy in POLICIES:
        return
    env = spec.make_env()
    try:
        load_policy(spec.policy, spec.policy_mode).check_env(env)
    finally:
        env.close()


def run(cfg: Any) -> dict[str, Any]:
    validate(cfg)
    cfg = with_policy_env(cfg)
    spec = spec_from_config(cfg)
    check_policy(spec)
    directory = run_dir()
    save_config(cfg, directory)
    settings = settings_from(CollectSettings, cfg)
    with Logger(directory) as logger:
        def on_episode(index: int, ret: float, length: int) -> None:
            logger.log({"collect/return": ret, "collect/length": length}, step=index)

        result = collect(spec, workers=settings.workers, progress=settings.progress, on_episode=on_episode)
        summary = {"dataset": str(Path(spec.out).resolve()), "env_id": spec.env_id, "policy": spec.policy,
                   "episodes": result.episodes,
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

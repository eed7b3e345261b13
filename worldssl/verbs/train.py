"""``worldssl train``: train an agent from pixels; the composition root of env, representation, agent and loop.

    worldssl train agent=sac env=dmc env.task=cartpole-swingup encoder.mode=scratch frames=100000 seed=0
    worldssl train env=dmc encoder.mode=frozen encoder.checkpoint=runs/pretrain/.../checkpoints/encoder
    worldssl train encoder.mode=frozen encoder.checkpoint=runs/worldmodel/...     # a world model's encoder
    worldssl train resume=runs/train/...                                           # continue a run

:func:`train` is the API (a config in, the summary out); the run directory layout is in :mod:`agents.loop`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from worldssl.runtime.errors import ConfigError
from worldssl.runtime.logger import Logger
from worldssl.verbs._run import resolve_auto_resume, run_dir, save_config

log = logging.getLogger("worldssl.train")
#: keys a resumed run takes from the command line; everything else comes from the run's own config.yaml
_RESUME_KEYS = ("frames", "max_minutes", "progress", "device", "threads", "video", "eval_episodes")


def validate(cfg: Any) -> None:
    from agents import AGENTS
    from agents.encoders import MODES
    from agents.loop import LoopSettings
    from agents.sac import SACConfig
    from envs.config import env_config
    from worldssl.runtime.settings import settings_from

    if cfg.resume and cfg.resume != "auto":  # auto: resolved by run() (see _run.resolve_auto_resume)
        if not (Path(cfg.resume) / "checkpoints" / "train_state.pt").is_file():
            raise ConfigError(f"resume={cfg.resume} has no checkpoints/train_state.pt; give a `worldssl train` run "
                              f"directory")
        return
    from agents.sb3 import CONFIGS as SB3_CONFIGS

    if cfg.agent.name not in AGENTS and cfg.agent.name not in SB3_CONFIGS:
        raise ConfigError(f"unknown agent {cfg.agent.name!r}; valid agents: {', '.join([*AGENTS, *SB3_CONFIGS])}")
    if cfg.encoder.get("mode") not in MODES:
        raise ConfigError(f"unknown encoder.mode {cfg.encoder.get('mode')!r}; valid: {', '.join(MODES)}")
    if cfg.encoder.get("kind", "conv") != "conv":
        raise ConfigError(f"worldssl train builds its scratch encoder from encoder=conv, got encoder kind "
                          f"{cfg.encoder.get('kind')!r}; for another encoder give encoder.checkpoint=PATH")
    settings_from(LoopSettings, cfg)  # every loop key, checked as declared on its field
    settings_from(SB3_CONFIGS.get(cfg.agent.name, SACConfig), cfg.agent)  # every agent.<key>
    if cfg.agent.name in SB3_CONFIGS:
        from agents.sb3 import check_spec

        check_spec({"agent": cfg.agent.name, "mode": cfg.encoder.mode, "encoder_checkpoint": cfg.encoder.get("checkpoint"),
                    "config": OmegaConf.to_container(cfg.agent, resolve=True)})
    if cfg.threads is not None and (not isinstance(cfg.threads, int) or cfg.threads < 1):
        raise ConfigError(f"threads must be a positive integer or null, got {cfg.threads!r}")
    ckpt = cfg.encoder.get("checkpoint")
    if ckpt and not Path(ckpt).exists():
        raise ConfigError(f"encoder.checkpoint {ckpt} does not exist; give a `worldssl pretrain` run's "
                          f"checkpoints/encoder, a published MoCo/MAE/R3M file, or a `worldssl worldmodel` run")
    if ckpt and cfg.encoder.mode == "scratch":
        raise ConfigError("encoder.mode=scratch trains a fresh conv encoder and ignores encoder.checkpoint; use "
                          "encoder.mode=frozen or finetune (or curl / decoupled) with a checkpoint")
    env_config(cfg.env)


def _resumed_config(cfg: Any) -> Any:
    """The run's own config, with the keys given on this command line (of ``_RESUME_KEYS``) applied."""
    saved = OmegaConf.load(Path(cfg.resume) / "config.yaml")
    given = set()
    try:
        from hydra.core.hydra_config import HydraConfig

        given = {o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task}
    except ValueError:  # outside hydra (API use): take every resume key from cfg
        given = set(_RESUME_KEYS)
    for key in _RESUME_KEYS:
        if key in given:
            saved[key] = cfg[key]
    saved.resume = cfg.resume
    return saved


def agent_spec(cfg: Any, obs_shape: tuple[int, ...], action_dim: int) -> dict[str, Any]:
    """What :func:`agents.build_agent` needs (written to ``checkpoints/agent.json``)."""
    agent = OmegaConf.to_container(cfg.agent, resolve=True)
    name = agent.pop("name")
    enc = OmegaConf.to_container(cfg.encoder, resolve=True)
    ckpt = enc.get("checkpoint")
    conv = {k: v for k, v in enc.items() if k not in ("mode", "checkpoint", "kind")}
    return {"agent": name, "mode": enc["mode"], "encoder_checkpoint": str(Path(ckpt).resolve()) if ckpt else None,
            "conv": conv, "obs_shape": list(obs_shape), "action_dim": int(action_dim), "config": agent}


def train(cfg: Any, directory: Path) -> dict[str, Any]:
    """Train (or resume) one agent into ``directory``; returns the summary (also in summary.json)."""
    import torch

    from agents import build_agent
    from agents.loop import AgentTrainer, LoopSettings, check_continuous, curves_figure
    from agents.sb3 import SB3_ALGOS
    from envs.config import env_config
    from worldssl.runtime.device import resolve_device, seed_everything
    from worldssl.runtime.io import save_figure
    from worldssl.runtime.settings import settings_from

    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    env_cfg = env_config(cfg.env)
    env, eval_env = env_cfg.make(), env_cfg.make()
    settings = settings_from(LoopSettings, cfg)
    if cfg.agent.name in SB3_ALGOS:
        trainer, source, repr_dim, spec = _sb3_trainer(cfg, env, eval_env, settings, directory, device)
    else:
        check_continuous(env, env_cfg.id, cfg.agent.name)
        seed_everything(int(cfg.seed))  # before building: the initial weights come from torch's RNG
        spec = agent_spec(cfg, env.observation_space.shape, int(env.action_space.shape[0]))
        agent = build_agent(spec, device=device)
        env_info = {"env_id": env_cfg.id, "env_kwargs": env_cfg.kwargs, "max_episode_steps": env_cfg.max_episode_steps}
        trainer = AgentTrainer(agent, env, eval_env, settings, directory, spec=spec, env_info=env_info)
        source, repr_dim = agent.features.source, agent.features.repr_dim
    if cfg.resume:
        trainer.load(directory / "checkpoints")
        log.info("resumed at frame %d (episode %d)", trainer.frame, trainer.episode)
    with Logger(directory) as logger:
        summary = {"env_id": env_cfg.id, "env": env_cfg.name, "agent": spec["agent"], "mode": spec["mode"],
                   "encoder": source, "repr_dim": repr_dim, "seed": int(cfg.seed),
                   "device": str(device), "action_repeat": trainer.action_repeat}
        summary.update(trainer.train(logger))
        logger.summary(summary)
    title = f"{env_cfg.name}: {spec['agent']} / {spec['mode']} (seed {cfg.seed})"
    save_figure(curves_figure(trainer.history, title), directory / "curves.png")
    env.close()
    eval_env.close()
    return summary


def _sb3_trainer(cfg: Any, env: Any, eval_env: Any, settings: Any, directory: Path, device: Any) -> tuple:
    """SB3's PPO / SAC on the env (frozen features precomputed in a wrapper when asked) and its trainer."""
    import gymnasium as gym

    from agents import sb3
    from worldssl.runtime.device import seed_everything

    space = env.action_space
    discrete = isinstance(space, gym.spaces.Discrete)
    spec = {**agent_spec(cfg, env.observation_space.shape, int(space.n) if discrete else int(np.prod(space.shape))),
            "action_space": "discrete" if discrete else "box"}  # what `worldssl collect policy=` checks an env by
    sb3.check_spec(spec)
    sb3.check_pixel_space(env.observation_space, f"agent={spec['agent']}")
    seed_everything(int(cfg.seed))
    features = sb3.frozen_features(spec, tuple(env.observation_space.shape))
    if features is not None:
        env, eval_env = sb3.FrozenFeatures(env, features=features), sb3.FrozenFeatures(eval_env, features=features)
    model = sb3.build_model(spec, env, int(cfg.seed), settings, device)
    trainer = sb3.SB3Trainer(model, env, eval_env, settings, directory, spec, features)
    source, repr_dim = sb3.representation(spec, model, features)
    return trainer, source, repr_dim, spec


def run(cfg: Any) -> dict[str, Any]:
    done = resolve_auto_resume(cfg, "train")
    if done is not None:
        return done
    validate(cfg)
    if cfg.resume:
        cfg = _resumed_config(cfg)
        directory = Path(cfg.resume)
    else:
        directory = run_dir()
    save_config(cfg, directory)
    summary = train(cfg, directory)
    ret = summary.get("final_eval_return")
    success = f", success {summary['final_eval_success']:.2f}" if "final_eval_success" in summary else ""
    print(f"train: {summary['agent']}/{summary['mode']} on {summary['env']}, {summary['frames']} frames in "
          f"{summary['wall_seconds']} s; final eval return {ret if ret is None else round(ret, 1)}, best "
          f"{summary['best_eval_return'] if summary['best_eval_return'] is None else round(summary['best_eval_return'], 1)}"
          f"{success}; run dir {directory}")
    return summary

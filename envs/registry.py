"""Every environment id this suite registers with gymnasium, with its one-line description.

``envs.make(id, frame_stack=k, **kwargs)`` builds any of them; ``gymnasium.make(id)`` works as well once
``envs`` is imported. Each env returns single uint8 frames ``(C, H, W)``; frame stacking is applied here so
that every env family stacks the same way.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from envs.wrappers import FrameStack

#: CURL's action repeat per DMC domain (Laskin et al. 2020, as DrQ): the one source of the defaults;
#: a domain not listed repeats :data:`DMC_DEFAULT_ACTION_REPEAT` times.
DMC_ACTION_REPEAT: dict[str, int] = {"cartpole": 8, "finger": 2, "walker": 2}
DMC_DEFAULT_ACTION_REPEAT = 4


def dmc_action_repeat(domain: str) -> int:
    """CURL's action repeat for a DMC domain: 8 for cartpole, 2 for finger and walker, 4 for the rest."""
    return DMC_ACTION_REPEAT.get(domain, DMC_DEFAULT_ACTION_REPEAT)


#: DMC's six standard pixel-control tasks (CURL / DrQ protocol), with their action repeat.
DMC_STANDARD_TASKS: dict[str, int] = {
    name: dmc_action_repeat(name.split("-")[0])
    for name in ("cartpole-swingup", "reacher-easy", "cheetah-run", "walker-walk", "finger-spin", "ball_in_cup-catch")
}


@dataclass(frozen=True)
class EnvInfo:
    id: str
    target: str  # "module:Class"
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    frame_stack: int = 1
    max_episode_steps: int | None = None  # None: the env ends episodes itself


ENVS: dict[str, EnvInfo] = {}


def _add(info: EnvInfo) -> None:
    ENVS[info.id] = info


_add(EnvInfo("worldssl/DMC-v0", "envs.dmc:DMCEnv",
             "Any DeepMind Control suite task from pixels (domain=..., task=...).",
             {"domain": "cartpole", "task": "swingup"}, frame_stack=3))
for _name in DMC_STANDARD_TASKS:
    _domain, _task = _name.split("-")
    _add(EnvInfo(f"worldssl/DMC-{_name}-v0", "envs.dmc:DMCEnv",
                 f"DMC {_domain} {_task} from 84x84 pixels, CURL action repeat, 3 stacked frames.",
                 {"domain": _domain, "task": _task}, frame_stack=3))
_add(EnvInfo("worldssl/Maze-v0", "envs.maze:MazeEnv",
             "First-person MuJoCo maze navigation to a visible goal object, egocentric camera.",
             {}, frame_stack=1))
_add(EnvInfo("worldssl/Shapes-v0", "envs.gridworld:ShapesEnv",
             "C-SWM 2D Shapes: 5 objects on a 5x5 grid, 20 push actions, 50x50 RGB.",
             {}, frame_stack=1, max_episode_steps=100))
_add(EnvInfo("worldssl/Cubes-v1", "envs.gridworld:CubesEnv",
             "C-SWM 3D Cubes: the Shapes grid as coloured MuJoCo blocks in matplotlib's default 3D view, 50x50 RGB.",
             {"style": "cswm"}, frame_stack=1, max_episode_steps=100))
_add(EnvInfo("worldssl/Cubes-v0", "envs.gridworld:CubesEnv",
             "C-SWM 3D Cubes, first look (kept for its datasets): Set1 blocks on a checkered board, steep camera.",
             {"style": "checker"}, frame_stack=1, max_episode_steps=100))
_add(EnvInfo("worldssl/PointReach-v0", "envs.toy:PointReachEnv",
             "A tiny pixel control task: move a dot to the image centre (smoke runs and learning tests).",
             {}, frame_stack=1))
_add(EnvInfo("worldssl/MiniWorld-v0", "envs.miniworld_adapter:MiniWorldEnv",
             "Farama MiniWorld first-person 3D navigation (optional extra: pip install worldssl[miniworld]).",
             {"name": "MiniWorld-OneRoom-v0"}, frame_stack=1))


def _load(target: str) -> type:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make(env_id: str, frame_stack: int | None = None, max_episode_steps: int | None = None,
         **kwargs: Any) -> gym.Env:
    """Build a registered env; ``frame_stack`` / ``max_episode_steps`` of None take the id's defaults."""
    if env_id not in ENVS:
        from worldssl.runtime.errors import ConfigError

        raise ConfigError(f"unknown env id {env_id!r}; valid ids: {', '.join(sorted(ENVS))}")
    info = ENVS[env_id]
    try:
        env = _load(info.target)(**{**info.kwargs, **kwargs})
    except (ValueError, TypeError) as e:  # a bad kwarg: say which env and why, on one line
        from worldssl.runtime.errors import ConfigError

        raise ConfigError(f"cannot build {env_id}: {e}") from e
    steps = max_episode_steps if max_episode_steps is not None else info.max_episode_steps
    if steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=int(steps))
    k = info.frame_stack if frame_stack is None else int(frame_stack)
    if k > 1:
        env = FrameStack(env, k)
    return env


def register_all() -> None:
    """Register every id with gymnasium (idempotent)."""
    for env_id, _info in ENVS.items():
        if env_id in gym.registry:
            continue
        gym.register(id=env_id, entry_point=_entry_point(env_id), kwargs={}, disable_env_checker=True)


def _entry_point(env_id: str):
    def create(**kwargs: Any) -> gym.Env:
        return make(env_id, **kwargs)

    create.__name__ = f"make_{env_id.replace('/', '_').replace('-', '_')}"
    return create

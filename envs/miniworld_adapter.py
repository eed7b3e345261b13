"""Farama MiniWorld (first-person 3D navigation) behind the suite's conventions: uint8 ``(3, H, W)`` frames.

MiniWorld is an optional extra (``pip install 'worldssl[miniworld]'``; upstream marks it deprecated), so it
is imported only when an env is built. It renders through pyglet, which runs headless on EGL when
``pyglet.options['headless']`` is set before miniworld is imported. Its EGL context coexists with MuJoCo's
in one process: pyglet makes its context current before drawing, and every call here restores the context
that was current before (``preserve_gl_context``), which dm_control's context cache relies on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np

from envs.rendering import preserve_gl_context
from worldssl.runtime.errors import ConfigError
from worldssl.runtime.rendering import prepare_rendering

STATE_NAMES = ("x", "z", "cos_dir", "sin_dir")
INSTALL_HINT = ("MiniWorld is an optional extra: pip install 'worldssl[miniworld]' "
                "(miniworld==2.1.0 with pyglet<2)")


def import_miniworld():
    """Import miniworld headless (pyglet's EGL backend), or raise ConfigError naming the extra."""
    prepare_rendering()
    try:
        import pyglet
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT}; missing: {e.name}") from e
    pyglet.options["headless"] = True  # must precede the first miniworld import (it opens a window)
    try:
        with preserve_gl_context():  # importing pyglet.gl makes its shadow window's context current
            import miniworld
    except ImportError as e:
        raise ConfigError(f"{INSTALL_HINT}; missing: {e.name}") from e
    return miniworld


def valid_names() -> list[str]:
    import_miniworld()
    return sorted(k for k in gym.registry if k.startswith("MiniWorld-"))


class MiniWorldEnv(gym.Env):
    """A MiniWorld env (``name`` is its gymnasium id) with square uint8 ``(3, image_size, image_size)`` frames.

    MiniWorld renders at ``obs_width`` x ``obs_height`` itself, so frames need no resizing.
    ``info["state"]`` is float32 ``[x, z, cos(dir), sin(dir)]`` (MiniWorld's floor plane is x-z, y is up);
    episode ends and rewards are MiniWorld's own (its time limit arrives as ``truncated``).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, name: str = "MiniWorld-OneRoom-v0", image_size: int = 64,
                 render_mode: str | None = None, **kwargs: Any):
        import_miniworld()
        if name not in gym.registry or not name.startswith("MiniWorld-"):
            raise ValueError(f"unknown MiniWorld env {name!r}; valid: {', '.join(valid_names())}")
        if not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= 512:
            raise ValueError(f"image_size must be an int in [16, 512], got {image_size!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.name, self.image_size, self.render_mode = name, int(image_size), render_mode
        # the human-view framebuffer is never used here: keep it small (it is allocated at construction)
        kwargs = {"window_width": self.image_size, "window_height": self.image_size, **kwargs}
        with preserve_gl_context():  # pyglet leaves its context current; dm_control would draw into it
            self._env = gym.make(name, obs_width=self.image_size, obs_height=self.image_size,
                                 disable_env_checker=True, **kwargs)
        self.action_space = self._env.action_space
        self.observation_space = gym.spaces.Box(0, 255, (3, self.image_size, self.image_size), np.uint8)
        self.state_names = list(STATE_NAMES)
        self._frame: np.ndarray | None = None

    @property
    def unwrapped_miniworld(self):
        return self._env.unwrapped

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # MiniWorld seeds its own RNG from the reset seed; derive one from ours so seed=None stays random
        with self._own_context():
            obs, info = self._env.reset(seed=int(self.np_random.integers(2**31 - 1)), options=options)
        return self._convert(obs), self._info(info)

    def step(self, action):
        with self._own_context():
            obs, reward, terminated, truncated, info = self._env.step(action)
        return self._convert(obs), float(reward), bool(terminated), bool(truncated), self._info(info)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None or self._frame is None:
            return None
        return self._frame.transpose(1, 2, 0).copy()

    def close(self) -> None:
        with self._own_context():
            self._env.close()

    @contextlib.contextmanager
    def _own_context(self) -> Iterator[None]:
        """Run MiniWorld code with pyglet's context current, then restore the caller's.

        MiniWorld switches to its context before drawing frames but not before other GL work (``reset``
        rebuilds display lists), which fails or hits another library's context if that one is current.
        """
        with preserve_gl_context():
            self._env.unwrapped.shadow_window.switch_to()
            yield

    def _convert(self, obs: np.ndarray) -> np.ndarray:
        self._frame = np.ascontiguousarray(np.asarray(obs, dtype=np.uint8).transpose(2, 0, 1))
        return self._frame.copy()

    def _info(self, info: dict[str, Any]) -> dict[str, Any]:
        agent = self._env.unwrapped.agent
        state = np.array([agent.pos[0], agent.pos[2], np.cos(agent.dir), np.sin(agent.dir)], dtype=np.float32)
        return {**info, "state": state}


__all__ = ["MiniWorldEnv", "STATE_NAMES", "import_miniworld", "valid_names"]

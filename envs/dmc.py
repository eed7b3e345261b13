"""DeepMind Control suite tasks from pixels, with the CURL/DrQ defaults and fast software rendering."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.registry import DMC_STANDARD_TASKS, dmc_action_repeat

#: Rendering flags switched off by default: on Mesa's software EGL they cost ~4x the frame time.
FAST_RENDER_FLAGS = {"shadow": False, "reflection": False}


def default_action_repeat(domain: str) -> int:
    """CURL's action repeat: 8 for cartpole, 2 for finger and walker, 4 for the rest (from
    :func:`envs.registry.dmc_action_repeat`, the one table)."""
    return dmc_action_repeat(domain)


def valid_tasks() -> list[str]:
    from dm_control import suite

    return sorted(f"{d}-{t}" for d, t in suite.ALL_TASKS)


class DMCEnv(gym.Env):
    """A dm_control suite task with uint8 ``(3, H, W)`` observations rendered from ``camera_id``.

    Rewards are summed over ``action_repeat`` physics-control steps; the task's own time limit (1000
    control steps for the suite) ends the episode as ``truncated``, a task-side termination (discount 0)
    as ``terminated``. ``info["state"]`` is the task's low-dimensional observation flattened (what state
    SAC sees); ``info["physics_state"]`` is ``physics.get_state()`` (qpos, qvel, act).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, domain: str = "cartpole", task: str = "swingup", image_size: int = 84,
                 action_repeat: int | None = None, camera_id: int | None = None, fast_render: bool = True,
                 render_mode: str | None = None):
        from dm_control import suite

        if (domain, task) not in suite.ALL_TASKS:
            raise ValueError(f"unknown DMC task {domain}-{task}; valid: {', '.join(valid_tasks())}")
        if image_size < 16 or image_size > 512:
            raise ValueError(f"image_size must be in [16, 512], got {image_size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.domain, self.task = domain, task
        self.image_size = int(image_size)
        self.action_repeat = int(action_repeat or default_action_repeat(domain))
        if self.action_repeat < 1:
            raise ValueError(f"action_repeat must be >= 1, got {action_repeat}")
        # quadruped's default camera 0 is a tracking camera far away; DrQ uses camera 2 there
        self.camera_id = int(camera_id if camera_id is not None else (2 if domain == "quadruped" else 0))
        self.render_flags = dict(FAST_RENDER_FLAGS) if fast_render else None
        self.render_mode = render_mode
        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(spec.minimum.astype(np.float32), spec.maximum.astype(np.float32),
                                           dtype=np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (3, self.image_size, self.image_size), np.uint8)
        self.state_names = [f"{k}[{i}]" for k, v in self._env.observation_spec().items()
                            for i in range(int(np.prod(v.shape)) or 1)]
        self._frame: np.ndarray | None = None

    @property
    def physics(self):
        return self._env.physics

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        # dm_control draws initial states from the task's RandomState: drive it from gymnasium's seeding
        self._env.task._random = np.random.RandomState(self.np_random.integers(2**31 - 1))
        ts = self._env.reset()
        return self._observe(), self._info(ts)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        reward, terminated, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            ts = self._env.step(action)
            reward += ts.reward or 0.0
            if ts.last():
                terminated = ts.discount == 0.0
                truncated = not terminated
                break
        return self._observe(), float(reward), terminated, truncated, self._info(ts)

    def render(self) -> np.ndarray:
        if self._frame is None:
            self._observe()
        return self._frame.transpose(1, 2, 0).copy()

    def _observe(self) -> np.ndarray:
        frame = self.physics.render(self.image_size, self.image_size, camera_id=self.camera_id,
                                    render_flag_overrides=self.render_flags)
        self._frame = np.ascontiguousarray(frame.transpose(2, 0, 1))
        return self._frame.copy()

    def _info(self, ts) -> dict[str, Any]:
        state = np.concatenate([np.asarray(v, dtype=np.float32).ravel() for v in ts.observation.values()])
        return {"state": state, "physics_state": self.physics.get_state().astype(np.float32)}

    def close(self) -> None:
        self._env.close()


__all__ = ["DMCEnv", "DMC_STANDARD_TASKS", "default_action_repeat", "valid_tasks"]

"""A tiny pixel control task for smoke runs and learning tests: move a dot to the centre of a small image.

The dot starts at a uniform random position in ``[-1, 1]^dims``; an action in ``[-1, 1]^dims`` moves it by
``speed * action`` (clipped to the square). The reward is ``1 - |p|`` per step (``|p|`` the distance to the
centre, so 1 at the centre and about 0.2 on average for a random policy); episodes end by time limit only
(``truncated``). Observations are uint8 ``(3, size, size)``: a white ``2x2`` dot on a black image, its
column from ``p[0]`` and, with ``dims=2``, its row from ``p[1]``. It renders in microseconds, so an agent's
learning can be tested in seconds of CPU.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class PointReachEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, size: int = 16, dims: int = 1, speed: float = 0.25, max_steps: int = 25,
                 render_mode: str | None = None):
        if size < 8:
            raise ValueError(f"size must be >= 8, got {size}")
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 or 2, got {dims}")
        self.size, self.dims, self.speed, self.max_steps = int(size), int(dims), float(speed), int(max_steps)
        self.render_mode = render_mode
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.dims,), np.float32)
        self.observation_space = gym.spaces.Box(0, 255, (3, self.size, self.size), np.uint8)
        self.state_names = ["x", "y"][: self.dims]
        self._p = np.zeros(self.dims, np.float32)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._p = self.np_random.uniform(-1.0, 1.0, self.dims).astype(np.float32)
        self._t = 0
        return self._observe(), {"state": self._p.copy()}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(self.dims), -1.0, 1.0)
        self._p = np.clip(self._p + self.speed * a, -1.0, 1.0).astype(np.float32)
        self._t += 1
        reward = float(1.0 - np.linalg.norm(self._p))
        truncated = self._t >= self.max_steps
        return self._observe(), reward, False, truncated, {"state": self._p.copy()}

    def _observe(self) -> np.ndarray:
        img = np.zeros((3, self.size, self.size), np.uint8)
        cells = self.size - 2
        col = int(round((self._p[0] + 1) / 2 * cells))
        row = int(round((self._p[1] + 1) / 2 * cells)) if self.dims == 2 else cells // 2
        img[:, row:row + 2, col:col + 2] = 255
        return img

    def render(self) -> np.ndarray:
        return self._observe().transpose(1, 2, 0)

"""Wrappers shared by every pixel environment."""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np


class FrameStack(gym.ObservationWrapper):
    """Stack the last ``k`` uint8 frames along the channel axis: ``(C, H, W)`` -> ``(k*C, H, W)``.

    On reset the first frame fills every slot, so an observation's shape never changes within an episode.
    Datasets store single frames and rebuild stacks the same way (``worldssl.data``).
    """

    def __init__(self, env: gym.Env, k: int):
        super().__init__(env)
        if k < 1:
            raise ValueError(f"frame_stack must be >= 1, got {k}")
        space = env.observation_space
        assert isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3
        self.k = k
        c, h, w = space.shape
        self.observation_space = gym.spaces.Box(0, 255, (k * c, h, w), np.uint8)
        self._frames: deque[np.ndarray] = deque(maxlen=k)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._frames.clear()
        for _ in range(self.k):
            self._frames.append(obs)
        return self._stacked(), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(obs)
        return self._stacked(), reward, terminated, truncated, info

    def observation(self, observation):  # pragma: no cover - reset/step are overridden
        return observation

    def _stacked(self) -> np.ndarray:
        return np.concatenate(list(self._frames), axis=0)

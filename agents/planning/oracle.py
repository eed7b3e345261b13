"""The true grid-world transition wrapped as a world model: the ceiling a learned model can reach.

:class:`ShapesOracleModel` has the world-model methods the planners call. Its latent is the true object
positions ``(B, K, 2)`` (float), read off a 2D Shapes frame by the colour at each cell's centre (every sprite
covers its cell's centre); ``next`` applies C-SWM's push dynamics to a whole batch: action ``a`` moves object
``a // 4`` one cell up / right / down / left, unless that leaves the grid or hits another object. A planner on
this model with a goal cost plans on the true state, so its success must equal a shortest-path search's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from envs.gridworld import DIRECTIONS
from worldssl.worldmodels.base import WorldModel


class _Pixels(nn.Module):
    """Shapes frame ``(B, 3, H, W)`` uint8 -> object positions ``(B, K, 2)`` float (row, col)."""

    def __init__(self, colors: np.ndarray, grid_size: int, image_size: int):
        super().__init__()
        self.register_buffer("colors", torch.as_tensor(colors, dtype=torch.uint8))
        self.grid_size, self.cell = int(grid_size), int(image_size) // int(grid_size)
        self.obs_shape = (3, int(image_size), int(image_size))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        c = self.cell
        centres = obs[:, :3, c // 2::c, c // 2::c]  # [B, 3, G, G]
        match = (centres[:, None] == self.colors[None, :, :, None, None]).all(dim=2)  # [B, K, G, G]
        if not bool(match.flatten(2).any(dim=2).all()):
            raise ValueError("an object's colour is missing from a frame: not a Shapes frame of this env")
        cell = match.flatten(2).float().argmax(dim=2)  # [B, K]
        return torch.stack([cell // self.grid_size, cell % self.grid_size], dim=2).float()


class _Actions:
    discrete = True

    def __init__(self, n: int):
        self.dim = int(n)


class ShapesOracleModel(nn.Module):
    """The true Shapes dynamics as a world model (``encode``, ``next``, ``rollout``; no reward head)."""

    def __init__(self, env):
        super().__init__()
        env = env.unwrapped
        self.grid_size, self.num_objects = int(env.grid_size), int(env.num_objects)
        self.encoder = _Pixels(env.colors, env.grid_size, env.image_size)
        self.action_encoder = _Actions(4 * self.num_objects)
        self.reward_head = None
        self.register_buffer("directions", torch.as_tensor(DIRECTIONS, dtype=torch.float32))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encoder(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Push object ``a // 4`` by direction ``a % 4`` where the target cell is on the grid and free."""
        a = a.long().reshape(-1)
        rows = torch.arange(z.shape[0], device=z.device)
        obj = a // 4
        target = z[rows, obj] + self.directions[a % 4]  # [B, 2]
        inside = ((target >= 0) & (target < self.grid_size)).all(dim=1)
        occupied = (z == target[:, None]).all(dim=2).any(dim=1)
        out = z.clone()
        moved = inside & ~occupied
        out[rows[moved], obj[moved]] = target[moved]
        return out

    rollout = WorldModel.rollout  # ``next`` along a sequence, as every world model does

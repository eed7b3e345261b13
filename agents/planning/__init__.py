"""Model-predictive control over a trained world model: plan in latent space, act, observe, plan again.

:mod:`~agents.planning.planners` holds the planners (exhaustive, beam and categorical CEM for discrete actions;
CEM and MPPI for continuous ones), :mod:`~agents.planning.costs` what they minimise (distance to an encoded goal
image, or the negative predicted return), :mod:`~agents.planning.oracle` the true Shapes dynamics as a world
model. :class:`MPC` plans every episode of a batch at once; ``worldssl eval plan`` (:mod:`worldssl.eval.plan`)
runs it closed loop on Shapes, Cubes and the maze.
"""

from __future__ import annotations

import numpy as np
import torch

from agents.planning.costs import Cost, GoalCost, RewardCost, check_goal_model, check_reward_model
from agents.planning.planners import (
    CEM,
    MPPI,
    PLANNERS,
    ActionSpace,
    Beam,
    CategoricalCEM,
    Exhaustive,
    Planner,
    build_planner,
    check_action_space,
)


def episode_generators(seed: int, episodes: list[int] | np.ndarray) -> list[torch.Generator]:
    """One CPU ``torch.Generator`` per episode, seeded from ``(seed, episode)``: an episode's draws do not depend
    on which other episodes are planned with it."""
    return [torch.Generator().manual_seed(int(seed) * 1_000_003 + int(e)) for e in episodes]


class MPC:
    """Closed-loop control with ``planner`` on ``model``: :meth:`act` encodes a batch of observations, plans
    from their latents against ``cost`` (restricted to those episodes) and returns each one's first action."""

    def __init__(self, model: torch.nn.Module, planner: Planner, space: ActionSpace,
                 device: str | torch.device = "cpu"):
        self.model, self.planner, self.space, self.device = model, planner, space, torch.device(device)
        planner.check(space)

    @torch.no_grad()
    def act(self, obs: np.ndarray, cost: Cost, episodes: np.ndarray,
            generators: list[torch.Generator] | None = None) -> np.ndarray:
        """``obs`` ``(b, C, H, W)`` uint8 of the episodes ``episodes`` (indices into ``cost``'s batch) -> their
        first planned actions, ``(b,)`` int64 or ``(b, A)`` float32."""
        z = self.model.encode(torch.from_numpy(np.ascontiguousarray(obs)).to(self.device))
        index = torch.as_tensor(np.asarray(episodes), dtype=torch.long, device=self.device)
        plan = self.planner.plan(self.model, z, cost.select(index), self.space, generators)
        first = plan[:, 0].cpu().numpy()
        return first.astype(np.int64) if self.space.discrete else first.astype(np.float32)


__all__ = ["CEM", "MPC", "MPPI", "PLANNERS", "ActionSpace", "Beam", "CategoricalCEM", "Cost", "Exhaustive",
           "GoalCost", "Planner", "RewardCost", "build_planner", "check_action_space", "check_goal_model",
           "check_reward_model", "episode_generators"]

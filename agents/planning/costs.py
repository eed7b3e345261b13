"""What a planner minimises over a predicted latent trajectory.

A cost scores each predicted step and folds the steps of a candidate into one number:

- :class:`GoalCost`: the distance between the predicted latent and the encoding of a goal observation. For a
  flat latent ``(D,)`` it is the squared Euclidean distance; for object slots ``(K, D)`` it is the model's own
  energy without C-SWM's constant factor, the mean over slots of squared distances. A trajectory's cost is its
  closest approach (``aggregate="min"``, with a tie broken in favour of reaching it earlier), the sum over
  steps (``"sum"``) or the last step's (``"last"``).
- :class:`RewardCost`: the negative predicted return, ``-sum_t gamma^t r(z_t, a_t)``, from the model's reward
  head.

Candidates of many episodes are scored in one batch: ``index`` maps each candidate row to its episode.
"""

from __future__ import annotations

import torch

from worldssl.runtime.errors import ConfigError

AGGREGATES = ("min", "sum", "last")
#: added per step under ``aggregate="min"``, so that of two candidates reaching the same distance the earlier
#: one wins (a true-state model reaches distance 0 exactly); far below any learned latent's resolution
EARLIER = 1e-6


def squared_distance(z: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """``(M, D)`` or ``(M, K, D)`` latents against goals of the same shape -> ``(M,)``: the sum over ``D`` of
    squared differences, averaged over slots ``K`` (a flat latent is one slot)."""
    diff = (z.float() - goal.float()).pow(2)
    if diff.dim() == 2:
        return diff.sum(-1)
    return diff.flatten(2).sum(-1).mean(-1)


class Cost:
    """``step(z_prev, a, z_next, index, t) -> (M,)`` per predicted step; ``fold(total, step_cost, t)`` folds
    the steps into one number per candidate (``total`` is None at ``t = 0``)."""

    def step(self, z_prev: torch.Tensor, a: torch.Tensor, z_next: torch.Tensor, index: torch.Tensor,
             t: int) -> torch.Tensor:
        raise NotImplementedError

    def fold(self, total: torch.Tensor | None, step_cost: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError

    def select(self, episodes: torch.Tensor) -> Cost:
        """The same cost for a subset of the episodes (their indices into this cost's batch)."""
        raise NotImplementedError


class GoalCost(Cost):
    """Distance of the predicted latent to ``goal`` (one latent per episode, ``(B, ...)``)."""

    def __init__(self, goal: torch.Tensor, aggregate: str = "min"):
        if aggregate not in AGGREGATES:
            raise ConfigError(f"goal cost aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
        self.goal = goal.float()
        self.aggregate = aggregate

    def step(self, z_prev, a, z_next, index, t):
        return squared_distance(z_next, self.goal[index])

    def fold(self, total, step_cost, t):
        if self.aggregate == "min":
            step_cost = step_cost + EARLIER * (t + 1)
            return step_cost if total is None else torch.minimum(total, step_cost)
        if self.aggregate == "sum":
            return step_cost if total is None else total + step_cost
        return step_cost

    def select(self, episodes):
        return GoalCost(self.goal[episodes], self.aggregate)


class RewardCost(Cost):
    """``-sum_t gamma^t r(z_t, a_t)`` from the model's reward head."""

    def __init__(self, model: torch.nn.Module, discount: float = 1.0):
        check_reward_model(model)
        if not 0 < discount <= 1:
            raise ConfigError(f"discount must be in (0, 1], got {discount!r}")
        self.model, self.discount = model, float(discount)

    def step(self, z_prev, a, z_next, index, t):
        return -(self.discount ** t) * self.model.reward(z_prev, a).float()

    def fold(self, total, step_cost, t):
        return step_cost if total is None else total + step_cost

    def select(self, episodes):
        return self


def check_goal_model(model: torch.nn.Module, goal_shape: tuple[int, ...]) -> None:
    """A goal-conditioned cost needs a model that encodes the goal observation: a one-line error otherwise."""
    encoder = getattr(model, "encoder", None)
    if encoder is None or not callable(getattr(model, "encode", None)):
        raise ConfigError("a goal-conditioned cost (cost=goal) needs a world model with an encoder for the goal "
                          "image, and this one has none; use cost=reward with a reward head, or a model trained "
                          "from this env's frames")
    want = getattr(encoder, "obs_shape", None)
    if want is not None and tuple(int(s) for s in want) != tuple(int(s) for s in goal_shape):
        raise ConfigError(f"a goal-conditioned cost (cost=goal) needs an encoder for the goal image, but the model's "
                          f"encoder takes {tuple(want)} and the goal images are {tuple(goal_shape)}; use a model "
                          f"trained on this env's frames (same image size and frame stack)")


def check_reward_model(model: torch.nn.Module) -> None:
    """A reward cost needs a reward head: a one-line error otherwise."""
    if getattr(model, "reward_head", None) is None:
        raise ConfigError("a reward cost (cost=reward) needs a world model with a reward head, and this one has "
                          "none; train it with reward=true (or objective.kwargs.reward_weight>0), or use cost=goal")

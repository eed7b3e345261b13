"""C-SWM's contrastive hinge loss on latent transitions.

Kipf, van der Pol & Welling, "Contrastive Learning of Structured World Models", ICLR 2020 (eq. 6)::

    L = d(z_t + T(z_t, a_t), z_{t+1}) + max(0, gamma - d(z~, z_{t+1}))

with ``d`` the energy of :mod:`.energy` (``sigma = 0.5``), ``gamma = 1`` the hinge and ``z~`` the encoding of
a random other state of the batch. The released code compares the negative with ``z_t`` instead of
``z_{t+1}`` (``target="code"``). The residual ``z + T(z, a)`` is the transition model's job: ``model.next``
returns the next latent. Negatives are a random permutation of the batch, as in the released code (a sample
may be its own negative, with probability about ``1/B``, which only weakens that sample's hinge term).

``negatives="time_aligned"`` (Biza et al., "The Impact of Negative Sampling on Contrastive Structured World
Models", 2021) draws the negative among the batch's next frames: ``z~ = z_{t+1}[perm]``.

Multi-step (``horizon = H > 1``): the transition is rolled out ``H`` steps from ``z_0`` with the logged
actions and the positive energies of all steps are **summed**; the hinge term is applied at every step
``k < H`` (negative ``z_k[perm]`` or ``z_{k+1}[perm]``, target ``z_{k+1}`` or ``z_k``) and summed too, with one
permutation shared by the steps. ``H = 1`` is exactly the paper's loss.
"""

from __future__ import annotations

import torch

from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels.base import WorldModel, WorldModelBatch
from worldssl.worldmodels.objectives.common import (
    Objective,
    add_reward_term,
    check_batch,
    check_horizon,
    check_reward_head,
    check_reward_weight,
    encode_steps,
    randperm,
    read_metrics,
)
from worldssl.worldmodels.objectives.energy import energy


class ContrastiveHinge(Objective):
    """C-SWM's energy-based hinge loss.

    Args:
        sigma: energy scale, ``d = mean_k ||x_k - y_k||^2 / (2 sigma^2)``.
        hinge: margin ``gamma`` of the negative term.
        negatives: ``"in_batch"`` (``z~ = z_t[perm]``, C-SWM) or ``"time_aligned"`` (``z~ = z_{t+1}[perm]``).
        target: what the negative is compared with: ``"paper"`` (``z_{t+1}``) or ``"code"`` (``z_t``).
        horizon: transitions used from each window (see the module docstring).
        reward_weight: weight of the reward-head MSE (0: off).
        generator: RNG of the negatives' permutation (default: torch's global RNG).

    Needs from the model: ``encode``, ``next`` (through ``rollout``), and ``reward`` when ``reward_weight > 0``.
    """

    def __init__(self, sigma: float = 0.5, hinge: float = 1.0, negatives: str = "in_batch", target: str = "paper",
                 horizon: int = 1, reward_weight: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        if negatives not in ("in_batch", "time_aligned"):
            raise ConfigError(f"negatives must be 'in_batch' or 'time_aligned', got {negatives!r}")
        if target not in ("paper", "code"):
            raise ConfigError(f"target must be 'paper' (z_t+1) or 'code' (z_t), got {target!r}")
        if not sigma > 0:
            raise ConfigError(f"sigma must be > 0, got {sigma!r}")
        self.sigma, self.hinge = float(sigma), float(hinge)
        self.negatives, self.target = negatives, target
        self.horizon = check_horizon(horizon)
        self.reward_weight = check_reward_weight(reward_weight)
        self.generator = generator

    def loss(self, model: WorldModel, batch: WorldModelBatch) -> tuple[torch.Tensor, dict[str, float]]:
        h = self.horizon
        check_batch("ContrastiveHinge", batch, h)
        check_reward_head("ContrastiveHinge", model, self.reward_weight)
        z = encode_steps(model, batch.obs, h)  # h+1 x [B, (K,) D]
        pred = model.rollout(z[0], batch.actions[:, :h])  # [B, h, (K,) D]; pred[:, k] predicts z[k+1]
        perm = randperm(z[0].shape[0], self.generator, z[0].device)
        positive, negative, hinge = [], [], []
        for k in range(h):
            positive.append(energy(pred[:, k], z[k + 1], self.sigma).mean())
            z_neg = (z[k] if self.negatives == "in_batch" else z[k + 1])[perm]
            anchor = z[k + 1] if self.target == "paper" else z[k]
            neg_energy = energy(z_neg, anchor, self.sigma)  # [B]
            negative.append(neg_energy.mean())
            hinge.append(torch.clamp(self.hinge - neg_energy, min=0.0).mean())
        loss = torch.stack(positive).sum() + torch.stack(hinge).sum()
        values = {"loss": loss, "positive_energy": torch.stack(positive).mean(),
                  "negative_energy": torch.stack(negative).mean(), "hinge": torch.stack(hinge).mean()}
        loss = add_reward_term(self.reward_weight, model, [z[0], *pred[:, : h - 1].unbind(1)], batch, loss, values)
        return loss, read_metrics("ContrastiveHinge", **values)

    def extra_repr(self) -> str:
        return (f"sigma={self.sigma}, hinge={self.hinge}, negatives={self.negatives!r}, target={self.target!r}, "
                f"horizon={self.horizon}, reward_weight={self.reward_weight}")

"""InfoNCE on latent transitions: pick the true next latent among the batch's (CPC-style).

van den Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018 (eq. 4), with the
C-SWM energy as (negative) score. For each step ``k`` of the rollout::

    logits[i, j] = -d(pred_k[i], z_k[j]) / temperature        (distance="energy")
    logits[i, j] = cos(pred_k[i], z_k[j]) / temperature       (distance="cosine", flattened latents)
    L_k = cross_entropy(logits, labels = diagonal)

and ``L = mean_k L_k``. The candidates are the encodings of the batch's frames at the same step, so equal
states in two samples (frequent in small grid worlds) are counted as negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

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
    read_metrics,
)
from worldssl.worldmodels.objectives.energy import pairwise_energy


class TransitionInfoNCE(Objective):
    """Cross-entropy of the true next latent among the batch's next latents.

    Args:
        temperature: logit scale ``1 / temperature``.
        horizon: rollout steps; the loss is the mean over steps.
        distance: ``"energy"`` (negative C-SWM energy with ``sigma``) or ``"cosine"`` (cosine similarity of
            the flattened latents; a temperature around 0.1 suits it better than the default 1).
        sigma: energy scale (only with ``distance="energy"``; multiplies with ``temperature``).
        reward_weight: weight of the reward-head MSE (0: off).

    Needs from the model: ``encode``, ``next`` (through ``rollout``), and ``reward`` when ``reward_weight > 0``.
    """

    def __init__(self, temperature: float = 1.0, horizon: int = 1, distance: str = "energy", sigma: float = 0.5,
                 reward_weight: float = 0.0):
        super().__init__()
        if distance not in ("energy", "cosine"):
            raise ConfigError(f"distance must be 'energy' or 'cosine', got {distance!r}")
        if not temperature > 0 or not sigma > 0:
            raise ConfigError(f"temperature and sigma must be > 0, got {temperature!r}, {sigma!r}")
        self.temperature, self.distance, self.sigma = float(temperature), distance, float(sigma)
        self.horizon = check_horizon(horizon)
        self.reward_weight = check_reward_weight(reward_weight)

    def scores(self, pred: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Similarities ``(B, B)`` of predictions ``(B, ...)`` to candidates ``(B, ...)``, before the temperature."""
        if self.distance == "energy":
            return -pairwise_energy(pred, z, self.sigma)
        return F.normalize(pred.flatten(1), dim=1) @ F.normalize(z.flatten(1), dim=1).t()

    def loss(self, model: WorldModel, batch: WorldModelBatch) -> tuple[torch.Tensor, dict[str, float]]:
        h = self.horizon
        check_batch("TransitionInfoNCE", batch, h)
        check_reward_head("TransitionInfoNCE", model, self.reward_weight)
        z = encode_steps(model, batch.obs, h)  # h+1 x [B, (K,) D]
        pred = model.rollout(z[0], batch.actions[:, :h])  # [B, h, (K,) D]
        b = z[0].shape[0]
        labels = torch.arange(b, device=z[0].device)
        off_diag = ~torch.eye(b, dtype=torch.bool, device=z[0].device)
        losses, accuracy, positive, negative = [], [], [], []
        for k in range(h):
            s = self.scores(pred[:, k], z[k + 1])  # [B, B]
            logits = s / self.temperature
            losses.append(F.cross_entropy(logits, labels))
            accuracy.append((logits.argmax(1) == labels).float().mean())
            positive.append(s.diagonal().mean())
            negative.append(s[off_diag].mean() if b > 1 else s.new_zeros(()))
        loss = torch.stack(losses).mean()
        sign, name = (-1.0, "energy") if self.distance == "energy" else (1.0, "cosine")
        values = {"loss": loss, "accuracy": torch.stack(accuracy).mean(),
                  f"positive_{name}": sign * torch.stack(positive).mean(),
                  f"negative_{name}": sign * torch.stack(negative).mean()}
        loss = add_reward_term(self.reward_weight, model, [z[0], *pred[:, : h - 1].unbind(1)], batch, loss, values)
        return loss, read_metrics("TransitionInfoNCE", **values)

    def extra_repr(self) -> str:
        return (f"temperature={self.temperature}, horizon={self.horizon}, distance={self.distance!r}, "
                f"sigma={self.sigma}, reward_weight={self.reward_weight}")

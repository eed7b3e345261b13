"""Self-predictive latent dynamics: regress the EMA target encoder's next latent (BYOL / SPR style).

Schwarzer et al., "Data-Efficient Reinforcement Learning with Self-Predictive Representations", ICLR 2021
(SPR); Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020. Online: ``z_0 = encode(o_0)``, rolled out
``z^_k = next(z^_{k-1}, a_{k-1})``; target: ``z'_k = target_encoder(o_k)``, an EMA copy of ``model.encoder``
evaluated without gradient. Per step ``k = 1..H`` (latents flattened to ``(B, F)``)::

    cosine: -cos(q(g(z^_k)), g'(z'_k))        mse: mean((q(g(z^_k)) - g'(z'_k))^2)

with the projection ``g`` / prediction ``q`` heads only when ``projection_dim`` is set (``g'`` the EMA copy of
``g``); otherwise the prediction is compared with the target latent directly. The steps are **summed**, as
SPR sums its ``K`` prediction losses. No negatives: collapse is prevented only by the asymmetry (predictor,
EMA target, stop-gradient), as in BYOL; with ``loss="mse"`` and no projection it is weakest.

The target encoder is created by ``attach(model)``, which the builder / trainer calls right after building
model and objective (so that ``objective.state_dict()`` has the ``target_encoder.*`` keys before a checkpoint is
loaded into it); ``loss`` attaches lazily if that was skipped. ``update_momentum(model)`` is the EMA step,
called by the training loop after each optimiser step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from worldssl.runtime.errors import ConfigError
from worldssl.ssl.heads import BYOLPredictionHead, BYOLProjectionHead
from worldssl.ssl.losses.negative_cosine import negative_cosine
from worldssl.ssl.momentum import make_target, update_momentum
from worldssl.worldmodels.base import WorldModel, WorldModelBatch
from worldssl.worldmodels.objectives.common import (
    Objective,
    add_reward_term,
    check_batch,
    check_horizon,
    check_reward_head,
    check_reward_weight,
    latent_size,
    read_metrics,
)


class SelfPredictive(Objective):
    """Predict the EMA target encoder's next latent.

    Args:
        momentum: EMA coefficient ``m`` of ``target <- m * target + (1 - m) * online``.
        loss: ``"cosine"`` (negative cosine, BYOL/SPR) or ``"mse"`` (mean squared error over elements, TD-MPC).
        horizon: rollout steps (losses summed).
        projection_dim: width of the BYOL-style projection / prediction heads over the flattened latent; None
            compares latents directly. The heads need ``latent_dim`` (flattened size) or ``latent_shape``.
        hidden_dim: hidden width of the heads.
        latent_dim, latent_shape: flattened latent size ``F`` or per-sample latent shape (only for the heads).
        reward_weight: weight of the reward-head MSE (0: off).

    Needs from the model: ``encoder`` (copied as the target), ``encode``, ``next``, and ``reward`` when
    ``reward_weight > 0``. With heads, ``objective.parameters()`` must be optimised along with the model's.
    """

    def __init__(self, momentum: float = 0.99, loss: str = "cosine", horizon: int = 1,
                 projection_dim: int | None = None, hidden_dim: int = 256, latent_dim: int | None = None,
                 latent_shape: int | tuple[int, ...] | None = None, reward_weight: float = 0.0):
        super().__init__()
        if loss not in ("cosine", "mse"):
            raise ConfigError(f"loss must be 'cosine' or 'mse', got {loss!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
        self.momentum, self.regression = float(momentum), loss
        self.horizon = check_horizon(horizon)
        self.reward_weight = check_reward_weight(reward_weight)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.register_module("target_encoder", None)
        self.register_module("projector", None)
        self.register_module("predictor", None)
        self.register_module("target_projector", None)
        self.hidden_dim = int(hidden_dim)
        if self.projection_dim is not None:
            shape = latent_size(latent_shape)
            flat = int(latent_dim) if latent_dim is not None else (math.prod(shape) if shape else None)
            if flat is not None:
                self._make_heads(flat)

    def _make_heads(self, flat: int) -> None:
        self.projector = BYOLProjectionHead(flat, self.hidden_dim, self.projection_dim)
        self.predictor = BYOLPredictionHead(self.projection_dim, self.hidden_dim, self.projection_dim)
        self.target_projector = make_target(self.projector)

    def attach(self, model: WorldModel, latent_shape: int | tuple[int, ...] | None = None) -> SelfPredictive:
        """Create the target encoder as a copy of ``model.encoder`` (no gradient), and the heads (with
        ``projection_dim``) sized from ``latent_shape``; a no-op for what exists already."""
        if self.target_encoder is None:
            self.target_encoder = make_target(model.encoder)
        if self.projection_dim is not None and self.projector is None:
            shape = latent_size(latent_shape)
            if shape is None:
                raise ConfigError("SelfPredictive with projection_dim needs latent_dim, latent_shape, or "
                                  "attach(model, latent_shape)")
            self._make_heads(math.prod(shape))
        return self

    def online(self, z_pred: torch.Tensor) -> torch.Tensor:
        """Online prediction ``(B, F)`` or ``(B, projection_dim)`` from a predicted latent."""
        flat = z_pred.flatten(1)
        return flat if self.projector is None else self.predictor(self.projector(flat))

    @torch.no_grad()
    def target(self, obs: torch.Tensor) -> torch.Tensor:
        """Target ``(B, F)`` or ``(B, projection_dim)`` of uint8 frames, without gradient."""
        flat = self.target_encoder(obs).flatten(1)
        return flat if self.target_projector is None else self.target_projector(flat)

    def regress(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return negative_cosine(p, t) if self.regression == "cosine" else F.mse_loss(p, t)

    def loss(self, model: WorldModel, batch: WorldModelBatch) -> tuple[torch.Tensor, dict[str, float]]:
        h = self.horizon
        check_batch("SelfPredictive", batch, h)
        check_reward_head("SelfPredictive", model, self.reward_weight)
        self.attach(model)
        z0 = model.encode(batch.obs[:, 0])  # [B, (K,) D]
        pred = model.rollout(z0, batch.actions[:, :h])  # [B, h, (K,) D]
        losses, cosines = [], []
        for k in range(h):
            p, t = self.online(pred[:, k]), self.target(batch.obs[:, k + 1])  # [B, F']
            losses.append(self.regress(p, t))
            cosines.append(F.cosine_similarity(p.detach(), t, dim=-1).mean())
        loss = torch.stack(losses).sum()
        values = {"loss": loss, "cos": torch.stack(cosines).mean()}
        loss = add_reward_term(self.reward_weight, model, [z0, *pred[:, : h - 1].unbind(1)], batch, loss, values)
        return loss, read_metrics("SelfPredictive", **values)

    @torch.no_grad()
    def update_momentum(self, model: WorldModel) -> None:
        """``target <- m * target + (1 - m) * online`` for the encoder (and projector); call after ``step()``."""
        if self.target_encoder is None:
            self.attach(model)
            return
        update_momentum(model.encoder, self.target_encoder, self.momentum)
        if self.projector is not None:
            update_momentum(self.projector, self.target_projector, self.momentum)

    def extra_repr(self) -> str:
        return (f"momentum={self.momentum}, loss={self.regression!r}, horizon={self.horizon}, "
                f"projection_dim={self.projection_dim}, reward_weight={self.reward_weight}")

"""Self-predictive latent dynamics: predict an EMA target encoder's future latents (SPR / BYOL style).

Schwarzer et al., "Data-Efficient Reinforcement Learning with Self-Predictive Representations", ICLR 2021
(SPR); Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (BYOL); Hansen et al., "TD-MPC2", ICLR 2024
(latent consistency). Online: ``z_0 = encode(aug(o_0))``, rolled out ``z^_k = next(z^_{k-1}, a_{k-1})`` for
``k = 1..H``; target: ``z'_k = target_encoder(aug(o_k))``, an EMA copy of ``model.encoder`` evaluated without
gradient. Per step, on latents flattened to ``(B, F)``::

    cosine: -cos(q(g(z^_k)), g'(z'_k))        mse: mean((q(g(z^_k)) - g'(z'_k))^2)

summed over the ``H`` steps, as SPR sums its ``K`` future-step losses. ``g`` is a projection head
(``Linear -> BatchNorm -> ReLU -> Linear``, SPR's and BYOL's), ``g'`` its EMA copy, ``q`` the predictor on the
online side only (``linear``, SPR's, or ``mlp``, BYOL's). ``projection_dim=None`` drops the heads and compares
latents directly (the objective's first form, which collapses on Shapes; kept for that comparison).
``aug`` is SPR's augmentation, drawn independently for every frame on both sides: a random shift by up to
``shift_pad`` pixels and a brightness factor uniform in ``[1 - intensity, 1 + intensity]`` (both off at 0).
``consistency_weight > 0`` adds TD-MPC2's latent consistency, ``sum_k mean((z^_k - z'_k)^2)``, on the raw
latents, and ``reward_weight > 0`` a reward head (TD-MPC2's anti-collapse signal where the data has rewards).

No negatives: collapse is held off only by the asymmetry (predictor, EMA target, stop-gradient), as in BYOL.
So the loss reports collapse diagnostics of the online latent ``z_0`` and of the target projection
(:func:`~worldssl.worldmodels.objectives.common.collapse_metrics`: per-dimension std, effective rank).

The target encoder (and projection) is created by ``attach(model)``, which the builder / trainer calls right
after building model and objective (so that ``objective.state_dict()`` has the ``target_encoder.*`` keys before
a checkpoint is loaded into it); ``loss`` attaches lazily if that was skipped. ``update_momentum(model)`` is
the EMA step, called by the training loop after each optimiser step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from worldssl.data.augment import color_jitter, random_shift
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
    collapse_metrics,
    latent_size,
    read_metrics,
)

PREDICTORS = ("linear", "mlp")


class SelfPredictive(Objective):
    """Predict the EMA target encoder's (projected) latents ``1..horizon`` steps ahead.

    Args:
        momentum: EMA coefficient ``m`` of ``target <- m * target + (1 - m) * online`` (SPR's tau).
        loss: ``"cosine"`` (negative cosine, BYOL / SPR) or ``"mse"`` (mean squared error over elements).
        horizon: rollout steps, losses summed (SPR: 5).
        projection_dim: output width of the projection ``g``; None compares the latents directly (no heads).
        hidden_dim: hidden width of the projection (and of an ``mlp`` predictor).
        predictor: ``"linear"`` (SPR) or ``"mlp"`` (BYOL's ``Linear -> BN -> ReLU -> Linear``).
        shift_pad: random shift of every frame by up to this many pixels (DrQ / SPR); 0: off.
        intensity: brightness factor uniform in ``[1 - intensity, 1 + intensity]`` per frame (SPR's
            intensity augmentation); 0: off.
        consistency_weight: weight of TD-MPC2's latent consistency, the MSE between the rolled-out and the
            target latents (0: off).
        latent_dim, latent_shape: flattened latent size ``F`` or per-sample latent shape, to build the heads in
            the constructor (otherwise ``attach(model, latent_shape)`` does).
        reward_weight: weight of the reward-head MSE (0: off).

    Needs from the model: ``encoder`` (copied as the target), ``encode``, ``next``, and ``reward`` when
    ``reward_weight > 0``. ``objective.parameters()`` (the heads) are optimised along with the model's.
    """

    def __init__(self, momentum: float = 0.99, loss: str = "cosine", horizon: int = 3,
                 projection_dim: int | None = 64, hidden_dim: int = 256, predictor: str = "mlp",
                 shift_pad: int = 0, intensity: float = 0.0, consistency_weight: float = 1.0,
                 latent_dim: int | None = None, latent_shape: int | tuple[int, ...] | None = None,
                 reward_weight: float = 0.0):
        super().__init__()
        if loss not in ("cosine", "mse"):
            raise ConfigError(f"loss must be 'cosine' or 'mse', got {loss!r}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"momentum must be in [0, 1], got {momentum!r}")
        if predictor not in PREDICTORS:
            raise ConfigError(f"predictor must be one of {', '.join(PREDICTORS)}, got {predictor!r}")
        if int(shift_pad) != shift_pad or shift_pad < 0:
            raise ConfigError(f"shift_pad must be an integer >= 0 (pixels), got {shift_pad!r}")
        if not 0.0 <= intensity < 1.0:
            raise ConfigError(f"intensity must be in [0, 1), got {intensity!r}")
        if not consistency_weight >= 0.0:
            raise ConfigError(f"consistency_weight must be >= 0, got {consistency_weight!r}")
        if projection_dim is not None and (int(projection_dim) != projection_dim or projection_dim < 1):
            raise ConfigError(f"projection_dim must be a positive integer or null, got {projection_dim!r}")
        self.momentum, self.regression = float(momentum), loss
        self.horizon = check_horizon(horizon)
        self.reward_weight = check_reward_weight(reward_weight)
        self.projection_dim = None if projection_dim is None else int(projection_dim)
        self.hidden_dim, self.predictor_kind = int(hidden_dim), predictor
        self.shift_pad, self.intensity = int(shift_pad), float(intensity)
        self.consistency_weight = float(consistency_weight)
        self.register_module("target_encoder", None)
        self.register_module("projector", None)
        self.register_module("predictor", None)
        self.register_module("target_projector", None)
        if self.projection_dim is not None:
            shape = latent_size(latent_shape)
            flat = int(latent_dim) if latent_dim is not None else (math.prod(shape) if shape else None)
            if flat is not None:
                self._make_heads(flat)

    def _make_heads(self, flat: int) -> None:
        self.projector = BYOLProjectionHead(flat, self.hidden_dim, self.projection_dim)
        if self.predictor_kind == "linear":
            self.predictor = nn.Linear(self.projection_dim, self.projection_dim)
        else:
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

    def augment(self, obs: torch.Tensor) -> torch.Tensor:
        """uint8 frames ``(B, C, H, W)``, shifted and brightness-scaled per frame (as configured)."""
        if self.shift_pad:
            obs = random_shift(obs, self.shift_pad)
        if self.intensity:
            obs = color_jitter(obs, brightness=self.intensity, contrast=0.0, saturation=0.0, p=1.0)
        return obs

    def online(self, z_pred: torch.Tensor) -> torch.Tensor:
        """Online prediction ``q(g(z))``, ``(B, projection_dim)``, or the flattened latent ``(B, F)``."""
        flat = z_pred.flatten(1)
        return flat if self.projector is None else self.predictor(self.projector(flat))

    @torch.no_grad()
    def target_latent(self, obs: torch.Tensor) -> torch.Tensor:
        """The target encoder's latent of (already augmented) uint8 frames, without gradient."""
        return self.target_encoder(obs)

    @torch.no_grad()
    def project_target(self, z_target: torch.Tensor) -> torch.Tensor:
        """``g'(z')``, ``(B, projection_dim)``, or the flattened target latent ``(B, F)``, without gradient."""
        flat = z_target.flatten(1)
        return flat if self.target_projector is None else self.target_projector(flat)

    def target(self, obs: torch.Tensor) -> torch.Tensor:
        """Regression target ``g'(target_encoder(obs))`` of uint8 frames (not augmented here), without gradient."""
        return self.project_target(self.target_latent(obs))

    def regress(self, p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return negative_cosine(p, t) if self.regression == "cosine" else F.mse_loss(p.float(), t.float())

    def loss(self, model: WorldModel, batch: WorldModelBatch) -> tuple[torch.Tensor, dict[str, float]]:
        h = self.horizon
        check_batch("SelfPredictive", batch, h)
        check_reward_head("SelfPredictive", model, self.reward_weight)
        z0 = model.encode(self.augment(batch.obs[:, 0]))  # [B, (K,) D]
        self.attach(model, tuple(z0.shape[1:]))  # lazily, if the builder did not (heads then not optimised)
        pred = model.rollout(z0, batch.actions[:, :h])  # [B, h, (K,) D]
        losses, cosines, consistency, projections = [], [], [], []
        for k in range(h):
            z_target = self.target_latent(self.augment(batch.obs[:, k + 1]))  # [B, (K,) D]
            p, t = self.online(pred[:, k]), self.project_target(z_target)  # [B, F']
            losses.append(self.regress(p, t))
            cosines.append(F.cosine_similarity(p.detach().float(), t.float(), dim=-1).mean())
            if self.consistency_weight:
                consistency.append(F.mse_loss(pred[:, k].float(), z_target.float()))
            projections.append(t)
        loss = torch.stack(losses).sum()
        values = {"loss": loss, "predict_loss": loss, "cos": torch.stack(cosines).mean()}
        if self.consistency_weight:
            c = torch.stack(consistency).sum()
            loss = loss + self.consistency_weight * c
            values.update(loss=loss, consistency=c)
        values.update(collapse_metrics(z0, "z"))
        values.update(collapse_metrics(projections[0], "target"))
        loss = add_reward_term(self.reward_weight, model, [z0, *pred[:, : h - 1].unbind(1)], batch, loss, values)
        return loss, read_metrics("SelfPredictive", **values)

    @torch.no_grad()
    def update_momentum(self, model: WorldModel) -> None:
        """``target <- m * target + (1 - m) * online`` for the encoder (and projection); call after ``step()``."""
        if self.target_encoder is None:
            self.attach(model)
            return
        update_momentum(model.encoder, self.target_encoder, self.momentum)
        if self.projector is not None:
            update_momentum(self.projector, self.target_projector, self.momentum)

    def extra_repr(self) -> str:
        return (f"momentum={self.momentum}, loss={self.regression!r}, horizon={self.horizon}, "
                f"projection_dim={self.projection_dim}, predictor={self.predictor_kind!r}, "
                f"shift_pad={self.shift_pad}, intensity={self.intensity}, "
                f"consistency_weight={self.consistency_weight}, reward_weight={self.reward_weight}")

"""Pixel-reconstruction objectives: C-SWM's "World Model (AE)" and "World Model (VAE)" baselines.

Kipf et al., ICLR 2020, sec. 4 (baselines, after Ha & Schmidhuber, "World Models", 2018, and Kingma &
Welling, "Auto-Encoding Variational Bayes", 2014): encode ``o_t``, predict the next latent with the
transition model, decode it and reconstruct ``o_{t+1}``; the current frame is reconstructed from its own
latent as well (``recon_current``). As in the released baseline code, each reconstruction term is a
per-pixel binary cross-entropy **summed over pixels** and averaged over the batch (``reduction="sum"``),
which is also the scale at which the VAE's KL term (summed over latent dimensions) is derived.

Multi-step (``horizon = H``): the latent of ``o_0`` is rolled out ``H`` steps with the logged actions and
the ``H`` reconstructions of ``o_1 .. o_H`` are summed (plus the one of ``o_0`` when ``recon_current``).

BCE uses ``model.decoder.logits(z)`` with ``binary_cross_entropy_with_logits`` when the decoder has a
``logits`` method (numerically safer than the log of a sigmoid), else ``model.decode(z)`` (probabilities).
MSE compares ``model.decode(z)`` (in ``[0, 1]``) with the frame.

Two ways to train the transition (``transition_loss``):

- ``"pixel"`` (default): through the decoder, as above. The predicted latent only has to *decode* to
  ``o_{t+1}``; nothing asks it to equal ``encode(o_{t+1})``. This is the "C-SWM without contrastive loss
  (pixel decoder)" model of the paper's Table 1 when the encoder is the slot encoder.
- ``"latent"``: World Models' split (Ha & Schmidhuber 2018: the vision model learns by reconstruction, the
  dynamics model learns on its latents). The encoder and decoder learn only from reconstructing ``o_t``; the
  transition, fed the detached latent, regresses the detached encodings of ``o_{t+1} .. o_{t+H}`` (squared
  error summed over latent dimensions, mean over the batch). Both parts train at once on disjoint
  parameters, so the relative scale of the two terms does not matter to Adam.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels.base import WorldModel, WorldModelBatch
from worldssl.worldmodels.objectives.common import (
    Objective,
    add_reward_term,
    check_batch,
    check_horizon,
    check_reward_head,
    check_reward_weight,
    latent_size,
    pixels,
    randn_like,
    read_metrics,
)


class _Reconstruction(Objective):
    """Shared reconstruction term of the AE and VAE baselines."""

    needs_decoder = True

    def __init__(self, horizon: int, recon_current: bool, loss: str, reduction: str, reward_weight: float,
                 transition_loss: str = "pixel"):
        super().__init__()
        if loss not in ("bce", "mse"):
            raise ConfigError(f"loss must be 'bce' or 'mse', got {loss!r}")
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"reduction must be 'sum' (over pixels, mean over batch) or 'mean', got {reduction!r}")
        if transition_loss not in ("pixel", "latent"):
            raise ConfigError(f"transition_loss must be 'pixel' or 'latent', got {transition_loss!r}")
        if transition_loss == "latent" and not recon_current:
            raise ConfigError("transition_loss='latent' trains the encoder only by reconstructing o_t: "
                              "set recon_current=true")
        self.transition_loss = transition_loss
        self.horizon = check_horizon(horizon)
        self.recon_current = bool(recon_current)
        self.recon_loss, self.reduction = loss, reduction
        self.reward_weight = check_reward_weight(reward_weight)

    def reconstruction(self, model: WorldModel, z: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss of uint8 ``frames`` ``(B, C, H, W)`` from latents ``z``: per-pixel BCE or squared
        error, summed over ``C, H, W`` and averaged over ``B`` (``reduction="sum"``) or averaged over all."""
        target = pixels(frames)  # [B, C, H, W] in [0, 1]
        decoder_logits = getattr(model.decoder, "logits", None)
        if self.recon_loss == "bce" and callable(decoder_logits):
            out = decoder_logits(z)
            self._check_shape(out, target)
            per_pixel = F.binary_cross_entropy_with_logits(out, target, reduction="none")
        else:
            out = model.decode(z)
            self._check_shape(out, target)
            if self.recon_loss == "bce":
                per_pixel = F.binary_cross_entropy(out, target, reduction="none")
            else:
                per_pixel = (out - target).pow(2)
        if self.reduction == "sum":
            return per_pixel.flatten(1).sum(1).mean()
        return per_pixel.mean()

    @staticmethod
    def _check_shape(out: torch.Tensor, target: torch.Tensor) -> None:
        if out.shape != target.shape:
            raise ValueError(f"decoder output {tuple(out.shape)} does not match the frames {tuple(target.shape)}")

    def reconstruct_window(self, model: WorldModel, z0: torch.Tensor, batch: WorldModelBatch
                           ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Roll ``z0`` out ``horizon`` steps with the logged actions.

        Returns ``(terms, recon, parts, pred)``: the sum of the training terms, the reconstruction part of
        it, every term by name, and the rollout ``[B, H, (K,) D]``.
        """
        h = self.horizon
        actions = batch.actions[:, :h]
        parts: dict[str, torch.Tensor] = {}
        if self.transition_loss == "latent":
            recon = parts["recon_current"] = self.reconstruction(model, z0, batch.obs[:, 0])
            pred = model.rollout(z0.detach(), actions)  # [B, h, (K,) D]
            with torch.no_grad():
                future = batch.obs[:, 1: h + 1]
                target = model.encode(future.flatten(0, 1)).unflatten(0, future.shape[:2]).to(pred.dtype)
            parts["latent_next"] = (pred - target).pow(2).flatten(2).sum(2).sum(1).mean()
            return recon + parts["latent_next"], recon, parts, pred
        pred = model.rollout(z0, actions)  # [B, h, (K,) D]
        recon = parts["recon_next"] = torch.stack(
            [self.reconstruction(model, pred[:, k], batch.obs[:, k + 1]) for k in range(h)]).sum()
        if self.recon_current:
            parts["recon_current"] = self.reconstruction(model, z0, batch.obs[:, 0])
            recon = recon + parts["recon_current"]
        return recon, recon, parts, pred

    def add_reward(self, model: WorldModel, z0: torch.Tensor, pred: torch.Tensor, batch: WorldModelBatch,
                   loss: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = add_reward_term(self.reward_weight, model, [z0, *pred[:, : self.horizon - 1].unbind(1)], batch, loss,
                               values)
        return loss


class GenerativeAE(_Reconstruction):
    """Deterministic auto-encoder world model: reconstruct ``o_{t+1}`` from ``next(encode(o_t), a_t)``.

    Args:
        horizon: rollout steps (reconstructions summed).
        recon_current: also reconstruct ``o_t`` from ``encode(o_t)`` (C-SWM's baseline does).
        loss: ``"bce"`` (pixels as Bernoulli probabilities) or ``"mse"``.
        reduction: ``"sum"`` over pixels then mean over the batch (C-SWM), or ``"mean"`` over everything.
        reward_weight: weight of the reward-head MSE (0: off).
        transition_loss: ``"pixel"`` (the transition learns through the decoder) or ``"latent"`` (World
            Models' split: it regresses the detached next encodings; see the module docstring).

    Needs from the model: ``encode``, ``next``, a decoder (``decode``; ``decoder.logits`` used when present),
    and ``reward`` when ``reward_weight > 0``.
    """

    def __init__(self, horizon: int = 1, recon_current: bool = True, loss: str = "bce", reduction: str = "sum",
                 reward_weight: float = 0.0, transition_loss: str = "pixel"):
        super().__init__(horizon, recon_current, loss, reduction, reward_weight, transition_loss)

    def loss(self, model: WorldModel, batch: WorldModelBatch) -> tuple[torch.Tensor, dict[str, float]]:
        check_batch("GenerativeAE", batch, self.horizon)
        check_reward_head("GenerativeAE", model, self.reward_weight)
        z0 = model.encode(batch.obs[:, 0])  # [B, (K,) D]
        loss, recon, parts, pred = self.reconstruct_window(model, z0, batch)
        values = {"loss": loss, "recon": recon, **parts}
        loss = self.add_reward(model, z0, pred, batch, loss, values)
        return loss, read_metrics("GenerativeAE", **values)

    def extra_repr(self) -> str:
        return (f"horizon={self.horizon}, recon_current={self.recon_current}, loss={self.recon_loss!r}, "
                f"reduction={self.reduction!r}, reward_weight={self.reward_weight}, "
                f"transition_loss={self.transition_loss!r}")


class GenerativeVAE(_Reconstruction):
    """Variational auto-encoder world model: ``z~ = mu + eps * exp(logvar / 2)`` with ``mu = encode(o_t)``;
    reconstruct ``o_t`` from ``z~`` and ``o_{t+1}`` from ``next(z~, a_t)``; add ``beta * KL(N(mu, var) || N(0, I))``
    (summed over latent dimensions, averaged over samples).

    The encoder gives only ``mu`` (the world-model contract has one latent per frame), so the log-variance is
    a learned affine function of it: ``logvar = logvar_head(mu)``, an ``nn.Linear(D, D)`` applied to the last
    latent dimension (shared over slots for ``(B, K, D)`` latents). **The head is a parameter of this
    objective: optimise ``model.parameters()`` and ``objective.parameters()`` together.** Give its size in the
    constructor (``latent_dim=D`` or ``latent_shape=(D,) / (K, D)``) or through ``attach(model, latent_shape)``
    before building the optimiser; otherwise it is created on the first ``loss`` call, too late for an
    optimiser built before. A state_dict holding the head creates it on load.

    Args:
        beta: KL weight (``beta = 1``: the ELBO).
        horizon, recon_current, loss, reduction, reward_weight, transition_loss: as :class:`GenerativeAE`
            (with ``transition_loss="latent"`` the rollout starts from the detached sample ``z~`` and its
            targets are the next frames' means).
        latent_dim, latent_shape: the latent's last-dimension size, or its per-sample shape.
        generator: RNG of the reparameterisation noise (default: torch's global RNG).

    Needs from the model: ``encode``, ``next``, a decoder, and ``reward`` when ``reward_weight > 0``.
    """

    def __init__(self, beta: float = 1.0, horizon: int = 1, recon_current: bool = True, loss: str = "bce",
                 reduction: str = "sum", latent_dim: int | None = None,
                 latent_shape: int | tuple[int, ...] | None = None, reward_weight: float = 0.0,
                 generator: torch.Generator | None = None, transition_loss: str = "pixel"):
        super().__init__(horizon, recon_current, loss, reduction, reward_weight, transition_loss)
        if not beta >= 0:
            raise ConfigError(f"beta must be >= 0, got {beta!r}")
        self.beta = float(beta)
        self.generator = generator
        self.register_module("logvar_head", None)
        shape = latent_size(latent_shape)
        if latent_dim is not None and shape is not None and shape[-1] != int(latent_dim):
            raise ConfigError(f"latent_dim {latent_dim} disagrees with latent_shape {latent_shape}")
        dim = int(latent_dim) if latent_dim is not None else (shape[-1] if shape else None)
        if dim is not None:
            self._make_head(dim)

    def _make_head(self, dim: int, device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:
        self.logvar_head = nn.Linear(dim, dim, device=device, dtype=dtype)

    def attach(self, model: WorldModel, latent_shape: int | tuple[int, ...] | None = None) -> GenerativeVAE:
        """Create the log-variance head now if its size was not given to the constructor."""
        shape = latent_size(latent_shape)
        if self.logvar_head is None and shape is not None:
            param = next(model.parameters(), None)
            self._make_head(shape[-1], device=param.device if param is not None else None)
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        weight = state_dict.get(prefix + "logvar_head.weight")
        if self.logvar_head is None and weight is not None:
            self._make_head(weight.shape[1], device=weight.device, dtype=weight.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def posterior(self, mu: torch.Tensor) -> torch.Tensor:
        """``logvar`` of ``q(z | o) = N(mu, exp(logvar))``, shaped like ``mu``."""
        if self.logvar_head is None:
            self._make_head(mu.shape[-1], device=mu.device, dtype=mu.dtype)
        return self.logvar_head(mu)

    @staticmethod
    def kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``KL(N(mu, exp(logvar)) || N(0, I))``: ``0.5 * sum(mu^2 + var - 1 - logvar)`` over latent dims, mean
        over the batch."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()

    def loss(self, model: WorldModel, batch: WorldModelBatch) -> tuple[torch.Tensor, dict[str, float]]:
        check_batch("GenerativeVAE", batch, self.horizon)
        check_reward_head("GenerativeVAE", model, self.reward_weight)
        mu = model.encode(batch.obs[:, 0])  # [B, (K,) D]
        logvar = self.posterior(mu)  # [B, (K,) D]
        z0 = mu + randn_like(mu, self.generator) * torch.exp(0.5 * logvar)  # reparameterisation
        terms, recon, parts, pred = self.reconstruct_window(model, z0, batch)
        kl = self.kl(mu, logvar)
        loss = terms + self.beta * kl
        values = {"loss": loss, "recon": recon, **parts, "kl": kl}
        loss = self.add_reward(model, z0, pred, batch, loss, values)
        return loss, read_metrics("GenerativeVAE", **values)

    def extra_repr(self) -> str:
        return (f"beta={self.beta}, horizon={self.horizon}, recon_current={self.recon_current}, "
                f"loss={self.recon_loss!r}, reduction={self.reduction!r}, reward_weight={self.reward_weight}, "
                f"transition_loss={self.transition_loss!r}")

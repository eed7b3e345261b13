"""Pieces every transition objective shares: batch checks, the reward term, metrics, random draws.

Conventions of all objectives in this package:

* Only the first ``horizon`` transitions of a window are used: frames ``obs[:, 0..horizon]`` and actions
  ``actions[:, :horizon]``; the loop may sample longer windows.
* Frames are encoded one time step per ``encode`` call (``B`` frames per pass), as C-SWM's code encodes
  ``obs`` and ``next_obs`` in two calls: with BatchNorm in the encoder, each step gets its own statistics.
* The reward term (``reward_weight > 0``) is the MSE between ``model.reward(z_k, a_k)`` and the logged
  ``rewards[:, k]``, averaged over batch and the ``horizon`` steps, where ``z_0`` is the (sampled, for the
  VAE) encoding of ``o_0`` and ``z_k`` for ``k >= 1`` the latent rolled out by the transition model
  (the TD-MPC convention: the reward head sees the latents a planner would see).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels.base import TransitionObjective, WorldModel, WorldModelBatch


def check_horizon(horizon: int) -> int:
    """``horizon`` as an int >= 1, else ConfigError."""
    if int(horizon) != horizon or horizon < 1:
        raise ConfigError(f"horizon must be an integer >= 1, got {horizon!r}")
    return int(horizon)


def check_reward_weight(reward_weight: float) -> float:
    if not reward_weight >= 0.0:
        raise ConfigError(f"reward_weight must be >= 0, got {reward_weight!r}")
    return float(reward_weight)


def check_batch(objective: str, batch: WorldModelBatch, horizon: int) -> None:
    """ValueError naming the problem when ``batch`` is not a window of at least ``horizon`` steps."""
    obs, actions, rewards = batch.obs, batch.actions, batch.rewards
    if obs.dim() != 5 or obs.dtype != torch.uint8:
        raise ValueError(f"{objective}: obs must be uint8 (B, L+1, C, H, W), got {obs.dtype} {tuple(obs.shape)}")
    b, steps = obs.shape[0], obs.shape[1] - 1
    if steps < horizon:
        raise ValueError(f"{objective}: horizon {horizon} needs windows of >= {horizon} steps, got L={steps}")
    if actions.dim() not in (2, 3) or tuple(actions.shape[:2]) != (b, steps):
        raise ValueError(f"{objective}: actions must be (B, L) or (B, L, A) with B, L = {b}, {steps}; "
                         f"got {tuple(actions.shape)}")
    if tuple(rewards.shape) != (b, steps):
        raise ValueError(f"{objective}: rewards must be (B, L) = {(b, steps)}, got {tuple(rewards.shape)}")


def encode_steps(model: WorldModel, obs: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """``[model.encode(obs[:, t]) for t in 0..steps]``: one encoder pass per time step."""
    return [model.encode(obs[:, t]) for t in range(steps + 1)]


def pixels(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float in ``[0, 1]``."""
    return frames.float() / 255.0


def add_reward_term(weight: float, model: WorldModel, latents: list[torch.Tensor], batch: WorldModelBatch,
                    loss: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
    """``loss + weight * reward_loss`` when ``weight > 0`` (recording both in ``values``), else ``loss``."""
    if weight <= 0:
        return loss
    r_loss = reward_loss(model, latents, batch)
    loss = loss + weight * r_loss
    values.update(loss=loss, reward_loss=r_loss)
    return loss


def reward_loss(model: WorldModel, latents: list[torch.Tensor], batch: WorldModelBatch) -> torch.Tensor:
    """Mean over batch and steps of ``(model.reward(latents[k], a_k) - r_k)^2``, ``k < len(latents)``."""
    terms = [F.mse_loss(model.reward(z, batch.actions[:, k]), batch.rewards[:, k].float())
             for k, z in enumerate(latents)]
    return torch.stack(terms).mean()


def check_reward_head(objective: str, model: WorldModel, reward_weight: float) -> None:
    if reward_weight > 0 and getattr(model, "reward_head", None) is None:
        raise ConfigError(f"{objective}: reward_weight={reward_weight} needs a world model with a reward head "
                          f"(build it with reward=true) or reward_weight=0")


def randperm(n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """A random permutation of ``range(n)`` from ``generator`` (on its device) or the global RNG."""
    if generator is None:
        return torch.randperm(n, device=device)
    return torch.randperm(n, generator=generator, device=generator.device).to(device)


def randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, from ``generator`` (on its device) or the global RNG."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)


def read_metrics(objective: str, **values: torch.Tensor) -> dict[str, float]:
    """Scalar tensors -> ``{"wm/<name>": float}`` in one device-to-host copy. The first value is the loss:
    FloatingPointError when it is not finite."""
    host = torch.stack([v.detach().float().reshape(()) for v in values.values()]).tolist()
    if not math.isfinite(host[0]):
        raise FloatingPointError(f"{objective} loss is {host[0]}")
    return {f"wm/{k}": x for k, x in zip(values, host, strict=True)}


@torch.no_grad()
def collapse_metrics(z: torch.Tensor, prefix: str = "z") -> dict[str, torch.Tensor]:
    """Collapse diagnostics of a batch of latents ``(B, ...)`` (flattened to ``(B, F)``), as scalar tensors:

    * ``<prefix>_std``, ``<prefix>_std_min``: the per-dimension standard deviation over the batch, mean and
      smallest (0 for a dimension the encoder no longer uses);
    * ``<prefix>_rank``: the effective rank of the centred batch (Roy & Vetterli 2007, as RankMe, Garrido et
      al. 2023, uses it): ``exp(entropy(s / sum(s)))`` of its singular values ``s``, between 1 (every latent on
      one line: collapsed) and ``min(B, F)`` (variance spread evenly over every direction);
    * ``<prefix>_spread``: ``sqrt(sum of the per-dimension variances) / |batch mean|``, scale-free; near 0 when
      every latent is nearly the same vector (the collapse a cosine loss allows: a shared offset that dwarfs
      what varies), whatever the rank of the small part that varies.

    Computed in float32 with autocast off; no gradient.
    """
    x = z.detach().flatten(1).float()
    with torch.autocast(x.device.type, enabled=False):
        mean = x.mean(0, keepdim=True)
        x = x - mean
        std = x.pow(2).mean(0).sqrt()
        s = torch.linalg.svdvals(x)
        p = s / s.sum().clamp_min(1e-12)
        rank = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        spread = std.pow(2).sum().sqrt() / mean.norm().clamp_min(1e-12)
    return {f"{prefix}_std": std.mean(), f"{prefix}_std_min": std.min(), f"{prefix}_rank": rank,
            f"{prefix}_spread": spread}


def latent_size(latent_shape: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    """An int or a shape (``(D,)`` or ``(K, D)``) -> a tuple shape, or None."""
    if latent_shape is None:
        return None
    shape = (int(latent_shape),) if isinstance(latent_shape, int) else tuple(int(s) for s in latent_shape)
    if not shape or any(s < 1 for s in shape):
        raise ConfigError(f"latent_shape must be positive sizes, got {latent_shape!r}")
    return shape


class Objective(TransitionObjective):
    """The base of this package's objectives: a :class:`TransitionObjective` (``attach`` and
    ``update_momentum`` are no-ops there), kept as the name they subclass."""

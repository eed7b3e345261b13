"""The world-model contract shared by transition families and transition objectives.

A :class:`WorldModel` is an encoder, a transition model, an action encoder and optional heads (reward,
pixel decoder). It exposes one method per learned function. An *objective* is a separate module with
``loss(model, batch) -> (loss, metrics)``; comparing objectives swaps only that module, while encoder,
transition, data and budget stay fixed.

Latents are ``(B, D)`` for flat models or ``(B, K, D)`` for object-slot models; every method keeps that
layout. Observations are uint8 ``(B, C, H, W)``; encoders normalise inside.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class WorldModelBatch(NamedTuple):
    """``L``-step windows: ``obs`` uint8 ``(B, L+1, C, H, W)``, ``actions`` ``(B, L)`` int64 (discrete) or
    ``(B, L, A)`` float, ``rewards`` ``(B, L)`` float. ``EpisodeDataset.sample_sequences(B, L)`` gives them."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor


class ActionEncoder(nn.Module):
    """Actions -> transition inputs.

    Discrete actions become one-hots of ``n`` (``mode="flat"``); for slot models either the one-hot is copied
    to every slot (``mode="copy"``), or, as in C-SWM's grid worlds, action ``a`` is given only to slot
    ``a // (n // K)`` as a one-hot of ``a % (n // K)`` (``mode="per_slot"``). Continuous actions pass through
    (copied to every slot for slot models).
    """

    def __init__(self, discrete: bool, dim: int, num_slots: int | None = None, mode: str = "flat"):
        super().__init__()
        if mode not in ("flat", "copy", "per_slot"):
            raise ValueError(f"action mode must be flat, copy or per_slot, got {mode!r}")
        if mode == "copy" and not num_slots:
            raise ValueError("copy actions need num_slots (the action is copied to every slot)")
        if mode == "per_slot" and (not discrete or not num_slots or dim % num_slots):
            raise ValueError(f"per_slot actions need a discrete action count divisible by the slots "
                             f"({dim} actions, {num_slots} slots)")
        self.discrete, self.dim, self.num_slots, self.mode = discrete, int(dim), num_slots, mode

    @property
    def out_dim(self) -> int:
        """Width of the encoded action (per slot for slot models)."""
        return self.dim // self.num_slots if self.mode == "per_slot" else self.dim

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """``(B,)`` int64 or ``(B, A)`` float -> ``(B, A')`` or, for slot models, ``(B, K, A')``."""
        if self.discrete:
            a = a.long().reshape(-1)
            if self.mode == "per_slot":
                per = self.dim // self.num_slots
                out = torch.zeros(a.shape[0], self.num_slots, per, device=a.device)
                out[torch.arange(a.shape[0], device=a.device), a // per, a % per] = 1.0
                return out
            enc = nn.functional.one_hot(a, self.dim).float()
        else:
            enc = a.float().reshape(a.shape[0], -1)
        if self.mode == "copy":
            return enc.unsqueeze(1).expand(-1, self.num_slots, -1)
        return enc


def every_pair(z: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, a)`` with one row per (row of ``z``, row of ``a``): row ``i * N + j`` pairs ``z[i]`` and ``a[j]``."""
    return z.repeat_interleave(a.shape[0], dim=0), a.repeat(z.shape[0], *([1] * (a.dim() - 1)))


class WorldModel(nn.Module):
    """Encoder + transition (+ reward head, + decoder for generative objectives), one method per function."""

    def __init__(self, encoder: nn.Module, transition: nn.Module, action_encoder: ActionEncoder,
                 reward_head: nn.Module | None = None, decoder: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.transition = transition
        self.action_encoder = action_encoder
        self.reward_head = reward_head
        self.decoder = decoder

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """Observation ``(B, C, H, W)`` uint8 -> latent ``(B, D)`` or ``(B, K, D)``."""
        return self.encoder(obs)

    def next(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """One transition step: latent and raw action -> next latent."""
        return self.transition(z, self.action_encoder(a))

    def next_each(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Every action of ``a`` ``(N, ...)`` taken from every latent of ``z`` ``(M, ...)``: next latents
        ``(M * N, ...)``, row ``i * N + j`` for latent ``i`` and action ``j``. The same function as ``next`` on
        ``z`` repeated ``N`` times and ``a`` tiled ``M`` times; a transition with an ``each(z, a)`` method
        computes what depends on the latent alone once per latent instead of once per row (C-SWM's GNN: its
        edge messages, most of its cost), which is what a planner's search tree needs."""
        enc = self.action_encoder(a)
        each = getattr(self.transition, "each", None)
        return each(z, enc) if each is not None else self.transition(*every_pair(z, enc))

    def rollout(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Apply ``next`` along ``actions`` ``(B, L, ...)``: predicted latents ``(B, L, ...)`` for steps 1..L."""
        out = []
        for t in range(actions.shape[1]):
            z = self.next(z, actions[:, t])
            out.append(z)
        return torch.stack(out, dim=1)

    def reward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Predicted reward ``(B,)`` for taking ``a`` in latent ``z``."""
        if self.reward_head is None:
            raise RuntimeError("this world model has no reward head (build it with reward=true)")
        return self.reward_head(torch.cat([z.flatten(1), self.action_encoder(a).flatten(1)], dim=1)).squeeze(-1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent -> reconstructed frame, float ``(B, C, H, W)`` in ``[0, 1]`` (generative models only)."""
        if self.decoder is None:
            raise RuntimeError("decode() needs a generative world model (objective=generative_ae|generative_vae)")
        return self.decoder(z)


class TransitionObjective(nn.Module):
    """A transition objective: ``loss(model, batch) -> (scalar loss, {"wm/...": float})``.

    ``needs_decoder`` tells the builder to attach a pixel decoder to the model; :meth:`attach` is called once
    after building model and objective; ``update_momentum()`` is called by the training loop after each
    optimiser step (a no-op without a target network).
    """

    needs_decoder: bool = False

    def attach(self, model: WorldModel, latent_shape: int | tuple[int, ...] | None = None) -> TransitionObjective:
        """Called once right after building ``model`` and this objective, before the optimiser is built and
        before a state_dict is loaded: objectives with target networks or latent-sized heads create them here
        (``latent_shape``: the encoder's ``out_shape``). A no-op by default; returns ``self``."""
        return self

    def loss(self, model: WorldModel, batch: WorldModelBatch) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @torch.no_grad()
    def update_momentum(self, model: WorldModel) -> None:
        """Move target networks toward the model's online ones; call after ``optimizer.step()``."""

"""Pixel SAC in the CURL / DrQ recipe, with pluggable representations.

Haarnoja et al. 2018 (SAC with a learned temperature); Laskin et al. 2020 (CURL); Kostrikov et al. 2020
(DrQ: random-shift augmentation); Yarats et al. 2021 (DrQ-v2: actor and critic trunks on a shared conv
encoder); Stooke et al. 2021 (ATC: decoupling representation learning from RL).

What it does in one update (``update(batch)``):

1. augment ``obs`` and ``next_obs`` with random shifts (pixel modes; cached features are not augmented);
2. critic: ``Q_i(h, a)`` against ``r + discount * (min_i Q'_i(h', a') - alpha log pi(a'|h'))`` with
   ``a' ~ pi(h')``; the replay's ``discount`` is already ``gamma**m`` (0 after a termination), so n-step
   returns and time limits need nothing more here. Its gradient trains the encoder in ``scratch``,
   ``finetune`` and ``curl`` modes;
3. every ``actor_update_every`` updates: the actor on *detached* features, and the temperature toward the
   target entropy ``-|A|``;
4. the auxiliary contrastive loss (``curl``: two crops of one observation; ``decoupled``: an observation and
   the next one, ATC) through a bilinear similarity against a momentum key encoder;
5. soft (Polyak) updates of the target critic and of the key encoder, as explicit calls.

The agent never logs, steps an env or writes a file: it returns its metrics.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agents.encoders import Features
from worldssl.data.augment import random_shift
from worldssl.runtime.device import autocast, compile_modules
from worldssl.runtime.settings import (
    Settings,
    amp_mode,
    between,
    non_negative,
    non_negative_int,
    number,
    positive,
    positive_int,
    setting,
)
from worldssl.ssl.momentum import update_momentum


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or inf; ``name`` says which."""

    def __init__(self, name: str, value: float):
        super().__init__(f"non-finite {name} ({value})")
        self.name, self.value = name, value


@dataclass
class SACConfig(Settings):
    """Hyper-parameters (defaults: DrQ / CURL for DMC); each is an ``agent.<name>`` key of ``worldssl train``."""

    lr: float = setting(1e-3, positive, "Adam learning rate of actor, critic and encoder")
    alpha_lr: float = setting(1e-4, positive, "temperature learning rate")
    feature_dim: int = setting(50, positive_int, "width of the actor's and critic's Linear-LayerNorm-tanh trunk")
    hidden_dim: int = setting(1024, positive_int, "MLP width")
    critic_tau: float = setting(0.01, between(0.0, 1.0 + 1e-9), "target critic Polyak rate")
    encoder_tau: float = setting(0.05, between(0.0, 1.0 + 1e-9), "momentum key encoder rate (curl / decoupled)")
    actor_update_every: int = setting(2, positive_int, "actor and temperature update every N critic updates")
    target_update_every: int = setting(2, positive_int, "soft target update every N critic updates")
    init_temperature: float = setting(0.1, positive, "initial SAC temperature alpha")
    log_std_min: float = setting(-10.0, number, "policy log-std lower bound")
    log_std_max: float = setting(2.0, number, "policy log-std upper bound")
    augment_pad: int = setting(4, non_negative_int, "random shift of up to N pixels (0: none)")
    aux_dim: int = setting(128, positive_int, "projection width of the contrastive auxiliary loss")
    aux_weight: float = setting(1.0, non_negative, "weight of the CURL loss beside the critic's")
    amp: bool | str = setting("auto", amp_mode, "bf16 autocast of the update's forward passes: auto on CUDA only")
    compile: bool | str = setting("auto", amp_mode, "torch.compile encoder, actor and critic: auto on CUDA only")


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden),
                         nn.ReLU(inplace=True), nn.Linear(hidden, out))


def _trunk(inp: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight)
        nn.init.zeros_(m.bias)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class Actor(nn.Module):
    """Features -> tanh-squashed Gaussian policy."""

    def __init__(self, repr_dim: int, action_dim: int, cfg: SACConfig):
        super().__init__()
        self.trunk = _trunk(repr_dim, cfg.feature_dim)
        self.net = _mlp(cfg.feature_dim, cfg.hidden_dim, 2 * action_dim)
        self.log_std_min, self.log_std_max = cfg.log_std_min, cfg.log_std_max
        self.apply(_init)

    def forward(self, h: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Action in ``[-1, 1]`` and its log-probability ``(B, 1)``."""
        mu, log_std = self.net(self.trunk(h)).chunk(2, dim=-1)
        log_std = torch.tanh(log_std)  # squash into [log_std_min, log_std_max] (SAC-AE / CURL)
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
        if deterministic:
            a = torch.tanh(mu)
            return a, torch.zeros_like(a[:, :1])
        std = log_std.exp()
        u = mu + std * torch.randn_like(mu)
        a = torch.tanh(u)
        log_prob = (-0.5 * ((u - mu) / std).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1, keepdim=True)
        log_prob = log_prob - torch.log(F.relu(1 - a.pow(2)) + 1e-6).sum(-1, keepdim=True)  # tanh correction
        return a, log_prob


class Critic(nn.Module):
    """Features and action -> two Q values (clipped double Q)."""

    def __init__(self, repr_dim: int, action_dim: int, cfg: SACConfig):
        super().__init__()
        self.trunk = _trunk(repr_dim, cfg.feature_dim)
        self.q1 = _mlp(cfg.feature_dim + action_dim, cfg.hidden_dim, 1)
        self.q2 = _mlp(cfg.feature_dim + action_dim, cfg.hidden_dim, 1)
        self.apply(_init)

    def forward(self, h: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.trunk(h), a], dim=-1)
        return self.q1(x), self.q2(x)


class ContrastiveAux(nn.Module):
    """CURL / ATC auxiliary loss: a projection of the encoder's features, a momentum key copy of encoder and
    projection, and a bilinear similarity ``q^T W k`` scored with InfoNCE over the batch."""

    def __init__(self, features: Features, cfg: SACConfig):
        super().__init__()
        self.projection = _trunk(features.repr_dim, cfg.aux_dim)
        self.key_features = copy.deepcopy(features)
        self.key_projection = copy.deepcopy(self.projection)
        for p in [*self.key_features.parameters(), *self.key_projection.parameters()]:
            p.requires_grad_(False)
        self.W = nn.Parameter(torch.rand(cfg.aux_dim, cfg.aux_dim))

    def loss(self, anchor_h: torch.Tensor, positive_obs: torch.Tensor) -> torch.Tensor:
        q = self.projection(anchor_h)
        with torch.no_grad():
            k = self.key_projection(self.key_features(_channels_last(positive_obs)))
        logits = q @ self.W @ k.T
        logits = logits - logits.max(dim=1, keepdim=True).values
        return F.cross_entropy(logits, torch.arange(len(q), device=q.device))

    def update_momentum(self, features: Features, tau: float) -> None:
        update_momentum(features, self.key_features, 1.0 - tau)
        update_momentum(self.projection, self.key_projection, 1.0 - tau)


class SACAgent(nn.Module):
    """SAC over a :class:`Features` representation trained as ``mode`` says (see :mod:`agents.encoders`).

    ``act(obs, eval_mode)`` takes one observation: uint8 pixels ``(C, H, W)``, or, in ``frozen`` mode, the cached
    feature vector that :meth:`encode` made of it (the loop encodes each frame once). ``update(batch)`` takes a
    :class:`~worldssl.data.replay.ReplayBatch` of numpy arrays.
    """

    def __init__(self, features: Features, action_dim: int, mode: str, cfg: SACConfig | None = None,
                 device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg = cfg = cfg or SACConfig()
        cfg.check()
        self.mode = mode
        self.device = torch.device(device)
        self.action_dim = int(action_dim)
        self.features = features
        if mode != "frozen":
            # channels-last convolutions: 1.4x faster SAC updates on a CPU (scratch, 9x84x84, batch 128, 1 thread:
            # 1.7 s against 2.4 s an update); weights and results are the same up to float rounding
            features.to(memory_format=torch.channels_last)
        self.critic = Critic(features.repr_dim, action_dim, cfg)
        self.critic_target = copy.deepcopy(self.critic)
        for p in self.critic_target.parameters():
            p.requires_grad_(False)
        self.actor = Actor(features.repr_dim, action_dim, cfg)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(cfg.init_temperature)))
        self.target_entropy = -float(action_dim)
        self.aux = ContrastiveAux(features, cfg) if mode in ("curl", "decoupled") else None
        if mode == "frozen":
            features.requires_grad_(False)
            features.eval()
        self.to(self.device)
        encoder_params = list(features.parameters()) if mode != "frozen" else []
        critic_params = list(self.critic.parameters()) + (encoder_params if mode in ("scratch", "finetune", "curl")
                                                          else [])
        self.critic_opt = torch.optim.Adam(critic_params, lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr, betas=(0.5, 0.999))
        self.aux_opt = None
        if self.aux is not None:
            # decoupled: the encoder is trained by this loss alone; curl: by this loss and the critic's
            aux_params = [*self.aux.projection.parameters(), self.aux.W]
            # curl: the encoder's share of the aux gradient is applied by the critic's optimiser, which holds it
            self.aux_opt = torch.optim.Adam(aux_params + (encoder_params if mode == "decoupled" else []), lr=cfg.lr)
        self.updates = 0
        # GPU path: compiled in place (state_dict keys, hence checkpoints, unchanged); a frozen encoder runs once a
        # frame outside the update, so only the trained modules are compiled
        trained = [self.critic, self.actor] + ([features] if mode != "frozen" else [])
        self.compiled = compile_modules(trained, cfg.compile, self.device)

    # ---------------------------------------------------------------------------------------------- acting
    @property
    def caches_features(self) -> bool:
        """True when the loop should encode each frame once and store features instead of training on pixels."""
        return self.mode == "frozen"

    @property
    def pixel_input(self) -> bool:
        return not self.caches_features

    @torch.no_grad()
    def encode(self, obs: np.ndarray) -> np.ndarray:
        """Frozen features of uint8 observations ``(B, C, H, W)`` (or one ``(C, H, W)``), as float32 numpy."""
        x = torch.as_tensor(obs, device=self.device)
        one = x.dim() == 3
        h = self.features(x[None] if one else x).float().cpu().numpy()
        return h[0] if one else h

    @torch.no_grad()
    def act(self, obs: np.ndarray, eval_mode: bool) -> np.ndarray:
        """One action in ``[-1, 1]^A``: the mean in ``eval_mode``, a sample otherwise."""
        h = self._h(torch.as_tensor(obs, device=self.device)[None])
        a, _ = self.actor(h, deterministic=eval_mode)
        return a[0].cpu().numpy().astype(np.float32)

    def _h(self, x: torch.Tensor) -> torch.Tensor:
        return x.float() if self.caches_features else self.features(_channels_last(x))

    # ---------------------------------------------------------------------------------------------- learning
    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        if self.caches_features or self.cfg.augment_pad <= 0:
            return x
        return random_shift(x, pad=self.cfg.augment_pad)

    def update(self, batch) -> dict[str, float]:
        """One SAC update (and the auxiliary loss) on a replay batch; returns namespaced metrics."""
        cfg = self.cfg
        self.train()
        put = lambda x: torch.as_tensor(np.asarray(x), device=self.device)  # noqa: E731
        obs, next_obs = self._aug(put(batch.obs)), self._aug(put(batch.next_obs))
        action = put(batch.action).float()
        reward, discount = put(batch.reward).float()[:, None], put(batch.discount).float()[:, None]
        metrics: dict[str, float] = {}

        with self._autocast():
            h = self._h(obs)
            with torch.no_grad():
                h_next = self._h(next_obs)
                a_next, logp_next = self.actor(h_next)
                tq1, tq2 = self.critic_target(h_next, a_next)
                target = reward + discount * (torch.min(tq1, tq2) - self.alpha.detach() * logp_next.float())
            # the critic's gradient reaches the encoder only where the mode says so
            h_critic = h if self.mode in ("scratch", "finetune", "curl") else h.detach()
            q1, q2 = self.critic(h_critic, action)
            critic_loss = F.mse_loss(q1.float(), target.float()) + F.mse_loss(q2.float(), target.float())
        self._check("critic_loss", critic_loss)
        self.critic_opt.zero_grad(set_to_none=True)
        if self.aux is not None and self.mode == "curl":
            with self._autocast():
                aux_loss = self.aux.loss(h, self._aug(put(batch.obs))).float()
            self._check("curl_loss", aux_loss)
            self.aux_opt.zero_grad(set_to_none=True)
            (critic_loss + cfg.aux_weight * aux_loss).backward()
            self.aux_opt.step()
            metrics["train/curl_loss"] = aux_loss.item()
        else:
            critic_loss.backward()
        self.critic_opt.step()
        metrics.update({"train/critic_loss": critic_loss.item(), "train/q": q1.mean().item(),
                        "train/target_q": target.mean().item()})

        if self.aux is not None and self.mode == "decoupled":
            with self._autocast():  # ATC: anchor t, positive t+m (the critic saw h detached)
                aux_loss = self.aux.loss(h, next_obs).float()
            self._check("atc_loss", aux_loss)
            self.aux_opt.zero_grad(set_to_none=True)
            aux_loss.backward()
            self.aux_opt.step()
            metrics["train/atc_loss"] = aux_loss.item()

        if self.updates % cfg.actor_update_every == 0:
            metrics.update(self._update_actor(h.detach()))
        if self.updates % cfg.target_update_every == 0:
            update_momentum(self.critic, self.critic_target, 1.0 - cfg.critic_tau)
            if self.aux is not None:
                self.aux.update_momentum(self.features, cfg.encoder_tau)
        self.updates += 1
        return metrics

    def _autocast(self):
        return autocast(self.device, self.cfg.amp)

    def _update_actor(self, h: torch.Tensor) -> dict[str, float]:
        with self._autocast():
            a, logp = self.actor(h)
            q1, q2 = self.critic(h, a)
        logp = logp.float()
        actor_loss = (self.alpha.detach() * logp - torch.min(q1, q2).float()).mean()
        self._check("actor_loss", actor_loss)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = (self.alpha * (-logp.detach() - self.target_entropy)).mean()
        self._check("alpha_loss", alpha_loss)
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        return {"train/actor_loss": actor_loss.item(), "train/alpha": self.alpha.item(),
                "train/entropy": -logp.mean().item()}

    @staticmethod
    def _check(name: str, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise NonFiniteLoss(name, float(loss))

    # ---------------------------------------------------------------------------------------------- state
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        opts = {"critic": self.critic_opt, "actor": self.actor_opt, "alpha": self.alpha_opt}
        if self.aux_opt is not None:
            opts["aux"] = self.aux_opt
        return opts

"""CPC: a GRU summarises past frame latents; per-offset predictors score future latents contrastively.

van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018: frame
encoder ``z_t = g_enc(x_t)``, autoregressive context ``c_t = g_ar(z_<=t)`` (a GRU), and for each offset
``k = 1..K`` a log-bilinear score ``f_k = exp(z_{t+k}^T W_k c_t)``, trained with InfoNCE where the other
latents of the batch (other time steps, other sequences) are the negatives.

``action_conditioned=True`` feeds the actions ``a_t..a_{t+k-1}`` (one-hot when ``discrete``) to the
predictor of ``z_{t+k}``, which makes it a contrastive transition model (as in CPC|Action, Guo et al.,
"Neural Predictive Belief Representations", 2018). Because a linear map of ``[c_t, a]`` cannot model
how the action's effect depends on the state, the action-conditioned predictors default to a one-hidden
-layer MLP (``predictor_hidden=256``); ``predictor_hidden=0`` gives linear ``W_k`` as in the paper.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldssl.encoders.base import Encoder
from worldssl.ssl.base import SSLObjective, read_metrics
from worldssl.ssl.batch import SSLBatch
from worldssl.ssl.losses.cpc_info_nce import cpc_logits


class CPC(SSLObjective):
    """Contrastive predictive coding over sequences ``(B, L+1, C, H, W)`` with ``L >= steps``.

    Args:
        latent_dim: size of ``z_t`` (a linear map of the encoder's features).
        context_dim: GRU hidden size (``c_t``).
        steps: ``K``, the number of future offsets predicted (3).
        temperature: divides the log-bilinear scores (1.0: the paper's unnormalised scores).
        action_conditioned: give the predictor of ``z_{t+k}`` the actions ``a_t..a_{t+k-1}``.
        action_dim: size of one action (number of actions when ``discrete``); required when
            ``action_conditioned``.
        discrete: actions are int64 indices, one-hot encoded to ``action_dim``.
        predictor_hidden: hidden width of the predictors; 0 = linear. ``None``: 0 without actions, 256 with.
        augment: optional augmentation applied to every frame (one draw per frame).
    """

    batch_kind = "sequences"

    def __init__(self, encoder: Encoder, latent_dim: int = 128, context_dim: int = 256, steps: int = 3,
                 temperature: float = 1.0, action_conditioned: bool = False, action_dim: int | None = None,
                 discrete: bool = False, predictor_hidden: int | None = None, augment: nn.Module | None = None):
        super().__init__(encoder)
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if action_conditioned and not action_dim:
            raise ValueError("action_conditioned CPC needs action_dim (number of actions when discrete)")
        self.steps = int(steps)
        self.temperature = float(temperature)
        self.action_conditioned = bool(action_conditioned)
        self.needs_actions = self.action_conditioned
        self.action_dim = int(action_dim or 0)
        self.discrete = bool(discrete)
        self.augment = augment
        hidden = predictor_hidden if predictor_hidden is not None else (256 if action_conditioned else 0)
        self.to_latent = nn.Linear(encoder.out_dim, latent_dim)
        self.gru = nn.GRU(latent_dim, context_dim, batch_first=True)
        self.predictors = nn.ModuleList(
            _predictor(context_dim + (k * self.action_dim if action_conditioned else 0), hidden, latent_dim)
            for k in range(1, self.steps + 1))

    def encode(self, obs: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` uint8 -> latents ``z`` ``(B, T, latent_dim)``."""
        b, t = obs.shape[:2]
        frames = obs.flatten(0, 1)  # [B*T, C, H, W]
        if self.augment is not None:
            frames = self.augment(frames)
        return self.to_latent(self.encoder(frames).flatten(1)).view(b, t, -1)

    def context(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``(B, T, latent_dim)`` -> ``c`` ``(B, T, context_dim)``, ``c_t`` summarising ``z_<=t``."""
        return self.gru(z)[0]

    def action_features(self, actions: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` / ``(B, L, 1)`` int64 or ``(B, L, A)`` / ``(B, L)`` float -> ``(B, L, action_dim)`` float."""
        if self.discrete:
            idx = actions.reshape(actions.shape[0], actions.shape[1]).long()
            return F.one_hot(idx, self.action_dim).float()
        a = actions.float()
        if a.dim() == 2:
            a = a.unsqueeze(-1)
        a = a.flatten(2)
        if a.shape[-1] != self.action_dim:
            raise ValueError(f"CPC expects continuous actions of size {self.action_dim}, got {tuple(actions.shape)}")
        return a

    def predict(self, c: torch.Tensor, k: int, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Predictions of ``z_{t+k}`` for ``t = 0..T-k-1``: ``c`` ``(B, T, Dc)`` -> ``(B, T-k, latent_dim)``.

        ``actions`` ``(B, L, action_dim)`` (features, ``L = T - 1``) when action-conditioned: step ``t`` gets
        ``a_t..a_{t+k-1}`` concatenated."""
        t = c.shape[1]
        inp = c[:, : t - k]  # [B, T-k, Dc]
        if self.action_conditioned:
            window = actions.unfold(1, k, 1)  # [B, L-k+1, A, k] = [B, T-k, A, k]
            window = window.transpose(2, 3).flatten(2)  # [B, T-k, k*A], a_t first
            inp = torch.cat([inp, window], dim=-1)
        return self.predictors[k - 1](inp)

    def loss(self, batch: SSLBatch) -> tuple[torch.Tensor, dict[str, float]]:
        self.check_batch(batch)
        t = batch.obs.shape[1]
        if t < self.steps + 1:
            raise ValueError(f"CPC with steps={self.steps} needs sequences of at least {self.steps + 1} frames "
                             f"(L >= {self.steps}), got {t}")
        z = self.encode(batch.obs)  # [B, T, Dz]
        c = self.context(z)  # [B, T, Dc]
        acts = self.action_features(batch.actions) if self.action_conditioned else None
        losses, accs = [], {}
        for k in range(1, self.steps + 1):
            logits, labels = cpc_logits(self.predict(c, k, acts), z, k, self.temperature)
            losses.append(F.cross_entropy(logits, labels))
            accs[f"acc_k{k}"] = (logits.argmax(dim=1) == labels).float().mean()
        loss = torch.stack(losses).mean()
        host = read_metrics("CPC", loss=loss, **accs)  # one host copy; raises on a non-finite loss
        metrics = {f"ssl/{k}": host[f"ssl/{k}"] for k in accs}
        metrics["ssl/acc"] = sum(metrics[f"ssl/acc_k{k}"] for k in range(1, self.steps + 1)) / self.steps
        metrics["ssl/loss"] = host["ssl/loss"]
        return loss, metrics


def _predictor(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    if hidden <= 0:
        return nn.Linear(in_dim, out_dim, bias=False)  # W_k of the paper
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

"""The straightforward reference that ``worldssl bench worldmodel`` measures our world-model training against.

It is the same model and the same objectives, written the way C-SWM's released code (Kipf et al., ICLR 2020)
trains and evaluates them, with none of our fast paths:

* **data**: every frame converted once to float32 in ``[0, 1]`` and kept in memory, one array per episode
  (C-SWM's ``StateTransitionsDataset`` holds its HDF5 buffer as float32 arrays; it even stores ``obs`` and
  ``next_obs`` separately, twice what is held here). A ``torch.utils.data.Dataset`` returns one
  ``(obs, action, next_obs)`` of per-item tensors and a ``DataLoader`` (shuffled) collates them into batches.
* **model**: the weights of our model; the GNN transition is :class:`GNNTransition` with ``naive=True``
  (explicit edge list, concatenated endpoint features, scatter-add), the rest are the same modules.
* **precision**: float32 throughout, no autocast.
* **losses**: plain per-objective code on ``(obs, action, next_obs)`` (horizon 1, each objective's default
  options; see :func:`check_supported`). With the same weights, batch and RNG state they give the same loss
  as :mod:`worldssl.worldmodels.objectives` (tests/test_bench_worldmodel.py checks it).
* **ranking evaluation** (:func:`evaluate_ranking`): C-SWM's ``eval.py``: float32 paths in memory, a
  ``DataLoader`` of 100 paths, the full ``N x N`` distance matrix, a stable ``np.lexsort`` of every row with
  the right answer placed first (so ties count in its favour, as ours).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

#: objectives this reference implements (with their default options)
OBJECTIVES = ("contrastive", "infonce", "generative_ae", "generative_vae", "selfpredictive")


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 frames -> float32 in ``[0, 1]``, bit-identical to our encoders' ``x.float() / 255``."""
    return np.divide(frames, np.float32(255.0), dtype=np.float32)


def _float_episodes(root: str | Path, max_length: int | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every episode's frames as float32 (cut to ``max_length + 1`` frames) and its actions."""
    from worldssl.data.episodes import EpisodeDataset

    ds = EpisodeDataset(root, load="stream")  # read once, episode by episode; only the float copies are kept
    obs, actions = [], []
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        n = len(ep.actions) if max_length is None else min(len(ep.actions), max_length)
        obs.append(to_float(ep.obs[:n + 1]))
        actions.append(ep.actions[:n].copy())
    return obs, actions


class FloatTransitions(Dataset):
    """Every ``(o_t, a_t, o_{t+1})`` of a dataset directory, frames float32 in memory (C-SWM's
    ``StateTransitionsDataset``): item ``i`` is ``(obs (C, H, W) float, action int64, next_obs (C, H, W) float)``."""

    def __init__(self, root: str | Path):
        self.obs, self.actions = _float_episodes(root)
        lengths = np.array([len(a) for a in self.actions])
        self.episode = np.repeat(np.arange(len(lengths)), lengths)
        self.t = np.concatenate([np.arange(n) for n in lengths])

    def __len__(self) -> int:
        return len(self.episode)

    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.obs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e, t = self.episode[i], self.t[i]
        frames = self.obs[e]
        return (torch.from_numpy(frames[t]), torch.as_tensor(self.actions[e][t], dtype=torch.int64),
                torch.from_numpy(frames[t + 1]))


class FloatPaths(Dataset):
    """The first ``path_length`` steps of every episode, frames float32 in memory (C-SWM's ``PathDataset``):
    item ``i`` is ``(frames (path_length + 1, C, H, W), actions (path_length,))``; shorter episodes are dropped."""

    def __init__(self, root: str | Path, path_length: int):
        obs, actions = _float_episodes(root, path_length)
        keep = [i for i, a in enumerate(actions) if len(a) >= path_length]
        self.obs, self.actions = [obs[i] for i in keep], [actions[i] for i in keep]

    def __len__(self) -> int:
        return len(self.obs)

    def nbytes(self) -> int:
        return sum(o.nbytes for o in self.obs)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.obs[i]), torch.from_numpy(self.actions[i]).long()


# -- the model --------------------------------------------------------------------------------------------
def naive_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (same weights) whose GNN transition is the explicit-edge-list ``naive=True`` one."""
    from worldssl.worldmodels.transitions import GNNTransition

    out = copy.deepcopy(model)
    t = out.transition
    if isinstance(t, GNNTransition):
        naive = GNNTransition(t.embedding_dim, t.action_dim, t.num_slots, hidden_dim=t.hidden_dim,
                              copy_action=t.copy_action, ignore_action=t.ignore_action, residual=t.residual,
                              naive=True)
        naive.load_state_dict(t.state_dict())
        out.transition = naive.to(next(t.parameters()).device)
    return out


def check_supported(name: str, objective: nn.Module) -> None:
    """ValueError unless ``objective`` is ``name`` with the options this reference implements."""
    if name not in OBJECTIVES:
        raise ValueError(f"the straightforward reference has no objective {name!r}; valid: {', '.join(OBJECTIVES)}")
    if getattr(objective, "horizon", 1) != 1 or getattr(objective, "reward_weight", 0.0) > 0:
        raise ValueError("the straightforward reference implements horizon 1 without a reward term only")
    wanted = {"contrastive": {"negatives": "in_batch", "target": "paper"},
              "infonce": {"distance": "energy"},
              "generative_ae": {"recon_current": True, "recon_loss": "bce", "reduction": "sum"},
              "generative_vae": {"recon_current": True, "recon_loss": "bce", "reduction": "sum"},
              "selfpredictive": {"projection_dim": None, "regression": "cosine"}}[name]
    bad = {k: getattr(objective, k) for k, v in wanted.items() if getattr(objective, k) != v}
    if bad:
        raise ValueError(f"the straightforward reference implements {name} with {wanted} only, got {bad}")


class StraightforwardObjective(nn.Module):
    """``loss(model, obs, action, next_obs)`` for one objective, plain code, plus its own parameters (the
    VAE's log-variance head) and target network (self-predictive), copied from our ``objective``."""

    def __init__(self, name: str, objective: nn.Module):
        super().__init__()
        check_supported(name, objective)
        self.name = name
        self.sigma = float(getattr(objective, "sigma", 0.5))
        self.hinge = float(getattr(objective, "hinge", 1.0))
        self.temperature = float(getattr(objective, "temperature", 1.0))
        self.beta = float(getattr(objective, "beta", 1.0))
        self.momentum = float(getattr(objective, "momentum", 0.99))
        head, target = getattr(objective, "logvar_head", None), getattr(objective, "target_encoder", None)
        self.logvar_head = copy.deepcopy(head) if head is not None else None
        self.target_encoder = copy.deepcopy(target) if target is not None else None

    def energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """C-SWM's ``d(x, y)``: squared distance summed over slot dims, mean over slots, ``/ (2 sigma^2)``."""
        return 0.5 / self.sigma ** 2 * (x - y).pow(2).sum(-1).mean(-1)

    def loss(self, model: nn.Module, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        b = obs.shape[0]
        if self.name in ("contrastive", "infonce", "selfpredictive", "generative_ae"):
            state = model.encoder(obs)
            pred = model.transition(state, model.action_encoder(action))
        if self.name == "contrastive":
            next_state = model.encoder(next_obs)
            negative = state[torch.randperm(b, device=obs.device)]
            return self.energy(pred, next_state).mean() + \
                F.relu(self.hinge - self.energy(negative, next_state)).mean()
        if self.name == "infonce":
            next_state = model.encoder(next_obs)
            dist = self.energy(pred[:, None], next_state[None])  # [B, B]
            return F.cross_entropy(-dist / self.temperature, torch.arange(b, device=obs.device))
        if self.name == "selfpredictive":
            with torch.no_grad():
                target = self.target_encoder(next_obs)
            return -F.cosine_similarity(pred.flatten(1), target.flatten(1), dim=-1).mean()
        if self.name == "generative_vae":
            mu = model.encoder(obs)
            logvar = self.logvar_head(mu)
            state = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            pred = model.transition(state, model.action_encoder(action))
        loss = F.binary_cross_entropy(model.decoder(state), obs, reduction="sum") / b
        loss = loss + F.binary_cross_entropy(model.decoder(pred), next_obs, reduction="sum") / b
        if self.name == "generative_vae":
            loss = loss - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / b
        return loss

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        """The self-predictive target's EMA step, parameter by parameter; BatchNorm statistics copied."""
        if self.target_encoder is None:
            return
        m = self.momentum
        for t, o in zip(self.target_encoder.parameters(), model.encoder.parameters(), strict=True):
            t.mul_(m).add_(o, alpha=1.0 - m)
        for t, o in zip(self.target_encoder.buffers(), model.encoder.buffers(), strict=True):
            t.copy_(o)


class StraightforwardTrainer:
    """Adam on the naive-GNN copy of ``model`` and a :class:`StraightforwardObjective`, fed by a shuffled
    ``DataLoader`` over :class:`FloatTransitions`; one :meth:`step` per batch, in float32."""

    def __init__(self, model: nn.Module, objective: nn.Module, name: str, data: FloatTransitions, batch_size: int,
                 lr: float, device: torch.device, workers: int = 0, seed: int = 0):
        self.device = torch.device(device)
        self.model = naive_model(model).to(self.device).train()
        self.objective = StraightforwardObjective(name, objective).to(self.device).train()
        params = [p for p in [*self.model.parameters(), *self.objective.parameters()] if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=lr)
        self.loader = DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                                 generator=torch.Generator().manual_seed(seed))
        self._it: Iterator | None = None

    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def next_batch(self) -> Sequence[torch.Tensor]:
        """The loader's next batch, starting a new (reshuffled) epoch when one ends."""
        if self._it is None:
            self._it = iter(self.loader)
        try:
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            return next(self._it)

    def step(self, batch: Sequence[torch.Tensor] | None = None) -> float:
        """One optimiser step on ``batch`` (default: the loader's next); returns the loss (a host sync, as
        C-SWM's ``train_loss += loss.item()``)."""
        obs, action, next_obs = (x.to(self.device) for x in (batch if batch is not None else self.next_batch()))
        loss = self.objective.loss(self.model, obs, action, next_obs)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.objective.after_step(self.model)
        return loss.item()


# -- ranking evaluation -----------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_ranking(model: nn.Module, root: str | Path, steps: Sequence[int] = (1, 5, 10), batch_size: int = 100,
                     device: str | torch.device = "cpu") -> dict[str, float]:
    """C-SWM's ranking evaluation, one pass per ``k`` in ``steps``: ``{"hits@1/k": %, "mrr/k": %, "pool/k": N}``.

    The eval set is loaded once as float32 paths of ``max(steps)`` steps (:class:`FloatPaths`)."""
    paths = FloatPaths(root, max(steps))
    model.eval()
    out: dict[str, float] = {}
    for k in sorted(steps):
        preds, targets = [], []
        for frames, actions in DataLoader(paths, batch_size=batch_size):
            frames, actions = frames.to(device), actions.to(device)
            state = model.encoder(frames[:, 0])
            for i in range(k):
                state = model.transition(state, model.action_encoder(actions[:, i]))
            preds.append(state.flatten(1).cpu())
            targets.append(model.encoder(frames[:, k]).flatten(1).cpu())
        pred, target = torch.cat(preds), torch.cat(targets)
        # every target against every prediction from per-pair differences (C-SWM expands an N x N x D
        # difference tensor for this, 4 GB at N = 10000; cdist needs N x N only, so the reference's memory
        # is understated here, never overstated); ranking by distance = ranking by squared distance
        dist = torch.cdist(target, pred, compute_mode="donot_use_mm_for_euclid_dist")
        augmented = torch.cat([dist.diag()[:, None], dist], dim=1).numpy()  # the right answer first
        order = np.stack([np.lexsort((np.arange(len(row)), row)) for row in augmented])
        ranks = torch.from_numpy((order == 0).argmax(1)) + 1
        out[f"hits@1/{k}"] = float((ranks <= 1).double().mean() * 100.0)
        out[f"mrr/{k}"] = float((1.0 / ranks.double()).mean() * 100.0)
        out[f"pool/{k}"] = len(ranks)
    return out


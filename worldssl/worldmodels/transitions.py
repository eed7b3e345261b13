"""Transition models: ``forward(z, a_enc) -> z_next`` on latents from the encoder and actions from
:class:`~worldssl.worldmodels.base.ActionEncoder`.

- :class:`MLPTransition`: flat latents ``(B, D)`` (slot latents are flattened and reshaped back).
- :class:`GNNTransition`: C-SWM's graph network over ``K`` slots ``(B, K, D)``.
- :class:`RecurrentTransition`: a GRU over flat latents, optionally RSSM-like with a stochastic part.

Every MLP here is C-SWM's ``Linear -> ReLU -> Linear -> LayerNorm -> ReLU -> Linear`` (:func:`mlp`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Float32Linear(nn.Linear):
    """A ``Linear`` that computes in float32 even under bf16 autocast (same parameters and state_dict keys).

    Used for the layers that produce latents and latent deltas: under autocast a plain ``Linear`` rounds its
    output to bf16 (8 bits of mantissa), and once C-SWM's embedding has spread out to magnitudes of ~10 that
    rounding (~0.05) is larger than the prediction errors the energy must resolve (~0.01); a Shapes run with
    bf16 latents reached C-SWM's scores and then broke down at epoch ~25. The hidden layers, where the
    compute is, stay bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return F.linear(x.float(), self.weight, self.bias)


def mlp(in_dim: int, hidden_dim: int, out_dim: int, float32_out: bool = False) -> nn.Sequential:
    """``Linear -> ReLU -> Linear -> LayerNorm -> ReLU -> Linear`` (C-SWM's edge, node and transition MLPs);
    ``float32_out``: the last layer is a :class:`Float32Linear` (for latent-valued outputs)."""
    last = Float32Linear if float32_out else nn.Linear
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim),
                         nn.LayerNorm(hidden_dim), nn.ReLU(), last(hidden_dim, out_dim))


class MLPTransition(nn.Module):
    """``z' = z + MLP([z, a])`` (``residual``) or ``z' = MLP([z, a])`` on flat latents.

    Slot latents ``(B, K, D)`` are flattened to ``(B, K*D)`` (with per-slot actions flattened alike), run
    through the MLP jointly and reshaped back: C-SWM's "without latent GNN" variant. ``latent_dim`` is then
    ``K*D`` and ``action_dim`` the flattened action width.

    Args:
        latent_dim: width of the (flattened) latent.
        action_dim: width of the (flattened) encoded action; 0 ignores actions.
        hidden_dim: MLP width (512).
        residual: predict a delta (C-SWM) instead of the next latent itself.
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden_dim: int = 512, residual: bool = True):
        super().__init__()
        self.latent_dim, self.action_dim, self.hidden_dim = int(latent_dim), int(action_dim), int(hidden_dim)
        self.residual = bool(residual)
        self.net = mlp(self.latent_dim + self.action_dim, self.hidden_dim, self.latent_dim, float32_out=True)

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(z.shape[0], -1)  # [B, D]
        if flat.shape[1] != self.latent_dim:
            raise ValueError(f"MLPTransition expects latents of {self.latent_dim} values, got {tuple(z.shape)}")
        inputs = [flat]
        if self.action_dim:
            a = a.reshape(a.shape[0], -1).to(flat.dtype)
            if a.shape[1] != self.action_dim:
                raise ValueError(f"MLPTransition expects actions of width {self.action_dim}, got {tuple(a.shape)}")
            inputs.append(a)
        out = self.net(torch.cat(inputs, dim=1))
        if self.residual:
            out = flat + out
        return out.reshape(z.shape)


class GNNTransition(nn.Module):
    """C-SWM's latent GNN over ``K`` slots: one round of message passing on the complete graph without
    self-loops, predicting a per-slot delta.

        e_ij = f_edge([z_i, z_j])                      for all j != i
        z_i' = z_i + f_node([z_i, a_i, sum_j e_ij])

    ``f_edge`` (``2D -> H -> H -> LN -> H``) and ``f_node`` (``D + A + H -> H -> H -> LN -> D``) are :func:`mlp`.

    The default, factored path never forms the ``K(K-1)`` concatenations: the edge MLP's first layer is
    linear, so ``W [z_i, z_j] + b = (W_a z_i + b) + W_b z_j``; both ``K``-row projections are computed once
    and added pairwise for the off-diagonal pairs only (the broadcast sum ``(B, K, K, H)`` with its diagonal,
    the self-loops, dropped, gathered without forming it), and the rest of the edge MLP runs on the
    ``K(K-1)`` edges. The saving is in the first layer only, and it is paid for by gathering ``H``-wide rows
    instead of ``2D``-wide ones: with C-SWM's sizes (``D = 2``, ``H = 512``, ``K = 5``, batch 1024) the edge
    MLP's ``H x H`` layer dominates and on one CPU core the naive path was about 10% faster (0.56 s vs 0.62 s
    forward + backward, edge messages only); factoring pays off only for wide slots (``D = 512``, ``H = 256``:
    0.05 s vs 0.09 s).

    ``naive=True`` builds the explicit edge list, concatenates the endpoint features of every edge and
    scatter-adds messages to their source node: the same function and weights, written the straightforward
    way (kept as a reference and for the benchmark).

    Args:
        embedding_dim: ``D``, width of each slot.
        action_dim: ``A``, width of each slot's encoded action (per-slot one-hot: ``n // K``).
        num_slots: ``K``.
        hidden_dim: width of both MLPs and of the messages (512).
        copy_action: a flat ``(B, A)`` action is given to every slot (C-SWM's Atari setting); per-slot
            ``(B, K, A)`` actions are used as they are either way.
        ignore_action: the node MLP gets no action input.
        residual: ``z' = z + delta`` (C-SWM) instead of ``z' = f_node(...)``.
        naive: use the explicit-edge-list implementation.
    """

    def __init__(self, embedding_dim: int, action_dim: int, num_slots: int, hidden_dim: int = 512,
                 copy_action: bool = False, ignore_action: bool = False, residual: bool = True,
                 naive: bool = False):
        super().__init__()
        if min(embedding_dim, num_slots, hidden_dim) < 1:
            raise ValueError(f"embedding_dim, num_slots and hidden_dim must be >= 1, "
                             f"got {embedding_dim}, {num_slots}, {hidden_dim}")
        self.embedding_dim, self.num_slots, self.hidden_dim = int(embedding_dim), int(num_slots), int(hidden_dim)
        self.copy_action, self.ignore_action = bool(copy_action), bool(ignore_action)
        self.action_dim = 0 if self.ignore_action else int(action_dim)
        self.residual, self.naive = bool(residual), bool(naive)
        d, h = self.embedding_dim, self.hidden_dim
        self.edge_mlp = mlp(2 * d, h, h)
        self.node_mlp = mlp(d + self.action_dim + h, h, d, float32_out=True)
        # off-diagonal pairs (i, j), i != j, row-major: source i, neighbour j
        rows, cols = torch.nonzero(~torch.eye(self.num_slots, dtype=torch.bool), as_tuple=True)
        self.register_buffer("edge_src", rows, persistent=False)
        self.register_buffer("edge_dst", cols, persistent=False)

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        self._check_slots(z)
        agg = self.aggregate_naive(z) if self.naive else self.aggregate(z)  # [B, K, H]
        return self._node(z, a, agg)

    def each(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Every encoded action of ``a`` ``(N, ...)`` from every state of ``z`` ``(M, K, D)``: ``(M * N, K, D)``,
        row ``i * N + j`` = ``forward(z[i], a[j])``. The edge messages depend on the state alone, so they are
        computed for the ``M`` states once, not for the ``M * N`` rows: with C-SWM's sizes (20 edges against 5
        nodes, hidden 512) that is about four fifths of a transition's multiply-adds."""
        self._check_slots(z)
        m = z.shape[0]
        n = a.shape[0]
        agg = self.aggregate_naive(z) if self.naive else self.aggregate(z)  # [M, K, H]
        if self.action_dim:
            a = self._slot_actions(a, n).repeat(m, 1, 1)
        return self._node(z.repeat_interleave(n, dim=0), a, agg.repeat_interleave(n, dim=0))

    def _check_slots(self, z: torch.Tensor) -> None:
        if z.dim() != 3 or tuple(z.shape[1:]) != (self.num_slots, self.embedding_dim):
            raise ValueError(f"GNNTransition expects slots (B, {self.num_slots}, {self.embedding_dim}), "
                             f"got {tuple(z.shape)}")

    def _node(self, z: torch.Tensor, a: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        inputs = [z]
        if self.action_dim:
            inputs.append(self._slot_actions(a, z.shape[0]).to(z.dtype))
        inputs.append(agg)
        delta = self.node_mlp(torch.cat(inputs, dim=-1))  # [B, K, D]
        return z + delta if self.residual else delta

    def _slot_actions(self, a: torch.Tensor, b: int) -> torch.Tensor:
        if a.dim() == 2:
            if not self.copy_action and self.num_slots > 1:
                raise ValueError("GNNTransition got a flat (B, A) action; encode actions per slot "
                                 "(ActionEncoder mode per_slot / copy) or build with copy_action=True")
            a = a.unsqueeze(1).expand(-1, self.num_slots, -1)
        if tuple(a.shape) != (b, self.num_slots, self.action_dim):
            raise ValueError(f"GNNTransition expects actions (B, {self.num_slots}, {self.action_dim}), "
                             f"got {tuple(a.shape)}")
        return a

    def aggregate(self, z: torch.Tensor) -> torch.Tensor:
        """Factored edge MLP: summed messages per slot ``(B, K, H)``."""
        b, k, d = z.shape
        if k == 1:
            return z.new_zeros(b, 1, self.hidden_dim)
        first = self.edge_mlp[0]
        w_src, w_dst = first.weight[:, :d], first.weight[:, d:]  # [H, D] each
        src = F.linear(z, w_src, first.bias)  # [B, K, H]: W_a z_i + b
        dst = F.linear(z, w_dst)  # [B, K, H]: W_b z_j
        # the off-diagonal entries of the broadcast sum src[:, :, None] + dst[:, None, :] ([B, K, K, H]),
        # gathered without forming the K x K tensor: pre[:, e] = W [z_i, z_j] + b for edge e = (i, j), i != j
        pre = src[:, self.edge_src] + dst[:, self.edge_dst]  # [B, K(K-1), H]
        messages = self.edge_mlp[1:](pre)  # [B, K(K-1), H]
        # row-major off-diagonal order: each source i owns K-1 consecutive edges
        return messages.view(b, k, k - 1, self.hidden_dim).sum(2)

    def aggregate_naive(self, z: torch.Tensor) -> torch.Tensor:
        """Explicit edge list over the flattened batch, concatenation, scatter-add to the source node."""
        b, k, d = z.shape
        nodes = z.reshape(b * k, d)  # [B*K, D]
        offsets = torch.arange(b, device=z.device).repeat_interleave(len(self.edge_src)) * k
        src = self.edge_src.repeat(b) + offsets  # [E]
        dst = self.edge_dst.repeat(b) + offsets
        edges = torch.cat([nodes[src], nodes[dst]], dim=1)  # [E, 2D]
        messages = self.edge_mlp(edges)  # [E, H]
        agg = nodes.new_zeros(b * k, self.hidden_dim).index_add_(0, src, messages)
        return agg.view(b, k, self.hidden_dim)

    def extra_repr(self) -> str:
        return (f"num_slots={self.num_slots}, embedding_dim={self.embedding_dim}, action_dim={self.action_dim}, "
                f"hidden_dim={self.hidden_dim}, residual={self.residual}, naive={self.naive}")


class RecurrentTransition(nn.Module):
    """A GRU transition over flat latents; with ``stochastic_dim > 0``, an RSSM-like model.

    The latent is one flat vector ``z = [h, s]``: ``h`` deterministic (``latent_dim - stochastic_dim``
    values, the GRU state), ``s`` stochastic (``stochastic_dim`` values; absent when 0). One step::

        x  = ELU(Linear([s, a]))            # hidden_dim
        h' = GRUCell(x, h)
        s' = mean(h') + std(h') * eps        # prior head, reparameterised; eps = 0 unless sampling
        z' = [h', s']

    ``prior(h)`` returns the Gaussian prior's ``(mean, std)`` (``std = softplus(.) + min_std``) so an
    objective can add a KL between it and an encoder-side posterior. ``s'`` is sampled when ``sample`` is
    True, or, with ``sample=None`` (default), in training mode only; in eval mode it is the prior mean, so a
    rollout (e.g. for ranking evaluation) is deterministic.

    The initial latent comes from the encoder: the world-model builder puts a :class:`LatentProjection`
    (``h_0 = tanh(Linear(f))``, ``s_0 = Linear(f)`` of the encoder features ``f``) after the pixel encoder
    when ``stochastic_dim > 0`` or a deterministic width is asked for; otherwise the encoder output itself
    is ``h_0``. Because the latent stays a flat tensor, ``WorldModel.rollout`` works unchanged.

    Args:
        latent_dim: width of the whole latent ``[h, s]``.
        action_dim: width of the encoded action.
        hidden_dim: width of the input layer and of the prior head (256).
        stochastic_dim: width of ``s``; 0 gives a plain deterministic GRU.
        min_std: lower bound of the prior's standard deviation.
        sample: force sampling on (True) or off (False); None samples in training mode only.
    """

    def __init__(self, latent_dim: int, action_dim: int, hidden_dim: int = 256, stochastic_dim: int = 0,
                 min_std: float = 0.1, sample: bool | None = None):
        super().__init__()
        if stochastic_dim < 0 or latent_dim - stochastic_dim < 1:
            raise ValueError(f"need 0 <= stochastic_dim < latent_dim, got stochastic_dim={stochastic_dim}, "
                             f"latent_dim={latent_dim}")
        self.latent_dim, self.action_dim, self.hidden_dim = int(latent_dim), int(action_dim), int(hidden_dim)
        self.stochastic_dim = int(stochastic_dim)
        self.deterministic_dim = self.latent_dim - self.stochastic_dim
        self.min_std, self.sample = float(min_std), sample
        self.input = nn.Sequential(nn.Linear(self.stochastic_dim + self.action_dim, self.hidden_dim), nn.ELU())
        self.gru = nn.GRUCell(self.hidden_dim, self.deterministic_dim)
        self.prior_net = (nn.Sequential(nn.Linear(self.deterministic_dim, self.hidden_dim), nn.ELU(),
                                        nn.Linear(self.hidden_dim, 2 * self.stochastic_dim))
                          if self.stochastic_dim else None)

    def split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``(B, latent_dim)`` -> ``(h, s)``; ``s`` has width 0 for a deterministic model."""
        return z[:, : self.deterministic_dim], z[:, self.deterministic_dim:]

    def prior(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian prior over ``s`` given ``h``: ``(mean, std)``, each ``(B, stochastic_dim)``."""
        if self.prior_net is None:
            raise RuntimeError("a deterministic RecurrentTransition (stochastic_dim=0) has no prior")
        mean, raw_std = self.prior_net(h).chunk(2, dim=-1)
        return mean, F.softplus(raw_std) + self.min_std

    def forward(self, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"RecurrentTransition expects flat latents (B, {self.latent_dim}), got {tuple(z.shape)}")
        h, s = self.split(z)
        a = a.reshape(a.shape[0], -1).to(z.dtype)
        if a.shape[1] != self.action_dim:
            raise ValueError(f"RecurrentTransition expects actions of width {self.action_dim}, got {tuple(a.shape)}")
        h_next = self.gru(self.input(torch.cat([s, a], dim=1)), h)  # [B, deterministic_dim]
        if not self.stochastic_dim:
            return h_next
        mean, std = self.prior(h_next)
        sample = self.training if self.sample is None else self.sample
        s_next = mean + std * torch.randn_like(std) if sample else mean
        return torch.cat([h_next, s_next], dim=1)


class LatentProjection(nn.Module):
    """A pixel encoder followed by a map to a recurrent latent ``[h, s]``: ``h = tanh(Linear(f))`` (in the
    GRU state's range), ``s = Linear(f)``. Exposes ``out_shape`` like an encoder."""

    def __init__(self, encoder: nn.Module, deterministic_dim: int, stochastic_dim: int = 0):
        super().__init__()
        self.encoder = encoder
        in_dim = int(torch.tensor(encoder.out_shape).prod())
        self.deterministic_dim, self.stochastic_dim = int(deterministic_dim), int(stochastic_dim)
        self.to_h = nn.Linear(in_dim, self.deterministic_dim)
        self.to_s = nn.Linear(in_dim, self.stochastic_dim) if self.stochastic_dim else None
        self.out_shape = (self.deterministic_dim + self.stochastic_dim,)

    @property
    def out_dim(self) -> int:
        return self.out_shape[0]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        f = self.encoder(obs).flatten(1)  # [B, F]
        h = torch.tanh(self.to_h(f))
        if self.to_s is None:
            return h
        return torch.cat([h, self.to_s(f)], dim=1)  # [B, h + s]

"""Planners over a world model's latent space, for a batch of episodes at once.

``plan(model, z, cost, space, generators) -> actions`` takes the current latents of ``B`` episodes (``(B, D)`` or
``(B, K, D)``) and returns one action sequence per episode, ``(B, H)`` int64 for discrete actions or
``(B, H, A)`` float for continuous ones; model-predictive control executes the first action and plans again.
Every candidate of every episode is rolled out by the model in the same batched calls (``chunk`` rows at a
time, bounding memory). Random draws come from one ``torch.Generator`` per episode, so planning ``B`` episodes
together or one at a time with the same generators gives the same plans.

Discrete actions (Shapes, Cubes, the maze's six moves):

- :class:`Exhaustive`: every one of the ``A^H`` sequences, expanded as a tree (a prefix is rolled out once).
- :class:`Beam`: keep the ``width`` best prefixes at each depth, expand each by every action.
- :class:`CategoricalCEM`: the cross-entropy method over one categorical distribution per step.

Continuous actions (boxes): :class:`CEM` (Gaussian, elites refit each iteration) and :class:`MPPI`
(the cost-weighted mean of Gaussian perturbations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.planning.costs import Cost
from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels.base import every_pair


@dataclass(frozen=True)
class ActionSpace:
    """``discrete``: ``n`` actions ``0..n-1``; else a box of ``n`` dimensions between ``low`` and ``high``."""

    discrete: bool
    n: int
    low: float = -1.0
    high: float = 1.0

    def describe(self) -> str:
        return f"{self.n} discrete actions" if self.discrete else f"continuous actions of dimension {self.n}"


def model_action_space(model: torch.nn.Module) -> tuple[bool, int]:
    """``(discrete, n)`` the model's action encoder was built for."""
    enc = model.action_encoder
    return bool(enc.discrete), int(enc.dim)


def check_action_space(model: torch.nn.Module, space: ActionSpace, env_name: str = "the env") -> None:
    """The model must have been trained on the env's action space: a one-line error otherwise."""
    discrete, n = model_action_space(model)
    if (discrete, n) != (space.discrete, space.n):
        got = f"{n} discrete actions" if discrete else f"continuous actions of dimension {n}"
        raise ConfigError(f"the world model was trained on {got} but {env_name} has {space.describe()}; plan with a "
                          f"model trained on this env's data (same action_type)")


def step_model(model: torch.nn.Module, z: torch.Tensor, a: torch.Tensor, chunk: int) -> torch.Tensor:
    """``model.next(z, a)`` over ``chunk`` rows at a time."""
    if z.shape[0] <= chunk:
        return model.next(z, a)
    return torch.cat([model.next(z[i:i + chunk], a[i:i + chunk]) for i in range(0, z.shape[0], chunk)])


def step_each(model: torch.nn.Module, z: torch.Tensor, actions: torch.Tensor, chunk: int) -> torch.Tensor:
    """Every action of ``actions`` ``(N, ...)`` from every latent of ``z`` ``(M, ...)``: ``(M * N, ...)``, row
    ``i * N + j`` for latent ``i`` and action ``j`` (a search tree's expansion), about ``chunk`` rows per call.
    Uses the model's ``next_each`` where it has one (it computes the latent-only part of a transition once per
    latent), else ``next`` on the repeated rows."""
    each = getattr(model, "next_each", None) or (lambda zs, acts: model.next(*every_pair(zs, acts)))
    per = max(1, chunk // actions.shape[0])
    if z.shape[0] <= per:
        return each(z, actions)
    return torch.cat([each(z[i:i + per], actions) for i in range(0, z.shape[0], per)])


def sequence_costs(model: torch.nn.Module, z: torch.Tensor, actions: torch.Tensor, cost: Cost,
                   chunk: int) -> torch.Tensor:
    """Cost ``(B, N)`` of ``N`` action sequences ``(B, N, H[, A])`` per episode from latents ``z`` ``(B, ...)``."""
    b, n, h = actions.shape[:3]
    index = torch.arange(b, device=z.device).repeat_interleave(n)
    state = z.repeat_interleave(n, dim=0)
    flat = actions.reshape(b * n, h, *actions.shape[3:])
    total = None
    for t in range(h):
        nxt = step_model(model, state, flat[:, t], chunk)
        total = cost.fold(total, cost.step(state, flat[:, t], nxt, index, t), t)
        state = nxt
    return total.view(b, n)


class Planner:
    """Base: ``horizon`` steps, ``chunk`` model rows per call; subclasses set ``discrete`` (True, False)."""

    name = "planner"
    discrete: bool = True
    random: bool = False

    def __init__(self, horizon: int, chunk: int = 4096):
        _positive("horizon", horizon)
        _positive("chunk", chunk)
        self.horizon, self.chunk = int(horizon), int(chunk)

    def check(self, space: ActionSpace) -> None:
        if space.discrete != self.discrete:
            valid = "exhaustive | beam | cem" if space.discrete else "cem | mppi"
            raise ConfigError(f"planner {self.name} plans {'discrete' if self.discrete else 'continuous'} actions but "
                              f"the env has {space.describe()}; use planner={valid}")

    @torch.no_grad()
    def plan(self, model: torch.nn.Module, z: torch.Tensor, cost: Cost, space: ActionSpace,
             generators: list[torch.Generator] | None = None) -> torch.Tensor:
        self.check(space)
        if self.random and (generators is None or len(generators) != z.shape[0]):
            raise ValueError(f"planner {self.name} needs one torch.Generator per episode ({z.shape[0]})")
        return self._plan(model, z, cost, space, generators)

    def _plan(self, model, z, cost, space, generators):
        raise NotImplementedError


class Exhaustive(Planner):
    """All ``A^H`` action sequences as a tree: depth ``t`` holds ``A^t`` nodes per episode, each rolled out once
    from its parent; the best leaf's sequence is returned (first-found on ties). Refuses more than
    ``max_sequences`` leaves per episode."""

    name = "exhaustive"

    def __init__(self, horizon: int, chunk: int = 4096, max_sequences: int = 200_000):
        super().__init__(horizon, chunk)
        self.max_sequences = int(max_sequences)

    def _plan(self, model, z, cost, space, generators):
        a_n, h, b = space.n, self.horizon, z.shape[0]
        if a_n ** h > self.max_sequences:
            raise ConfigError(f"exhaustive search over {a_n} actions and horizon {h} is {a_n ** h:,} sequences per "
                              f"episode (limit {self.max_sequences:,}); lower horizon or use planner=beam | cem")
        device = z.device
        index = torch.arange(b, device=device)
        seqs = torch.zeros(b, 0, dtype=torch.long, device=device)
        total, state = None, z
        for t in range(h):
            index = index.repeat_interleave(a_n)
            seqs = torch.cat([seqs.repeat_interleave(a_n, dim=0),
                              torch.arange(a_n, device=device).repeat(seqs.shape[0])[:, None]], dim=1)
            nxt = step_each(model, state, torch.arange(a_n, device=device), self.chunk)
            state = state.repeat_interleave(a_n, dim=0)
            a = seqs[:, t]
            total = cost.fold(None if total is None else total.repeat_interleave(a_n),
                              cost.step(state, a, nxt, index, t), t)
            state = nxt
        best = total.view(b, -1).argmin(dim=1)
        return seqs.view(b, -1, h)[torch.arange(b, device=device), best]


class Beam(Planner):
    """Beam search: at each depth every kept prefix is extended by every action and the ``width`` lowest-cost
    prefixes of each episode are kept (a stable sort, so ties keep the earlier prefix)."""

    name = "beam"

    def __init__(self, horizon: int, width: int = 8, chunk: int = 4096):
        super().__init__(horizon, chunk)
        _positive("beam_width", width)
        self.width = int(width)

    def _plan(self, model, z, cost, space, generators):
        a_n, b, device = space.n, z.shape[0], z.device
        rows = torch.arange(b, device=device)
        seqs = torch.zeros(b, 1, 0, dtype=torch.long, device=device)  # [B, W, t]
        state = z.unsqueeze(1)  # [B, W, ...]
        total = None
        for t in range(self.horizon):
            w = seqs.shape[1]
            seqs = torch.cat([seqs.repeat_interleave(a_n, dim=1),
                              torch.arange(a_n, device=device).repeat(b, w)[..., None]], dim=2)  # [B, W*A, t+1]
            nxt = step_each(model, state.flatten(0, 1), torch.arange(a_n, device=device), self.chunk)
            flat_state = state.repeat_interleave(a_n, dim=1).flatten(0, 1)
            a = seqs[:, :, t].reshape(-1)
            index = rows.repeat_interleave(w * a_n)
            total = cost.fold(None if total is None else total.repeat_interleave(a_n, dim=1).reshape(-1),
                              cost.step(flat_state, a, nxt, index, t), t).view(b, w * a_n)
            keep = torch.sort(total, dim=1, stable=True).indices[:, :self.width]  # [B, W']
            seqs = seqs[rows[:, None], keep]
            total = total[rows[:, None], keep]
            state = nxt.view(b, w * a_n, *nxt.shape[1:])[rows[:, None], keep]
        return seqs[:, 0]


class CategoricalCEM(Planner):
    """The cross-entropy method over discrete sequences: one categorical distribution per step (uniform at
    first); each iteration draws ``samples`` sequences per episode, and the distribution moves to the action
    frequencies of the ``elites`` best (``smoothing`` of the old one is kept). Returns the best sequence drawn."""

    name = "cem"
    random = True

    def __init__(self, horizon: int, samples: int = 256, elites: int = 32, iterations: int = 4,
                 smoothing: float = 0.1, chunk: int = 4096):
        super().__init__(horizon, chunk)
        _check_population(samples, elites, iterations)
        if not 0 <= smoothing < 1:
            raise ConfigError(f"smoothing must be in [0, 1), got {smoothing!r}")
        self.samples, self.elites, self.iterations, self.smoothing = int(samples), int(elites), int(iterations), \
            float(smoothing)

    def _plan(self, model, z, cost, space, generators):
        b, h, device = z.shape[0], self.horizon, z.device
        probs = torch.full((b, h, space.n), 1.0 / space.n, device=device)
        best_cost = torch.full((b,), float("inf"), device=device)
        best = torch.zeros(b, h, dtype=torch.long, device=device)
        rows = torch.arange(b, device=device)
        for _ in range(self.iterations):
            seqs = torch.stack([torch.multinomial(probs[i].cpu(), self.samples, replacement=True,
                                                  generator=generators[i]).t() for i in range(b)]).to(device)
            costs = sequence_costs(model, z, seqs, cost, self.chunk)  # [B, N]
            order = torch.sort(costs, dim=1, stable=True).indices
            top = order[:, 0]
            better = costs[rows, top] < best_cost
            best_cost = torch.where(better, costs[rows, top], best_cost)
            best = torch.where(better[:, None], seqs[rows, top], best)
            elite = seqs[rows[:, None], order[:, :self.elites]]  # [B, E, H]
            freq = torch.nn.functional.one_hot(elite, space.n).float().mean(dim=1)  # [B, H, A]
            probs = self.smoothing * probs + (1 - self.smoothing) * freq
        return best


class CEM(Planner):
    """The cross-entropy method over continuous sequences: a Gaussian per step and action dimension (mean at the
    box centre, std half its width at first); ``samples`` clipped draws per episode, the mean and std refit to the
    ``elites`` best (std floored at ``min_std``). Returns the last mean."""

    name = "cem"
    discrete = False
    random = True

    def __init__(self, horizon: int, samples: int = 256, elites: int = 32, iterations: int = 4,
                 min_std: float = 0.05, chunk: int = 4096):
        super().__init__(horizon, chunk)
        _check_population(samples, elites, iterations)
        self.samples, self.elites, self.iterations = int(samples), int(elites), int(iterations)
        self.min_std = float(min_std)

    def _plan(self, model, z, cost, space, generators):
        b, rows = z.shape[0], torch.arange(z.shape[0], device=z.device)
        mean, std = _box_start(b, self.horizon, space, z.device)
        for _ in range(self.iterations):
            samples = _gaussian(mean, std, self.samples, space, generators)  # [B, N, H, A]
            costs = sequence_costs(model, z, samples, cost, self.chunk)
            elite = samples[rows[:, None], torch.sort(costs, dim=1, stable=True).indices[:, :self.elites]]
            mean, std = elite.mean(dim=1), elite.std(dim=1).clamp_min(self.min_std)
        return mean.clamp(space.low, space.high)


class MPPI(Planner):
    """Model-predictive path integral control: ``samples`` Gaussian perturbations (std ``noise`` times half the
    box) of the current mean, weighted by ``softmax(-(cost - min) / (temperature * (max - min)))`` (costs
    rescaled per episode, so the temperature does not depend on the cost's units); ``iterations`` refinements."""

    name = "mppi"
    discrete = False
    random = True

    def __init__(self, horizon: int, samples: int = 256, iterations: int = 4, temperature: float = 0.1,
                 noise: float = 1.0, chunk: int = 4096):
        super().__init__(horizon, chunk)
        _check_population(samples, 1, iterations)
        if not temperature > 0 or not noise > 0:
            raise ConfigError(f"temperature and noise must be > 0, got {temperature!r}, {noise!r}")
        self.samples, self.iterations = int(samples), int(iterations)
        self.temperature, self.noise = float(temperature), float(noise)

    def _plan(self, model, z, cost, space, generators):
        mean, std = _box_start(z.shape[0], self.horizon, space, z.device)
        std = std * self.noise
        for _ in range(self.iterations):
            samples = _gaussian(mean, std, self.samples, space, generators)
            costs = sequence_costs(model, z, samples, cost, self.chunk)  # [B, N]
            low, high = costs.min(dim=1, keepdim=True).values, costs.max(dim=1, keepdim=True).values
            weights = torch.softmax(-(costs - low) / (self.temperature * (high - low).clamp_min(1e-12)), dim=1)
            mean = (weights[:, :, None, None] * samples).sum(dim=1)
        return mean.clamp(space.low, space.high)


def _box_start(b: int, h: int, space: ActionSpace, device) -> tuple[torch.Tensor, torch.Tensor]:
    centre, half = (space.low + space.high) / 2, (space.high - space.low) / 2
    return (torch.full((b, h, space.n), centre, device=device), torch.full((b, h, space.n), half, device=device))


def _gaussian(mean: torch.Tensor, std: torch.Tensor, n: int, space: ActionSpace,
              generators: list[torch.Generator]) -> torch.Tensor:
    """``n`` clipped draws per episode, each episode's noise from its own generator: ``(B, n, H, A)``."""
    b, h, a = mean.shape
    noise = torch.stack([torch.randn(n, h, a, generator=generators[i]) for i in range(b)]).to(mean.device)
    return (mean[:, None] + std[:, None] * noise).clamp(space.low, space.high)


def _positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _check_population(samples: int, elites: int, iterations: int) -> None:
    for name, value in (("samples", samples), ("elites", elites), ("iterations", iterations)):
        _positive(name, value)
    if elites > samples:
        raise ConfigError(f"elites must be <= samples, got {elites} elites of {samples} samples")


#: planner name -> (discrete class, continuous class); ``cem`` is categorical for discrete actions
PLANNERS: dict[str, tuple[type[Planner] | None, type[Planner] | None]] = {
    "exhaustive": (Exhaustive, None),
    "beam": (Beam, None),
    "cem": (CategoricalCEM, CEM),
    "mppi": (None, MPPI),
}


def build_planner(name: str, space: ActionSpace, horizon: int, **options) -> Planner:
    """The planner ``name`` for ``space`` (``cem`` picks the categorical or the Gaussian form); ``options`` are
    its constructor keywords (those it does not take are ignored, so one config serves every planner)."""
    import inspect

    if name not in PLANNERS:
        raise ConfigError(f"unknown planner {name!r}; valid: {', '.join(PLANNERS)}")
    cls = PLANNERS[name][0 if space.discrete else 1]
    if cls is None:
        valid = [k for k, v in PLANNERS.items() if v[0 if space.discrete else 1] is not None]
        raise ConfigError(f"planner {name} does not plan {'discrete' if space.discrete else 'continuous'} actions "
                          f"({space.describe()}); use planner={' | '.join(valid)}")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "horizon"}
    return cls(horizon, **{k: v for k, v in options.items() if k in accepted})

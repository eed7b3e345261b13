"""``worldssl bench plan``: planning steps/s of the batched planner against a per-episode loop of the same
planner on the same model, measured in the same run.

One planning step is one :meth:`agents.planning.MPC.act` decision for one episode: encode its observation,
plan, return the first action. The batched side decides for ``plan_episodes`` episodes in one call; the
baseline calls it once per episode, with the same per-episode generators, so both compute the same plans
(tested in ``tests/test_planning.py``). Models are random-init (speed does not depend on training) with the
sizes the evaluations use: C-SWM's Shapes model (slot encoder, GNN of width 512), a narrow one (width 64), and
the maze's flat encoder with an MLP transition, discrete and continuous. Observations are random frames;
the figure is the median of ``repeats`` timings of each side, timed in alternation.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import torch

from worldssl.bench.common import Row, setting_reader

#: ("name: label", obs shape, action space, encoder, transition, latent, planner, horizon, planner options)
CASES: list[tuple[str, tuple[int, int, int], dict, dict, str, dict, str, int, dict]] = [
    ("shapes512_exhaustive: C-SWM GNN-512, exhaustive h=1", (3, 50, 50), {"type": "discrete", "n": 20},
     {"kind": "slots", "size": "small"}, "gnn", {}, "exhaustive", 1, {}),
    ("shapes64_exhaustive: GNN-64, exhaustive h=1", (3, 50, 50), {"type": "discrete", "n": 20},
     {"kind": "slots", "size": "small", "hidden_dim": 64}, "gnn", {"hidden_dim": 64}, "exhaustive", 1, {}),
    ("shapes64_beam: GNN-64, beam h=3 w=4", (3, 50, 50), {"type": "discrete", "n": 20},
     {"kind": "slots", "size": "small", "hidden_dim": 64}, "gnn", {"hidden_dim": 64}, "beam", 3, {"width": 4}),
    ("maze_cem: 64px MLP, discrete cem h=5", (3, 64, 64), {"type": "discrete", "n": 6},
     {"kind": "cswm_flat", "size": "small"}, "mlp", {}, "cem", 5, {"samples": 64, "elites": 8, "iterations": 3}),
    ("maze_mppi: 64px MLP, continuous mppi h=5", (3, 64, 64), {"type": "box", "shape": [2]},
     {"kind": "cswm_flat", "size": "small"}, "mlp", {}, "mppi", 5, {"samples": 64, "iterations": 3}),
]


def _case(case: tuple, episodes: int, device: torch.device) -> tuple[Any, Any, np.ndarray]:
    from agents.planning import MPC, ActionSpace, GoalCost, build_planner
    from worldssl.worldmodels import build_world_model

    label, obs_shape, space, encoder, transition, latent, planner, horizon, options = case
    torch.manual_seed(0)
    model = build_world_model(obs_shape, space, encoder, transition, latent=latent).to(device).eval()
    discrete = space["type"] == "discrete"
    aspace = ActionSpace(True, space["n"]) if discrete else ActionSpace(False, int(np.prod(space["shape"])))
    mpc = MPC(model, build_planner(planner, aspace, horizon, **options), aspace, device)
    rng = np.random.default_rng(0)
    obs = rng.integers(0, 256, size=(episodes, *obs_shape), dtype=np.uint8)
    with torch.no_grad():
        goal = model.encode(torch.from_numpy(rng.integers(0, 256, size=(episodes, *obs_shape),
                                                          dtype=np.uint8)).to(device))
    return mpc, GoalCost(goal), obs


class RepeatedRows:
    """A world model seen without ``next_each``: a planner's tree expansion then steps ``next`` on the parent
    latents repeated once per action, recomputing the GNN's edge messages for every row (the baseline of the
    shared-messages rows)."""

    def __init__(self, model: Any):
        self._model = model

    def __getattr__(self, name: str) -> Any:
        if name == "next_each":
            raise AttributeError(name)
        return getattr(self._model, name)


def time_pair(first, second, repeats: int, per_call: int) -> tuple[float, float]:
    """Calls/s x ``per_call`` of two functions: medians over ``repeats``, in alternation, after one warm-up."""
    first(), second()
    fast, slow = [], []
    for _ in range(repeats):
        for fn, out in ((first, fast), (second, slow)):
            t0 = time.perf_counter()
            fn()
            out.append(per_call / (time.perf_counter() - t0))
    return statistics.median(fast), statistics.median(slow)


def time_expansion(case: tuple, episodes: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """``(shared edge messages, repeated rows)`` planning steps/s of the batched planner."""
    from agents.planning import MPC, episode_generators

    mpc, cost, obs = _case(case, episodes, device)
    rows = MPC(RepeatedRows(mpc.model), mpc.planner, mpc.space, device)
    ids = np.arange(episodes)
    return time_pair(lambda: mpc.act(obs, cost, ids, episode_generators(0, ids)),
                     lambda: rows.act(obs, cost, ids, episode_generators(0, ids)), repeats, episodes)


def time_case(case: tuple, episodes: int, repeats: int, device: torch.device) -> tuple[float, float]:
    """``(batched, per-episode)`` planning steps/s: medians over ``repeats``, the two sides in alternation."""
    from agents.planning import episode_generators

    mpc, cost, obs = _case(case, episodes, device)
    ids = np.arange(episodes)

    def batched() -> None:
        mpc.act(obs, cost, ids, episode_generators(0, ids))

    def looped() -> None:
        for i in ids:
            mpc.act(obs[i:i + 1], cost, ids[i:i + 1], episode_generators(0, [i]))

    return time_pair(batched, looped, repeats, episodes)


def run(cfg: Any) -> list[Row]:
    from worldssl.runtime.device import resolve_device
    from worldssl.runtime.errors import ConfigError

    get = setting_reader(cfg)
    episodes, repeats = int(get("plan_episodes", 64)), int(get("repeats", 3))
    if episodes < 1:
        raise ConfigError(f"plan_episodes must be a positive integer, got {episodes}")
    device = resolve_device(get("device", "auto"))
    names = [c[0].split(":")[0] for c in CASES]
    wanted = list(get("plan_cases", names))
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise ConfigError(f"unknown plan_cases {unknown}; valid: {names}")
    threads = torch.get_num_threads()
    if device.type == "cpu" and get("plan_threads", 1):
        torch.set_num_threads(int(get("plan_threads", 1)))
    rows = []
    try:
        for case in CASES:
            if case[0].split(":")[0] not in wanted:
                continue
            fast, slow = time_case(case, episodes, repeats, device)
            print(f"  {case[0]}: batched {fast:,.1f} steps/s, per-episode loop {slow:,.1f} ({fast / slow:.2f}x)")
            rows.append(Row(f"plan {case[0]}", f"planning steps/s, {episodes} episodes ({device.type})", fast, slow,
                            "the same planner, one episode per call", ">= 10x"))
            if case[4] == "gnn" and case[6] in ("exhaustive", "beam"):
                shared, repeated = time_expansion(case, episodes, repeats, device)
                print(f"  {case[0]}: tree expansion with shared edge messages {shared:,.1f} steps/s, "
                      f"repeated rows {repeated:,.1f} ({shared / repeated:.2f}x)")
                rows.append(Row(f"plan {case[0].split(':')[0]} shared edge messages",
                                f"planning steps/s, {episodes} episodes batched ({device.type})", shared, repeated,
                                "next() on every (latent, action) row", ""))
    finally:
        torch.set_num_threads(threads)
    return rows

"""Planners over world models: against naive references, batched against one episode at a time, the true
Shapes dynamics as a world model against the shortest-path oracle, and one-line errors for bad input."""

from __future__ import annotations

import itertools
from collections import deque

import numpy as np
import pytest
import torch

import envs
from agents.planning import (
    MPC,
    ActionSpace,
    GoalCost,
    RewardCost,
    build_planner,
    check_action_space,
    check_goal_model,
    episode_generators,
)
from agents.planning.costs import squared_distance
from agents.planning.oracle import ShapesOracleModel
from worldssl.eval.plan import PlanSettings, evaluate_planning, grid_step, grid_tasks, shortest_path
from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels import build_world_model

SHAPES = ActionSpace(True, 20)
BOX = ActionSpace(False, 2, -1.0, 1.0)


def slot_model(n_actions: int = 20, reward: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_world_model((3, 50, 50), {"type": "discrete", "n": n_actions},
                             {"kind": "slots", "size": "small", "hidden_dim": 16}, "gnn",
                             latent={"hidden_dim": 16, "reward_hidden_dim": 16}, reward=reward).eval()


def box_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_world_model((3, 16, 16), {"type": "box", "shape": [2]},
                             {"kind": "cswm_flat", "hidden_dim": 16, "latent_dim": 4}, "mlp",
                             latent={"hidden_dim": 16}).eval()


# ------------------------------------------------------------------------------------------- grid truth
def bfs_distance(start: np.ndarray, goal: np.ndarray, grid: int) -> int:
    """Plain breadth-first search over the true grid state (the naive reference for the A* search)."""
    key = lambda p: tuple(p.reshape(-1).tolist())  # noqa: E731
    seen, queue = {key(start)}, deque([(start, 0)])
    while queue:
        pos, d = queue.popleft()
        if key(pos) == key(goal):
            return d
        for a in range(4 * len(pos)):
            nxt = grid_step(pos, a, grid)
            if key(nxt) not in seen:
                seen.add(key(nxt))
                queue.append((nxt, d + 1))
    raise AssertionError("unreachable")


def test_shortest_path_is_a_shortest_path():
    rng = np.random.default_rng(0)
    for _ in range(12):
        grid, k = 3, 3  # crowded: detours around blocked cells are common
        start = np.stack(np.divmod(rng.choice(grid * grid, k, replace=False), grid), 1)
        goal = np.stack(np.divmod(rng.choice(grid * grid, k, replace=False), grid), 1)
        path = shortest_path(start, goal, grid)
        assert len(path) == bfs_distance(start, goal, grid)
        pos = start
        for a in path:
            pos = grid_step(pos, a, grid)
        assert (pos == goal).all()


def test_grid_tasks_sit_at_their_true_distance():
    starts, goals, dist = grid_tasks(5, 5, (1, 3, 5), 3, seed=1)
    assert dist.tolist() == [1, 1, 1, 3, 3, 3, 5, 5, 5]
    for s, g, d in zip(starts, goals, dist):
        assert len(shortest_path(s, g, 5)) == d  # the search is checked against BFS above
    again = grid_tasks(5, 5, (1, 3, 5), 3, seed=1)
    assert all((a == b).all() for a, b in zip((starts, goals, dist), again))


def test_oracle_model_is_the_env():
    env = envs.make("worldssl/Shapes-v0")
    oracle = ShapesOracleModel(env)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    for _ in range(40):
        a = int(rng.integers(20))
        z = oracle.encode(torch.from_numpy(obs[None]))
        assert (z[0].numpy() == info["positions"]).all()
        obs, _, _, _, info = env.step(a)
        assert (oracle.next(z, torch.tensor([a]))[0].numpy() == info["positions"]).all()


# ------------------------------------------------------------------------------------------- planners
@pytest.mark.parametrize("planner, options", [
    ("exhaustive", {}), ("beam", {"width": 3}), ("cem", {"samples": 16, "elites": 4, "iterations": 2})])
def test_discrete_batched_equals_one_at_a_time(planner, options):
    model = slot_model()
    z = torch.randn(5, 5, 2)
    cost = GoalCost(torch.randn(5, 5, 2))
    p = build_planner(planner, SHAPES, 2, chunk=64, **options)
    together = p.plan(model, z, cost, SHAPES, episode_generators(3, range(5)))
    alone = torch.cat([p.plan(model, z[i:i + 1], cost.select(torch.tensor([i])), SHAPES,
                              episode_generators(3, [i])) for i in range(5)])
    assert together.shape == (5, 2) and torch.equal(together, alone)


@pytest.mark.parametrize("planner", ["cem", "mppi"])
def test_continuous_batched_equals_one_at_a_time(planner):
    model = box_model()
    z = torch.randn(4, 4)
    cost = GoalCost(torch.randn(4, 4), aggregate="sum")
    p = build_planner(planner, BOX, 3, samples=32, elites=4, iterations=3)
    together = p.plan(model, z, cost, BOX, episode_generators(7, range(4)))
    alone = torch.cat([p.plan(model, z[i:i + 1], cost.select(torch.tensor([i])), BOX, episode_generators(7, [i]))
                       for i in range(4)])
    assert together.shape == (4, 3, 2) and together.abs().max() <= 1
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    other = p.plan(model, z, cost, BOX, episode_generators(8, range(4)))
    assert not torch.equal(together, other)  # the draws do come from the generators


def test_exhaustive_and_reward_cost_against_brute_force():
    """Every sequence rolled out with model.rollout: the exhaustive plan is the naive argmin, for the closest
    approach to a goal and for the predicted return of a reward head."""
    model = slot_model(8, reward=True)
    space = ActionSpace(True, 8)
    z = torch.randn(3, 5, 2)
    goal = torch.randn(3, 5, 2)
    seqs = torch.tensor(list(itertools.product(range(8), repeat=2)))  # [64, 2]
    plan = build_planner("exhaustive", space, 2).plan(model, z, GoalCost(goal), space)
    ret = build_planner("exhaustive", space, 2).plan(model, z, RewardCost(model), space)
    for i in range(3):
        with torch.no_grad():
            traj = model.rollout(z[i:i + 1].expand(64, -1, -1), seqs)  # [64, 2, 5, 2]
            dist = torch.stack([squared_distance(traj[:, t], goal[i:i + 1].expand(64, -1, -1)) for t in range(2)], 1)
            states = torch.cat([z[i:i + 1].expand(64, -1, -1)[:, None], traj[:, :1]], 1)
            returns = sum(model.reward(states[:, t], seqs[:, t]) for t in range(2))
        closest = dist.min(1).values
        assert closest[(plan[i] == seqs).all(1)].item() == pytest.approx(closest.min().item(), abs=1e-5)
        assert returns[(ret[i] == seqs).all(1)].item() == pytest.approx(returns.max().item(), abs=1e-5)


@pytest.mark.parametrize("make", [slot_model, box_model], ids=["gnn", "mlp"])
def test_next_each_is_next_on_every_pair(make):
    """A search tree's expansion, every action from every latent: the GNN's shared edge messages (and the
    generic path of other transitions) give next() on the repeated rows, row i * N + j = (latent i, action j);
    the explicit-edge-list GNN agrees, and so does the planners' chunked form."""
    from agents.planning.planners import step_each

    model = make()
    torch.manual_seed(1)
    z = model.encode(torch.randint(0, 256, (3, *model.encoder.obs_shape), dtype=torch.uint8))
    acts = torch.arange(20) if make is slot_model else torch.rand(5, 2) * 2 - 1
    n = acts.shape[0]
    with torch.no_grad():
        ref = model.next(z.repeat_interleave(n, dim=0), acts.repeat(3, *([1] * (acts.dim() - 1))))
        torch.testing.assert_close(model.next_each(z, acts), ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(step_each(model, z, acts, chunk=n), ref, rtol=1e-5, atol=1e-6)  # 3 calls
        if make is slot_model:
            model.transition.naive = True
            torch.testing.assert_close(model.next_each(z, acts), ref, rtol=1e-5, atol=1e-6)


def test_beam_as_wide_as_the_tree_is_exhaustive():
    model = slot_model()
    z, cost = torch.randn(4, 5, 2), GoalCost(torch.randn(4, 5, 2))
    wide = build_planner("beam", SHAPES, 2, width=400).plan(model, z, cost, SHAPES)
    full = build_planner("exhaustive", SHAPES, 2).plan(model, z, cost, SHAPES)
    assert torch.equal(wide, full)


def test_oracle_model_plans_as_well_as_the_shortest_path_oracle():
    """The true dynamics as the world model: exhaustive search over a horizon >= the distance reaches every
    goal in the oracle's number of steps; batched and one episode at a time give the same episodes."""
    env = envs.make("worldssl/Shapes-v0")
    s = PlanSettings(planner="exhaustive", horizon=3, distances=(1, 2, 3), episodes=3, seed=4)
    out = evaluate_planning(ShapesOracleModel(env), "worldssl/Shapes-v0", {}, 1, s)
    for d in ("1", "2", "3", "all"):
        assert out[f"plan/success/{d}"] == out[f"plan/oracle/success/{d}"] == 100.0
        assert out[f"plan/steps/{d}"] == out[f"plan/oracle/steps/{d}"]
    assert out["plan/random/success/all"] < 100
    random_planner = {"planner": "cem", "samples": 16, "elites": 4, "iterations": 2}  # draws from the generators
    one = evaluate_planning(ShapesOracleModel(env), "worldssl/Shapes-v0", {}, 1,
                            PlanSettings(**{**s.__dict__, **random_planner, "batched": False, "baselines": False}))
    many = evaluate_planning(ShapesOracleModel(env), "worldssl/Shapes-v0", {}, 1,
                             PlanSettings(**{**s.__dict__, **random_planner, "baselines": False}))
    same = lambda d: {k: v for k, v in d.items() if "ms_per" not in k and "seconds" not in k}  # noqa: E731
    assert same(one) == same(many)


def test_mpc_acts_on_observations():
    env = envs.make("worldssl/Shapes-v0")
    oracle = ShapesOracleModel(env)
    obs, info = env.reset(seed=1)
    goal_pos = grid_step(info["positions"], 0, 5)
    goal_pos = grid_step(goal_pos, 5, 5)
    goal = oracle.encode(torch.from_numpy(env.unwrapped.set_positions(goal_pos)[None]))
    env.unwrapped.set_positions(info["positions"])
    mpc = MPC(oracle, build_planner("exhaustive", SHAPES, 2), SHAPES)
    a = mpc.act(obs[None], GoalCost(goal), np.array([0]))
    assert a.dtype == np.int64 and a[0] == shortest_path(info["positions"], goal_pos, 5)[0]


# ------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_one_line():
    model = slot_model(6)
    with pytest.raises(ConfigError, match="trained on 6 discrete actions but worldssl/Shapes-v0 has 20"):
        check_action_space(model, SHAPES, "worldssl/Shapes-v0")
    with pytest.raises(ConfigError, match="trained on 6 discrete actions"):
        evaluate_planning(model, "worldssl/Shapes-v0", {}, 1, PlanSettings(episodes=1, distances=(1,)))
    with pytest.raises(ConfigError, match="needs a world model with a reward head"):
        RewardCost(slot_model())
    headless = slot_model()
    headless.encoder = None
    with pytest.raises(ConfigError, match="encoder for the goal image"):
        check_goal_model(headless, (3, 50, 50))
    with pytest.raises(ConfigError, match="encoder for the goal image"):
        check_goal_model(slot_model(), (6, 50, 50))
    for bad in ({"horizon": 0}, {"budget_factor": 0.0}, {"episodes": 0}):
        with pytest.raises(ConfigError, match=f"{next(iter(bad))} must be"):
            PlanSettings(**bad).check()
    with pytest.raises(ConfigError, match="horizon must be a positive integer"):
        build_planner("beam", SHAPES, 0)
    with pytest.raises(ConfigError, match="samples must be a positive integer"):
        build_planner("cem", BOX, 2, samples=0)
    with pytest.raises(ConfigError, match="does not plan discrete actions"):
        build_planner("mppi", SHAPES, 2)
    with pytest.raises(ConfigError, match="does not plan continuous actions"):
        build_planner("beam", BOX, 2)
    with pytest.raises(ConfigError, match="sequences per episode"):
        build_planner("exhaustive", SHAPES, 5).plan(slot_model(), torch.zeros(1, 5, 2), GoalCost(torch.zeros(1, 5, 2)),
                                                    SHAPES)
    with pytest.raises(ConfigError, match="has no reward"):
        evaluate_planning(slot_model(), "worldssl/Shapes-v0", {}, 1, PlanSettings(cost="reward"))


def test_bench_plan_measures_both_sides():
    from omegaconf import OmegaConf

    from worldssl.bench.plan import run

    rows = run(OmegaConf.create({"plan_episodes": 2, "repeats": 1, "device": "cpu",
                                 "plan_cases": ["shapes64_exhaustive"]}))
    # a GNN search tree gets a second row: its shared edge messages against next() on every (latent, action) row
    assert [r.name for r in rows] == ["plan shapes64_exhaustive: GNN-64, exhaustive h=1",
                                      "plan shapes64_exhaustive shared edge messages"]
    assert all(r.ours > 0 and r.baseline > 0 and r.ratio is not None for r in rows)
    rows = run(OmegaConf.create({"plan_episodes": 2, "repeats": 1, "device": "cpu", "plan_cases": ["maze_mppi"]}))
    assert len(rows) == 1  # no tree, no second row
    with pytest.raises(ConfigError, match="unknown plan_cases"):
        run(OmegaConf.create({"plan_cases": ["nope"], "device": "cpu"}))

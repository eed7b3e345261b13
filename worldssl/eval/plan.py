"""Planning success: can an agent reach a goal by planning with a trained world model?

**Shapes and Cubes.** Each episode starts from a random state; its goal is the state after ``n`` random
actions, shown to the planner as an image. The true shortest distance to the goal is found by a search over
the true grid state (A* under the sum of Manhattan distances, which is exact here: a push moves one object
by one cell; tested against breadth-first search), because random actions cancel or are blocked, and the
results are reported by that distance (1, 2, 3, 5, 8, 10 by default), ``episodes`` per distance. The planner
replans at every step; an episode succeeds when the env's true object positions equal the goal's within
``budget_factor`` times the true distance. In the same run and on the same episodes: a random policy and
the oracle that follows a shortest path on the true state (the ceiling).

**The maze.** Each episode starts from a random pose (the centre of a random free cell, random heading); the
goal is the pose after ``maze_goal_steps`` random actions (a walk ending closer than two success radii to the
start is drawn again), shown as the egocentric frame seen there. Success:
within ``maze_radius`` metres of the goal position within ``maze_steps`` steps; against a random policy. With
``cost=reward`` the goal is the maze's own target object (reward +1 there) and the planner maximises the
predicted return instead.

All episodes of an evaluation are planned in one batch (:class:`agents.planning.MPC`), each with its own
random generator, so ``batched=false`` (one episode at a time, the same plans) differs only in speed.
Planning time per step is the wall time of a planning call shared among the episodes it planned.

Summary keys: ``plan/success/<d>`` (%), ``plan/steps/<d>`` (mean steps of the successful episodes),
``plan/ms_per_step/<d>``, ``plan/random/...`` and ``plan/oracle/...`` alike, with ``<d>`` a true distance or
``all``. :func:`planning_table` and :func:`planning_plot` sum them up over seeds for ``worldssl compare``.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldssl.runtime.errors import ConfigError
from worldssl.runtime.settings import (
    Settings,
    boolean,
    integer,
    list_of,
    one_of,
    positive,
    positive_int,
    setting,
)

log = logging.getLogger("worldssl.plan")
GRID_ENVS = ("worldssl/Shapes-v0", "worldssl/Cubes-v0", "worldssl/Cubes-v1")
MAZE_ENVS = ("worldssl/Maze-v0",)


@dataclasses.dataclass
class PlanSettings(Settings):
    """``eval plan``'s checked keys (and the world-model runs' ``plan_*`` keys)."""

    planner: str = setting("exhaustive", one_of("exhaustive", "beam", "cem", "mppi"),
                           "exhaustive | beam | cem (discrete actions); cem | mppi (continuous)")
    horizon: int = setting(1, positive_int, "planning horizon (steps)")
    beam_width: int = setting(8, positive_int, "beam: prefixes kept per depth")
    samples: int = setting(256, positive_int, "cem / mppi: sequences drawn per iteration and episode")
    elites: int = setting(32, positive_int, "cem: sequences the distribution is refit to")
    iterations: int = setting(4, positive_int, "cem / mppi: refinements per planning step")
    temperature: float = setting(0.1, positive, "mppi: softmax temperature on costs rescaled to [0, 1]")
    cost: str = setting("goal", one_of("goal", "reward"), "goal: latent distance to the goal image; reward: "
                        "negative predicted return (needs a reward head; maze only)")
    aggregate: str = setting("min", one_of("min", "sum", "last"),
                             "goal cost of a candidate: its closest approach, the sum over steps, or the last step")
    distances: tuple[int, ...] = setting((1, 2, 3, 5, 8, 10), list_of(positive_int),
                                         "Shapes / Cubes: true goal distances evaluated")
    episodes: int = setting(20, positive_int, "Shapes / Cubes: episodes per distance; the maze: episodes")
    budget_factor: float = setting(2.0, positive, "Shapes / Cubes: step budget = factor x true distance")
    maze_steps: int = setting(30, positive_int, "the maze: step budget T")
    maze_goal_steps: int = setting(10, positive_int, "the maze: random actions from the start to the goal pose")
    maze_radius: float = setting(0.5, positive, "the maze: success radius (metres)")
    baselines: bool = setting(True, boolean, "also run the random policy (and, on grids, the shortest-path oracle)")
    batched: bool = setting(True, boolean, "plan all episodes in one batch (false: one episode at a time)")
    chunk: int = setting(4096, positive_int, "model rows per call while planning")
    seed: int = setting(0, integer, "seeds the episodes and the planners' draws")

    def planner_options(self) -> dict[str, Any]:
        return {"width": self.beam_width, "samples": self.samples, "elites": self.elites,
                "iterations": self.iterations, "temperature": self.temperature, "chunk": self.chunk}


# ------------------------------------------------------------------------------------------------ grid truth
def grid_step(positions: np.ndarray, action: int, grid_size: int) -> np.ndarray:
    """C-SWM's push dynamics on ``(K, 2)`` positions (what ``envs.gridworld`` does), returning a new array."""
    from envs.gridworld import DIRECTIONS

    obj, direction = divmod(int(action), 4)
    target = positions[obj] + DIRECTIONS[direction]
    out = positions.copy()
    if target.min() >= 0 and target.max() < grid_size and not (positions == target).all(axis=1).any():
        out[obj] = target
    return out


def shortest_path(start: np.ndarray, goal: np.ndarray, grid_size: int) -> list[int]:
    """A shortest action sequence from ``start`` to ``goal`` positions ``(K, 2)`` on the true grid.

    A* with the sum of the objects' Manhattan distances to their goals: a push moves one object one cell, so
    that sum is a consistent lower bound and the first path popped at the goal is shortest. States are tuples
    of cell indices and moves come from a neighbour table (plain Python: numpy's per-call overhead made the
    same search 50x slower). Raises ``ValueError`` if the goal cannot be reached."""
    g, k = int(grid_size), len(start)
    cells = [int(r) * g + int(c) for r, c in np.asarray(start)]
    target = tuple(int(r) * g + int(c) for r, c in np.asarray(goal))
    neighbour = _neighbours(g)
    rows, cols = [c // g for c in range(g * g)], [c % g for c in range(g * g)]

    def h(state: tuple[int, ...]) -> int:
        return sum(abs(rows[a] - rows[b]) + abs(cols[a] - cols[b]) for a, b in zip(state, target))

    first = tuple(cells)
    frontier = [(h(first), 0, 0, first)]
    parent: dict[tuple[int, ...], tuple[tuple[int, ...], int] | None] = {first: None}
    best = {first: 0}
    counter = 0
    while frontier:
        _, _, cost, state = heapq.heappop(frontier)
        if state == target:
            path = []
            while parent[state] is not None:
                state, action = parent[state]
                path.append(action)
            return path[::-1]
        if cost > best[state]:
            continue
        occupied = set(state)
        for obj in range(k):
            for direction, cell in enumerate(neighbour[state[obj]]):
                if cell < 0 or cell in occupied:
                    continue
                nxt = state[:obj] + (cell,) + state[obj + 1:]
                if cost + 1 < best.get(nxt, 1 << 30):
                    best[nxt], parent[nxt] = cost + 1, (state, 4 * obj + direction)
                    counter += 1
                    heapq.heappush(frontier, (cost + 1 + h(nxt), counter, cost + 1, nxt))
    raise ValueError("goal unreachable")


def _neighbours(g: int) -> list[tuple[int, int, int, int]]:
    """Per cell, the cell reached up / right / down / left (``envs.gridworld.DIRECTIONS``), -1 off the grid."""
    from envs.gridworld import DIRECTIONS

    out = []
    for cell in range(g * g):
        r, c = divmod(cell, g)
        out.append(tuple((r + dr) * g + (c + dc) if 0 <= r + dr < g and 0 <= c + dc < g else -1
                         for dr, dc in DIRECTIONS.tolist()))
    return out


def grid_tasks(num_objects: int, grid_size: int, distances: Sequence[int], episodes: int,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``episodes`` (start, goal) pairs per true distance: a random start, the goal after ``n`` random actions
    (``n`` drawn in ``[d, 2d]``), kept when the true distance is ``d``. Returns ``starts`` and ``goals``
    ``(E, K, 2)`` and ``distance`` ``(E,)``, ordered by distance."""
    rng = np.random.default_rng(seed)
    starts, goals, dist = [], [], []
    for d in distances:
        found, tries = 0, 0
        while found < episodes:
            tries += 1
            if tries > 1000 * episodes:
                raise ConfigError(f"found only {found} of {episodes} goals at true distance {d} in {tries - 1} "
                                  f"random walks; use smaller distances")
            cells = rng.choice(grid_size * grid_size, size=num_objects, replace=False)
            start = np.stack(np.divmod(cells, grid_size), axis=1).astype(np.int64)
            pos = start
            for a in rng.integers(4 * num_objects, size=int(rng.integers(d, 2 * d + 1))):
                pos = grid_step(pos, int(a), grid_size)
            if np.abs(pos - start).sum() > d or len(shortest_path(start, pos, grid_size)) != d:  # Manhattan <= true
                continue
            starts.append(start)
            goals.append(pos)
            dist.append(d)
            found += 1
    return np.stack(starts), np.stack(goals), np.asarray(dist)


# ------------------------------------------------------------------------------------------------ episodes
class _Stack:
    """Per-episode frame stacks ``(E, k*C, H, W)``, the first frame repeated at the start (as ``FrameStack``)."""

    def __init__(self, frames: np.ndarray, k: int):
        self.k, self.c = int(k), frames.shape[1]
        self.obs = np.concatenate([frames] * self.k, axis=1)

    def push(self, ids: np.ndarray, frames: np.ndarray) -> None:
        self.obs[ids] = np.concatenate([self.obs[ids][:, self.c:], frames], axis=1)


class GridEpisodes:
    """Shapes / Cubes episodes on one shared env: each episode's state is its object positions."""

    def __init__(self, env: Any, starts: np.ndarray, goals: np.ndarray, budgets: np.ndarray, frame_stack: int):
        self.env = env.unwrapped
        self.positions, self.goals, self.budgets = starts.copy(), goals, budgets
        self.goal_obs = _Stack(np.stack([self.env.set_positions(g) for g in goals]), frame_stack).obs
        self.stack = _Stack(np.stack([self.env.set_positions(s) for s in starts]), frame_stack)
        self.n_actions = int(self.env.action_space.n)

    def step(self, ids: np.ndarray, actions: np.ndarray) -> None:
        frames = []
        for i, a in zip(ids, actions):
            self.env.set_positions(self.positions[i])
            frame, _, _, _, info = self.env.step(int(a))
            self.positions[i] = info["positions"]
            frames.append(frame)
        self.stack.push(ids, np.stack(frames))

    def reached(self, ids: np.ndarray) -> np.ndarray:
        return (self.positions[ids] == self.goals[ids]).all(axis=(1, 2))

    def random_actions(self, rngs: list[np.random.Generator], ids: np.ndarray) -> np.ndarray:
        return np.asarray([rngs[i].integers(self.n_actions) for i in ids], dtype=np.int64)

    def oracle_actions(self, ids: np.ndarray) -> np.ndarray:
        return np.asarray([shortest_path(self.positions[i], self.goals[i], self.env.grid_size)[0] for i in ids])


class MazeEpisodes:
    """Maze episodes on one shared env (one layout and goal objects, reset once): each episode's state is its
    pose ``(x, y, yaw)``; a goal is a pose (``goal_xy``) and its egocentric frame, or the target object."""

    def __init__(self, env: Any, episodes: int, settings: PlanSettings, frame_stack: int):
        from envs.maze import cell_to_xy, free_cells

        self.env = env.unwrapped
        self.env.reset(seed=settings.seed)
        self.radius = settings.maze_radius
        self.budgets = np.full(episodes, settings.maze_steps)
        rng = np.random.default_rng(settings.seed)
        cells = free_cells(self.env.grid)
        self.reward_goal = settings.cost == "reward"
        if self.reward_goal:
            self.radius = float(self.env.goal_radius)
        target = self.env.goal_positions[0]
        self.poses = np.zeros((episodes, 3))
        for i in range(episodes):
            while True:  # reward: never start within two radii of the target object
                xy = cell_to_xy(self.env.grid.shape, cells[int(rng.integers(len(cells)))])
                if not self.reward_goal or np.hypot(*(xy - target)) >= 2 * self.radius:
                    break
            self.poses[i] = (xy[0], xy[1], rng.uniform(-np.pi, np.pi))
        if self.reward_goal:
            self.goal_xy = np.repeat(self.env.goal_positions[:1], episodes, axis=0)
            self.goal_obs = None
        else:
            self.goal_xy, goal_frames = self._goal_poses(rng, settings.maze_goal_steps)
            self.goal_obs = _Stack(goal_frames, frame_stack).obs
        self.stack = _Stack(np.stack([self.env.set_pose(*p) for p in self.poses]), frame_stack)

    def _goal_poses(self, rng: np.random.Generator, steps: int, tries: int = 50) -> tuple[np.ndarray, np.ndarray]:
        """Per start pose, the pose after ``steps`` random actions, walks redrawn (up to ``tries``, else the
        farthest is kept) until it ends at least two success radii from the start, so no episode starts solved."""
        xy, frames = [], []
        for pose in self.poses:
            best = (-1.0, None, None)
            for _ in range(tries):
                self.env.set_pose(*pose)
                for _ in range(steps):
                    frame, _, _, _, info = self.env.step(self._random(rng))
                far = float(np.hypot(*(info["pose"][:2] - pose[:2])))
                if far > best[0]:
                    best = (far, info["pose"][:2].copy(), frame)
                if far >= 2 * self.radius:
                    break
            xy.append(best[1])
            frames.append(best[2])
        return np.asarray(xy, dtype=np.float64), np.stack(frames)

    def _random(self, rng: np.random.Generator) -> Any:
        space = self.env.action_space
        if hasattr(space, "n"):
            return int(rng.integers(space.n))
        return rng.uniform(space.low, space.high).astype(np.float32)

    def step(self, ids: np.ndarray, actions: np.ndarray) -> None:
        frames = []
        for i, a in zip(ids, actions):
            self.env.set_pose(*self.poses[i])
            frame, _, _, _, info = self.env.step(a)
            self.poses[i] = info["pose"]
            frames.append(frame)
        self.stack.push(ids, np.stack(frames))

    def reached(self, ids: np.ndarray) -> np.ndarray:
        return np.hypot(*(self.poses[ids, :2] - self.goal_xy[ids]).T) < self.radius

    def random_actions(self, rngs: list[np.random.Generator], ids: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(self._random(rngs[i])) for i in ids])


def closed_loop(world: Any, act: Callable[[np.ndarray], np.ndarray], ids: np.ndarray) -> dict[str, np.ndarray]:
    """Run episodes ``ids`` of ``world`` together: at each step, ``act(active ids)`` gives the actions of the
    episodes still running (not yet at the goal, budget left). Returns per-episode ``success``, ``steps`` and
    ``seconds`` (each planning call's time shared by the episodes it planned), indexed like ``ids``."""
    ids = np.asarray(ids)
    success = world.reached(ids)
    steps = np.zeros(len(ids), dtype=np.int64)
    seconds = np.zeros(len(ids))
    budgets = world.budgets[ids]
    while True:
        running = np.flatnonzero(~success & (steps < budgets))
        if not len(running):
            break
        t0 = time.perf_counter()
        actions = act(ids[running])
        seconds[running] += (time.perf_counter() - t0) / len(running)
        world.step(ids[running], actions)
        steps[running] += 1
        success[running] = world.reached(ids[running])
    return {"success": success, "steps": steps, "seconds": seconds}


def run_policy(world: Any, act: Callable[[np.ndarray], np.ndarray], batched: bool) -> dict[str, np.ndarray]:
    """:func:`closed_loop` over every episode, in one batch or one episode at a time."""
    n = len(world.budgets)
    if batched:
        return closed_loop(world, act, np.arange(n))
    parts = [closed_loop(world, act, np.array([i])) for i in range(n)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


# ------------------------------------------------------------------------------------------------ evaluation
def env_for_model(spec: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
    """``(env id, env kwargs, frame stack)`` a world model was trained on, from its ``model.json`` spec and the
    manifest of its training set (kwargs default to the env's when that dataset is gone)."""
    env_id = spec.get("env_id")
    kwargs: dict[str, Any] = {}
    manifest = Path(str(spec.get("dataset", ""))) / "manifest.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        env_id, kwargs = m.get("env_id", env_id), dict(m.get("env_kwargs") or {})
    else:
        log.warning("the model's training set %s is gone: planning in %s with its default settings",
                    spec.get("dataset"), env_id)
    if env_id is None:
        raise ConfigError("the world model's model.json names no env (env_id); retrain it with this worldssl")
    if env_id not in GRID_ENVS + MAZE_ENVS:
        raise ConfigError(f"planning success is defined for Shapes, Cubes and the maze; this model was trained on "
                          f"{env_id}")
    import envs

    channels = envs.make(env_id, frame_stack=1, **kwargs).observation_space.shape[0]
    stack = max(1, int(spec["obs_shape"][0]) // int(channels))
    return env_id, kwargs, stack


def action_space_of(env: Any) -> Any:
    from agents.planning import ActionSpace

    space = env.action_space
    if hasattr(space, "n"):
        return ActionSpace(True, int(space.n))
    return ActionSpace(False, int(np.prod(space.shape)), float(np.min(space.low)), float(np.max(space.high)))


def evaluate_planning(model: torch.nn.Module, env_id: str, env_kwargs: dict[str, Any], frame_stack: int,
                      settings: PlanSettings, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Planning success of ``model`` in ``env_id`` (Shapes, Cubes or the maze): the summary keys described in
    the module docstring. Bad combinations (another action space, a cost the model cannot compute, a planner
    for the other kind of actions) are one-line :class:`ConfigError`s."""
    import envs
    from agents.planning import (
        MPC,
        GoalCost,
        RewardCost,
        build_planner,
        check_action_space,
        check_goal_model,
        episode_generators,
    )

    settings.check()
    wall, cpu = time.perf_counter(), time.process_time()
    if env_id not in GRID_ENVS + MAZE_ENVS:
        raise ConfigError(f"planning success is defined for Shapes, Cubes and the maze, not {env_id}")
    grid = env_id in GRID_ENVS
    if grid and settings.cost == "reward":
        raise ConfigError(f"{env_id} has no reward (it is always 0): use cost=goal there; cost=reward plans on the maze")
    env = envs.make(env_id, frame_stack=1, **env_kwargs)
    space = action_space_of(env)
    check_action_space(model, space, env_id)
    planner = build_planner(settings.planner, space, settings.horizon, **settings.planner_options())
    model = model.to(device).eval()
    u = env.unwrapped
    tasks = grid_tasks(u.num_objects, u.grid_size, settings.distances, settings.episodes, settings.seed) \
        if grid else None
    world = _episodes(env, settings, frame_stack, tasks)
    want = getattr(getattr(model, "encoder", None), "obs_shape", None)
    if want is not None and tuple(want) != world.stack.obs.shape[1:]:
        raise ConfigError(f"the world model takes observations {tuple(want)} but {env_id} gives "
                          f"{world.stack.obs.shape[1:]} ({frame_stack} stacked); plan in the env (and image size) "
                          f"the model was trained on")
    if settings.cost == "goal":
        check_goal_model(model, world.goal_obs.shape[1:])
        with torch.no_grad():
            goal = torch.cat([model.encode(torch.from_numpy(world.goal_obs[i:i + 256]).to(device)).float()
                              for i in range(0, len(world.goal_obs), 256)])
        cost = GoalCost(goal, settings.aggregate)
    else:
        cost = RewardCost(model)
    mpc = MPC(model, planner, space, device)
    n = len(world.budgets)
    generators = episode_generators(settings.seed, np.arange(n))
    results = {"planner": run_policy(world, lambda ids: mpc.act(world.stack.obs[ids], cost, ids,
                                                                [generators[i] for i in ids]), settings.batched)}
    if settings.baselines:
        fresh = _episodes(env, settings, frame_stack, tasks)
        rngs = [np.random.default_rng([settings.seed, i]) for i in range(n)]
        results["random"] = closed_loop(fresh, lambda ids: fresh.random_actions(rngs, ids), np.arange(n))
        if grid:
            fresh = _episodes(env, settings, frame_stack, tasks)
            results["oracle"] = closed_loop(fresh, fresh.oracle_actions, np.arange(n))
    env.close()
    out = summarize_planning(results, getattr(world, "distance", None))
    # the whole evaluation (tasks, goal encodings, planner and baselines): wall and this process's CPU seconds
    out["plan/seconds"], out["plan/cpu_seconds"] = time.perf_counter() - wall, time.process_time() - cpu
    return out


def _episodes(env: Any, settings: PlanSettings, frame_stack: int, tasks: tuple | None) -> Any:
    """Fresh episodes: the maze's (drawn from the seed), or the grid's ``tasks`` from :func:`grid_tasks`."""
    if tasks is None:
        return MazeEpisodes(env, settings.episodes, settings, frame_stack)
    starts, goals, dist = tasks
    world = GridEpisodes(env, starts, goals, np.ceil(settings.budget_factor * dist).astype(np.int64), frame_stack)
    world.distance = dist
    return world


def summarize_planning(results: dict[str, dict[str, np.ndarray]], distance: np.ndarray | None) -> dict[str, Any]:
    """Per-method, per-distance summary keys: ``plan/[<method>/]{success,steps,ms_per_step}/<d>``."""
    out: dict[str, Any] = {}
    n = len(next(iter(results.values()))["success"])
    groups = {"all": np.arange(n)}
    if distance is not None:
        groups.update({str(int(d)): np.flatnonzero(distance == d) for d in np.unique(distance)})
    for method, r in results.items():
        prefix = "plan/" if method == "planner" else f"plan/{method}/"
        for key, rows in groups.items():
            ok = r["success"][rows]
            out[f"{prefix}success/{key}"] = float(ok.mean() * 100.0)
            out[f"{prefix}steps/{key}"] = float(r["steps"][rows][ok].mean()) if ok.any() else None
            steps = r["steps"][rows].sum()
            out[f"{prefix}ms_per_step/{key}"] = float(r["seconds"][rows].sum() / max(steps, 1) * 1000.0)
    out["plan/episodes"] = n
    return out


def _distance_keys(summary: dict[str, Any]) -> list[str]:
    keys = {k.rsplit("/", 1)[1] for k in summary if k.startswith("plan/success/")}
    return sorted((k for k in keys if k != "all"), key=int) + ["all"]


def format_planning(summary: dict[str, Any], label: str = "planner") -> str:
    """A terminal table of one evaluation: success %, mean steps of the successes and ms of planning per step,
    per true distance (``all``: every episode), for the planner and the baselines it ran."""
    keys = _distance_keys(summary)
    header = ["policy", "measure", *[f"d={k}" if k != "all" else "all" for k in keys]]
    body = []
    for method, name in (("", label), ("random/", "random"), ("oracle/", "shortest-path oracle")):
        if f"plan/{method}success/all" not in summary:
            continue
        for measure, fmt in (("success %", "{:.0f}"), ("steps", "{:.1f}"), ("ms/step", "{:.2f}")):
            if method and measure == "ms/step":
                continue
            key = {"success %": "success", "steps": "steps", "ms/step": "ms_per_step"}[measure]
            cells = [summary.get(f"plan/{method}{key}/{k}") for k in keys]
            body.append([name, measure, *["-" if v is None else fmt.format(v) for v in cells]])
    return _text_table(header, body)


def _text_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


# ------------------------------------------------------------------------------------------------ comparison
def _plan_columns(rows: list[dict[str, Any]], steps: Sequence[int]) -> tuple[list[str], list[list[str]]] | None:
    """Columns of the comparison's planning table (None when no run planned): Hits@1 at the first and last
    prediction step, then planning success at each distance, ``mean ± ci95`` over seeds; then the baselines."""
    from worldssl.eval.report import _cell

    keys = sorted({k.rsplit("/", 1)[1] for r in rows for k in r["metrics"] if k.startswith("plan/success/")},
                  key=lambda k: (k == "all", int(k) if k != "all" else 0))
    if not keys:
        return None
    hits = [k for k in (steps[0], steps[-1]) if any(f"eval/hits@1/{k}" in r["metrics"] for r in rows)]
    hits = list(dict.fromkeys(hits))
    header = ["objective", "seeds", *[f"Hits@1 {k}" for k in hits], *[f"plan d={k}" if k != "all" else "plan all"
                                                                          for k in keys]]
    body = []
    for r in rows:
        body.append([r["objective"], str(r["n"]), *[_cell(r, f"eval/hits@1/{k}") for k in hits],
                     *[_cell(r, f"plan/success/{k}", 0) for k in keys]])
    for method, name in (("random", "random policy"), ("oracle", "shortest-path oracle")):
        r = next((r for r in rows if f"plan/{method}/success/all" in r["metrics"]), None)
        if r is not None:
            body.append([name, str(r["n"]), *["" for _ in hits], *[_cell(r, f"plan/{method}/success/{k}", 0)
                                                                  for k in keys]])
    return header, body


def planning_table(rows: list[dict[str, Any]], steps: Sequence[int] = (1, 10), markdown: bool = False) -> str | None:
    """The comparison's planning table (rows from :func:`worldssl.eval.report.aggregate`), as text or markdown;
    None when no run evaluated planning."""
    cols = _plan_columns(rows, steps)
    if cols is None:
        return None
    header, body = cols
    if not markdown:
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        fmt = [lambda c, w: c.ljust(w)] + [lambda c, w: c.rjust(w)] * (len(header) - 1)
        lines = ["  ".join(f(c, w) for f, c, w in zip(fmt, cells, widths)) for cells in [header, *body]]
        return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def planning_plot(rows: list[dict[str, Any]], path: str | Path) -> Path | None:
    """Success (%) against true distance, one line per objective with 95% CI error bars, the random policy
    and the oracle dashed; None when no run evaluated planning at several distances."""
    from worldssl.runtime.io import save_figure

    curves = []
    for method in ("", "random/", "oracle/"):  # the objectives, then each baseline once (the same episodes)
        for r in rows:
            name = {"": r["objective"], "random/": "random policy", "oracle/": "shortest-path oracle"}[method]
            pts = sorted((int(k.rsplit("/", 1)[1]), m["mean"], m["ci95"]) for k, m in r["metrics"].items()
                         if k.startswith(f"plan/{method}success/") and k.rsplit("/", 1)[1].isdigit() and m["values"])
            if pts and name not in [c[0] for c in curves]:
                curves.append((name, bool(method), pts))
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, baseline, pts in curves:
        xs, ys, errs = zip(*pts)
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=name, linestyle="--" if baseline else "-")
    ax.set(xlabel="true distance to the goal (steps)", ylabel="planning success (%)", ylim=(-3, 103),
           title="planning success vs distance")
    ax.set_xticks(sorted({x for _, _, pts in curves for x, _, _ in pts}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def planning_section(rows: list[dict[str, Any]], directory: Path, steps: Sequence[int]) -> dict[str, Any] | None:
    """For ``worldssl compare``: print the planning table, write ``planning.png``; returns what the report
    appends (:func:`append_planning`), or None when no run evaluated planning."""
    table = planning_table(rows, steps)
    if table is None:
        return None
    print(table)
    plot = planning_plot(rows, Path(directory) / "planning.png")
    return {"table": table, "markdown": planning_table(rows, steps, markdown=True),
            "plot": None if plot is None else plot.name}


def append_planning(report: Path, section: dict[str, Any] | None) -> None:
    """Append the planning table and plot to a comparison's ``report.md`` (rewritten atomically)."""
    if section is None:
        return
    from worldssl.eval.report import append_section

    body = [section["markdown"], "",
            "Success in percent (mean ± 95% CI over seeds) of closed-loop planning to a goal image, by the true "
            "shortest distance to the goal; Hits@1 (%) beside. Baselines on the same episodes."]
    if section["plot"]:
        body += ["", f"![planning success vs distance]({section['plot']})"]
    append_section(report, "Planning success", "\n".join(body))

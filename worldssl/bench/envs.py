"""``worldssl bench envs``: env steps/s with rendering, DMC against stock dm_control rendering, dataset bytes."""

from __future__ import annotations

import tempfile
from typing import Any

import numpy as np

import envs
from envs.dmc import default_action_repeat
from worldssl.bench.common import Row, median_rate

#: (label, env id, kwargs, target steps/s) for the non-DMC families at their default sizes
FAMILIES = [
    ("shapes 50x50", "worldssl/Shapes-v0", {}, 2000),
    ("cubes 50x50", "worldssl/Cubes-v1", {}, 150),
    ("maze 64x64", "worldssl/Maze-v0", {"image_size": 64}, 100),
    ("miniworld 64x64", "worldssl/MiniWorld-v0", {}, None),
]


def rollout_rate(env, steps: int, repeats: int, seed: int = 0) -> float:
    """Median env steps/s over ``repeats`` runs of ``steps`` random-action steps (resets included)."""
    env.reset(seed=seed)
    env.action_space.seed(seed)

    def run() -> int:
        for _ in range(steps):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                env.reset()
        return steps

    run()  # warm-up: first render allocates the GL context
    return median_rate(run, repeats)


class StockDMCPixels:
    """The baseline: dm_control's own ``physics.render`` with its default scene, same task and action repeat.

    This is what a plain pixel wrapper of dm_control (the dmc2gym pattern) costs per step.
    """

    def __init__(self, domain: str, task: str, image_size: int = 84, camera_id: int = 0):
        from dm_control import suite

        self._env = suite.load(domain, task, task_kwargs={"random": 0})
        self.repeat = default_action_repeat(domain)
        self.size, self.camera_id = image_size, camera_id
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum, spec.maximum
        self._rng = np.random.default_rng(0)

    def rate(self, steps: int, repeats: int) -> float:
        self._env.reset()

        def run() -> int:
            for _ in range(steps):
                action = self._rng.uniform(self._low, self._high)
                for _ in range(self.repeat):
                    ts = self._env.step(action)
                    if ts.last():
                        break
                self._env.physics.render(self.size, self.size, camera_id=self.camera_id).transpose(2, 0, 1).copy()
                if ts.last():
                    self._env.reset()
            return steps

        run()
        return median_rate(run, repeats)


def family_rows(steps: int, repeats: int) -> list[Row]:
    rows = []
    for label, env_id, kwargs, target in FAMILIES:
        try:
            env = envs.make(env_id, **kwargs)
        except Exception as e:  # an optional extra that is not installed is reported, not hidden
            print(f"  {label}: not measured ({type(e).__name__}: {str(e).splitlines()[0]})")
            continue
        n = steps if target is None or target < 1000 else steps * 10
        rate = rollout_rate(env, n, repeats)
        env.close()
        rows.append(Row(label, "env steps/s (rendering)", rate, target=f">= {target}" if target else ""))
        print(f"  {label}: {rate:,.0f} steps/s", flush=True)
    return rows


def dmc_rows(tasks: list[str], steps: int, repeats: int) -> list[Row]:
    rows = []
    for task in tasks:
        domain, _, name = task.partition("-")
        ours = envs.make("worldssl/DMC-v0", domain=domain, task=name, frame_stack=1)
        ours_rate = rollout_rate(ours, steps, repeats)
        ours.close()
        stock_rate = StockDMCPixels(domain, name).rate(steps, repeats)
        rows.append(Row(f"dmc {task} 84x84", "env steps/s (rendering)", ours_rate, stock_rate,
                        "stock dm_control render", ">= 3x"))
        print(f"  dmc {task}: ours {ours_rate:,.0f} vs stock {stock_rate:,.0f} steps/s "
              f"({ours_rate / stock_rate:.2f}x)", flush=True)
    return rows


def memory_rows() -> list[Row]:
    """Bytes per stored transition in our episode files vs storing obs and next_obs per transition."""
    from worldssl.data import CollectSpec, EpisodeDataset, collect

    cases = [
        ("shapes", "worldssl/Shapes-v0", {}, 20, "C-SWM layout: obs+next_obs float32", 4),
        ("dmc cartpole-swingup", "worldssl/DMC-cartpole-swingup-v0", {}, 20, "SB3 replay: obs+next_obs uint8 (3 frames)", 1),
    ]
    rows = []
    for label, env_id, kwargs, length, baseline_name, itemsize in cases:
        with tempfile.TemporaryDirectory() as tmp:
            collect(CollectSpec(env_id, kwargs, tmp, episodes=2, max_episode_steps=length), progress=False)
            ds = EpisodeDataset(tmp)
            ours = ds.nbytes() / ds.num_transitions
            stacked = int(np.prod(ds.obs_shape))
            baseline = 2 * stacked * itemsize
        rows.append(Row(f"dataset {label}", "bytes / transition (lower is better)", ours, baseline, baseline_name,
                        "<= 1 byte/pixel"))
        print(f"  dataset {label}: {ours:,.0f} bytes/transition vs {baseline:,.0f} ({baseline_name})", flush=True)
    return rows


def run(cfg: Any) -> list[Row]:
    print(f"bench envs: median of {cfg.repeats} runs, {cfg.steps} steps each (x10 for fast envs), random actions")
    return family_rows(int(cfg.steps), int(cfg.repeats)) + dmc_rows(list(cfg.dmc_tasks), int(cfg.steps),
                                                                      int(cfg.repeats)) + memory_rows()

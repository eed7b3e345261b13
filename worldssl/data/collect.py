"""Collect episodes from any registered env into a dataset directory, resumably and in parallel.

Episode ``i`` is always collected with the seed ``episode_seed(seed, i)``, whichever worker runs it and
however often the command was interrupted, so a resumed or parallel collection writes the same data as a
single uninterrupted one.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from worldssl.data.episodes import list_episode_files, read_manifest, write_episode, write_manifest
from worldssl.runtime.errors import ConfigError, DataError

POLICIES = ("random",)
#: manifest fields that must match for a rerun to append to an existing dataset
_IDENTITY = ("env_id", "env_kwargs", "max_episode_steps", "seed", "policy")


@dataclass(frozen=True)
class CollectSpec:
    """What to collect; plain data so it crosses process boundaries."""

    env_id: str
    env_kwargs: dict[str, Any]
    out: str
    episodes: int
    seed: int = 0
    policy: str = "random"
    max_episode_steps: int | None = None
    frame_stack: int | None = None  # recorded for readers; frames are stored unstacked

    def make_env(self):
        import envs

        return envs.make(self.env_id, frame_stack=1, max_episode_steps=self.max_episode_steps, **self.env_kwargs)


@dataclass
class CollectResult:
    out: Path
    episodes: int
    transitions: int
    new_episodes: int
    new_transitions: int
    seconds: float
    returns: list[float]

    @property
    def steps_per_second(self) -> float:
        return self.new_transitions / self.seconds if self.seconds > 0 else float("nan")


def episode_seed(seed: int, index: int) -> int:
    """A well-mixed 31-bit seed for episode ``index`` of a collection seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def space_spec(space) -> dict[str, Any]:
    import gymnasium as gym

    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "shape": [], "dtype": "int64"}
    if isinstance(space, gym.spaces.Box):
        return {"type": "box", "shape": list(space.shape), "dtype": str(space.dtype),
                "low": space.low.tolist(), "high": space.high.tolist()}
    raise ConfigError(f"cannot store actions of space {space}; only Discrete and Box are supported")


def run_episode(env, seed: int, policy: str = "random",
                on_steps: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Roll out one episode and return its arrays in the episode-file layout."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; valid: {', '.join(POLICIES)}")
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames, states = [obs], [info.get("state")]
    actions, rewards, terms, truncs = [], [], [], []
    done, pending = False, 0
    while not done:
        action = env.action_space.sample()
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs)
        states.append(info.get("state"))
        actions.append(action)
        rewards.append(reward)
        terms.append(terminated)
        truncs.append(truncated)
        done = terminated or truncated
        pending += 1
        if on_steps is not None and pending >= 50:
            on_steps(pending)
            pending = 0
    if on_steps is not None and pending:
        on_steps(pending)
    arrays = {
        "obs": np.stack(frames).astype(np.uint8, copy=False),
        "action": np.asarray(actions),
        "reward": np.asarray(rewards, dtype=np.float32),
        "terminated": np.asarray(terms, dtype=bool),
        "truncated": np.asarray(truncs, dtype=bool),
        "seed": np.asarray(seed, dtype=np.int64),
    }
    if arrays["action"].dtype.kind in "iu":
        arrays["action"] = arrays["action"].astype(np.int64)
    else:
        arrays["action"] = arrays["action"].astype(np.float32)
    if all(s is not None for s in states):
        arrays["state"] = np.stack(states).astype(np.float32)
    return arrays


def _manifest_for(spec: CollectSpec, env) -> dict[str, Any]:
    import worldssl

    obs_space = env.observation_space
    _, info = env.reset(seed=0)
    state = info.get("state")
    base = env.unwrapped
    frame_stack = spec.frame_stack
    if frame_stack is None:
        import envs

        frame_stack = envs.ENVS[spec.env_id].frame_stack
    return {
        "env_id": spec.env_id,
        "env_kwargs": spec.env_kwargs,
        "max_episode_steps": spec.max_episode_steps,
        "seed": spec.seed,
        "policy": spec.policy,
        "frame_shape": list(obs_space.shape),
        "frame_stack": int(frame_stack),
        "action_space": space_spec(env.action_space),
        "state_dim": None if state is None else int(np.asarray(state).size),
        "state_names": list(getattr(base, "state_names", []) or []),
        "worldssl_version": worldssl.__version__,
    }


def _check_same(existing: dict[str, Any], wanted: dict[str, Any], out: Path) -> None:
    for key in _IDENTITY:
        if existing.get(key) != wanted.get(key):
            raise DataError(f"dataset {out} was collected with {key}={existing.get(key)!r}, this run asks for "
                            f"{wanted.get(key)!r}; use a new out= directory or the original settings to append")


def _worker(spec: CollectSpec, indices: list[int], messages: mp.Queue) -> None:
    try:
        env = spec.make_env()
        for index in indices:
            arrays = run_episode(env, episode_seed(spec.seed, index), spec.policy,
                                 on_steps=lambda n: messages.put(("steps", n)))
            write_episode(spec.out, index, arrays)
            messages.put(("episode", index, float(arrays["reward"].sum()), len(arrays["action"])))
        env.close()
        messages.put(("finished",))
    except BaseException as e:  # report anything, including KeyboardInterrupt, to the parent
        messages.put(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))


def collect(spec: CollectSpec, workers: int = 1, progress: bool = True,
            on_episode: Callable[[int, float, int], None] | None = None) -> CollectResult:
    """Fill ``spec.out`` up to ``spec.episodes`` episodes; already written episodes are kept, not redone."""
    if spec.episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {spec.episodes}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out = Path(spec.out)
    env = spec.make_env()
    manifest = _manifest_for(spec, env)
    env.close()
    if (out / "manifest.json").exists():
        _check_same(read_manifest(out), manifest, out)
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out} exists and is not a worldssl dataset; choose an empty or new out= directory")
    existing = list_episode_files(out)
    write_manifest(out, {**manifest, "episodes": len(existing)})

    todo = [i for i in range(spec.episodes) if i not in existing]
    start = time.perf_counter()
    done: list[tuple[float, int]] = []

    def record(index: int, ret: float, length: int) -> None:
        done.append((ret, length))
        if on_episode is not None:
            on_episode(index, ret, length)

    if todo and workers == 1:
        _run_inline(spec, todo, progress, record)
    elif todo:
        _run(spec, todo, min(workers, len(todo)), progress, record)
    files = list_episode_files(out)
    manifest["episodes"] = len(files)
    write_manifest(out, manifest)
    transitions = sum(_length(p) for p in files.values())
    return CollectResult(out, len(files), transitions, len(todo), sum(n for _, n in done),
                         time.perf_counter() - start, [r for r, _ in done])


def _length(path: Path) -> int:
    with np.load(path, allow_pickle=False) as z:
        return len(z["reward"])


def _bar(spec: CollectSpec, total: int, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="ep", desc=f"collect {spec.env_id}", disable=not progress, mininterval=0.5)


def _run_inline(spec: CollectSpec, todo: list[int], progress: bool,
                on_episode: Callable[[int, float, int], None]) -> None:
    env, steps, t0 = spec.make_env(), 0, time.perf_counter()
    with _bar(spec, len(todo), progress) as bar:
        for index in todo:
            arrays = run_episode(env, episode_seed(spec.seed, index), spec.policy)
            write_episode(spec.out, index, arrays)
            ret, n = float(arrays["reward"].sum()), len(arrays["action"])
            steps += n
            bar.set_postfix(steps=steps, sps=f"{steps / (time.perf_counter() - t0):.0f}", refresh=False)
            bar.update(1)
            on_episode(index, ret, n)
    env.close()


# The pool stays hand-written: concurrent.futures.ProcessPoolExecutor (spawn context, Python 3.11), tried in a
# stand-alone script, does not keep Ctrl-C prompt. Observed with 2 workers and 20 queued 8-second tasks, SIGINT
# to the parent at 2 s: inside ``with ProcessPoolExecutor(...)`` the KeyboardInterrupt surfaced after 80.6 s
# (``__exit__`` waits for every queued task); with ``shutdown(wait=False, cancel_futures=True)`` in an
# ``except`` the interpreter still exited only after 16.4 s (its exit hook joins the workers, which finish the
# running tasks and the one extra call each has queued). A worker cannot be stopped through the public API
# before Python 3.14's ``terminate_workers()``. Here the parent terminates its workers at once, the episode
# files already written are whole (``write_episode`` renames atomically) and a rerun resumes; the queue also
# carries steps inside an episode, so the progress bar moves during long episodes.
def _run(spec: CollectSpec, todo: list[int], workers: int, progress: bool,
         on_episode: Callable[[int, float, int], None]) -> None:
    ctx = mp.get_context("spawn")  # never fork a process that holds GL contexts or torch threads
    messages: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(spec, todo[w::workers], messages), daemon=True)
             for w in range(workers)]
    for p in procs:
        p.start()
    bar = _bar(spec, len(todo), progress)
    steps, finished, t0 = 0, 0, time.perf_counter()
    try:
        while finished < workers:
            try:
                msg = messages.get(timeout=1.0)
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive() and p.exitcode not in (0, None)]
                if dead:
                    raise RuntimeError(f"a collect worker died with exit code {dead[0].exitcode}") from None
                continue
            if msg[0] == "steps":
                steps += msg[1]
                bar.set_postfix(steps=steps, sps=f"{steps / (time.perf_counter() - t0):.0f}", refresh=False)
            elif msg[0] == "episode":
                bar.update(1)
                on_episode(msg[1], msg[2], msg[3])
            elif msg[0] == "finished":
                finished += 1
            else:
                raise RuntimeError(f"collect worker failed: {msg[1]}\n{msg[2]}")
    finally:
        bar.close()
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=5)

"""Collect episodes from any registered env into a dataset directory, resumably and in parallel.

Episode ``i`` is always collected with the seed ``episode_seed(seed, i)``, whichever worker runs it and
however often the command was interrupted, so a resumed or parallel collection writes the same data as a
single uninterrupted one.

``policy`` is ``random`` (uniform over the action space) or a ``worldssl train`` run directory: its agent acts
(:class:`AgentPolicy`; an ``agent=sb3_ppo | sb3_sac`` run through SB3's ``predict``, :class:`SB3Policy`), on
the stack of its last ``k`` frames as in training, while the dataset stores single frames. The agent's torch RNG
is seeded from the episode seed, so a sampling policy is as reproducible as the random one, whichever process
rolls the episode.
"""

from __future__ import annotations

import dataclasses
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

#: the built-in policies; any other ``policy`` is a ``worldssl train`` run directory
POLICIES = ("random",)
#: how an agent policy acts: ``sample`` from its stochastic policy (as in training), or its ``mean`` action (as in
#: evaluation)
POLICY_MODES = ("sample", "mean")
#: manifest fields that must match for a rerun to append to an existing dataset
_IDENTITY = ("env_id", "env_kwargs", "max_episode_steps", "seed", "policy", "policy_mode")


@dataclass(frozen=True)
class CollectSpec:
    """What to collect; plain data so it crosses process boundaries."""

    env_id: str
    env_kwargs: dict[str, Any]
    out: str
    episodes: int
    seed: int = 0
    policy: str = "random"  # "random" or a `worldssl train` run directory (see resolve_policy)
    max_episode_steps: int | None = None
    frame_stack: int | None = None  # recorded for readers; frames are stored unstacked
    policy_mode: str = "sample"  # agent policies: "sample" or "mean" (ignored by random)

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


def resolve_policy(policy: str) -> str:
    """``random``, or the absolute path of the ``worldssl train`` run directory ``policy`` names (the run or its
    ``checkpoints/``); anything else is a one-line :class:`ConfigError` saying what it is instead."""
    if policy in POLICIES:
        return policy
    path = Path(policy)
    if not path.exists():
        raise ConfigError(f"policy={policy}: no such directory; give {' or '.join(POLICIES)}, or a `worldssl train` "
                          f"run directory")
    from agents.loop import AGENT_JSON

    if (path / "checkpoints" / AGENT_JSON).is_file():
        return str(path.resolve())
    if path.name == "checkpoints" and (path / AGENT_JSON).is_file():
        return str(path.parent.resolve())
    if (path / "model.json").is_file() or (path / "checkpoints" / "model.json").is_file():
        what = "a `worldssl worldmodel` run (it has no policy to act with)"
    elif (path / "encoder.json").is_file() or (path / "checkpoints" / "encoder" / "encoder.json").is_file() \
            or path.suffix in (".pth", ".pt", ".tar", ".ckpt", ".safetensors"):
        what = "an encoder checkpoint (it has no policy to act with)"
    else:
        what = "not a `worldssl train` run directory (no checkpoints/agent.json)"
    raise ConfigError(f"policy={policy} is {what}; give {' or '.join(POLICIES)}, or a `worldssl train` run "
                      f"directory")


class AgentPolicy:
    """A trained agent acting in a single-frame env: it keeps the last ``k`` frames (the first one repeated on
    reset, as :class:`envs.wrappers.FrameStack` does), acts on their stack and rescales its ``[-1, 1]`` actions to
    the env's box exactly as the training loop does (:func:`agents.loop.scale_action`).

    ``mode`` ``sample`` draws from the stochastic policy (``act(obs, eval_mode=False)``), ``mean`` takes its mean
    (``eval_mode=True``). Inference runs on the CPU with one torch thread, so every process computes the same
    actions.
    """

    def __init__(self, run_dir: str | Path, mode: str = "sample"):
        if mode not in POLICY_MODES:
            raise ConfigError(f"policy_mode must be one of {', '.join(POLICY_MODES)}, got {mode!r}")
        self.run_dir = Path(resolve_policy(str(run_dir)))
        self.mode = mode
        self.spec = self._load()
        self.obs_shape = tuple(int(s) for s in self.spec["obs_shape"])
        self.k = 1
        self._frames: list[np.ndarray] = []
        self.checked = False

    def _load(self) -> dict[str, Any]:
        """Load the agent; returns its spec."""
        import torch

        from agents.loop import load_agent

        with torch.random.fork_rng(devices=[]):  # building draws initial weights; the caller's RNG is untouched
            self.agent, spec = load_agent(self.run_dir, device="cpu")
        return spec

    def check_frames(self, env) -> None:
        """A one-line :class:`ConfigError` unless ``env``'s frames stack to the agent's observation; sets ``k``."""
        frame = tuple(env.observation_space.shape)
        obs = self.obs_shape
        if len(frame) != 3 or frame[1:] != obs[1:] or obs[0] % frame[0]:
            raise ConfigError(f"policy={self.run_dir} acts on observations {obs} but the env gives frames {frame}; "
                              f"collect with the run's env (omit env=) or one with the same image size")
        self.k = obs[0] // frame[0]

    def check_env(self, env) -> None:
        """A one-line :class:`ConfigError` unless ``env``'s frames stack to the agent's observation and its action
        space is a box of the agent's action size; sets ``k`` and the action bounds."""
        import gymnasium as gym

        self.check_frames(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box) or tuple(space.shape) != (int(self.spec["action_dim"]),):
            raise ConfigError(f"policy={self.run_dir} outputs {self.spec['action_dim']} continuous action(s) but the "
                              f"env's action space is {space}; collect with the run's env (omit env=)")
        self._low, self._high = space.low.astype(np.float32), space.high.astype(np.float32)
        self.checked = True

    def reset(self, frame: np.ndarray) -> None:
        self._frames = [frame] * self.k

    def observe(self, frame: np.ndarray) -> None:
        self._frames = [*self._frames[1:], frame]

    def observation(self) -> np.ndarray:
        """The agent's input now: the stacked frames ``(k*C, H, W)``."""
        return np.concatenate(self._frames, axis=0)

    def __call__(self) -> np.ndarray:
        """The env action for the current stack."""
        obs = self.observation()
        x = self.agent.encode(obs) if self.agent.caches_features else obs
        from agents.loop import scale_action

        return scale_action(self.agent.act(x, eval_mode=self.mode == "mean"), self._low, self._high)


class SB3Policy(AgentPolicy):
    """A ``worldssl train agent=sb3_ppo | sb3_sac`` run acting through SB3's ``predict`` (``mean``:
    ``deterministic=True``), which also maps its actions onto the env's space (SAC's squashed box, PPO's clipped
    box or discrete index). The model is rebuilt for the env's action space in :meth:`check_env`
    (:func:`agents.sb3.load_model`: safetensors only); a run that precomputed frozen features gets the stack's
    features from its saved encoder, as its :class:`agents.sb3.FrozenFeatures` wrapper computed them."""

    def _load(self) -> dict[str, Any]:
        from agents.loop import read_agent_spec

        self.model = self.features = None
        return read_agent_spec(self.run_dir)[1]

    def check_env(self, env) -> None:
        """A one-line error unless ``env`` fits the run's policy (frames, action space, weights); builds it."""
        import gymnasium as gym

        from agents.sb3 import load_model

        self.check_frames(env)
        self.model, self.features, _ = load_model(self.run_dir, env.action_space)
        self._discrete = isinstance(env.action_space, gym.spaces.Discrete)
        self.checked = True

    def __call__(self) -> np.ndarray:
        from agents.sb3 import encode_frozen

        obs = self.observation()
        x = obs if self.features is None else encode_frozen(self.features, obs)
        action, _ = self.model.predict(x, deterministic=self.mode == "mean")
        return np.int64(action) if self._discrete else action


def load_policy(run_dir: str | Path, mode: str = "sample") -> AgentPolicy:
    """The policy of a ``worldssl train`` run: an :class:`SB3Policy` for ``agent=sb3_*`` runs, else an
    :class:`AgentPolicy`; call ``check_env`` before it acts."""
    from agents.loop import read_agent_spec
    from agents.sb3 import SB3_ALGOS

    run = resolve_policy(str(run_dir))
    return (SB3Policy if read_agent_spec(run)[1].get("agent") in SB3_ALGOS else AgentPolicy)(run, mode)


class _EpisodeRNG:
    """While an agent rolls one episode: torch's CPU RNG seeded from the episode seed and one torch thread; the
    caller's RNG state and thread count are restored afterwards."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        import torch

        self._threads = torch.get_num_threads()
        self._fork = torch.random.fork_rng(devices=[])
        self._fork.__enter__()
        torch.manual_seed(self.seed)
        torch.set_num_threads(1)
        return self

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self._threads)
        return self._fork.__exit__(*exc)


def run_episode(env, seed: int, policy: str | AgentPolicy = "random",
                on_steps: Callable[[int], None] | None = None) -> dict[str, np.ndarray]:
    """Roll out one episode and return its arrays in the episode-file layout.

    ``policy``: ``"random"``, or an :class:`AgentPolicy` (checked against ``env`` with ``check_env`` first).
    """
    if isinstance(policy, AgentPolicy):
        if not policy.checked:
            policy.check_env(env)
        with _EpisodeRNG(seed):
            return _rollout(env, seed, policy, on_steps)
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}; valid: {', '.join(POLICIES)}, or an AgentPolicy")
    return _rollout(env, seed, None, on_steps)


def _rollout(env, seed: int, agent: AgentPolicy | None,
             on_steps: Callable[[int], None] | None) -> dict[str, np.ndarray]:
    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    if agent is not None:
        agent.reset(obs)
    frames, states = [obs], [info.get("state")]
    actions, rewards, terms, truncs = [], [], [], []
    done, pending = False, 0
    while not done:
        action = env.action_space.sample() if agent is None else agent()
        obs, reward, terminated, truncated, info = env.step(action)
        if agent is not None:
            agent.observe(obs)
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
        **({} if spec.policy in POLICIES else {"policy_mode": spec.policy_mode}),
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


def make_policy(spec: CollectSpec, env) -> str | AgentPolicy:
    """``"random"``, or the spec's agent loaded and checked against ``env`` (each worker process loads its own)."""
    if spec.policy in POLICIES:
        return spec.policy
    policy = load_policy(spec.policy, spec.policy_mode)
    policy.check_env(env)
    return policy


def _worker(spec: CollectSpec, indices: list[int], messages: mp.Queue) -> None:
    try:
        env = spec.make_env()
        policy = make_policy(spec, env)
        for index in indices:
            arrays = run_episode(env, episode_seed(spec.seed, index), policy,
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
    if spec.policy not in POLICIES:  # record the run directory as one absolute path, whatever spelling was given
        spec = dataclasses.replace(spec, policy=resolve_policy(spec.policy))
    out = Path(spec.out)
    env = spec.make_env()
    policy = make_policy(spec, env)  # a wrong run or env is one line here, before any worker starts
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
        _run_inline(spec, policy, todo, progress, record)
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


def _run_inline(spec: CollectSpec, policy: str | AgentPolicy, todo: list[int], progress: bool,
                on_episode: Callable[[int, float, int], None]) -> None:
    env, steps, t0 = spec.make_env(), 0, time.perf_counter()
    with _bar(spec, len(todo), progress) as bar:
        for index in todo:
            arrays = run_episode(env, episode_seed(spec.seed, index), policy)
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

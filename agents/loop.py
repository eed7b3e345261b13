"""The RL training loop: it owns the envs, the replay, evaluation, the logger, checkpoints and videos.

The agent only acts and updates (``act(obs, eval_mode)``, ``update(batch)``). Everything that touches a file,
an env or the clock lives here, so an agent is a few small modules and its tests need no env.

Counting follows the papers: ``frames`` are env frames, action repeat included (DMC cartpole repeats each
action 8 times, so 100k frames are 12.5k agent steps and 12.5k updates).

Run directory::

    metrics.csv, tb/          train/* every episode and every log_every updates; eval/* at each evaluation
    summary.json              final and best mean eval return, frames, steps, wall time
    curves.png                eval return against frames
    videos/eval_<frames>.mp4  the first eval episode of each evaluation
    replay/                   every finished episode in the episode-dataset format (manifest.json +
                              episodes/), so `worldssl pretrain` / `worldmodel` can learn from the policy's data
    checkpoints/              agent.json (how to rebuild the agent), agent.safetensors, train_state.pt

**Resume.** A checkpoint is only ever taken between episodes: at an episode's end, or, when the run is stopped
(SIGTERM, ``max_minutes``), by closing the episode in progress as truncated, so its transitions bootstrap as any
time-limit ending does. The replay is the episodes in ``replay/`` up to the checkpoint's episode count, so a
checkpoint costs the agent's weights only. Episode ``i`` is seeded from ``(seed, i)`` and the RNG states are in
``train_state.pt``: a run killed with SIGKILL and resumed continues exactly as if it had not been killed.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldssl.runtime.checkpoint import (
    StopWhen,
    load_module,
    load_optimizer,
    load_train_state,
    restore_rng,
    rng_state,
    save_module,
    save_train_state,
)
from worldssl.runtime.errors import ConfigError, WorldsslError
from worldssl.runtime.io import write_bytes, write_json
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import (
    Settings,
    between,
    boolean,
    integer,
    non_negative_int,
    optional,
    positive,
    positive_int,
    setting,
)

AGENT_JSON = "agent.json"
AGENT_WEIGHTS = "agent.safetensors"


@dataclass
class LoopSettings(Settings):
    """How long to train and how often to evaluate, log and checkpoint (frames include action repeat).

    Each field is also a ``worldssl train`` key, validated from its declaration here (``runtime.settings``)."""

    frames: int = setting(100_000, positive_int, "env frames to train for, action repeat included")
    seed_frames: int = setting(4_000, non_negative_int, "uniform random actions before the first update")
    batch_size: int = setting(256, positive_int, "replay batch per update")
    update_every_steps: int = setting(1, positive_int, "one update every N agent steps")
    nstep: int = setting(1, positive_int, "n-step returns, computed by the replay at sample time")
    discount: float = setting(0.99, between(0.0, 1.0 + 1e-9), "discount per agent step")
    replay_capacity: int | None = setting(None, optional(positive_int), "replay size in frames; null: the run")
    eval_every_frames: int = setting(10_000, positive_int, "frames between evaluations")
    eval_episodes: int = setting(10, positive_int, "episodes per evaluation")
    save_every_frames: int = setting(10_000, positive_int, "checkpoint at the first episode end after N frames")
    log_every: int = setting(100, positive_int, "updates between train/* metric rows")
    video: bool = setting(True, boolean, "mp4 of the first eval episode of each evaluation")
    seed: int = setting(0, integer, "seed of weights, episodes, replay sampling and exploration")
    max_minutes: float | None = setting(None, optional(positive), "wall-clock budget; null: none")
    progress: bool = setting(True, boolean, "progress bar")


def episode_seed(seed: int, index: int, stream: int = 0) -> int:
    """A well-mixed 31-bit seed for episode ``index`` (stream 0: training, 1: evaluation)."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(index)]).generate_state(1)[0] & 0x7FFFFFFF)


def scale_action(a: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """An agent's action in ``[-1, 1]`` mapped onto the env's box ``[low, high]``."""
    return low + (a + 1.0) * 0.5 * (high - low)


def stack_frames(frames: np.ndarray, k: int) -> np.ndarray:
    """Single frames ``(T+1, C, H, W)`` of one episode -> stacked observations ``(T+1, k*C, H, W)``, the first
    frame repeated at the start exactly as ``envs.wrappers.FrameStack`` does online."""
    n = len(frames)
    idx = np.maximum(np.arange(n)[:, None] - np.arange(k - 1, -1, -1)[None, :], 0)  # (T+1, k), oldest first
    out = frames[idx]  # (T+1, k, C, H, W)
    return out.reshape(n, -1, *frames.shape[2:])


class AgentTrainer:
    """Train ``agent`` on ``env`` (evaluating on ``eval_env``) into ``run_dir``.

    ``spec`` is what :func:`load_agent` needs to rebuild the agent (written to ``checkpoints/agent.json``).
    """

    def __init__(self, agent: Any, env: Any, eval_env: Any, settings: LoopSettings, run_dir: str | Path,
                 spec: dict[str, Any] | None = None, env_info: dict[str, Any] | None = None):
        from worldssl.data.replay import ReplayBuffer

        self.agent, self.env, self.eval_env, self.s = agent, env, eval_env, settings
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.replay_dir = self.run_dir / "replay"
        self.spec = dict(spec or {})
        self.env_info = dict(env_info or {})
        obs_space = env.observation_space
        self.frame_stack = int(getattr(env, "k", 1))
        c, h, w = obs_space.shape
        self.frame_shape = (c // self.frame_stack, h, w)
        self.action_repeat = int(getattr(env.unwrapped, "action_repeat", 1))
        self.low, self.high = env.action_space.low.astype(np.float32), env.action_space.high.astype(np.float32)
        capacity = settings.replay_capacity or (settings.frames // self.action_repeat + 2 * 1024)
        feature_dim = agent.features.repr_dim if agent.caches_features else None
        self.replay = ReplayBuffer(capacity, self.frame_shape, self.frame_stack, tuple(env.action_space.shape),
                                   np.float32, discount=settings.discount, nstep=settings.nstep,
                                   feature_dim=feature_dim, store_frames=True)
        self.rng = np.random.default_rng([settings.seed, 7])
        self.frame = self.step = self.episode = 0
        self.next_save = settings.save_every_frames
        self.next_eval = 0
        self.history: list[dict[str, float]] = []
        self.best_return = -math.inf
        self.wall = 0.0  # training wall time over all sessions of this run

    # ---------------------------------------------------------------------------------------- checkpoints
    def save(self) -> Path:
        import worldssl

        write_json(self.ckpt_dir / AGENT_JSON, {**self.spec, "worldssl_version": worldssl.__version__})
        save_module(self.agent, self.ckpt_dir / AGENT_WEIGHTS)
        state = {"frame": self.frame, "step": self.step, "episode": self.episode, "updates": self.agent.updates,
                 "next_save": self.next_save, "next_eval": self.next_eval, "best_return": self.best_return,
                 "wall": self.wall, "history": json.dumps(self.history),
                 "optimizers": {k: o.state_dict() for k, o in self.agent.optimizers().items()},
                 "rng": rng_state({"loop": self.rng})}
        save_train_state(self.ckpt_dir, state)
        return self.ckpt_dir

    def load(self, ckpt_dir: str | Path) -> None:
        ckpt_dir = Path(ckpt_dir)
        state = load_train_state(ckpt_dir, "train")
        load_module(self.agent, ckpt_dir / AGENT_WEIGHTS, self.agent.device, "agent",
                    "resume with the agent, encoder and env the run was started with")
        for name, opt in self.agent.optimizers().items():
            load_optimizer(opt, state["optimizers"][name], ckpt_dir)
        restore_rng(state["rng"], {"loop": self.rng})
        self.frame, self.step, self.episode = int(state["frame"]), int(state["step"]), int(state["episode"])
        self.agent.updates = int(state["updates"])
        self.next_save, self.next_eval = int(state["next_save"]), int(state["next_eval"])
        self.best_return, self.wall = float(state["best_return"]), float(state["wall"])
        self.history = json.loads(state["history"])
        self._reload_replay()

    def _reload_replay(self) -> None:
        """Refill the replay with the episodes the checkpoint had seen (later files are from after it)."""
        from worldssl.data.episodes import list_episode_files

        files = list_episode_files(self.replay_dir)
        missing = [i for i in range(self.episode) if i not in files]
        if missing:
            raise WorldsslError(f"cannot resume: replay episode {missing[0]} is missing from {self.replay_dir}; "
                                f"the run directory is incomplete (start a new run)")
        for i in range(self.episode):
            with np.load(files[i], allow_pickle=False) as z:
                ep = {k: z[k] for k in ("obs", "action", "reward", "terminated", "truncated")}
            feats = self._features(stack_frames(ep["obs"], self.frame_stack)) if self.agent.caches_features else None
            self.replay.add_episode(ep["obs"], ep["action"], ep["reward"], ep["terminated"], ep["truncated"],
                                    features=feats)

    def _features(self, obs: np.ndarray, batch: int = 256) -> np.ndarray:
        return np.concatenate([self.agent.encode(obs[i:i + batch]) for i in range(0, len(obs), batch)])

    # ---------------------------------------------------------------------------------------- acting
    def _to_env(self, a: np.ndarray) -> np.ndarray:
        return scale_action(a, self.low, self.high)

    def _policy_input(self, obs: np.ndarray, feature: np.ndarray | None) -> np.ndarray:
        return feature if self.agent.caches_features else obs

    def evaluate(self) -> dict[str, float]:
        """``eval_episodes`` episodes with the deterministic policy, from fixed start seeds; one video."""
        def act(obs: np.ndarray) -> np.ndarray:
            feature = self.agent.encode(obs) if self.agent.caches_features else None
            return self._to_env(self.agent.act(self._policy_input(obs, feature), eval_mode=True))

        return evaluate_policy(self.eval_env, act, self.s, self._frame_of,
                               self.run_dir / "videos" / f"eval_{self.frame:08d}.mp4")

    def _frame_of(self, obs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(obs[-self.frame_shape[0]:].transpose(1, 2, 0))  # newest frame, HWC

    # ---------------------------------------------------------------------------------------- loop
    def train(self, logger: Logger) -> dict[str, Any]:
        """Train to ``frames`` (or ``max_minutes`` / SIGTERM); returns the summary (also in summary.json)."""
        from tqdm.auto import tqdm

        from agents.sac import NonFiniteLoss

        s = self.s
        s.check()
        wall0 = self.wall
        self._ensure_replay_manifest()
        bar = tqdm(total=s.frames, initial=min(self.frame, s.frames), unit="frame", unit_scale=True,
                   desc=f"train {self.spec.get('agent', 'agent')}/{self.spec.get('mode', '')}",
                   disable=not s.progress, mininterval=0.5)
        seed_steps = s.seed_frames // self.action_repeat
        ready = False  # the replay holds a batch (len() scans the ring, so it is asked only until it does)
        acc: dict[str, list[float]] = {}
        stopped = None
        frames_t0, t0 = self.frame, time.perf_counter()
        with StopWhen(s.max_minutes) as stop:
            deadline = stop.deadline
            while self.frame < s.frames and stopped is None:
                if self.frame >= self.next_eval:
                    self._evaluate_and_log(logger, bar)
                obs, _ = self.env.reset(seed=episode_seed(s.seed, self.episode))
                feature = self.agent.encode(obs) if self.agent.caches_features else None
                self.replay.start_episode(obs[-self.frame_shape[0]:], feature=feature)
                ep = {"obs": [obs[-self.frame_shape[0]:]], "action": [], "reward": [], "terminated": [],
                      "truncated": []}
                done, ret = False, 0.0
                while not done:
                    if self.step < seed_steps:
                        a = self.rng.uniform(-1.0, 1.0, size=self.low.shape).astype(np.float32)
                    else:
                        a = self.agent.act(self._policy_input(obs, feature), eval_mode=False)
                    ready = ready or (self.step >= seed_steps and len(self.replay) >= s.batch_size)
                    if ready and self.step % s.update_every_steps == 0:
                        try:
                            metrics = self.agent.update(self.replay.sample(s.batch_size, self.rng))
                        except NonFiniteLoss as e:
                            raise WorldsslError(f"{e} at frame {self.frame} (update {self.agent.updates}); lower "
                                                f"agent.lr or check the encoder; the last checkpoint in "
                                                f"{self.ckpt_dir} is intact") from e
                        for k, v in metrics.items():
                            acc.setdefault(k, []).append(v)
                        if self.agent.updates % s.log_every == 0:
                            now = time.perf_counter()
                            fps = (self.frame - frames_t0) / max(now - t0, 1e-9)
                            logger.log({**{k: float(np.mean(v)) for k, v in acc.items()}, "time/fps": fps,
                                        "train/updates": self.agent.updates}, step=self.frame)
                            acc.clear()
                    obs, r, terminated, truncated, _ = self.env.step(self._to_env(a))
                    feature = self.agent.encode(obs) if self.agent.caches_features else None
                    frame = obs[-self.frame_shape[0]:]
                    self.frame += self.action_repeat
                    self.step += 1
                    ret += float(r)
                    bar.update(self.action_repeat)
                    stopped = stop.reason
                    # a stop or the end of the budget closes the episode as a time limit would: it bootstraps
                    cut = stopped is not None or self.frame >= s.frames
                    truncated = bool(truncated) or (cut and not terminated)
                    self.replay.add(a, float(r), frame, bool(terminated), truncated, next_feature=feature)
                    for key, value in zip(("obs", "action", "reward", "terminated", "truncated"),
                                          (frame, a, float(r), bool(terminated), truncated), strict=True):
                        ep[key].append(value)
                    done = bool(terminated) or truncated
                self._end_episode(ep, ret, logger, bar)
                if stopped is None and self.frame >= self.next_save:
                    self.next_save = (self.frame // s.save_every_frames + 1) * s.save_every_frames
                    self._save_timed(wall0, deadline)
            self._save_timed(wall0, deadline)
            if stopped in (None, "max_minutes") and (not self.history or self.history[-1]["frame"] < self.frame):
                self._evaluate_and_log(logger, bar)
                self._save_timed(wall0, deadline)
            bar.close()
            summary = self.summary(stopped)
            if stopped is not None:
                logger.summary(summary)  # what the run reached, before a signal ends the process
                stop.raise_if_signalled(f"at frame {self.frame}", self.run_dir)
        return summary

    def _save_timed(self, wall0: float, deadline: Any) -> None:
        self.wall = wall0 + deadline.elapsed
        self.save()

    def _end_episode(self, ep: dict[str, list], ret: float, logger: Logger, bar: Any) -> None:
        from worldssl.data.episodes import write_episode

        arrays = {"obs": np.stack(ep["obs"]).astype(np.uint8), "action": np.asarray(ep["action"], np.float32),
                  "reward": np.asarray(ep["reward"], np.float32), "terminated": np.asarray(ep["terminated"], bool),
                  "truncated": np.asarray(ep["truncated"], bool),
                  "seed": np.asarray(episode_seed(self.s.seed, self.episode), np.int64)}
        write_episode(self.replay_dir, self.episode, arrays)
        self.episode += 1
        logger.log({"train/episode_return": ret, "train/episode_length": float(len(ep["action"])),
                    "train/episode": float(self.episode)}, step=self.frame)

    def _ensure_replay_manifest(self) -> None:
        import worldssl
        from worldssl.data.collect import space_spec
        from worldssl.data.episodes import write_manifest

        if (self.replay_dir / "manifest.json").exists():
            return
        write_manifest(self.replay_dir, {
            "env_id": self.env_info.get("env_id"), "env_kwargs": self.env_info.get("env_kwargs", {}),
            "max_episode_steps": self.env_info.get("max_episode_steps"), "seed": self.s.seed,
            "policy": f"agent:{self.run_dir}", "frame_shape": list(self.frame_shape),
            "frame_stack": self.frame_stack, "action_space": space_spec(self.env.action_space),
            "state_dim": None, "state_names": [], "worldssl_version": worldssl.__version__, "episodes": 0})

    def _evaluate_and_log(self, logger: Logger, bar: Any) -> None:
        metrics = self.evaluate()
        self.next_eval = (self.frame // self.s.eval_every_frames + 1) * self.s.eval_every_frames
        self.history.append({"frame": self.frame, "return": metrics["eval/return"],
                             "return_std": metrics["eval/return_std"],
                             **({"success": metrics["eval/success"]} if "eval/success" in metrics else {})})
        self.best_return = max(self.best_return, metrics["eval/return"])
        logger.log({**metrics, "eval/frame": float(self.frame)}, step=self.frame)
        bar.set_postfix(eval_return=f"{metrics['eval/return']:.1f}", refresh=False)
        bar.write(f"frame {self.frame}: eval return {metrics['eval/return']:.1f} ± {metrics['eval/return_std']:.1f} "
                  f"over {self.s.eval_episodes} episodes")

    def summary(self, stopped: str | None = None) -> dict[str, Any]:
        return run_summary(self, stopped, steps=self.step, episodes=self.episode, updates=self.agent.updates)


def run_summary(trainer: Any, stopped: str | None, steps: int, episodes: int, updates: int) -> dict[str, Any]:
    """``summary.json`` of a training run, the same for every trainer (``history``, ``best_return``, ``frame``,
    ``wall``, ``s`` and ``spec`` read from ``trainer``; the counters its own)."""
    last = trainer.history[-1] if trainer.history else {}
    out = {"final_eval_return": last.get("return"), "final_eval_frame": last.get("frame"),
           "best_eval_return": trainer.best_return if math.isfinite(trainer.best_return) else None,
           "frames": trainer.frame, "steps": steps, "episodes": episodes, "updates": updates,
           "wall_seconds": round(trainer.wall, 1),
           "frames_per_second": round(trainer.frame / trainer.wall, 1) if trainer.wall > 0 else None,
           "stopped_by": stopped, "finished": trainer.frame >= trainer.s.frames, "eval_history": trainer.history,
           "settings": asdict(trainer.s), "agent_spec": trainer.spec}
    if "success" in last:
        out["final_eval_success"] = last["success"]
        out["best_eval_success"] = max(h.get("success", 0.0) for h in trainer.history)
    return out


def evaluate_policy(env: Any, act: Any, settings: LoopSettings, frame_of: Any, video_path: Path) -> dict[str, float]:
    """``settings.eval_episodes`` episodes of ``act(obs) -> env action`` from the evaluation seed stream (start
    states training never sees); the first one filmed to ``video_path`` (``frame_of(obs)``: an HWC frame) when
    ``settings.video``. Metrics: mean / std return and, on the maze, ``eval/success``: the fraction of
    episodes that ended within the goal radius."""
    returns, successes, video = [], [], []
    goal_radius = getattr(env.unwrapped, "goal_radius", None)
    for i in range(settings.eval_episodes):
        obs, info = env.reset(seed=episode_seed(settings.seed, i, stream=1))
        done, ret = False, 0.0
        while not done:
            if i == 0 and settings.video:
                video.append(frame_of(obs))
            obs, r, terminated, truncated, info = env.step(act(obs))
            ret += float(r)
            done = terminated or truncated
        if i == 0 and settings.video:
            video.append(frame_of(obs))
        returns.append(ret)
        if goal_radius is not None and "goal_distance" in info:
            successes.append(float(info["goal_distance"] < goal_radius))
    if video:
        write_video(video, video_path)
    out = {"eval/return": float(np.mean(returns)), "eval/return_std": float(np.std(returns)),
           "eval/episodes": float(len(returns))}
    if successes:
        out["eval/success"] = float(np.mean(successes))
    return out


_VIDEO_WARNED: list[bool] = []


def write_video(frames: list[np.ndarray], path: Path) -> None:
    """HWC uint8 frames -> an mp4 at ``path`` (atomic); without an ffmpeg backend the run goes on, told once."""
    try:
        import imageio.v3 as iio

        data = iio.imwrite("<bytes>", np.stack(frames), extension=".mp4", fps=30, macro_block_size=1)
    except Exception as e:  # no ffmpeg backend: the run goes on, the user is told once
        if not _VIDEO_WARNED:
            import warnings

            warnings.warn(f"cannot write eval videos ({type(e).__name__}: {e}); install imageio-ffmpeg", stacklevel=2)
            _VIDEO_WARNED.append(True)
        return
    write_bytes(path, data)


def curves_figure(history: list[dict[str, float]], title: str = "") -> Any:
    """Eval return (mean ± std over eval episodes) against env frames."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    if history:
        x = np.array([h["frame"] for h in history])
        y = np.array([h["return"] for h in history])
        sd = np.array([h.get("return_std", 0.0) for h in history])
        ax.plot(x, y, marker="o", ms=3)
        ax.fill_between(x, y - sd, y + sd, alpha=0.2)
    ax.set_xlabel("env frames (action repeat included)")
    ax.set_ylabel("eval return")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def check_continuous(env: Any, env_id: str, agent: str) -> None:
    import gymnasium as gym

    if not isinstance(env.action_space, gym.spaces.Box):
        hint = " (the maze has continuous actions: env.kwargs.action_type=continuous)" if "Maze" in env_id else ""
        raise ConfigError(f"agent={agent} needs a continuous (Box) action space, but {env_id} has "
                          f"{env.action_space}{hint}; pick a continuous-action env")


def read_agent_spec(run_dir: str | Path) -> tuple[Path, dict[str, Any]]:
    """``(checkpoints directory, spec)`` of a ``worldssl train`` run (the run or its ``checkpoints/``): what
    ``checkpoints/agent.json`` says about how to rebuild its agent, for ours and SB3's alike."""
    from worldssl.runtime.errors import CheckpointError

    path = Path(run_dir)
    ckpt = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    meta = ckpt / AGENT_JSON
    if not meta.is_file():
        hint = " (that is a worldmodel run: use it as encoder.checkpoint=)" if (ckpt / "model.json").is_file() else ""
        raise CheckpointError(f"{path} has no {AGENT_JSON}: not a `worldssl train` run directory{hint}")
    try:
        spec = json.loads(meta.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"corrupt {meta}: {e}; restore it or re-train") from e
    if not isinstance(spec, dict):
        raise CheckpointError(f"corrupt {meta}: not a JSON object; restore it or re-train")
    return ckpt, spec


def load_agent(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild a trained agent from a ``worldssl train`` run directory (no code is executed); returns
    ``(agent, spec)``."""
    from agents import build_agent

    ckpt, spec = read_agent_spec(run_dir)
    agent = build_agent(spec, device=device)
    load_module(agent, ckpt / AGENT_WEIGHTS, device, "agent", "the file does not match its agent.json")
    agent.eval()
    return agent, spec

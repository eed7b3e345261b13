"""``worldssl bench sb3``: a frozen encoder in Stable-Baselines3, precomputed in a wrapper or run inside the policy.

SB3's documentation advises encoding observations once, in a wrapper, when the encoder is frozen. This bench
measures what that buys. Our side: :class:`agents.sb3.FrozenFeatures` around the env and SB3's ``MlpPolicy`` on
the features. Baseline: the same frozen encoder inside the policy (``CnnPolicy`` with
:class:`agents.sb3.WorldsslExtractor`, ``freeze=True``), which encodes every observation again in every forward
pass: acting, each of PPO's epochs over a rollout, and SAC's actor, critic and target critic on each sampled batch
(with SB3's default ``share_features_extractor=False``, one extractor copy per network).

Both sides: the same env (the maze, continuous actions, 64x64), encoder (the DrQ conv encoder at random init,
or ``sb3_checkpoint``), MLP widths, batch and seed; ``model.learn(sb3_steps)`` timed in alternation (the order
flipped every repeat) after an untimed warm-up; the figure is env frames/s of training, median over repeats.
For SAC it also reports replay bytes per transition (SB3's ``ReplayBuffer`` keeps ``obs`` and ``next_obs``).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from worldssl.bench.common import Row, setting_reader


def _model(algo: str, precompute: bool, checkpoint: str | None, image_size: int, batch: int, seed: int) -> Any:
    from stable_baselines3 import PPO, SAC

    import envs
    from agents.sb3 import FrozenFeatures, WorldsslExtractor

    env = envs.make("worldssl/Maze-v0", layout="open", image_size=image_size, action_type="continuous",
                    max_episode_steps=100)
    kwargs: dict[str, Any] = {"net_arch": [64, 64] if algo == "ppo" else [256, 256]}
    if precompute:
        env, policy = FrozenFeatures(env, checkpoint=checkpoint), "MlpPolicy"
    else:
        policy = "CnnPolicy"
        kwargs.update(features_extractor_class=WorldsslExtractor, normalize_images=False,
                      features_extractor_kwargs=dict(checkpoint=checkpoint, freeze=True))
    if algo == "ppo":
        return PPO(policy, env, n_steps=256, batch_size=batch, n_epochs=10, seed=seed, device="cpu",
                   policy_kwargs=kwargs)
    return SAC(policy, env, buffer_size=10_000, learning_starts=batch, batch_size=batch, seed=seed, device="cpu",
               policy_kwargs=kwargs)


def run(cfg: Any) -> list[Row]:
    import torch

    get = setting_reader(cfg)
    algos = list(get("sb3_algos", ["ppo", "sac"]))
    steps, warmup = int(get("sb3_steps", 512)), int(get("sb3_warmup", 256))
    repeats, batch = int(get("repeats", 3)), int(get("sb3_batch", 64))
    image_size, checkpoint = int(get("sb3_image_size", 64)), get("sb3_checkpoint", None)
    threads = get("sb3_threads", 1)
    if threads:
        torch.set_num_threads(int(threads))
    rows = []
    for algo in algos:
        models = {p: _model(algo, p, checkpoint, image_size, batch, 0) for p in (True, False)}
        for m in models.values():
            m.learn(warmup)
        rates: dict[bool, list[float]] = {True: [], False: []}
        for r in range(repeats):
            for p in ((True, False) if r % 2 == 0 else (False, True)):
                n0, t0 = models[p].num_timesteps, time.perf_counter()
                models[p].learn(steps, reset_num_timesteps=False)  # PPO: whole rollouts of 256, so count them
                rates[p].append((models[p].num_timesteps - n0) / (time.perf_counter() - t0))
        what = "encoder: " + ("DrQ conv, random init" if checkpoint is None else str(checkpoint))
        rows.append(Row(f"SB3 {algo.upper()} maze {image_size}px, frozen {what}", "training env frames/s",
                        statistics.median(rates[True]), statistics.median(rates[False]),
                        "same encoder inside the policy (WorldsslExtractor, freeze=True)"))
        if algo == "sac":
            per = {p: sum(getattr(models[p].replay_buffer, k).nbytes for k in
                          ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")
                          if getattr(models[p].replay_buffer, k, None) is not None)
                   / models[p].replay_buffer.buffer_size for p in (True, False)}
            rows.append(Row("SB3 SAC replay, frozen features vs pixels", "bytes per transition", per[True],
                            per[False], "pixel observations (SB3 ReplayBuffer)"))
        for m in models.values():
            m.env.close()
    return rows

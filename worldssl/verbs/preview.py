"""``worldssl preview``: PNG strips of frames, from a live env or from a dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from envs.config import env_config
from worldssl.runtime.errors import ConfigError
from worldssl.runtime.io import atomic_open


def to_rgb_frames(obs: np.ndarray) -> list[np.ndarray]:
    """Split a stacked ``(k*3, H, W)`` observation into HWC RGB frames (a goal image counts as a frame)."""
    c = obs.shape[0]
    if c % 3 == 0:
        return [obs[i:i + 3].transpose(1, 2, 0) for i in range(0, c, 3)]
    return [np.repeat(obs[i:i + 1].transpose(1, 2, 0), 3, axis=2) for i in range(c)]


def strip(frames: list[np.ndarray], scale: int = 1, gap: int = 2) -> np.ndarray:
    """Lay HWC frames side by side with a white gap, upscaled by ``scale`` (nearest neighbour)."""
    frames = [np.repeat(np.repeat(f, scale, 0), scale, 1) for f in frames]
    h = max(f.shape[0] for f in frames)
    pad = np.full((h, gap, 3), 255, np.uint8)
    row = []
    for f in frames:
        row += [f, pad]
    return np.concatenate(row[:-1], axis=1)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    import imageio.v3 as iio

    path = Path(path)
    with atomic_open(path, "wb") as f:
        f.write(iio.imwrite("<bytes>", image, extension=".png"))
    return path


def env_preview(env, frames: int = 8, stride: int = 2, seed: int = 0, scale: int = 3) -> np.ndarray:
    """Rows of frames from a random rollout: the newest frame of each stacked observation (plus goal image)."""
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    shown = [obs]
    while len(shown) < frames:
        for _ in range(stride):
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                obs, _ = env.reset()
        shown.append(obs)
    stack = getattr(env, "k", 1)  # FrameStack depth
    rows = []
    for o in shown:
        parts = to_rgb_frames(o)
        rows.append(parts[stack - 1:] if stack > 1 else parts)
    per = len(rows[0])
    lines = [strip([r[i] for r in rows], scale) for i in range(per)]  # one line per channel group
    return np.concatenate([np.pad(ln, ((0, 2), (0, 0), (0, 0)), constant_values=255) for ln in lines], axis=0)


def dataset_preview(root: str | Path, out: str | Path, episodes: int = 4, frames: int = 8, scale: int = 2) -> Path:
    """One row per episode: evenly spaced single frames of the first episodes of a dataset."""
    from worldssl.data import EpisodeDataset

    ds = EpisodeDataset(root, frame_stack=1, load="mmap")
    rows = []
    for i in range(min(episodes, ds.num_episodes)):
        ep = ds.episode(i)
        ts = np.linspace(0, len(ep.obs) - 1, frames).round().astype(int)
        rows.append(strip([to_rgb_frames(ep.obs[t])[0] for t in ts], scale))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return write_png(out, np.concatenate(rows, axis=0))


def run(cfg: Any) -> str:
    env_cfg = env_config(cfg.env)
    if cfg.frames < 1 or cfg.stride < 1 or cfg.scale < 1:
        raise ConfigError("frames, stride and scale must be positive integers")
    env = env_cfg.make()
    try:
        image = env_preview(env, int(cfg.frames), int(cfg.stride), int(cfg.seed), int(cfg.scale))
    finally:
        env.close()
    path = write_png(cfg.out, image)
    print(f"preview: {env_cfg.id} -> {path}")
    return str(path)

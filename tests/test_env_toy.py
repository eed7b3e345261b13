"""The tiny PointReach pixel task: gymnasium's and SB3's env checks, determinism and the reward."""

from __future__ import annotations

import numpy as np
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs


def test_point_reach_passes_the_env_checkers():
    for dims in (1, 2):
        env = envs.make("worldssl/PointReach-v0", dims=dims)
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped)


def test_point_reach_reward_and_image_follow_the_dot():
    env = envs.make("worldssl/PointReach-v0", dims=2, size=16)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.uint8 and obs.shape == (3, 16, 16)
    for _ in range(12):  # push toward the centre: reward rises to 1 at the centre
        obs, r, term, trunc, info = env.step(np.clip(-info["state"] / 0.25, -1, 1).astype(np.float32))
    assert not term and abs(r - (1 - np.linalg.norm(info["state"]))) < 1e-6 and r > 0.99
    rows, cols = np.nonzero(obs[0])
    assert abs(cols.mean() - 7.5) <= 1.5 and abs(rows.mean() - 7.5) <= 1.5
    a, b = envs.make("worldssl/PointReach-v0"), envs.make("worldssl/PointReach-v0")
    np.testing.assert_array_equal(a.reset(seed=5)[0], b.reset(seed=5)[0])

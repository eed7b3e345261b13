"""DMC from pixels: the gymnasium contract, seeding, action repeat, time limits, fast rendering."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.dmc import DMCEnv, default_action_repeat


def test_curl_action_repeat_defaults():
    assert {d: default_action_repeat(d) for d in ("cartpole", "finger", "walker", "cheetah", "reacher", "ball_in_cup")} == {
        "cartpole": 8, "finger": 2, "walker": 2, "cheetah": 4, "reacher": 4, "ball_in_cup": 4}
    for task, repeat in envs.DMC_STANDARD_TASKS.items():
        assert envs.make(f"worldssl/DMC-{task}-v0", image_size=32).unwrapped.action_repeat == repeat


def test_checkers_and_spaces():
    env = envs.make("worldssl/DMC-v0", domain="reacher", task="easy", image_size=32)
    assert env.observation_space.shape == (9, 32, 32) and env.observation_space.dtype == np.uint8
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env)


def test_same_seed_same_observations():
    def rollout(seed):
        env = envs.make("worldssl/DMC-cartpole-swingup-v0", image_size=32)
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        for a in np.linspace(-1, 1, 5):
            frames.append(env.step(np.array([a], np.float32))[0])
        return np.stack(frames)

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.array_equal(rollout(7), rollout(8))


def test_rewards_summed_over_repeats_and_state_in_info():
    stock = envs.make("worldssl/DMC-v0", domain="cartpole", task="swingup", image_size=16, action_repeat=1,
                      frame_stack=1)
    repeated = envs.make("worldssl/DMC-v0", domain="cartpole", task="swingup", image_size=16, action_repeat=4,
                         frame_stack=1)
    stock.reset(seed=1)
    _, info = repeated.reset(seed=1)
    assert info["state"].dtype == np.float32 and info["state"].shape == (5,)
    action = np.array([0.3], np.float32)
    total = sum(stock.step(action)[1] for _ in range(4))
    _, reward, _, _, info = repeated.step(action)
    assert reward == pytest.approx(total, rel=1e-6)
    np.testing.assert_allclose(info["physics_state"], stock.unwrapped.physics.get_state(), rtol=1e-6)


def test_time_limit_truncates():
    env = envs.make("worldssl/DMC-v0", domain="cartpole", task="swingup", image_size=16, frame_stack=1)
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        steps += 1
    assert steps == 1000 // 8


def test_fast_render_flag_changes_the_scene():
    fast = DMCEnv("cheetah", "run", image_size=48, fast_render=True)
    stock = DMCEnv("cheetah", "run", image_size=48, fast_render=False)
    a, _ = fast.reset(seed=0)
    b, _ = stock.reset(seed=0)
    assert a.shape == b.shape and not np.array_equal(a, b)  # shadows/reflections are gone
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 40  # but it is the same picture


def test_bad_task_is_a_clear_error():
    from worldssl.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="valid: .*cheetah-run"):
        envs.make("worldssl/DMC-v0", domain="cheetah", task="fly")

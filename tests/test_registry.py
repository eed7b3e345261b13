"""Every registered id builds through gymnasium, passes both env checkers and carries a true state."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs

SMALL = {"worldssl/Maze-v0": {"image_size": 32}}


@pytest.mark.parametrize("env_id", sorted(envs.ENVS))
def test_every_id_passes_checkers(env_id):
    kwargs = SMALL.get(env_id, {})
    if env_id.startswith("worldssl/DMC"):
        kwargs = {"image_size": 32}
    env = gym.make(env_id, **kwargs)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.ndim == 3 and obs.shape == env.observation_space.shape
    assert info["state"].dtype == np.float32 and info["state"].ndim == 1
    check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(envs.make(env_id, **kwargs))
    env.close()


def test_unknown_id_lists_valid_ids():
    from worldssl.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="valid ids: .*worldssl/Shapes-v0"):
        envs.make("worldssl/Nope-v0")


def test_render_then_optimizer_does_not_segfault():
    """The crash trap: render with software EGL first, then let torch load triton (Adam)."""
    code = (
        "import envs, numpy as np\n"
        "env = envs.make('worldssl/DMC-cartpole-swingup-v0', image_size=32); env.reset(seed=0)\n"
        "env.step(env.action_space.sample())\n"
        "import torch\n"
        "opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters()); opt.step()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("ok")


def test_interleaved_renderers_do_not_corrupt_each_other():
    """DMC, Cubes and the maze render in one process: each gives the same frames as when rendering alone."""
    def frames(env_id, kwargs, other=None):
        env = envs.make(env_id, frame_stack=1, **kwargs)
        obs, _ = env.reset(seed=0)
        env.action_space.seed(0)
        out = [obs]
        for _ in range(3):
            if other is not None:
                other.reset(seed=1)  # another renderer draws in between
            out.append(env.step(env.action_space.sample())[0])
        return np.stack(out)

    specs = [("worldssl/DMC-cartpole-swingup-v0", {"image_size": 32}), ("worldssl/Cubes-v1", {}),
             ("worldssl/Maze-v0", {"image_size": 32})]
    alone = [frames(i, k) for i, k in specs]
    for (env_id, kwargs), want in zip(specs, alone):
        for other_id, other_kwargs in specs:
            if other_id != env_id:
                other = envs.make(other_id, frame_stack=1, **other_kwargs)
                np.testing.assert_array_equal(frames(env_id, kwargs, other), want)

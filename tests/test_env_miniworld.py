"""MiniWorld adapter (optional extra): API compliance, frame format, state, and coexistence with MuJoCo."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings

import numpy as np
import pytest

import envs
from worldssl.runtime.errors import ConfigError

needs_miniworld = pytest.mark.skipif(importlib.util.find_spec("miniworld") is None,
                                     reason="optional extra miniworld not installed")


@needs_miniworld
def test_check_env_and_frame_format() -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = envs.make("worldssl/MiniWorld-v0", render_mode="rgb_array")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)
        sb3_check_env(env, warn=False)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8 and obs.std() > 5
    assert info["state"].dtype == np.float32 and info["state"].shape == (4,)
    assert np.hypot(*info["state"][2:]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(env.render(), obs.transpose(1, 2, 0))
    env.close()


@needs_miniworld
def test_seeding_and_motion() -> None:
    from envs.miniworld_adapter import MiniWorldEnv

    a, b = MiniWorldEnv(image_size=48), MiniWorldEnv(image_size=48)
    oa, ia = a.reset(seed=4)
    ob, ib = b.reset(seed=4)
    assert oa.shape == (3, 48, 48)
    np.testing.assert_array_equal(oa, ob)
    np.testing.assert_array_equal(ia["state"], ib["state"])
    _, _, _, _, turned = a.step(0)  # MiniWorld action 0: turn left
    assert not np.allclose(turned["state"][2:], ia["state"][2:])
    oc, ic = b.reset(seed=5)
    assert not np.array_equal(ic["state"], ia["state"])
    a.close()
    b.close()


@needs_miniworld
def test_coexists_with_mujoco_rendering() -> None:
    from envs.maze import MazeEnv
    from envs.miniworld_adapter import MiniWorldEnv

    maze = MazeEnv(layout="medium")
    before, _ = maze.reset(seed=1)
    world = MiniWorldEnv()
    w_before, _ = world.reset(seed=1)
    for _ in range(5):
        maze.step(1)
        world.step(2)
    np.testing.assert_array_equal(maze.reset(seed=1)[0], before)
    np.testing.assert_array_equal(world.reset(seed=1)[0], w_before)
    world.close()
    maze.close()


def test_missing_extra_raises_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from envs import miniworld_adapter

    monkeypatch.setitem(sys.modules, "miniworld", None)  # makes `import miniworld` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install 'worldssl\[miniworld\]'"):
        miniworld_adapter.MiniWorldEnv()


@needs_miniworld
def test_unknown_name_is_rejected() -> None:
    from envs.miniworld_adapter import MiniWorldEnv

    with pytest.raises(ValueError, match="MiniWorld-OneRoom-v0"):
        MiniWorldEnv(name="MiniWorld-Nope-v0")


@needs_miniworld
def test_dmc_maze_and_miniworld_share_a_process() -> None:
    """Fresh process, worst order: DMC renders first, then miniworld is imported (pyglet makes its context
    current at import), then a maze renders; every env's frames must stay as they were."""
    code = """
import numpy as np
import envs
dmc = envs.make("worldssl/DMC-v0", frame_stack=1, image_size=48)
d0 = dmc.reset(seed=0)[0]
from envs.miniworld_adapter import MiniWorldEnv
world = MiniWorldEnv()
w0 = world.reset(seed=0)[0]
world.step(2)
maze = envs.make("worldssl/Maze-v0")
m0 = maze.reset(seed=0)[0]
maze.step(1)
assert np.array_equal(dmc.reset(seed=0)[0], d0), "dmc"
assert np.array_equal(world.reset(seed=0)[0], w0), "miniworld"
assert np.array_equal(maze.reset(seed=0)[0], m0), "maze"
world.close()
assert np.array_equal(dmc.reset(seed=0)[0], d0), "dmc after miniworld close"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
    assert "EGLError" not in out.stderr  # no noise from contexts torn down at exit

"""MazeEnv: gym API compliance, seeding, motion, walls, goals, layouts."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections import deque

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.maze import (
    AGENT_RADIUS,
    LAYOUTS,
    MazeEnv,
    cell_to_xy,
    free_cells,
    merge_walls,
    parse_layout,
    random_layout,
)

FORWARD, LEFT, RIGHT = 1, 2, 3


def _connected(grid: np.ndarray) -> bool:
    cells = set(free_cells(grid))
    start = next(iter(cells))
    seen, todo = {start}, deque([start])
    while todo:
        r, c = todo.popleft()
        for n in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if n in cells and n not in seen:
                seen.add(n)
                todo.append(n)
    return seen == cells


@pytest.mark.parametrize("action_type", ["discrete", "continuous"])
@pytest.mark.parametrize("goal_image", [False, True])
def test_gymnasium_and_sb3_check_env(action_type: str, goal_image: bool) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = envs.make("worldssl/Maze-v0", action_type=action_type, goal_image=goal_image,
                    render_mode="rgb_array", max_steps=20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped, skip_render_check=False)
        sb3_check_env(env, warn=False)
    channels = 6 if goal_image else 3
    assert env.observation_space.shape == (channels, 64, 64)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (channels, 64, 64)
    assert info["pose"].dtype == np.float32 and info["pose"].shape == (3,)
    assert info["state"].dtype == np.float32 and info["state"].shape == (len(env.unwrapped.state_names),)
    np.testing.assert_array_equal(env.render(), obs[:3].transpose(1, 2, 0))
    env.close()


def test_gymnasium_make_and_image_size() -> None:
    env = gym.make("worldssl/Maze-v0", image_size=84, layout="u_maze")
    obs, _ = env.reset(seed=1)
    assert obs.shape == (3, 84, 84) and obs.std() > 10  # a real picture, not a blank frame
    env.close()


def test_same_seed_same_episode_different_seed_differs() -> None:
    a, b = MazeEnv(layout="four_rooms", num_goals=2), MazeEnv(layout="four_rooms", num_goals=2)
    actions = [FORWARD, LEFT, FORWARD, FORWARD, RIGHT, 4, 5]
    oa, ia = a.reset(seed=7)
    ob, ib = b.reset(seed=7)
    np.testing.assert_array_equal(oa, ob)
    for act in actions:
        oa, *_, ia = a.step(act)
        ob, *_, ib = b.step(act)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ia["state"], ib["state"])
    oc, ic = b.reset(seed=8)
    oa, ia = a.reset(seed=7)
    assert not np.array_equal(oa, oc)
    assert not np.array_equal(ia["state"], ic["state"])


def test_forward_moves_along_heading_and_turns_change_yaw() -> None:
    env = MazeEnv(layout="open")
    env.reset(seed=0)
    yaw0 = 0.6
    env.set_pose(0.0, 0.0, yaw0)
    _, _, _, _, info = env.step(FORWARD)
    x, y, yaw = info["pose"]
    step = np.hypot(x, y)
    assert step == pytest.approx(env.move_speed, rel=0.05)
    assert np.arctan2(y, x) == pytest.approx(yaw0, abs=1e-3)  # moved along the heading
    assert yaw == pytest.approx(yaw0, abs=1e-6)
    _, _, _, _, info = env.step(LEFT)
    assert info["pose"][2] == pytest.approx(yaw0 + env.turn_speed, abs=1e-3)
    np.testing.assert_allclose(info["pose"][:2], [x, y], atol=1e-6)  # turning in place
    _, _, _, _, info = env.step(RIGHT)
    _, _, _, _, info = env.step(RIGHT)
    assert info["pose"][2] == pytest.approx(yaw0 - env.turn_speed, abs=1e-3)
    assert info["state"][2] == pytest.approx(np.cos(info["pose"][2]), abs=1e-5)


def test_continuous_actions_scale_motion() -> None:
    env = MazeEnv(layout="open", action_type="continuous")
    env.reset(seed=0)
    env.set_pose(0.0, 0.0, 0.0)
    _, _, _, _, info = env.step(np.array([0.5, 0.0], np.float32))
    assert info["pose"][0] == pytest.approx(0.5 * env.move_speed, rel=0.05)
    _, _, _, _, info = env.step(np.array([0.0, -1.0], np.float32))
    assert info["pose"][2] == pytest.approx(-env.turn_speed, abs=1e-3)


@pytest.mark.parametrize("yaw", [0.0, 0.3, np.pi / 4, np.pi / 2 + 0.2])
def test_walls_block_the_agent(yaw: float) -> None:
    env = MazeEnv(layout="medium", max_steps=1000)
    env.reset(seed=0)
    for cell in free_cells(env.grid)[:6]:
        env.set_pose(*cell_to_xy(env.grid.shape, cell), yaw)
        for _ in range(30):  # far longer than any corridor: the agent must end up pressed on a wall
            _, _, _, _, info = env.step(FORWARD)
            assert not env.in_wall(info["pose"][:2], margin=AGENT_RADIUS * 0.9), info["pose"]
        assert np.hypot(*info["state"][4:6]) * 0.1 < env.move_speed  # stopped or sliding, not flying


def test_reaching_the_goal_rewards_and_terminates() -> None:
    env = MazeEnv(layout="open", num_goals=3)
    _, info = env.reset(seed=3)
    goal = env.goal_positions[0]
    np.testing.assert_allclose(info["state"][6:8], goal)
    start = goal - np.array([env.move_speed * 3, 0.0])  # 3 steps west of the goal, facing it
    if env.in_wall(start, AGENT_RADIUS):
        start = goal + np.array([env.move_speed * 3, 0.0])
    yaw = float(np.arctan2(*(goal - start)[::-1]))
    env.set_pose(float(start[0]), float(start[1]), yaw)
    _, reward, terminated, truncated, _ = env.step(FORWARD)
    assert (reward, terminated) == (0.0, False)
    _, reward, terminated, truncated, info = env.step(FORWARD)
    assert (reward, terminated, truncated) == (1.0, True, False)
    assert info["goal_distance"] < env.goal_radius


def test_distractor_goals_do_not_reward_and_time_limit_truncates() -> None:
    env = MazeEnv(layout="open", num_goals=2, max_steps=3)
    env.reset(seed=5)
    distractor = env.goal_positions[1]
    env.set_pose(float(distractor[0]), float(distractor[1]), 0.0)
    results = [env.step(0)[1:4] for _ in range(3)]
    assert results == [(0.0, False, False), (0.0, False, False), (0.0, False, True)]


def test_goal_image_shows_the_red_target() -> None:
    env = MazeEnv(layout="four_rooms", goal_image=True)
    obs, _ = env.reset(seed=2)
    goal = obs[3:].astype(int)
    centre = goal[:, 24:40, 24:40]
    red = (centre[0] > 150) & (centre[1] < 80) & (centre[2] < 80)
    assert red.mean() > 0.2  # the target sphere fills the middle of the goal view
    obs2, *_ = env.step(LEFT)
    np.testing.assert_array_equal(obs2[3:], obs[3:])  # fixed for the episode


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_named_layouts_build_and_are_connected(name: str) -> None:
    grid = parse_layout(LAYOUTS[name])
    assert _connected(grid)
    env = MazeEnv(layout=name, num_goals=4)
    obs, info = env.reset(seed=0)
    assert obs.std() > 10
    assert not env.in_wall(info["pose"][:2], AGENT_RADIUS)
    goal_cells = [tuple(cell) for cell in env.goal_positions]
    assert len(set(goal_cells)) == 4


def test_marked_spawn_and_goal_cells_are_used() -> None:
    env = MazeEnv(layout="u_maze")
    for seed in range(5):
        _, info = env.reset(seed=seed)
        spawn = env.grid[_cell(env, info["pose"][:2])]
        goal = env.grid[_cell(env, env.goal_positions[0])]
        assert (spawn, goal) == ("P", "G")


def _cell(env: MazeEnv, xy: np.ndarray) -> tuple[int, int]:
    from envs.maze import xy_to_cell

    return xy_to_cell(env.grid.shape, xy)


def test_merged_walls_cover_exactly_the_wall_cells() -> None:
    for name in LAYOUTS:
        grid = parse_layout(LAYOUTS[name])
        cover = np.zeros(grid.shape, int)
        boxes = merge_walls(grid)
        for r0, r1, c0, c1, _ in boxes:
            cover[r0:r1 + 1, c0:c1 + 1] += 1
        np.testing.assert_array_equal(cover, (grid == "*").astype(int))
        assert len(boxes) < (grid == "*").sum() / 2  # merging actually merges


def test_random_layout_reproducible_by_seed() -> None:
    a, b = MazeEnv(layout="random"), MazeEnv(layout="random")
    oa, _ = a.reset(seed=11)
    ob, _ = b.reset(seed=11)
    np.testing.assert_array_equal(a.grid, b.grid)
    np.testing.assert_array_equal(oa, ob)
    grid11 = a.grid.copy()
    a.reset(seed=12)
    assert not np.array_equal(a.grid, grid11)
    assert _connected(a.grid)
    np.testing.assert_array_equal(random_layout(11, 4), random_layout(11, 4))


def test_custom_ascii_layout() -> None:
    env = MazeEnv(layout="*****\n*P.G*\n*****")
    _, info = env.reset(seed=0)
    assert env.grid.shape == (3, 5)
    np.testing.assert_allclose(env.goal_positions[0], cell_to_xy((3, 5), (1, 3)))


@pytest.mark.parametrize("kwargs, match", [
    ({"layout": "nope"}, "layout must be one of"),
    ({"action_type": "joystick"}, "action_type must be one of"),
    ({"num_goals": 0}, "num_goals"),
    ({"image_size": 8}, "image_size"),
    ({"render_mode": "human"}, "render_mode"),
    ({"max_steps": 0}, "max_steps"),
    ({"layout": "random", "maze_size": 10}, "maze_size"),
    ({"layout": "***\n*x*\n***"}, "invalid characters"),
    ({"layout": "***\n*. \n***"}, "enclosed"),
])
def test_bad_kwargs_raise_clear_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MazeEnv(**kwargs)


def test_render_then_optimizer_does_not_crash() -> None:
    """The crash trap: render with software EGL, then let torch load triton (via Adam)."""
    code = ("import envs, torch\n"
            "env = envs.make('worldssl/Maze-v0'); env.reset(seed=0); env.step(1)\n"
            "torch.optim.Adam(torch.nn.Linear(2, 2).parameters())\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_renderers_of_several_envs_do_not_interfere() -> None:
    """Model swaps (random layouts) and garbage-collected envs must not corrupt another env's frames."""
    import gc

    fixed = MazeEnv(layout="medium")
    before, _ = fixed.reset(seed=1)
    rand = MazeEnv(layout="random")
    for seed in range(3):
        rand.reset(seed=seed)
        rand.render_top(64)
    del rand
    gc.collect()
    np.testing.assert_array_equal(fixed.reset(seed=1)[0], before)


def test_maze_rendering_leaves_dmc_frames_intact() -> None:
    """dm_control caches its current GL context; maze rendering must restore it (see preserve_gl_context)."""
    dmc = envs.make("worldssl/DMC-v0", frame_stack=1, image_size=48)
    before, _ = dmc.reset(seed=0)
    maze = MazeEnv(layout="random")
    maze.reset(seed=0)
    maze.reset(seed=1)  # swaps the model: a new MjrContext
    maze.step(FORWARD)
    maze.render_top(64)
    np.testing.assert_array_equal(dmc.reset(seed=0)[0], before)
    maze.close()
    np.testing.assert_array_equal(dmc.reset(seed=0)[0], before)
    dmc.close()

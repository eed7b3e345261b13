"""C-SWM grid worlds (envs.gridworld): API checks, seeding, hand-checked moves, rendering, time limits."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs.gridworld import CSWM_CUBE_RGB, CUBES_STYLES, SET1_RGB, CubesEnv, ShapesEnv, shape_mask

IDS = ["worldssl/Shapes-v0", "worldssl/Cubes-v1", "worldssl/Cubes-v0"]
CLASSES = [ShapesEnv, CubesEnv]
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3

# A placement with objects in the four corners and the centre.
CORNERS = np.array([[0, 0], [0, 4], [4, 0], [4, 4], [2, 2]])


def act(obj: int, direction: int) -> int:
    return 4 * obj + direction


@pytest.fixture(params=CLASSES, ids=["shapes", "cubes"])
def env(request):
    e = request.param()
    e.reset(seed=0)
    yield e
    e.close()


def color_pixels(frame_hwc: np.ndarray, color: np.ndarray, tol: float = 40.0) -> int:
    """How many pixels lie within ``tol`` (Euclidean RGB) of ``color``."""
    diff = frame_hwc.reshape(-1, 3).astype(np.int64) - color.astype(np.int64)
    return int((np.linalg.norm(diff, axis=1) < tol).sum())


# -- API ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_env_checkers_pass(env_id):
    env = envs.make(env_id)
    gym_check_env(env.unwrapped, skip_render_check=True)  # no spec here; the render check runs below
    sb3_check_env(env.unwrapped, warn=True)
    env.close()
    rendering = gym.make(env_id, render_mode="rgb_array")
    gym_check_env(rendering.unwrapped, skip_render_check=False)
    rendering.close()


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_info(env_id):
    env = envs.make(env_id)
    assert env.observation_space == gym.spaces.Box(0, 255, (3, 50, 50), np.uint8)
    assert env.action_space == gym.spaces.Discrete(20)
    obs, info = env.reset(seed=3)
    assert obs.shape == (3, 50, 50) and obs.dtype == np.uint8
    assert info["state"].dtype == np.float32 and info["state"].shape == (10,)
    assert info["positions"].dtype == np.int64 and info["positions"].shape == (5, 2)
    np.testing.assert_array_equal(info["state"], info["positions"].reshape(-1))
    assert len({tuple(p) for p in info["positions"].tolist()}) == 5
    assert env.unwrapped.state_names[:3] == ["obj0_row", "obj0_col", "obj1_row"]
    assert len(env.unwrapped.state_names) == 10
    obs, reward, terminated, truncated, info = env.step(7)
    assert reward == 0.0 and not terminated and not truncated
    np.testing.assert_array_equal(info["positions"], env.unwrapped.positions)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_render_returns_current_frame_hwc(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    np.testing.assert_array_equal(env.render(), obs.transpose(1, 2, 0))
    obs, *_ = env.step(5)
    np.testing.assert_array_equal(env.render(), obs.transpose(1, 2, 0))
    env.close()


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize("kwargs, match", [
    ({"num_objects": 0}, "num_objects"),
    ({"num_objects": 26}, "num_objects"),
    ({"grid_size": 1}, "grid_size"),
    ({"image_size": 8}, "image_size"),
    ({"image_size": 50.0}, "image_size"),
    ({"render_mode": "human"}, "render_mode"),
])
def test_bad_kwargs_raise(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_shapes_needs_whole_cells():
    with pytest.raises(ValueError, match="multiple of grid_size"):
        ShapesEnv(image_size=52)


def test_bad_positions_and_actions_raise(env):
    with pytest.raises(ValueError, match="shape"):
        env.set_positions(CORNERS[:4])
    with pytest.raises(ValueError, match="distinct"):
        env.set_positions(np.array([[0, 0], [0, 0], [1, 1], [2, 2], [3, 3]]))
    with pytest.raises(ValueError, match="lie in"):
        env.set_positions(np.array([[0, 5], [0, 1], [1, 1], [2, 2], [3, 3]]))
    with pytest.raises(ValueError, match="action"):
        env.step(20)


def test_other_sizes_work():
    shapes = ShapesEnv(num_objects=3, grid_size=4, image_size=40)
    obs, info = shapes.reset(seed=0)
    assert obs.shape == (3, 40, 40) and info["positions"].shape == (3, 2)
    assert shapes.action_space.n == 12
    cubes = CubesEnv(num_objects=2, grid_size=3, image_size=64)
    obs, _ = cubes.reset(seed=0)
    assert obs.shape == (3, 64, 64)
    cubes.close()


# -- seeding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_frames_different_seed_differs(env_id):
    actions = [0, 5, 10, 15, 19, 3, 8]

    def rollout(seed: int) -> list[np.ndarray]:
        env = envs.make(env_id)
        obs, _ = env.reset(seed=seed)
        frames = [obs]
        for a in actions:
            frames.append(env.step(a)[0])
        env.close()
        return frames

    a, b, c = rollout(7), rollout(7), rollout(8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_reset_is_uniform_over_cells():
    env = ShapesEnv()
    counts = np.zeros((5, 5))
    for seed in range(400):
        _, info = env.reset(seed=seed)
        for r, c in info["positions"]:
            counts[r, c] += 1
    # 2,000 placements over 25 cells: 80 expected per cell
    assert counts.min() > 45 and counts.max() < 120


# -- dynamics -----------------------------------------------------------------------------------------
def test_free_moves_in_each_direction(env):
    env.set_positions(CORNERS)
    expected = CORNERS.copy()
    for direction, delta in [(UP, (-1, 0)), (RIGHT, (0, 1)), (DOWN, (1, 0)), (LEFT, (0, -1))]:
        _, _, _, _, info = env.step(act(4, direction))  # object 4 starts in the free centre
        expected[4] += delta
        np.testing.assert_array_equal(info["positions"], expected)
        np.testing.assert_array_equal(env.positions, expected)


@pytest.mark.parametrize("obj, direction", [(0, UP), (0, LEFT), (1, UP), (1, RIGHT),
                                            (2, DOWN), (2, LEFT), (3, DOWN), (3, RIGHT)])
def test_move_off_the_grid_does_nothing(env, obj, direction):
    env.set_positions(CORNERS)
    _, _, _, _, info = env.step(act(obj, direction))
    np.testing.assert_array_equal(info["positions"], CORNERS)


def test_move_into_another_object_does_nothing(env):
    start = np.array([[2, 2], [1, 2], [2, 3], [3, 2], [2, 1]])  # object 0 boxed in on all four sides
    env.set_positions(start)
    for direction in (UP, RIGHT, DOWN, LEFT):
        _, _, _, _, info = env.step(act(0, direction))
        np.testing.assert_array_equal(info["positions"], start)
    _, _, _, _, info = env.step(act(1, UP))  # a neighbour can still move away
    expected = start.copy()
    expected[1] = (0, 2)
    np.testing.assert_array_equal(info["positions"], expected)
    _, _, _, _, info = env.step(act(0, UP))  # ...which frees the cell for object 0
    expected[0] = (1, 2)
    np.testing.assert_array_equal(info["positions"], expected)


# -- Shapes rendering ---------------------------------------------------------------------------------
def cell(frame_chw: np.ndarray, row: int, col: int, px: int = 10) -> np.ndarray:
    return frame_chw[:, row * px:(row + 1) * px, col * px:(col + 1) * px]


def test_shapes_draws_each_object_in_its_cell_and_colour():
    env = ShapesEnv()
    env.reset(seed=0)
    obs = env.set_positions(CORNERS)
    occupied = {tuple(p) for p in CORNERS.tolist()}
    for i, (r, c) in enumerate(CORNERS):
        pixels = cell(obs, r, c).reshape(3, -1).T
        lit = pixels[pixels.any(axis=1)]
        assert len(lit) >= 50  # the smallest shape, the triangle, covers about half its cell
        np.testing.assert_array_equal(np.unique(lit, axis=0), SET1_RGB[i][None])
        np.testing.assert_array_equal(cell(obs, r, c).any(axis=0), env.masks[i])
    for r in range(5):
        for c in range(5):
            if (r, c) not in occupied:
                assert not cell(obs, r, c).any(), f"empty cell ({r}, {c}) is not black"


def test_shapes_masks_differ_by_shape():
    circle, triangle, square = (shape_mask(s, 10) for s in ("circle", "triangle", "square"))
    assert square.all()
    assert 0.6 < circle.mean() < 0.9 and 0.35 < triangle.mean() < 0.65
    assert not np.array_equal(circle, triangle)
    assert triangle[0].sum() < triangle[-1].sum()  # apex up, base down
    np.testing.assert_array_equal(circle, circle[::-1])
    np.testing.assert_array_equal(circle, circle.T)
    env = ShapesEnv()
    assert env.shapes == ["circle", "triangle", "square", "circle", "triangle"]
    np.testing.assert_array_equal(env.masks[0], env.masks[3])


def test_shapes_moving_an_object_moves_its_pixels():
    env = ShapesEnv()
    env.reset(seed=0)
    before = env.set_positions(CORNERS)
    after, *_ = env.step(act(4, RIGHT))
    np.testing.assert_array_equal(cell(after, 2, 3), cell(before, 2, 2))
    assert not cell(after, 2, 2).any()
    changed = np.argwhere((before != after).any(axis=0))
    assert changed[:, 0].min() >= 20 and changed[:, 0].max() < 30  # only row 2's pixels changed
    assert changed[:, 1].min() >= 20 and changed[:, 1].max() < 40


# -- Cubes rendering ----------------------------------------------------------------------------------
@pytest.mark.parametrize("style", CUBES_STYLES)
def test_cubes_frames_follow_the_blocks(style):
    env = CubesEnv(style=style)
    env.reset(seed=0)
    a = env.set_positions(CORNERS)
    b, *_ = env.step(act(4, UP))
    assert (a != b).any(axis=0).sum() > 20
    c, *_ = env.step(act(4, DOWN))  # back where it was: rendering is deterministic
    np.testing.assert_array_equal(a, c)
    other = env.set_positions(CORNERS[[1, 0, 2, 3, 4]])  # swap two blocks' places
    assert not np.array_equal(a, other)
    twin = CubesEnv(style=style)
    np.testing.assert_array_equal(twin.set_positions(CORNERS), a)
    twin.close()
    env.close()


@pytest.mark.parametrize("style", CUBES_STYLES)
def test_cubes_shows_every_block_colour_and_only_those(style):
    env = CubesEnv(num_objects=3, style=style)
    env.reset(seed=0)
    for placement in (CORNERS[:3], np.array([[2, 2], [1, 1], [3, 4]])):
        frame = env.set_positions(placement).transpose(1, 2, 0)
        palette = CubesEnv(num_objects=5, style=style).colors  # objects 3 and 4 are not on the board
        for i in range(3):
            assert color_pixels(frame, palette[i]) >= 10, f"block {i}'s colour is missing"
        for i in (3, 4):
            assert color_pixels(frame, palette[i]) == 0
    env.close()


@pytest.mark.parametrize("style", CUBES_STYLES)
def test_cubes_block_pixels_move_with_the_block(style):
    env = CubesEnv(style=style)
    env.reset(seed=0)
    before = env.set_positions(CORNERS)
    after, *_ = env.step(act(4, RIGHT))  # (in cswm's corner view, moving left would hide part of block 0)
    changed = (before != after).any(axis=0)
    # most changed pixels are the moved block's (orange) or the board it uncovered / covered
    moved_color = np.concatenate([before.transpose(1, 2, 0)[changed], after.transpose(1, 2, 0)[changed]])
    assert color_pixels(moved_color, env.colors[4]) >= 10
    for i in range(4):
        assert color_pixels(moved_color, env.colors[i]) == 0
    env.close()


def test_cubes_styles_differ_and_a_bad_style_is_refused():
    checker, plain = CubesEnv(style="checker"), CubesEnv(style="plain")
    a, b = checker.set_positions(CORNERS), plain.set_positions(CORNERS)
    assert not np.array_equal(a, b)
    board = b[:, 25:, 25].T  # a column of the plain board below the centre block: untextured, one grey
    grey = [px for px in board if abs(int(px[0]) - int(px[2])) < 8 and px.max() > 60]
    assert len(grey) >= 5 and len({tuple(px) for px in grey}) <= 3
    with pytest.raises(ValueError, match="style"):
        CubesEnv(style="wood")
    checker.close()
    plain.close()


def test_cubes_cswm_style_has_cswm_colours_and_white_walls():
    env = CubesEnv(style="cswm")
    np.testing.assert_array_equal(env.colors, CSWM_CUBE_RGB[:5])
    for style in ("checker", "plain"):  # the other styles keep Set1
        np.testing.assert_array_equal(CubesEnv(style=style).colors, SET1_RGB[:5])
    frame = env.set_positions(CORNERS).transpose(1, 2, 0)
    assert color_pixels(frame, np.array([255, 255, 255]), tol=60) > 200  # walls and sky, as matplotlib's panes
    assert color_pixels(frame, np.array([0, 0, 0]), tol=30) == 0  # no black background anywhere
    assert not np.array_equal(frame, CubesEnv(style="plain").set_positions(CORNERS).transpose(1, 2, 0))
    env.close()


def test_cubes_versions_pin_their_look():
    """v1 (and the class default) draws the cswm look; v0 keeps the checker look its datasets were made with."""
    frames = {}
    for key, env in [("v1", envs.make("worldssl/Cubes-v1")), ("v0", envs.make("worldssl/Cubes-v0")),
                     ("default", CubesEnv()), ("cswm", CubesEnv(style="cswm")), ("checker", CubesEnv(style="checker")),
                     ("v0 as cswm", envs.make("worldssl/Cubes-v0", style="cswm"))]:
        frames[key] = env.reset(seed=3)[0]
        env.close()
    for a, b in [("v1", "cswm"), ("default", "cswm"), ("v0", "checker"), ("v0 as cswm", "cswm")]:
        np.testing.assert_array_equal(frames[a], frames[b], err_msg=f"{a} vs {b}")
    assert not np.array_equal(frames["v1"], frames["v0"])


# -- time limits --------------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_time_limits(env_id):
    for env, limit in [(envs.make(env_id), 100), (gym.make(env_id), 100),
                       (envs.make(env_id, max_episode_steps=10), 10)]:
        env.reset(seed=0)
        for t in range(1, limit + 1):
            _, _, terminated, truncated, _ = env.step(t % 20)
            assert not terminated
            assert truncated == (t == limit)
        env.close()

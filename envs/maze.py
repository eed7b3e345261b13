"""First-person maze navigation in MuJoCo: an egocentric camera, coloured walls, visible goal objects.

The maze is an ASCII grid (``*`` wall, ``.`` or space floor, ``P`` spawn cell, ``G`` goal cell). Each cell
is a ``CELL`` x ``CELL`` metre square; row 0 is the north (+y) edge, column 0 the west (-x) edge. Walls are
box geoms, runs of equally coloured wall cells merged into one box to keep the geom count low. Wall colours
change by region and the floor is a checkerboard, so an egocentric frame tells places apart.

The agent is a sphere on three joints (slide x, slide y, hinge yaw) under velocity control (joint
velocities set every physics substep), so walls block it through ordinary frictionless contacts. Goals are mocap bodies (moved at reset without recompiling); the
target is goal 0, the others are distractors with other colours and shapes. Layout ``"random"`` draws a
new labmaze layout at every reset and recompiles the model then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from worldssl.runtime.rendering import prepare_rendering

prepare_rendering()  # MUJOCO_GL must be set before mujoco is imported

import mujoco  # noqa: E402

from envs.rendering import OffscreenRenderer  # noqa: E402

CELL = 1.0  # metres per grid cell
WALL_HEIGHT = 1.0
EYE_HEIGHT = 0.4  # agent body (and camera) height above the floor
AGENT_RADIUS = 0.2
GOAL_SIZE = 0.17
CONTROL_DT = 0.1  # seconds per env step
PHYSICS_DT = 0.025  # 4 substeps: 6 cm a substep at full speed, far below the agent's radius
REGION = 3  # wall colour changes every REGION cells in each direction

#: Fixed layouts. ``P`` marks spawn cells, ``G`` goal cells; where a layout has no ``G`` (or fewer than
#: ``num_goals``), goals are drawn from every free cell, and without ``P`` the spawn is too.
LAYOUTS: dict[str, tuple[str, ...]] = {
    "open": (
        "**********",
        "*........*",
        "*........*",
        "*........*",
        "*........*",
        "*........*",
        "*........*",
        "*........*",
        "*........*",
        "**********",
    ),
    "u_maze": (
        "**********",
        "*PP......*",
        "*PP......*",
        "*******..*",
        "*******..*",
        "*GG......*",
        "*GG......*",
        "**********",
    ),
    "four_rooms": (
        "*************",
        "*.....*.....*",
        "*.....*.....*",
        "*...........*",
        "*.....*.....*",
        "*.....*.....*",
        "**.****.....*",
        "*.....***.***",
        "*.....*.....*",
        "*.....*.....*",
        "*...........*",
        "*.....*.....*",
        "*************",
    ),
    "medium": (
        "***********",
        "*...*.....*",
        "*.*.*.***.*",
        "*.*...*...*",
        "*.*****.***",
        "*.....*...*",
        "***.*.***.*",
        "*...*.....*",
        "*.*****.*.*",
        "*.......*.*",
        "***********",
    ),
}

#: Muted wall colours; neighbouring regions get different entries (see ``_wall_colour``).
WALL_PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.78, 0.52, 0.42), (0.45, 0.60, 0.75), (0.72, 0.70, 0.45), (0.50, 0.68, 0.52),
    (0.66, 0.52, 0.70), (0.82, 0.80, 0.76), (0.42, 0.45, 0.50), (0.70, 0.62, 0.52),
)
#: (geom type, size, rgb) per goal; goal 0 is the target. Saturated and emissive, unlike the walls.
GOAL_STYLES: tuple[tuple[str, str, tuple[float, float, float]], ...] = (
    ("sphere", f"{GOAL_SIZE}", (1.0, 0.05, 0.05)),
    ("box", f"{GOAL_SIZE * 0.8} {GOAL_SIZE * 0.8} {GOAL_SIZE * 0.8}", (0.1, 1.0, 0.1)),
    ("cylinder", f"{GOAL_SIZE * 0.9} {GOAL_SIZE}", (0.1, 0.3, 1.0)),
    ("capsule", f"{GOAL_SIZE * 0.6} {GOAL_SIZE * 0.6}", (1.0, 0.9, 0.0)),
    ("ellipsoid", f"{GOAL_SIZE * 0.6} {GOAL_SIZE * 0.6} {GOAL_SIZE * 1.2}", (1.0, 0.1, 1.0)),
    ("box", f"{GOAL_SIZE * 0.5} {GOAL_SIZE} {GOAL_SIZE * 0.5}", (0.0, 1.0, 1.0)),
)
#: Discrete actions as (forward, turn) in [-1, 1]; turn > 0 is to the left (counter-clockwise).
DISCRETE_ACTIONS = np.array([[0, 0], [1, 0], [0, 1], [0, -1], [1, 1], [1, -1]], dtype=np.float64)
DISCRETE_ACTION_NAMES = ("noop", "forward", "turn_left", "turn_right", "forward_left", "forward_right")
STATE_NAMES = ("x", "y", "cos_yaw", "sin_yaw", "vx", "vy", "goal_x", "goal_y")
ACTION_TYPES = ("discrete", "continuous")
FREE = " .PG"


# ----------------------------------------------------------------------------------------------- layouts
def parse_layout(layout: str | Sequence[str]) -> np.ndarray:
    """An ASCII maze (one string with newlines, or a sequence of rows) as a 2D array of characters.

    Spaces and ``.`` are floor; the outer ring must be wall so the agent cannot leave the maze.
    """
    rows = layout.strip("\n").split("\n") if isinstance(layout, str) else list(layout)
    rows = [r.rstrip("\r") for r in rows]
    if len(rows) < 3 or len({len(r) for r in rows}) != 1 or len(rows[0]) < 3:
        raise ValueError("a maze layout must be a rectangle of at least 3x3 characters")
    grid = np.array([list(r) for r in rows])
    bad = set(np.unique(grid)) - set("*" + FREE)
    if bad:
        raise ValueError(f"maze layout has invalid characters {sorted(bad)}; valid: '*', '.', ' ', 'P', 'G'")
    border = np.concatenate([grid[0], grid[-1], grid[:, 0], grid[:, -1]])
    if np.any(border != "*"):
        raise ValueError("maze layout must be enclosed: its outer ring must be all '*' walls")
    if not np.any(np.isin(grid, list(FREE))):
        raise ValueError("maze layout has no free cell")
    return grid


def random_layout(size: int, seed: int) -> np.ndarray:
    """A labmaze ``RandomMaze`` of ``size`` x ``size`` cells (rooms joined by 1-cell corridors)."""
    import labmaze

    maze = labmaze.RandomMaze(height=size, width=size, max_rooms=4, room_min_size=2, room_max_size=4,
                              random_seed=int(seed), simplify=True)
    return parse_layout(str(maze.entity_layer))


def free_cells(grid: np.ndarray) -> list[tuple[int, int]]:
    return [(int(r), int(c)) for r, c in zip(*np.nonzero(np.isin(grid, list(FREE))))]


def cell_to_xy(grid_shape: tuple[int, int], cell: tuple[int, int]) -> np.ndarray:
    """World (x, y) of a cell's centre; the maze is centred on the origin."""
    h, w = grid_shape
    r, c = cell
    return np.array([(c - (w - 1) / 2) * CELL, ((h - 1) / 2 - r) * CELL])


def xy_to_cell(grid_shape: tuple[int, int], xy: Sequence[float]) -> tuple[int, int]:
    h, w = grid_shape
    return int(round((h - 1) / 2 - xy[1] / CELL)), int(round(xy[0] / CELL + (w - 1) / 2))


def _wall_colour(r: int, c: int) -> int:
    """Palette index of a wall cell: constant in REGION x REGION blocks, different for adjacent blocks."""
    return ((r // REGION) * 3 + (c // REGION)) % len(WALL_PALETTE)


def merge_walls(grid: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Wall cells as few boxes ``(r0, r1, c0, c1, colour)`` (inclusive bounds), one colour per box.

    Greedy: horizontal runs of same-coloured wall cells per row, then runs with identical column span and
    colour in consecutive rows are stacked into one rectangle.
    """
    open_boxes: dict[tuple[int, int, int], list[int]] = {}  # (c0, c1, colour) -> [r0, r1]
    boxes: list[tuple[int, int, int, int, int]] = []
    for r in range(grid.shape[0]):
        runs = _row_runs(grid[r], r)
        for key in list(open_boxes):
            if key not in runs:
                r0, r1 = open_boxes.pop(key)
                boxes.append((r0, r1, key[0], key[1], key[2]))
        for key in runs:
            if key in open_boxes:
                open_boxes[key][1] = r
            else:
                open_boxes[key] = [r, r]
    boxes.extend((r0, r1, k[0], k[1], k[2]) for k, (r0, r1) in open_boxes.items())
    return sorted(boxes)


def _row_runs(row: np.ndarray, r: int) -> set[tuple[int, int, int]]:
    runs: set[tuple[int, int, int]] = set()
    c = 0
    while c < len(row):
        if row[c] != "*":
            c += 1
            continue
        colour, start = _wall_colour(r, c), c
        while c + 1 < len(row) and row[c + 1] == "*" and _wall_colour(r, c + 1) == colour:
            c += 1
        runs.add((start, c, colour))
        c += 1
    return runs


# ------------------------------------------------------------------------------------------------ MJCF
def build_mjcf(grid: np.ndarray, num_goals: int, agent_margin: float = 0.07) -> str:
    """The MJCF of a maze: floor, merged wall boxes, the agent with its camera, goal mocap bodies.

    ``agent_margin`` should exceed the distance the agent moves in one physics substep: contacts then
    switch on before the sphere reaches a wall, so it never overlaps one (no tunnelling, no overshoot).
    """
    h, w = grid.shape
    half = max(h, w) * CELL / 2
    top_z = half / np.tan(np.deg2rad(30)) + WALL_HEIGHT
    walls = "\n".join(_wall_geom(grid.shape, i, box) for i, box in enumerate(merge_walls(grid)))
    materials = "\n".join(
        f'<material name="wall{i}" texture="wall" texrepeat="1 1" texuniform="true" '
        f'rgba="{r} {g} {b} 1" specular="0.1"/>' for i, (r, g, b) in enumerate(WALL_PALETTE))
    goals = "\n".join(_goal_body(i) for i in range(num_goals))
    return f"""
<mujoco model="worldssl_maze">
  <compiler angle="radian"/>
  <option timestep="{PHYSICS_DT}" gravity="0 0 0"/>
  <visual>
    <global offwidth="512" offheight="512"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
    <map znear="0.005"/>
    <quality shadowsize="2048"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.65 0.78 0.95" rgb2="0.2 0.3 0.5"
             width="32" height="32"/>
    <texture name="floor" type="2d" builtin="checker" rgb1="0.28 0.28 0.30" rgb2="0.52 0.50 0.46"
             width="64" height="64"/>
    <material name="floor" texture="floor" texrepeat="{1 / CELL} {1 / CELL}" texuniform="true"
              reflectance="0.15"/>
    <texture name="wall" type="2d" builtin="flat" rgb1="1 1 1" mark="edge" markrgb="0.55 0.55 0.55"
             width="64" height="64"/>
    {materials}
  </asset>
  <worldbody>
    <light name="sun" directional="true" pos="0 0 10" dir="-0.35 -0.55 -1" diffuse="0.5 0.5 0.5"
           castshadow="true"/>
    <geom name="floor" type="plane" pos="{(w % 2) * CELL / 2} {(h % 2) * CELL / 2} 0"
          size="{(w + 1) * CELL / 2} {(h + 1) * CELL / 2} 0.1" material="floor"
          contype="0" conaffinity="0"/>
    {walls}
    <camera name="top" pos="0 0 {top_z:.3f}" xyaxes="1 0 0 0 1 0" fovy="60"/>
    <body name="agent" pos="0 0 {EYE_HEIGHT}">
      <joint name="x" type="slide" axis="1 0 0" damping="0"/>
      <joint name="y" type="slide" axis="0 1 0" damping="0"/>
      <joint name="yaw" type="hinge" axis="0 0 1" damping="0"/>
      <inertial pos="0 0 0" mass="1" diaginertia="0.02 0.02 0.02"/>
      <geom name="agent" type="sphere" size="{AGENT_RADIUS}" rgba="0.95 0.95 0.95 1" group="3"
            condim="1" contype="1" conaffinity="1" margin="{agent_margin:.4f}"/>
      <geom name="nose" type="box" pos="{AGENT_RADIUS} 0 0" size="0.08 0.04 0.04" rgba="0.1 0.1 0.1 1"
            group="3" contype="0" conaffinity="0"/>
      <camera name="ego" pos="0 0 0" xyaxes="0 -1 0 0 0 1" fovy="90"/>
    </body>
    {goals}
  </worldbody>
</mujoco>
"""


def _wall_geom(shape: tuple[int, int], i: int, box: tuple[int, int, int, int, int]) -> str:
    r0, r1, c0, c1, colour = box
    centre = (cell_to_xy(shape, (r0, c0)) + cell_to_xy(shape, (r1, c1))) / 2
    sx, sy = (c1 - c0 + 1) * CELL / 2, (r1 - r0 + 1) * CELL / 2
    return (f'<geom name="wall{i}" type="box" pos="{centre[0]:.4f} {centre[1]:.4f} {WALL_HEIGHT / 2}" '
            f'size="{sx:.4f} {sy:.4f} {WALL_HEIGHT / 2}" material="wall{colour}" condim="1" '
            f'contype="1" conaffinity="1"/>')


def _goal_body(i: int) -> str:
    kind, size, (r, g, b) = GOAL_STYLES[i]
    return (f'<body name="goal{i}" mocap="true" pos="0 0 {EYE_HEIGHT}">'
            f'<geom type="{kind}" size="{size}" rgba="{r} {g} {b} 1" contype="0" conaffinity="0"/>'
            f'<geom type="cylinder" pos="0 0 {-EYE_HEIGHT / 2}" size="0.03 {EYE_HEIGHT / 2}" '
            f'rgba="0.2 0.2 0.2 1" contype="0" conaffinity="0"/></body>')


# ------------------------------------------------------------------------------------------------- env
class MazeEnv(gym.Env):
    """Navigate a MuJoCo maze from egocentric uint8 ``(3, H, W)`` frames to goal 0 (reward +1, terminate).

    Args:
        layout: a name in ``LAYOUTS``, ``"random"`` (a new labmaze layout every reset), or an ASCII grid.
        action_type: ``"discrete"`` (6 actions, ``DISCRETE_ACTION_NAMES``) or ``"continuous"``
            (forward velocity, turn rate) in [-1, 1].
        num_goals: goal objects in the maze (1-6); goal 0 is the target, the others are distractors.
        goal_image: append the egocentric view from a free cell beside the target, facing it (3 channels).
        max_steps: steps until ``truncated``.
        fast_render: switch shadows and reflections off (about 4x faster on software rendering).
        move_speed / turn_speed: metres / radians per step at full action.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / CONTROL_DT))}

    def __init__(self, layout: str = "open", image_size: int = 64, action_type: str = "discrete",
                 num_goals: int = 1, goal_image: bool = False, max_steps: int = 500, fast_render: bool = True,
                 render_mode: str | None = None, maze_size: int = 11, goal_radius: float = 0.4,
                 move_speed: float = 0.25, turn_speed: float = np.pi / 9):
        _validate(layout, image_size, action_type, num_goals, max_steps, render_mode, maze_size, goal_radius)
        if not 0 < move_speed <= CELL / 2 or not 0 < turn_speed <= np.pi:
            raise ValueError(f"move_speed must be in (0, {CELL / 2}] and turn_speed in (0, pi], "
                             f"got {move_speed!r}, {turn_speed!r}")
        self.layout_name = layout
        self.image_size = int(image_size)
        self.action_type = action_type
        self.num_goals = int(num_goals)
        self.goal_image = bool(goal_image)
        self.max_steps = int(max_steps)
        self.fast_render = bool(fast_render)
        self.render_mode = render_mode
        self.maze_size = int(maze_size)
        self.goal_radius = float(goal_radius)
        self.move_speed, self.turn_speed = float(move_speed), float(turn_speed)
        self.state_names = list(STATE_NAMES)
        if action_type == "discrete":
            self.action_space: gym.spaces.Space = gym.spaces.Discrete(len(DISCRETE_ACTIONS))
        else:
            self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        channels = 6 if self.goal_image else 3
        self.observation_space = gym.spaces.Box(0, 255, (channels, self.image_size, self.image_size), np.uint8)
        self.model: mujoco.MjModel | None = None
        self._renderer: OffscreenRenderer | None = None
        self._top_renderer: OffscreenRenderer | None = None
        self._grid: np.ndarray | None = None
        self._goal_frame = np.zeros((3, self.image_size, self.image_size), np.uint8)
        self._frame: np.ndarray | None = None
        self._steps = 0
        self._velocity = np.zeros(2)
        if layout != "random":
            self._load(parse_layout(LAYOUTS.get(layout, layout)))

    # -- public helpers ------------------------------------------------------------------------------
    @property
    def grid(self) -> np.ndarray:
        """The current layout as a 2D array of characters (``*`` walls)."""
        if self._grid is None:
            raise RuntimeError("call reset() first: layout='random' draws its maze at reset")
        return self._grid

    @property
    def goal_positions(self) -> np.ndarray:
        """World (x, y) of every goal; row 0 is the target."""
        return self.data.mocap_pos[: self.num_goals, :2].copy()

    def set_pose(self, x: float, y: float, yaw: float) -> np.ndarray:
        """Teleport the agent (zero velocity) and return the new egocentric observation; for tests and demos."""
        self.data.qpos[:3] = (x, y, yaw)
        self.data.qvel[:] = 0.0
        self._velocity = np.zeros(2)
        mujoco.mj_forward(self.model, self.data)
        return self._observe()

    def in_wall(self, xy: Sequence[float], margin: float = 0.0) -> bool:
        """Whether a disc of radius ``margin`` at ``xy`` overlaps a wall cell."""
        grid = self.grid
        for dx in (-margin, 0.0, margin):
            for dy in (-margin, 0.0, margin):
                r, c = xy_to_cell(grid.shape, (xy[0] + dx, xy[1] + dy))
                if not (0 <= r < grid.shape[0] and 0 <= c < grid.shape[1]) or grid[r, c] == "*":
                    return True
        return False

    def render_top(self, size: int = 256) -> np.ndarray:
        """A top-down HWC uint8 view of the whole maze, the agent and goals (for previews and debugging)."""
        size = min(int(size), 512)
        if self._top_renderer is None or self._top_renderer.size != size:
            self._close_renderer("_top_renderer")
            self._top_renderer = OffscreenRenderer(size)
        if self._top_renderer.model is not self.model:
            self._top_renderer.set_model(self.model)
        option = mujoco.MjvOption()
        option.geomgroup[3] = 1
        return self._top_renderer.render(self.data, "top", option, self.fast_render)

    # -- gym API -------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if self.layout_name == "random":
            self._load(random_layout(self.maze_size, int(self.np_random.integers(2**31 - 1))))
        mujoco.mj_resetData(self.model, self.data)
        goals, spawn = self._sample_cells()
        for i, cell in enumerate(goals):
            self.data.mocap_pos[i, :2] = cell_to_xy(self.grid.shape, cell)
        if self.goal_image:
            self._goal_frame = self._render_goal_view(goals)
        yaw = float(self.np_random.uniform(-np.pi, np.pi))
        xy = cell_to_xy(self.grid.shape, spawn)
        self._steps = 0
        obs = self.set_pose(float(xy[0]), float(xy[1]), yaw)
        return obs, self._info()

    def step(self, action):
        forward, turn = self._decode(action)
        speed, rate = forward * self.move_speed / CONTROL_DT, turn * self.turn_speed / CONTROL_DT
        start = self.data.qpos[:2].copy()
        for _ in range(self._substeps):
            # Velocity control by setting the joint velocities each substep: the contact solver cancels the
            # part heading into a wall (contacts switch on at the agent's margin, before it touches). A force
            # servo stiff enough to track the speed out-pushes MuJoCo's soft contacts and tunnels through.
            yaw = self.data.qpos[2]
            self.data.qvel[:3] = (speed * np.cos(yaw), speed * np.sin(yaw), rate)
            mujoco.mj_step(self.model, self.data)
        self._steps += 1
        self._velocity = (self.data.qpos[:2] - start) / CONTROL_DT
        distance = float(np.linalg.norm(self.data.qpos[:2] - self.data.mocap_pos[0, :2]))
        terminated = distance < self.goal_radius
        truncated = not terminated and self._steps >= self.max_steps
        obs = self._observe()
        return obs, 1.0 if terminated else 0.0, terminated, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            return None
        if self._frame is None:
            self._observe()
        return self._frame.transpose(1, 2, 0).copy()

    def close(self) -> None:
        self._close_renderer("_renderer")
        self._close_renderer("_top_renderer")

    # -- internals -----------------------------------------------------------------------------------
    def _load(self, grid: np.ndarray) -> None:
        """Compile a layout's model and point the renderer at it."""
        self._grid = grid
        substeps = max(1, int(round(CONTROL_DT / PHYSICS_DT)))
        margin = 1.2 * self.move_speed / substeps
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(grid, self.num_goals, margin))
        self.data = mujoco.MjData(self.model)
        self._substeps = substeps
        self._free = free_cells(grid)
        if self._renderer is None:
            self._renderer = OffscreenRenderer(self.image_size)
        self._renderer.set_model(self.model)
        self._ego_option = mujoco.MjvOption()
        self._ego_option.geomgroup[3] = 0  # the agent's own body would block its camera

    def _close_renderer(self, attr: str) -> None:
        renderer = getattr(self, attr, None)
        if renderer is not None:
            renderer.close()
            setattr(self, attr, None)

    def __del__(self) -> None:
        self.close()

    def _sample_cells(self) -> tuple[list[tuple[int, int]], tuple[int, int]]:
        """Goal cells (target first) and a spawn cell, all distinct; spawn not next to the target if possible."""
        grid, rng = self.grid, self.np_random
        marked_goals = [c for c in self._free if grid[c] == "G"]
        pool = marked_goals if len(marked_goals) >= self.num_goals else self._free
        if len(self._free) < self.num_goals + 1:
            raise ValueError(f"layout has {len(self._free)} free cells, need num_goals + 1 = {self.num_goals + 1}")
        goals = [pool[i] for i in rng.permutation(len(pool))[: self.num_goals]]
        spawns = [c for c in self._free if grid[c] == "P" and c not in goals]
        spawns = spawns or [c for c in self._free if c not in goals]
        far = [c for c in spawns if abs(c[0] - goals[0][0]) + abs(c[1] - goals[0][1]) >= 2]
        spawns = far or spawns
        return goals, spawns[int(rng.integers(len(spawns)))]

    def _render_goal_view(self, goals: list[tuple[int, int]]) -> np.ndarray:
        """The egocentric frame from a free cell beside the target, facing it (cells sit in 4-neighbours)."""
        grid, (r, c) = self.grid, goals[0]
        options = [(dr, dc) for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)) if grid[r + dr, c + dc] != "*"]
        dr, dc = options[int(self.np_random.integers(len(options)))] if options else (0, 0)
        xy = cell_to_xy(grid.shape, (r + dr, c + dc))
        target = cell_to_xy(grid.shape, (r, c))
        yaw = float(np.arctan2(target[1] - xy[1], target[0] - xy[0])) if options else 0.0
        return self.set_pose(float(xy[0]), float(xy[1]), yaw)[:3].copy()

    def _decode(self, action) -> tuple[float, float]:
        if self.action_type == "discrete":
            forward, turn = DISCRETE_ACTIONS[int(np.asarray(action).reshape(-1)[0])]
            return float(forward), float(turn)
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        if a.shape != (2,):
            raise ValueError(f"continuous action must have 2 entries (forward, turn), got shape {a.shape}")
        return float(a[0]), float(a[1])

    def _observe(self) -> np.ndarray:
        frame = self._renderer.render(self.data, "ego", self._ego_option, self.fast_render)
        self._frame = np.ascontiguousarray(frame.transpose(2, 0, 1))
        if self.goal_image:
            return np.concatenate([self._frame, self._goal_frame], axis=0)
        return self._frame.copy()

    def _info(self) -> dict[str, Any]:
        x, y, yaw = self.data.qpos[:3]
        yaw = np.arctan2(np.sin(yaw), np.cos(yaw))  # the hinge is unbounded; report yaw in [-pi, pi]
        vx, vy = self._velocity  # mean over the last step; the final substep's qvel jitters at walls
        gx, gy = self.data.mocap_pos[0, :2]
        state = np.array([x, y, np.cos(yaw), np.sin(yaw), vx, vy, gx, gy], dtype=np.float32)
        return {"pose": np.array([x, y, yaw], dtype=np.float32), "state": state,
                "goal_distance": float(np.hypot(x - gx, y - gy))}


def _validate(layout: Any, image_size: Any, action_type: Any, num_goals: Any, max_steps: Any,
              render_mode: Any, maze_size: Any, goal_radius: Any) -> None:
    if not isinstance(layout, str) or (layout not in LAYOUTS and layout != "random" and "\n" not in layout):
        raise ValueError(f"layout must be one of {sorted(LAYOUTS) + ['random']} or an ASCII grid "
                         f"with newlines ('*' wall, '.' floor, 'P' spawn, 'G' goal), got {layout!r}")
    if not isinstance(image_size, (int, np.integer)) or not 16 <= image_size <= 512:
        raise ValueError(f"image_size must be an int in [16, 512] (64 or 84 usual), got {image_size!r}")
    if action_type not in ACTION_TYPES:
        raise ValueError(f"action_type must be one of {list(ACTION_TYPES)}, got {action_type!r}")
    if not isinstance(num_goals, (int, np.integer)) or not 1 <= num_goals <= len(GOAL_STYLES):
        raise ValueError(f"num_goals must be an int in [1, {len(GOAL_STYLES)}], got {num_goals!r}")
    if not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise ValueError(f"max_steps must be an int >= 1, got {max_steps!r}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
    if not isinstance(maze_size, (int, np.integer)) or maze_size < 7 or maze_size % 2 == 0:
        raise ValueError(f"maze_size (random layouts) must be an odd int >= 7, got {maze_size!r}")
    if not 0 < goal_radius < CELL:
        raise ValueError(f"goal_radius must be in (0, {CELL}), got {goal_radius!r}")


__all__ = ["DISCRETE_ACTION_NAMES", "LAYOUTS", "STATE_NAMES", "MazeEnv", "build_mjcf", "cell_to_xy", "free_cells",
           "merge_walls", "parse_layout", "random_layout", "xy_to_cell"]

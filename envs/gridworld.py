"""C-SWM's object grid worlds: 2D Shapes (numpy sprites) and 3D Cubes (MuJoCo blocks).

Both share one dynamics model (Kipf et al. 2020): ``num_objects`` objects on a ``grid_size`` x ``grid_size``
grid, at most one per cell. Action ``a`` pushes object ``a // 4`` one cell in direction ``a % 4`` of
up / right / down / left on (row, col) positions; a push off the grid or into an occupied cell does nothing.
Reward is always 0 and episodes never terminate (the registry adds the time limit).

Observations are uint8 ``(3, H, W)`` frames; ``info["state"]`` holds the flattened (row, col) positions
as float32 and ``info["positions"]`` an int64 ``(K, 2)`` copy, for probes and hand-checked tests.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

#: (d_row, d_col) for action % 4: up, right, down, left.
DIRECTIONS = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)], dtype=np.int64)

#: matplotlib's Set1 palette as RGB; object i gets colour i (C-SWM colours its objects from Set1 too).
SET1_RGB = np.array([
    (228, 26, 28), (55, 126, 184), (77, 175, 74), (152, 78, 163), (255, 127, 0),
    (255, 255, 51), (166, 86, 40), (247, 129, 191), (153, 153, 153),
], dtype=np.uint8)

SHAPE_NAMES = ("circle", "triangle", "square")


class _GridWorld(gym.Env):
    """Grid dynamics, seeding, validation and ``info``; subclasses only draw ``self._positions``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, num_objects: int = 5, grid_size: int = 5, image_size: int = 50,
                 render_mode: str | None = None):
        _check_int("grid_size", grid_size, 2, 64)
        _check_int("num_objects", num_objects, 1, min(grid_size * grid_size, len(SET1_RGB)))
        _check_int("image_size", image_size, 16, 1024)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.num_objects, self.grid_size, self.image_size = int(num_objects), int(grid_size), int(image_size)
        self.render_mode = render_mode
        self.colors: np.ndarray = SET1_RGB[: self.num_objects].copy()  # (K, 3) uint8
        self.action_space = gym.spaces.Discrete(4 * self.num_objects)
        self.observation_space = gym.spaces.Box(0, 255, (3, self.image_size, self.image_size), np.uint8)
        self.state_names = [f"obj{i}_{axis}" for i in range(self.num_objects) for axis in ("row", "col")]
        self._positions = np.zeros((self.num_objects, 2), dtype=np.int64)
        self._frame: np.ndarray | None = None  # (3, H, W) of the current positions

    # -- gymnasium API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Place the objects on distinct uniformly random cells (or on ``options["positions"]``)."""
        super().reset(seed=seed)
        if options and options.get("positions") is not None:
            self._positions = self._validated(options["positions"])
        else:
            cells = self.np_random.choice(self.grid_size ** 2, size=self.num_objects, replace=False)
            self._positions = np.stack(np.divmod(cells, self.grid_size), axis=1).astype(np.int64)
        return self._observe(), self._info()

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action must be an int in [0, {self.action_space.n}), got {action!r}")
        obj, direction = divmod(int(action), 4)
        self._move(obj, DIRECTIONS[direction])
        return self._observe(), 0.0, False, False, self._info()

    def render(self) -> np.ndarray:
        """The current frame as ``(H, W, 3)`` uint8."""
        if self._frame is None:
            self._frame = self._draw()
        return self._frame.transpose(1, 2, 0).copy()

    # -- positions ----------------------------------------------------------------------------------
    @property
    def positions(self) -> np.ndarray:
        """A copy of the (row, col) positions, int64 ``(K, 2)``."""
        return self._positions.copy()

    def set_positions(self, positions: Any) -> np.ndarray:
        """Put the objects on ``positions`` ((K, 2) distinct in-grid cells); returns the new observation."""
        self._positions = self._validated(positions)
        return self._observe()

    def _move(self, obj: int, delta: np.ndarray) -> None:
        target = self._positions[obj] + delta
        if np.any(target < 0) or np.any(target >= self.grid_size):
            return
        if np.any(np.all(self._positions == target, axis=1)):
            return
        self._positions[obj] = target

    def _validated(self, positions: Any) -> np.ndarray:
        arr = np.asarray(positions)
        k = self.num_objects
        if arr.shape != (k, 2):
            raise ValueError(f"positions must have shape ({k}, 2), got {arr.shape}")
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"positions must be whole cell indices, got {arr.tolist()}")
        arr = arr.astype(np.int64)
        if arr.min() < 0 or arr.max() >= self.grid_size:
            raise ValueError(f"positions must lie in [0, {self.grid_size}), got {arr.tolist()}")
        if len({tuple(p) for p in arr.tolist()}) != k:
            raise ValueError(f"positions must be distinct cells, got {arr.tolist()}")
        return arr

    # -- observations -------------------------------------------------------------------------------
    def _observe(self) -> np.ndarray:
        self._frame = self._draw()
        return self._frame.copy()

    def _info(self) -> dict[str, Any]:
        return {"state": self._positions.reshape(-1).astype(np.float32), "positions": self._positions.copy()}

    def _draw(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def _check_int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")


# ------------------------------------------------------------------------------------------------------
# 2D Shapes
# ------------------------------------------------------------------------------------------------------
def shape_mask(shape: str, size: int) -> np.ndarray:
    """A ``(size, size)`` bool mask of a circle, an upward triangle or a full square, by pixel centres."""
    centres = np.arange(size) + 0.5
    y, x = np.meshgrid(centres, centres, indexing="ij")
    half = size / 2
    if shape == "circle":
        return (y - half) ** 2 + (x - half) ** 2 <= half ** 2
    if shape == "triangle":  # apex at the top centre, base along the bottom edge
        return np.abs(x - half) <= y / 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    raise ValueError(f"shape must be one of {SHAPE_NAMES}, got {shape!r}")


class ShapesEnv(_GridWorld):
    """C-SWM 2D Shapes: object i is a circle / triangle / square (by ``i % 3``) in its own colour, on black.

    Each object's sprite (its shape in its colour on a black cell) is drawn once; a frame is a black canvas
    with every sprite copied into its cell, so stepping costs a few microseconds.
    """

    def __init__(self, num_objects: int = 5, grid_size: int = 5, image_size: int = 50,
                 render_mode: str | None = None):
        super().__init__(num_objects, grid_size, image_size, render_mode)
        if image_size % grid_size:
            raise ValueError(f"image_size must be a multiple of grid_size for Shapes, got "
                             f"image_size={image_size}, grid_size={grid_size}")
        self.cell_px = image_size // grid_size
        if self.cell_px < 3:
            raise ValueError(f"image_size // grid_size must be >= 3 px per cell, got {self.cell_px}")
        self.shapes = [SHAPE_NAMES[i % 3] for i in range(self.num_objects)]
        self.masks = np.stack([shape_mask(s, self.cell_px) for s in self.shapes])  # (K, c, c)
        # (K, 3, c, c): colour where the mask is set, black elsewhere
        self._sprites = (self.masks[:, None] * self.colors[:, :, None, None]).astype(np.uint8)

    def _draw(self) -> np.ndarray:
        c = self.cell_px
        frame = np.zeros((3, self.image_size, self.image_size), dtype=np.uint8)
        for sprite, (row, col) in zip(self._sprites, self._positions.tolist()):
            frame[:, row * c:(row + 1) * c, col * c:(col + 1) * c] = sprite
        return frame


# ------------------------------------------------------------------------------------------------------
# 3D Cubes
# ------------------------------------------------------------------------------------------------------
#: The named matplotlib colours C-SWM's Cubes frames use, in its object order (purple, green, orange, blue,
#: brown), then four more named colours (red, cyan, pink, olive) so up to 9 objects stay distinct.
CSWM_CUBE_RGB = np.array([
    (128, 0, 128), (0, 128, 0), (255, 165, 0), (0, 0, 255), (165, 42, 42),
    (255, 0, 0), (0, 255, 255), (255, 192, 203), (128, 128, 0),
], dtype=np.uint8)

#: Looks of the Cubes board. Each entry: ``palette`` (``set1`` as Shapes, or ``cswm``), ``board``
#: (``"checker"`` for a checkered texture, else the board's RGB), ``walls`` (white walls on the two far sides
#: and a white sky, as matplotlib's 3D axes panes), ``block`` (edge, in cells) and its ``specular``,
#: ``elevation`` / ``azimuth`` (degrees; the camera looks at the board centre from that direction, azimuth
#: -90 is straight down the rows), ``distance`` (times ``grid_size``), ``aim`` (how far the camera is lifted,
#: in cells, which moves the board down in the frame), ``fovy``, the ``headlight`` (ambient, diffuse) and
#: ``sun`` intensities and the sun's direction ``sun_dir``.
#:
#: - ``cswm`` (the default, ``worldssl/Cubes-v1``): closest to C-SWM's matplotlib frames: its five colours,
#:   fully saturated under brighter light, 0.94-cell blocks on a grey floor with white walls behind, seen
#:   from 30 degrees up and 60 degrees round, as matplotlib's default 3D view. C-SWM's slots separate the
#:   cubes on these frames and not on the other two (docs/results/cubes-v0-plateau.md).
#: - ``checker`` (``worldssl/Cubes-v0``): a checkered board under a steep camera, 0.8-cell blocks in Set1
#:   colours.
#: - ``plain``: an untextured board, 0.9-cell blocks, the camera closer.
CUBES_STYLES: dict[str, dict[str, Any]] = {
    "checker": dict(palette="set1", board="checker", walls=False, block=0.8, specular=0.1,
                    elevation=55.0, azimuth=-90.0, distance=1.75, aim=0.0, fovy=40.0,
                    headlight=(0.35, 0.35), sun=0.55, sun_dir="0.3 0.5 -1"),
    "plain": dict(palette="set1", board="0.46 0.46 0.48", walls=False, block=0.9, specular=0.1,
                  elevation=55.0, azimuth=-90.0, distance=1.6, aim=0.0, fovy=40.0,
                  headlight=(0.35, 0.35), sun=0.55, sun_dir="0.3 0.5 -1"),
    "cswm": dict(palette="cswm", board="0.5 0.5 0.5", walls=True, block=0.94, specular=0.0,
                 elevation=30.0, azimuth=-60.0, distance=2.6, aim=0.4, fovy=32.0,
                 headlight=(0.45, 0.45), sun=0.35, sun_dir="-0.4 0.3 -1"),
}


def cubes_palette(style: str, num_objects: int) -> np.ndarray:
    """The ``(num_objects, 3)`` uint8 block colours of a Cubes ``style``."""
    _check_style(style)
    palette = SET1_RGB if CUBES_STYLES[style]["palette"] == "set1" else CSWM_CUBE_RGB
    return palette[:num_objects].copy()


def _check_style(style: str) -> None:
    if style not in CUBES_STYLES:
        raise ValueError(f"style must be one of {', '.join(CUBES_STYLES)}, got {style!r}")


def cubes_mjcf(grid_size: int, image_size: int, colors: np.ndarray, style: str = "cswm") -> str:
    """MJCF for a grey board of ``grid_size``^2 unit cells, one mocap box per row of ``colors`` (K, 3), a camera.

    Shadows are off on every light and nothing is reflective: on Mesa's software EGL those two cost most of
    the frame time. See :data:`CUBES_STYLES` for what each style changes.
    """
    _check_style(style)
    st = CUBES_STYLES[style]
    half = grid_size / 2
    elev, azim = np.deg2rad(st["elevation"]), np.deg2rad(st["azimuth"])
    forward = -np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)])
    cam_pos = -forward * st["distance"] * grid_size + np.array([0.0, 0.0, st["aim"]])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)  # the camera looks along -(right x up) = forward
    h = st["block"] / 2
    board = (f'<material name="board" texture="cells" texrepeat="{half} {half}" reflectance="0"/>'
             if st["board"] == "checker" else
             f'<material name="board" rgba="{st["board"]} 1" reflectance="0"/>')
    walls = (f'    <geom name="wall_x" type="box" size="0.05 {half} {half}" pos="{-half - 0.05} 0 {half - 0.1}" '
             f'rgba="1 1 1 1"/>\n'
             f'    <geom name="wall_y" type="box" size="{half} 0.05 {half}" pos="0 {half + 0.05} {half - 0.1}" '
             f'rgba="1 1 1 1"/>' if st["walls"] else "")
    sky = ('<texture name="sky" type="skybox" builtin="flat" rgb1="1 1 1" rgb2="1 1 1" width="8" height="8"/>'
           if st["walls"] else "")
    amb, diff = st["headlight"]
    blocks = "\n".join(
        f'    <body name="obj{i}" mocap="true" pos="0 0 {h}">'
        f'<geom type="box" size="{h} {h} {h}" rgba="{r / 255:.4f} {g / 255:.4f} {b / 255:.4f} 1" '
        f'material="block"/></body>'
        for i, (r, g, b) in enumerate(colors.tolist())
    )
    vec = " ".join
    return f"""
<mujoco model="cubes">
  <visual>
    <global offwidth="{image_size}" offheight="{image_size}"/>
    <headlight ambient="{amb} {amb} {amb}" diffuse="{diff} {diff} {diff}" specular="0 0 0"/>
    <quality shadowsize="0"/>
  </visual>
  <asset>
    {sky}
    <texture name="cells" type="2d" builtin="checker" rgb1="0.50 0.50 0.52" rgb2="0.42 0.42 0.44"
             width="32" height="32"/>
    {board}
    <material name="block" specular="{st["specular"]}" shininess="0.1" reflectance="0"/>
  </asset>
  <worldbody>
    <light directional="true" castshadow="false" pos="0 0 10" dir="{st["sun_dir"]}"
           diffuse="{st["sun"]} {st["sun"]} {st["sun"]}" specular="0 0 0"/>
    <geom name="board" type="box" size="{half} {half} 0.05" pos="0 0 -0.05" material="board"/>
{walls}
    <camera name="view" pos="{vec(f'{v:.4f}' for v in cam_pos)}"
            xyaxes="{vec(f'{v:.4f}' for v in right)} {vec(f'{v:.4f}' for v in up)}" fovy="{st["fovy"]}"/>
{blocks}
  </worldbody>
</mujoco>
"""


class CubesEnv(_GridWorld):
    """C-SWM 3D Cubes: the Shapes grid drawn as lit coloured blocks on a board, seen at an angle.

    Row 0 is the far edge of the board and column 0 the left edge, so "up" moves a block away from the
    camera. Blocks are mocap bodies: a move sets their positions and runs kinematics, no physics stepping.
    ``style`` picks the look (:data:`CUBES_STYLES`): ``cswm`` (default; ``worldssl/Cubes-v1``), ``checker``
    (``worldssl/Cubes-v0``) or ``plain``; ``cswm`` also takes C-SWM's block colours (:data:`CSWM_CUBE_RGB`),
    the others Set1's as Shapes.
    """

    def __init__(self, num_objects: int = 5, grid_size: int = 5, image_size: int = 50,
                 render_mode: str | None = None, style: str = "cswm"):
        super().__init__(num_objects, grid_size, image_size, render_mode)
        import mujoco

        self._mujoco = mujoco
        self.colors = cubes_palette(style, self.num_objects)
        self.model = mujoco.MjModel.from_xml_string(
            cubes_mjcf(self.grid_size, self.image_size, self.colors, style))
        self.data = mujoco.MjData(self.model)
        self._renderer: Any = None  # built on first draw, so constructing the env stays cheap

    def _draw(self) -> np.ndarray:
        mj = self._mujoco
        if self._renderer is None:
            from envs.rendering import OffscreenRenderer

            self._renderer = OffscreenRenderer(self.image_size)
            self._renderer.set_model(self.model)
        offset = (self.grid_size - 1) / 2
        self.data.mocap_pos[:, 0] = self._positions[:, 1] - offset
        self.data.mocap_pos[:, 1] = offset - self._positions[:, 0]
        mj.mj_forward(self.model, self.data)
        return np.ascontiguousarray(self._renderer.render(self.data, "view", fast=True).transpose(2, 0, 1))

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


__all__ = ["CSWM_CUBE_RGB", "CUBES_STYLES", "CubesEnv", "DIRECTIONS", "SET1_RGB", "SHAPE_NAMES", "ShapesEnv", "cubes_mjcf", "cubes_palette", "shape_mask"]

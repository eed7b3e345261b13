"""Gymnasium pixel environments: DMC from pixels, first-person MuJoCo mazes, C-SWM object grid worlds.

Importing this package sets ``MUJOCO_GL=egl`` (unless set) and preloads triton, so rendering is safe
(see ``worldssl.runtime.rendering``), then registers every id in ``envs.registry.ENVS`` with gymnasium.
"""

from worldssl.runtime.rendering import prepare_rendering

prepare_rendering()

from envs.registry import DMC_STANDARD_TASKS, ENVS, make, register_all  # noqa: E402

register_all()

__all__ = ["DMC_STANDARD_TASKS", "ENVS", "make", "register_all"]

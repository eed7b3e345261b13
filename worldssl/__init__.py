"""worldssl: self-supervised encoders and latent world models for reinforcement learning from pixels."""

import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")  # before anything can import mujoco

__version__ = "0.1.0"

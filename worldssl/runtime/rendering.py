"""Make headless MuJoCo rendering safe before anything renders.

Two facts about headless rendering:
- ``MUJOCO_GL=egl`` works headless on CPU (Mesa llvmpipe) and on NVIDIA GPUs; it must be set before
  ``mujoco`` / ``dm_control`` is imported.
- A process that renders with Mesa's software EGL and only *afterwards* loads triton segfaults (the two
  bundled LLVMs clash). torch loads triton lazily (e.g. inside ``torch.optim.Adam`` via ``torch._dynamo``),
  so we load ``torch._dynamo`` up front, before the first render.
"""

from __future__ import annotations

import os

_PREPARED = False


def prepare_rendering() -> None:
    """Set ``MUJOCO_GL=egl`` unless the user chose a backend, and preload triton through torch._dynamo."""
    global _PREPARED
    if _PREPARED:
        return
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    try:
        import torch._dynamo  # noqa: F401  (loads triton's LLVM before llvmpipe's)
    except ImportError:  # torch is a hard dependency, but envs stay importable without it
        pass
    _PREPARED = True

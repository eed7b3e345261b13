"""Headless MuJoCo rendering that several renderers (ours, dm_control's, MiniWorld's) can share in one process.

Two traps on EGL, both hit while building the envs:
- dm_control remembers which of its contexts it made current and skips ``eglMakeCurrent`` when it believes
  nothing changed, so a renderer that leaves *its* context current makes dm_control draw garbage. Every GL
  use here runs inside :func:`preserve_gl_context`.
- ``MjrContext.free`` releases GL object ids in whatever context is current; freeing while another
  renderer's context is current corrupts that renderer. :class:`OffscreenRenderer` always frees in its own.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref
from collections.abc import Iterator

import numpy as np

from worldssl.runtime.rendering import prepare_rendering

prepare_rendering()  # MUJOCO_GL must be set before mujoco is imported

import mujoco  # noqa: E402


def _egl_module():
    """PyOpenGL's EGL bindings when rendering through EGL, else None."""
    if os.environ.get("MUJOCO_GL") != "egl":
        return None
    from OpenGL import EGL

    return EGL


@contextlib.contextmanager
def preserve_gl_context() -> Iterator[None]:
    """Put back whichever EGL context (or none) was current before the block.

    dm_control caches, per thread, which of its contexts it made current and skips ``eglMakeCurrent`` when
    it believes nothing changed. A renderer that leaves its own context current therefore makes dm_control's
    next frame draw into the wrong context (garbage DMC frames after one maze frame). Every GL use here, and
    in the MiniWorld adapter, runs inside this block so it stays invisible to other renderers.
    """
    egl = _egl_module()
    if egl is None:
        yield
        return
    display, context = egl.eglGetCurrentDisplay(), egl.eglGetCurrentContext()
    draw, read = egl.eglGetCurrentSurface(egl.EGL_DRAW), egl.eglGetCurrentSurface(egl.EGL_READ)
    try:
        yield
    finally:
        if context:
            egl.eglMakeCurrent(display, draw, read, context)
        elif egl.eglGetCurrentContext():
            egl.eglMakeCurrent(egl.eglGetCurrentDisplay(), egl.EGL_NO_SURFACE, egl.EGL_NO_SURFACE,
                               egl.EGL_NO_CONTEXT)


class OffscreenRenderer:
    """One GL context drawing square frames of a MuJoCo model; ``set_model`` swaps models cheaply.

    ``mujoco.Renderer`` binds a new GL context to each model; on software EGL making a context costs about
    100 ms, which a random layout would pay at every reset. Swapping only the ``MjrContext`` costs ~6 ms.
    Freeing always happens with our own context current: ``MjrContext.free`` releases GL object ids in
    whatever context is current, and in another renderer's context it would corrupt that renderer's frames.
    """

    def __init__(self, size: int):
        self.size = int(size)
        with preserve_gl_context():  # mujoco's GLContext() calls eglReleaseThread, dropping the current one
            self._gl = mujoco.GLContext(self.size, self.size)
        self._ctx: mujoco.MjrContext | None = None
        self._scene: mujoco.MjvScene | None = None
        self._rect = mujoco.MjrRect(0, 0, self.size, self.size)
        self._pixels = np.empty((self.size, self.size, 3), np.uint8)
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._default_option = mujoco.MjvOption()
        self.model: mujoco.MjModel | None = None
        _register_for_exit(self)

    def set_model(self, model: mujoco.MjModel) -> None:
        offscreen = (model.vis.global_.offwidth, model.vis.global_.offheight)
        model.vis.global_.offwidth = model.vis.global_.offheight = self.size  # buffer sized to our frames
        with preserve_gl_context():
            self._gl.make_current()
            if self._ctx is not None:
                self._ctx.free()
            self._ctx = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_50)
            mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._ctx)
        model.vis.global_.offwidth, model.vis.global_.offheight = offscreen
        self._scene = mujoco.MjvScene(model, maxgeom=model.ngeom + 100)
        self.model = model

    def render(self, data: mujoco.MjData, camera: str, option: mujoco.MjvOption | None = None,
               fast: bool = True) -> np.ndarray:
        """An HWC uint8 frame from a named camera; ``fast`` switches shadows and reflections off."""
        self._camera.fixedcamid = self.model.camera(camera).id
        option = option if option is not None else self._default_option
        mujoco.mjv_updateScene(self.model, data, option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL,
                               self._scene)
        if fast:
            self._scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self._scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        with preserve_gl_context():
            self._gl.make_current()
            mujoco.mjr_render(self._rect, self._scene, self._ctx)
            mujoco.mjr_readPixels(self._pixels, None, self._rect, self._ctx)
        return self._pixels[::-1].copy()  # OpenGL rows run bottom-up

    def close(self) -> None:
        if self._gl is None:
            return
        with contextlib.suppress(Exception), preserve_gl_context():
            self._gl.make_current()
            if self._ctx is not None:
                self._ctx.free()
            self._gl.free()
        self._gl, self._ctx = None, None
        _LIVE_RENDERERS.discard(self)


_LIVE_RENDERERS: weakref.WeakSet = weakref.WeakSet()
_ATEXIT_REGISTERED = False


def _register_for_exit(renderer: OffscreenRenderer) -> None:
    """Close live renderers at exit before mujoco's EGL module terminates the display.

    mujoco.egl registers ``eglTerminate`` with atexit when the first context is made; a handler registered
    after that runs before it (atexit is LIFO), so GL contexts still alive at exit are freed cleanly
    instead of raising EGLError from ``__del__`` during interpreter shutdown.
    """
    global _ATEXIT_REGISTERED
    _LIVE_RENDERERS.add(renderer)
    if not _ATEXIT_REGISTERED:
        atexit.register(_close_all_renderers)
        _ATEXIT_REGISTERED = True


def _close_all_renderers() -> None:
    for renderer in list(_LIVE_RENDERERS):
        renderer.close()
    if "dm_control._render.pyopengl.egl_renderer" in sys.modules:
        # mujoco.egl's eglTerminate (registered after dm_control's context cleanup, so run before it) would
        # make dm_control's cleanup raise EGLError noise at exit. Skip terminating: the OS reclaims it all.
        egl = _egl_module()
        if egl is not None:
            atexit.unregister(egl.eglTerminate)


__all__ = ["OffscreenRenderer", "preserve_gl_context"]

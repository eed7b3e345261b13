"""Shared fixtures: tiny datasets and a helper that runs the real CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")

import torch  # noqa: E402

# pytest-xdist runs one worker per core; torch's own thread pool on top of that oversubscribes 2 cores
torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run ``worldssl ARGS`` in a fresh interpreter, as a user would."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "worldssl.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"worldssl {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def shapes_dataset(tmp_path_factory) -> Path:
    """6 Shapes episodes of 12 steps, collected through the API."""
    from worldssl.data import CollectSpec, collect

    out = tmp_path_factory.mktemp("data") / "shapes"
    collect(CollectSpec("worldssl/Shapes-v0", {}, str(out), episodes=6, seed=3, max_episode_steps=12), progress=False)
    return out

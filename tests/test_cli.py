"""The real `worldssl` entry point, end to end in subprocesses with tiny budgets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, run_cli

from worldssl.data import EpisodeDataset, list_episode_files


def test_help_lists_verbs_and_groups(tmp_path):
    top = run_cli("--help", cwd=tmp_path, check=True).stdout
    for verb in ("collect", "preview", "pretrain", "eval", "worldmodel", "compare", "train", "bench"):
        assert verb in top
    sub = run_cli("collect", "--help", cwd=tmp_path, check=True).stdout
    assert "env: cubes, dmc, maze, miniworld, point, shapes" in sub and "episodes: 100" in sub


def test_collect_end_to_end_writes_run_dir_and_dataset(tmp_path):
    proc = run_cli("collect", "env=shapes", "episodes=3", "env.max_episode_steps=10", "out=data/s",
                   "hydra.run.dir=run", cwd=tmp_path, check=True)
    assert "3 episodes / 30 transitions" in proc.stdout
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "summary.json", "preview.png"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.out.tfevents*"))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["episodes"] == 3 and summary["transitions"] == 30
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,collect/return,collect/length" and len(rows) == 4
    ds = EpisodeDataset(tmp_path / "data/s")
    assert ds.num_episodes == 3 and ds.obs_shape == (3, 50, 50)
    again = run_cli("collect", "env=shapes", "episodes=4", "env.max_episode_steps=10", "out=data/s",
                    "hydra.run.dir=run2", cwd=tmp_path, check=True)
    assert "4 episodes / 40 transitions" in again.stdout and "(1 new)" in again.stdout


@pytest.mark.parametrize("args, message", [
    (["collect", "env=nope"], "unknown env 'nope'; valid env options: cubes, dmc, maze, miniworld, point, shapes"),
    (["collect", "episodez=3"], "unknown key 'episodez'"),
    (["collect", "episodes=0"], "episodes must be a positive integer"),
    (["collect", "env=dmc", "env.task=cheetah-fly"], "unknown DMC task 'cheetah-fly'"),
    (["collect", "episodes=[1"], "cannot parse override"),
    (["collect", "env=dmc", "env.kwargs.image_size=3", "episodes=1"], "image_size must be in"),
    (["frobnicate"], "unknown verb 'frobnicate'; valid verbs: collect"),
    (["bench", "nothing"], "unknown benchmark 'nothing'; valid: envs"),
])
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    proc = run_cli(*args, "hydra.run.dir=run", cwd=tmp_path) if args[0] != "frobnicate" else run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "absl" not in ln and "settotalmass" not in ln]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_killed_collect_leaves_a_readable_dataset(tmp_path):
    out = tmp_path / "d"
    cmd = [sys.executable, "-m", "worldssl.cli", "collect", "env=shapes", "episodes=100000", f"out={out}",
           "hydra.run.dir=run", "preview=false"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list_episode_files(out)) < 5 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ds = EpisodeDataset(out)  # every finished episode reads; a half-written one was never renamed into place
    assert ds.num_episodes >= 5 and np.all(ds.lengths == 100)
    resumed = run_cli("collect", "env=shapes", f"episodes={ds.num_episodes + 2}", f"out={out}", "hydra.run.dir=run2",
                      "preview=false", cwd=tmp_path, check=True)
    assert "(2 new)" in resumed.stdout or "(3 new)" in resumed.stdout


def test_multirun_sweep_with_submitit_local(tmp_path):
    proc = run_cli("collect", "-m", "env=shapes", "seed=0,1", "episodes=1", "env.max_episode_steps=5",
                   "out=data/s${seed}", "preview=false", "hydra/launcher=submitit_local",
                   "hydra.sweep.dir=sweep", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for seed in (0, 1):
        assert EpisodeDataset(tmp_path / f"data/s{seed}").num_episodes == 1
    assert len(list((tmp_path / "sweep").glob("*/summary.json"))) == 2


def test_preview_and_bench_run(tmp_path):
    run_cli("preview", "env=cubes", "out=p.png", "frames=3", "hydra.run.dir=run", cwd=tmp_path, check=True)
    assert (tmp_path / "p.png").stat().st_size > 500
    proc = run_cli("bench", "envs", "steps=5", "repeats=1", "dmc_tasks=[cartpole-swingup]", "out=bench.md",
                   "hydra.run.dir=run", cwd=tmp_path, check=True, timeout=600)
    assert "stock dm_control render" in proc.stdout and "bytes / transition" in proc.stdout
    table = (tmp_path / "bench.md").read_text()
    assert "| dmc cartpole-swingup 84x84 |" in table and "x |" in table


def test_repo_layout():
    for path in ("worldssl", "envs", "agents", "configs", "tests", "pyproject.toml", "README.md",
                 "docs/ARCHITECTURE.md", ".ci/run"):
        assert (REPO / path).exists(), path

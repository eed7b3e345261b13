"""Sweeps on hydra launchers: the job list, deterministic run directories, skipping and resuming, submitit_local,
the named experiments, and which GPU each job takes (the choice is tested on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from worldssl.sweep.gpus import choose_gpu, visible_ids
from worldssl.sweep.jobs import hydra_value, override

TINY = ["encoder.hidden_dim=16", "transition.hidden_dim=16", "batch_size=8", "eval_steps=[1]", "eval_batch_size=8",
        "figures=false", "progress=false", "probe=false"]


@pytest.mark.parametrize("value", [None, True, False, 0, -3, 1.5e-4, 0.1, "plain", "/abs/path-1.x", "two words",
                                   "it's", "1e-3", "true", "null", "a,b", "${x}", "back\\slash", "a\\'b", "end\\", [1, "x y", [2.5]],
                                   {"k": "v w", "n": 1}, []])
def test_hydra_value_parses_back_to_the_same_value_and_type(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([override("key", value)])[0]
    assert not parsed.is_sweep_override()
    got = parsed.value()
    assert got == value and type(got) is type(value), (hydra_value(value), got)


def test_gpu_choice_follows_the_scheduler_and_the_visible_devices(tmp_path):
    assert choose_gpu(0, {}, tmp_path) is None  # no CUDA: nothing to choose
    one = choose_gpu(1, {"CUDA_VISIBLE_DEVICES": "3"}, tmp_path)  # Slurm / submitit confined the job to GPU 3
    assert (one.index, one.egl_device) == (0, "3")
    slurm = choose_gpu(4, {"SLURM_LOCALID": "5", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}, tmp_path)
    assert (slurm.index, slurm.egl_device) == (1, "5")
    uuids = choose_gpu(1, {"CUDA_VISIBLE_DEVICES": "GPU-8f2a"}, tmp_path)
    assert (uuids.index, uuids.egl_device) == (0, None)  # EGL numbers devices physically: no guess
    assert visible_ids({"CUDA_VISIBLE_DEVICES": "2, 0"}, 2) == ["2", "0"] and visible_ids({}, 3) == ["0", "1", "2"]


_CLAIM = """
import sys, time
from pathlib import Path
from worldssl.sweep.gpus import choose_gpu
c = choose_gpu(2, {"CUDA_VISIBLE_DEVICES": "6,7"}, Path(sys.argv[1]), job_num=int(sys.argv[2]))
print(c.index, c.egl_device, c.why, flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_concurrent_jobs_take_different_gpus_and_a_finished_job_frees_its_gpu(tmp_path):
    """Jobs of one machine (joblib workers, separate commands) each hold the first free GPU's lock for life."""
    def start(job_num: int, hold: float) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", _CLAIM, str(tmp_path), str(job_num), str(hold)],
                                stdout=subprocess.PIPE, text=True)

    first = start(0, 30)
    a = first.stdout.readline().split()
    second = start(1, 30)
    b = second.stdout.readline().split()
    third = start(5, 0)  # every GPU held: shares by job number (5 mod 2)
    c = third.communicate(timeout=60)[0].split()
    assert (a[0], a[1]) == ("0", "6") and (b[0], b[1]) == ("1", "7")
    assert (c[0], c[1]) == ("1", "7") and "shared" in " ".join(c)
    first.kill()
    first.wait()
    fourth = start(9, 0)  # GPU 0's holder exited: its lock is free again
    d = fourth.communicate(timeout=60)[0].split()
    second.kill()
    second.wait()
    assert (d[0], d[1]) == ("0", "6")


def test_claim_gpu_changes_nothing_without_cuda():
    import torch

    from worldssl.sweep.gpus import claim_gpu

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine: the CPU form is what this checks")
    env = {"CUDA_VISIBLE_DEVICES": "1"}
    assert claim_gpu(env) is None and env == {"CUDA_VISIBLE_DEVICES": "1"}


def test_preflight_checks_launchers_and_every_swept_value(tmp_path):
    from worldssl.cli import preflight
    from worldssl.verbs import worldmodel

    data = "data=x"
    assert "valid hydra/launcher options: basic, joblib" in preflight("worldmodel", [data, "hydra/launcher=nope"])
    assert "hydra.launcher.bogus" in preflight("worldmodel", ["-m", data, "hydra/launcher=joblib",
                                                              "hydra.launcher.bogus=1"])
    assert preflight("worldmodel", ["-m", data, "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu",
                                    "hydra.launcher.max_num_timeout=3", "seed=0,1"]) is None
    assert preflight("worldmodel", ["-m", data, "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]) is None
    bad = preflight("worldmodel", ["-m", data, "seed=0,1", "epochs=1,-1"], worldmodel.validate)
    assert "epochs must be a positive integer" in bad and "epochs=-1" in bad
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text("- [seed=0, hydra.sweep.subdir=a]\n- [objective=nope]\n")
    bad = preflight("worldmodel", ["-m", data, "hydra/sweeper=jobs", f"hydra.sweeper.jobs_file={jobs}"])
    assert "unknown objective 'nope'" in bad
    assert "jobs_file" in preflight("worldmodel", ["-m", data, "hydra/sweeper=jobs"])


@pytest.mark.parametrize("experiment", ["objective_comparison", "encoder_comparison", "agent_comparison"])
def test_experiments_build_unique_jobs_that_compose(tmp_path, experiment):
    """Each size of each experiment: job directories unique, the full size at the published seeds, and the smoke
    jobs compose as their verb's config (the launched multirun checks every job again)."""
    from hydra import compose, initialize_config_dir

    from worldssl.cli import CONFIG_DIR
    from worldssl.sweep.experiments import build
    from worldssl.sweep.jobs import job_overrides

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="sweep"):
        cfg = compose("sweep", [f"experiment={experiment}"])
        full = build(cfg.experiment, "full", tmp_path)
        smoke = build(cfg.experiment, "smoke", tmp_path)
        for stages in (full, smoke):
            names = [f"{s.name}/{j.name}" for s in stages for j in s.jobs]
            assert len(names) == len(set(names))
        assert list(cfg.experiment.sizes.full.seeds) == [0, 1, 2, 3, 4]
        seen = set()
        for stage in smoke:
            for job in stage.jobs:  # one job per stage and env / task (the others differ in a value only)
                if (stage.name, job.name.split("/")[0]) not in seen:
                    seen.add((stage.name, job.name.split("/")[0]))
                    compose(job.verb, [o for o in job_overrides(job) if not o.startswith("hydra.")])
        assert len(seen) >= 6


def test_a_sweep_through_submitit_local(tmp_path, shapes_dataset):
    """compare's two runs as submitit_local jobs (each its own process), read back into one table."""
    proc = run_cli("compare", "objectives=[contrastive]", "seeds=[0,1]", f"data={shapes_dataset}",
                   f"eval_data={shapes_dataset}", "epochs=1", *TINY, "out=cmp", "hydra/launcher=submitit_local",
                   "hydra.launcher.timeout_min=5", cwd=tmp_path, check=True, timeout=300)
    assert "2 of 2 jobs finished" in proc.stdout
    submitit = list((tmp_path / "cmp" / "runs" / ".submitit").glob("*/*_log.out"))
    assert len(submitit) == 2  # two jobs, two processes
    for seed in (0, 1):
        summary = json.loads((tmp_path / "cmp" / "runs" / "contrastive" / f"seed{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and "eval/hits@1/1" in summary
    assert len(json.loads((tmp_path / "cmp" / "summary.json").read_text())["runs"]) == 2  # one table, both seeds


def test_an_interrupted_sweep_skips_finished_jobs_and_resumes_the_rest(tmp_path, shapes_dataset):
    args = ["compare", "objectives=[contrastive]", "seeds=[0,1]", f"data={shapes_dataset}",
            f"eval_data={shapes_dataset}", *TINY, "epochs=12", "steps_per_epoch=2", "save_every=1", "out=cmp",
            "jobs=1"]  # one after another: seed 0 finishes before seed 1 starts
    runs = tmp_path / "cmp" / "runs" / "contrastive"
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "worldssl.cli", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if (runs / "seed1" / "checkpoints" / "train_state.pt").is_file():
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the whole sweep, as a scheduler or Ctrl-C would stop it
    first = proc.communicate(timeout=120)[0]
    assert (runs / "seed0" / "summary.json").is_file(), first
    assert not (runs / "seed1" / "summary.json").exists(), first
    finished_at = (runs / "seed0" / "summary.json").stat().st_mtime_ns
    again = run_cli(*args, cwd=tmp_path, check=True, timeout=300)
    assert "1 done before, launching 1" in again.stdout
    assert f"resuming {runs / 'seed1'}" in again.stdout
    assert (runs / "seed0" / "summary.json").stat().st_mtime_ns == finished_at  # not run again
    resumed = json.loads((runs / "seed1" / "summary.json").read_text())
    assert resumed["epoch"] == 12
    assert len(json.loads((tmp_path / "cmp" / "summary.json").read_text())["runs"]) == 2


def test_sweep_dry_run_lists_jobs_and_rejects_unknown_stages(tmp_path):
    proc = run_cli("sweep", "experiment=agent_comparison", "size=smoke", "dry_run=true", "out=sw", cwd=tmp_path,
                   check=True)
    assert "train/cartpole/frozen/seed0: worldssl train encoder.mode=frozen" in proc.stdout
    from worldssl.cli import preflight
    from worldssl.verbs import sweep

    bad = preflight("sweep", ["experiment=agent_comparison", "stages=[nope]"], sweep.validate)
    assert "unknown stage(s) nope" in bad


def test_bench_all_gathers_rows_and_reports_failures_and_skips(tmp_path):
    """bench all's table: each benchmark's rows under its name, a failed or timed-out benchmark as a row (never
    left out); a size naming a benchmark this version lacks skips it; a bad override is one line up front."""
    from hydra import compose, initialize_config_dir

    from worldssl.bench.all import _rows, check, plan
    from worldssl.cli import CONFIG_DIR

    summary = tmp_path / "envs" / "summary.json"
    summary.parent.mkdir()
    summary.write_text(json.dumps({"bench": "envs", "rows": [
        {"name": "shapes 50x50", "figure": "env steps/s", "ours": 100.0, "baseline": 50.0, "baseline_name": "b",
         "target": "", "ratio": 2.0}]}))
    rows = _rows("envs", summary, 0)
    assert [(r.name, r.ours, r.ratio) for r in rows] == [("envs: shapes 50x50", 100.0, 2.0)]
    assert _rows("envs", summary, 1)[0].name == "envs: failed (exit 1)"
    assert _rows("ssl", tmp_path / "ssl" / "summary.json", None)[0].name == "ssl: timed out (all_timeout_s)"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3", job_name="bench"):
        cfg = compose("bench", ["what=all", "all_size=t", "+all_sizes.t={envs:['steps=2'],nope:[]}"])
        assert plan(cfg) == [("envs", ["steps=2"])]
        check(compose("bench", ["what=all", "all_size=gpu"]))  # the size no CPU run here exercises
        bad = compose("bench", ["what=all", "all_size=t", "+all_sizes.t={envs:['stepz=2']}"])
        with pytest.raises(Exception, match="all_sizes.t.envs: unknown key 'stepz'"):
            check(bad)

"""`worldssl worldmodel` and `worldssl compare` end to end, as subprocesses with tiny budgets."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

from worldssl.worldmodels.objectives import OBJECTIVES

TINY = ["encoder.hidden_dim=16", "transition.hidden_dim=16", "batch_size=8", "steps_per_epoch=2", "epochs=1",
        "eval_steps=[1,2]", "eval_batch_size=4", "probe_frames=40", "progress=false"]
NO_ENC = [a for a in TINY if not a.startswith("encoder.")]
COLLECT = {
    "shapes": [],
    "cubes": [],
    "maze": ["env.kwargs.image_size=32"],
    "dmc": ["env.kwargs.image_size=32"],
}


@pytest.mark.parametrize("env", list(COLLECT))
def test_every_objective_trains_on_every_env(tmp_path, env):
    data = tmp_path / "data"
    run_cli("collect", f"env={env}", f"out={data}", "episodes=5", "env.max_episode_steps=6", "preview=false",
            "progress=false", *COLLECT[env], cwd=tmp_path, check=True, timeout=600)
    proc = run_cli("worldmodel", "-m", f"objective={','.join(OBJECTIVES)}", f"data={data}", f"env={env}", *TINY,
                   *COLLECT[env], "hydra.sweep.dir=sweep", cwd=tmp_path, check=True, timeout=900)
    summaries = sorted((tmp_path / "sweep").glob("*/summary.json"))
    assert len(summaries) == len(OBJECTIVES), proc.stdout
    for path in summaries:
        s = json.loads(path.read_text())
        assert s["objective"] in OBJECTIVES and s["step"] == 2 and s["eval/pool/1"] == 1
        assert 0 <= s["eval/hits@1/1"] <= 100
        assert (path.parent / "checkpoints" / "model.safetensors").is_file()
        assert (path.parent / "object_maps.png").is_file()
        if s["objective"].startswith("generative"):
            assert "eval/pixel_mse/1" in s and (path.parent / "predictions.png").is_file()


def test_worldmodel_resumes_and_probes(tmp_path, shapes_dataset):
    args = ["worldmodel", f"data={shapes_dataset}", *TINY, "hydra.run.dir=run"]
    run_cli(*args, "max_minutes=0.000001", cwd=tmp_path, check=True)
    first = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert first["step"] == 1
    proc = run_cli(*args, "epochs=2", "resume=run", cwd=tmp_path, check=True)
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["step"] == 4 and s["epoch"] == 2
    assert "probe/encoder/ridge_r2" in s and "probe/random_init/ridge_r2" in s
    assert "Hits@1 / MRR at 1 step" in proc.stdout
    # slot models also report which slot carries which object
    assert sorted(s["probe/slots/assignment"]) == list(range(5)) and len(s["probe/slots/r2"]) == 5
    assert s["probe/slots/matched_r2"] <= 1 and "slot alignment:" in proc.stdout


@pytest.mark.parametrize("override, message", [
    (["objective=diffusion"], "objective"),
    (["epochs=0"], "epochs must be a positive integer"),
    (["load=ram"], "load must be one of"),
    (["transition=mlp", "transition.name=tree"], "unknown transition"),
    (["eval_steps=[0]"], "eval_steps"),
])
def test_worldmodel_bad_config_is_one_line(tmp_path, shapes_dataset, override, message):
    proc = run_cli("worldmodel", f"data={shapes_dataset}", *override, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_worldmodel_missing_data_and_wrong_env(tmp_path, shapes_dataset):
    proc = run_cli("worldmodel", cwd=tmp_path)
    assert proc.returncode == 2 and "data= is required" in proc.stderr
    proc = run_cli("worldmodel", f"data={shapes_dataset}", "env=cubes", *TINY, cwd=tmp_path)
    assert proc.returncode == 2 and "not worldssl/Cubes-v1" in proc.stderr and "Traceback" not in proc.stderr


def test_compare_writes_table_and_report_and_reuses_runs(tmp_path, shapes_dataset):
    args = ["compare", "objectives=[contrastive,generative_ae]", "seeds=[0,1]", f"data={shapes_dataset}",
            f"eval_data={shapes_dataset}", *TINY, "out=report", "probe=false", "jobs=2"]
    proc = run_cli(*args, cwd=tmp_path, check=True, timeout=600)
    assert "launching 4 (hydra/launcher=joblib hydra.launcher.n_jobs=2)" in proc.stdout  # two at a time
    assert "contrastive" in proc.stdout and "generative_ae" in proc.stdout and "±" in proc.stdout
    report = (tmp_path / "report" / "report.md").read_text()
    assert "contrastive" in report and "comparison.png" in report
    assert (tmp_path / "report" / "comparison.png").is_file()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert len(summary["runs"]) == 4
    again = run_cli(*args, cwd=tmp_path, check=True)
    assert again.stdout.count("finished earlier") == 4


def test_compare_collects_its_data(tmp_path):
    proc = run_cli("compare", "objectives=[contrastive]", "seeds=[0]", "train_episodes=4", "train_episode_steps=6",
                   "eval_episodes=5", "eval_episode_steps=3", "data_root=d", "out=report", "figures=false",
                   *TINY, "probe=true", cwd=tmp_path, check=True)
    assert (tmp_path / "d" / "shapes-v0-train-4x6-seed1" / "manifest.json").is_file()
    assert (tmp_path / "d" / "shapes-v0-eval-5x3-seed2" / "manifest.json").is_file()
    assert "pool" in proc.stdout
    assert "state probes" in proc.stdout and "twin ridge R2" in proc.stdout  # probe=true: the probe table too
    assert "## State probes" in (tmp_path / "report" / "report.md").read_text()


def test_compare_data_directories_differ_by_env_version_task_and_kwargs():
    from worldssl.verbs.compare import dataset_tag

    tags = [dataset_tag("worldssl/Cubes-v1", {}), dataset_tag("worldssl/Cubes-v0", {}),
            dataset_tag("worldssl/Cubes-v1", {"style": "plain"}), dataset_tag("worldssl/DMC-walker-walk-v0", {}),
            dataset_tag("worldssl/DMC-cheetah-run-v0", {}),
            dataset_tag("worldssl/DMC-v0", {"domain": "hopper", "task": "hop"}),
            dataset_tag("worldssl/DMC-v0", {"domain": "hopper", "task": "stand"})]
    assert len(set(tags)) == len(tags)
    assert tags[0] == "cubes-v1" and tags[3] == "dmc-walker-walk-v0"
    assert dataset_tag("worldssl/DMC-v0", {"task": "hop", "domain": "hopper"}) == tags[5]  # order-free


def test_compare_runs_one_job_per_core_that_memory_holds_on_a_cpu_and_one_at_a_time_on_a_gpu(monkeypatch):
    import os

    from worldssl.verbs import compare
    from worldssl.verbs.compare import local_jobs, parallel_launcher

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(compare, "available_gb", lambda: 64.0)
    assert local_jobs("auto", 9, "cpu") == 4 and local_jobs("auto", 3, "cpu") == 3
    monkeypatch.setattr(compare, "available_gb", lambda: 7.0)  # memory for two runs only
    assert local_jobs("auto", 9, "cpu") == 2
    monkeypatch.setattr(compare, "available_gb", lambda: 1.0)
    assert local_jobs("auto", 9, "cpu") == 1
    assert local_jobs("auto", 9, "cuda") == 1 and local_jobs("auto", 9, "cuda:1") == 1
    assert local_jobs(2, 9, "cuda") == 2 and local_jobs(5, 2, "cpu") == 2
    assert parallel_launcher(1) == [] and parallel_launcher(3) == ["hydra/launcher=joblib", "hydra.launcher.n_jobs=3"]


def test_compare_rejects_a_bad_jobs_value(tmp_path):
    proc = run_cli("compare", "jobs=0", cwd=tmp_path)
    assert proc.returncode == 2 and "jobs" in proc.stderr and "auto or a positive integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_compare_rejects_unknown_objective_options(tmp_path):
    proc = run_cli("compare", "objectives=[contrastive]", "+objective_kwargs.contrastive.margin=2", cwd=tmp_path)
    assert proc.returncode == 2 and "margin" in proc.stderr and "Traceback" not in proc.stderr


def test_worldmodel_with_a_pretrained_frozen_encoder_and_recurrent_transition(tmp_path, shapes_dataset):
    """An SSL encoder checkpoint plugs in frozen (encoder=pretrained); a conv encoder feeds the GRU transition."""
    import torch

    from worldssl import encoders

    torch.manual_seed(0)
    enc = encoders.build("conv", (3, 50, 50), feature_dim=8)
    encoders.save(enc, tmp_path / "enc")
    run_cli("worldmodel", f"data={shapes_dataset}", "encoder=pretrained", f"encoder.checkpoint={tmp_path / 'enc'}",
            "transition=mlp", "objective=infonce", *NO_ENC, "figures=false", "probe=false", "hydra.run.dir=frozen",
            cwd=tmp_path, check=True)
    from safetensors.torch import load_file

    trained = load_file(str(tmp_path / "frozen" / "checkpoints" / "model.safetensors"))
    for k, v in enc.state_dict().items():
        assert torch.equal(trained[f"encoder.{k}"], v), k  # frozen: unchanged by training
    run_cli("worldmodel", f"data={shapes_dataset}", "encoder=conv", "transition=recurrent",
            "transition.stochastic_dim=4", "objective=selfpredictive", *NO_ENC, "hydra.run.dir=rnn", cwd=tmp_path,
            check=True)
    s = json.loads((tmp_path / "rnn" / "summary.json").read_text())
    assert s["transition"] == "recurrent" and "eval/hits@1/1" in s

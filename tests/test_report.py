"""`worldssl report`: rliable statistics against naive references, grouping by what varies, runs not scored
listed, escaping, reproducibility, and the CLI end to end on run directories written by the real writers."""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from worldssl.report.runs import Run, find_runs
from worldssl.report.scores import group_runs, run_metrics
from worldssl.report.stats import (
    AGGREGATES,
    aggregate_intervals,
    curve_intervals,
    probability_of_improvement,
)

REPS = 200


def naive_iqm(x: np.ndarray) -> float:
    """Mean of the middle half of the sorted scores (for sizes divisible by 4)."""
    flat = np.sort(np.asarray(x).ravel())
    q = len(flat) // 4
    return float(flat[q:len(flat) - q].mean())


def test_aggregates_match_naive_references():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1.3, size=(8, 3))  # 8 seeds x 3 tasks, some scores above the maximum 1
    stats = aggregate_intervals({"a": x}, reps=REPS, seed=0, name="t")["a"]
    assert stats["mean"].value == pytest.approx(x.mean())
    assert stats["median"].value == pytest.approx(np.median(x.mean(axis=0)))
    assert stats["IQM"].value == pytest.approx(naive_iqm(x))
    assert stats["optimality gap"].value == pytest.approx(np.mean(1.0 - np.minimum(x, 1.0)))
    for agg in AGGREGATES:
        s = stats[agg]
        assert s.n == 8 and s.low <= s.value <= s.high and s.low < s.high


def test_interval_is_reproducible_and_leaves_numpy_alone():
    x = np.random.default_rng(1).normal(size=(5, 2))
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = aggregate_intervals({"g": x}, reps=REPS, seed=7, name="m")
    assert np.array_equal(np.random.get_state()[1], before)  # the caller's global generator is restored
    b = aggregate_intervals({"g": x}, reps=REPS, seed=7, name="m")
    c = aggregate_intervals({"g": x}, reps=REPS, seed=8, name="m")
    assert a == b
    assert a["g"]["mean"] != c["g"]["mean"]  # the seed does reach the bootstrap


def test_one_seed_has_no_interval_and_bad_shapes_are_refused():
    s = aggregate_intervals({"g": np.array([[0.4, 0.6]])}, reps=REPS, seed=0, name="m")["g"]
    assert s["mean"].low == s["mean"].value == s["mean"].high == pytest.approx(0.5)
    with pytest.raises(ValueError, match="runs, tasks"):
        aggregate_intervals({"g": np.zeros(3)}, reps=REPS, seed=0, name="m")


def test_probability_of_improvement_counts_pairs():
    x = np.array([[0.9], [0.5], [0.7]])
    y = np.array([[0.5], [0.2], [0.6], [0.8]])
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(x[:, 0], y[:, 0])]
    p = probability_of_improvement(x, y, reps=REPS, seed=0, name="p")
    assert p.value == pytest.approx(np.mean(wins))
    assert 0.0 <= p.low <= p.value <= p.high <= 1.0 and p.n == 3


def test_curve_iqm_per_point():
    curves = np.arange(24, dtype=float).reshape(4, 6) ** 1.5
    iqm, ci = curve_intervals(curves, reps=REPS, seed=0, name="c")
    assert np.allclose(iqm, [naive_iqm(curves[:, j]) for j in range(6)])
    assert np.all(ci[0] <= iqm + 1e-9) and np.all(iqm <= ci[1] + 1e-9)


# ---- run directories written by the suite's own writers ----

def write_run(directory: Path, config: dict, summary: dict | None, rows: list[tuple[int, dict]]) -> Path:
    from omegaconf import OmegaConf

    from worldssl.runtime.logger import Logger
    from worldssl.verbs._run import save_config

    save_config(OmegaConf.create(config), directory)
    with Logger(directory, tensorboard=False) as logger:
        for step, values in rows:
            logger.log(values, step)
        if summary is not None:
            logger.summary(summary)
    return directory


def train_config(seed: int, mode: str, frames: int = 100_000, note: str = "plain") -> dict:
    return {"agent": {"name": "sac", "lr": 1e-3}, "env": {"name": "dmc-cartpole-swingup", "id": "worldssl/DMC-v0",
            "task": "cartpole-swingup", "kwargs": {"image_size": 64}}, "encoder": {"mode": mode, "note": note},
            "frames": frames, "seed": seed, "resume": None, "max_minutes": 30}


def train_run(directory: Path, seed: int, mode: str, final: float, frames_reached: int = 100_000,
              note: str = "plain", summary: bool = True) -> Path:
    history = [{"frame": f, "return": final * f / 100_000 + seed, "return_std": 1.0}
               for f in range(0, frames_reached + 1, 50_000)]
    rows = [(h["frame"], {"eval/return": h["return"]}) for h in history]
    s = {"eval_history": history, "finished": frames_reached >= 100_000, "frames": frames_reached,
         "stopped_by": None if frames_reached >= 100_000 else "max_minutes", "env_id": "worldssl/DMC-cartpole-swingup-v0"}
    return write_run(directory, train_config(seed, mode, note=note), s if summary else None, rows)


def worldmodel_run(directory: Path, seed: int, objective: str, hits: float, env: str = "shapes") -> Path:
    config = {"objective": {"name": objective, "kwargs": {}}, "transition": {"kind": "gnn"},
              "env": {"name": env, "id": f"worldssl/{env.capitalize()}-v0"}, "epochs": 100, "seed": seed,
              "data": f"/data/{env}-train", "eval_data": f"/data/{env}-eval"}
    summary = {"epoch": 100, "objective": objective}
    rows = []
    for k in (1, 5, 10):
        summary[f"eval/hits@1/{k}"] = max(0.0, hits - 5 * k + seed)
        summary[f"eval/mrr/{k}"] = min(100.0, hits - 2 * k + seed)
        summary[f"eval/pool/{k}"] = 1000
    for d in (1, 2, 3):
        summary[f"plan/success/{d}"] = max(0.0, hits - 10 * d)
        summary[f"plan/random/success/{d}"] = 30.0 / d
    summary["plan/success/all"] = hits - 20
    summary["probe/encoder/ridge_r2"] = hits / 200 - 0.1
    for step in (100, 200):
        rows.append((step, {"eval/hits@1/10": summary["eval/hits@1/10"] * step / 200}))
    return write_run(directory, config, summary, rows)


def test_statuses_groups_and_metrics(tmp_path):
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        train_run(runs / f"frozen-{seed}", seed, "frozen", 200.0)
        train_run(runs / f"scratch-{seed}", seed, "scratch", 400.0)
    train_run(runs / "stopped", 3, "scratch", 400.0, frames_reached=50_000)
    train_run(runs / "running", 4, "scratch", 400.0, summary=False)
    old = train_run(runs / "killed", 5, "scratch", 400.0, summary=False)
    then = time.time() - 3600
    for p in [old, *old.iterdir()]:
        os.utime(p, (then, then))
    (runs / "data").mkdir()
    (runs / "data" / "config.yaml").write_text("what: probe\n")  # an `eval probe` run: skipped, listed
    (runs / "early" / ".hydra").mkdir(parents=True)  # a job that failed before saving its config: listed
    (runs / "early" / "train.log").write_text("ValueError: bad value\n")
    found = find_runs([runs], running_minutes=10)
    status = {r.path.name: r.status for r in found.runs}
    assert status == {**{f"{m}-{s}": "finished" for m in ("frozen", "scratch") for s in (0, 1, 2)},
                      "stopped": "stopped", "running": "running", "killed": "incomplete"}
    assert "50,000 of 100,000 frames" in next(r.note for r in found.runs if r.status == "stopped")
    assert [d.name for d, _ in found.skipped] == ["data", "early"]
    assert "ValueError: bad value" in found.skipped[1][1]
    grouping = group_runs(found.runs)
    assert grouping.keys == {"train": ["encoder.mode"]}  # seed, resume and the task never define a group
    assert {grouping.labels[str(r.path)] for r in found.runs} == {"frozen", "scratch"}
    metrics = run_metrics(next(r for r in found.runs if r.path.name == "scratch-1"))
    (metric, value), = metrics.items()
    assert metric.key == "return" and metric.scale == 1000.0 and value == pytest.approx(401.0)


def test_paths_are_shortened_and_by_overrides(tmp_path):
    runs = [Run(tmp_path / str(i), "train", {"encoder": {"checkpoint": c}, "seed": 0, "lr": lr}, {})
            for i, (c, lr) in enumerate([("/x/enc/moco/checkpoints/encoder", 1), ("/x/enc/wm-contrastive", 1),
                                         (None, 2)])]
    g = group_runs(runs)
    assert g.keys == {"train": ["encoder.checkpoint", "lr"]}
    assert sorted(g.labels.values()) == ["checkpoint=moco, lr=1", "checkpoint=none, lr=2",
                                         "checkpoint=wm-contrastive, lr=1"]
    assert sorted(group_runs(runs, by=["lr"]).labels.values()) == ["1", "1", "2"]


def test_task_attributes_do_not_label_groups(tmp_path):
    """Across tasks, keys fixed by the task (its dataset, image size) stay out of the labels; a key that varies
    within a task still labels its groups."""
    runs = []
    for task, size in (("cartpole-swingup", 64), ("reacher-easy", 84)):
        for mode in ("frozen", "scratch"):
            config = train_config(0, mode)
            config["env"].update(task=task, kwargs={"image_size": size})
            config["data"] = f"/data/{task}"
            runs.append(Run(tmp_path / f"{task}-{mode}", "train", config, {}))
    g = group_runs(runs)
    assert g.keys == {"train": ["encoder.mode"]}
    assert sorted(set(g.labels.values())) == ["frozen", "scratch"]
    runs[0].config["env"]["kwargs"]["image_size"] = 32  # now it varies within cartpole: a group key again
    assert "env.kwargs.image_size" in group_runs(runs).keys["train"]


def test_missing_sweep_job_is_listed(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep).mkdir()
    (sweep / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": {"task": ["seed=0,1,2", "progress=false"]},
                                                               "sweeper": {"_target_": "hydra._internal.core_plugins"
                                                                           ".basic_sweeper.BasicSweeper"}}}))
    for seed in (0, 2):
        d = train_run(sweep / str(seed), seed, "frozen", 100.0)
        (d / ".hydra").mkdir()
        # hydra writes the job's overrides normalised (false -> False): the same job all the same
        (d / ".hydra" / "overrides.yaml").write_text(f"- seed={seed}\n- progress=False\n")
    found = find_runs([sweep])
    assert [o for _, o in found.missing] == ["seed=1"]


def report_dirs(tmp_path: Path) -> Path:
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        train_run(runs / "train" / f"frozen-{seed}", seed, "frozen", 200.0)
        train_run(runs / "train" / f"scratch-{seed}", seed, "scratch", 400.0)
        worldmodel_run(runs / "wm" / f"contrastive-{seed}", seed, "contrastive", 90.0)
        worldmodel_run(runs / "wm" / f"generative-{seed}", seed, "generative_ae", 50.0)
        worldmodel_run(runs / "wm" / f"cubes-contrastive-{seed}", seed, "contrastive", 80.0, env="cubes")
        worldmodel_run(runs / "wm" / f"cubes-generative-{seed}", seed, "generative_ae", 40.0, env="cubes")
    train_run(runs / "train" / "stopped", 3, "scratch", 400.0, frames_reached=50_000)
    hostile = "x<script>alert(1)<"
    train_run(runs / "train" / hostile, 0, "curl", 300.0, note="<script>alert(2)</script> & | *", summary=False)
    return runs


def test_report_cli_end_to_end(tmp_path):
    runs = report_dirs(tmp_path)
    args = ["report", str(runs / "train"), str(runs / "wm"), f"reps={REPS}", "progress=false",
            "pairs=[['mode=scratch, note=plain','mode=frozen, note=plain'],[contrastive,generative_ae]]"]
    first = run_cli(*args, f"out={tmp_path / 'a'}", "hydra.run.dir=ra", cwd=tmp_path, check=True, timeout=300)
    md = (tmp_path / "a" / "report.md").read_text()
    assert "stopped" in first.stdout and "running" in first.stdout
    # the statistics and what was not scored
    assert "| cartpole-swingup | 100,000 frames | mode=scratch, note=plain | 3 | 401.0 [400." in md.replace("\\", "")
    assert "published (not rerun)" in md and "CURL 582 ± 146" in md and "C-SWM 99.9" in md
    assert "100 epochs, pool 1000" in md and "Across all 2 tasks" in md and "Probability of improvement" in md
    assert "50,000 of 100,000 frames" in md
    assert "no summary.json yet" in md
    # escaping: the hostile run name and config value are text, never markup
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;" in html and "&lt;script&gt;alert(2)" in html
    assert "<script" not in md.replace("\\<script", "")
    assert "http://" not in html and "https://" not in html  # self-contained
    figures = sorted(p.name for p in (tmp_path / "a").glob("*.png"))
    assert figures == ["train_learning_curves.png", "train_return_intervals.png", "train_return_profile.png",
                       "worldmodel_hits_1_10_intervals.png", "worldmodel_hits_1_10_profile.png",
                       "worldmodel_hits_vs_steps.png", "worldmodel_hits_vs_training.png",
                       "worldmodel_planning_vs_distance.png"]
    assert html.count('src="data:image/png;base64,') == len(figures) == 8


def test_report_is_reproducible(tmp_path):
    from worldssl.report import make_report

    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        train_run(runs / f"frozen-{seed}", seed, "frozen", 200.0 + 37 * seed)
        train_run(runs / f"scratch-{seed}", seed, "scratch", 400.0 - 11 * seed)
    train_run(runs / "running", 4, "scratch", 400.0, summary=False)
    a = make_report([runs], tmp_path / "a", reps=REPS, pairs=[["scratch", "frozen"]])
    b = make_report([runs], tmp_path / "b", reps=REPS, pairs=[["scratch", "frozen"]])
    assert a[0].read_text() == b[0].read_text()
    assert a[1].read_text() == b[1].read_text()  # the embedded figures too
    c = make_report([runs], tmp_path / "c", reps=REPS, seed=1, pairs=[["scratch", "frozen"]])
    assert c[0].read_text() != a[0].read_text()  # the random state reaches the intervals


def test_fast_aggregates_equal_rliable():
    from rliable import metrics

    from worldssl.report.stats import aggregates

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (2, 1), (3, 2), (5, 4), (7, 3), (10, 6)]:
        x = rng.normal(0.5, 0.4, size=shape)
        want = [metrics.aggregate_mean(x), metrics.aggregate_median(x), metrics.aggregate_iqm(x),
                metrics.aggregate_optimality_gap(x)]
        assert np.allclose(aggregates(x), want)


def test_report_cli_one_line_errors(tmp_path):
    proc = run_cli("report", str(tmp_path / "nope"), cwd=tmp_path)
    assert proc.returncode == 2 and "nope does not exist or is not a directory" in proc.stderr and "Traceback" not in proc.stderr
    runs = tmp_path / "runs"
    train_run(runs / "a", 0, "frozen", 1.0)
    train_run(runs / "b", 0, "scratch", 2.0)
    proc = run_cli("report", str(runs), "pairs=[[frozen,nothing]]", f"reps={REPS}", "hydra.run.dir=r", cwd=tmp_path)
    assert proc.returncode == 2 and "'nothing', not a group of these runs; groups: frozen; scratch" in proc.stderr


def test_scored_count_covers_every_table(tmp_path):
    """The header counts every scored run once, also when tasks differ in metric (a DMC return is normalised,
    a maze return is not, so they land in two tables of one section)."""
    from worldssl.report.build import build_report
    from worldssl.report.render import blocks_of

    runs = tmp_path / "runs"
    for seed in (0, 1):
        train_run(runs / f"dmc-{seed}", seed, "frozen", 200.0)
        maze = train_run(runs / f"maze-{seed}", seed, "frozen", 0.5)
        cfg = (maze / "config.yaml").read_text().replace("dmc-cartpole-swingup", "maze").replace(
            "worldssl/DMC-v0", "worldssl/Maze-v0").replace("cartpole-swingup", "null")
        (maze / "config.yaml").write_text(cfg)
        summary = json.loads((maze / "summary.json").read_text())
        (maze / "summary.json").write_text(json.dumps({**summary, "env_id": "worldssl/Maze-v0"}))
    report = build_report([runs], tmp_path / "out", reps=50)
    (section,) = report.sections
    assert len(section.tables) == 2 and section.scored == 4
    header = next(b for b in blocks_of(report) if "run(s) scored" in str(b))
    assert "4 run(s) scored" in str(header)


def test_per_seed_inputs_group_as_seeds_of_one_configuration(tmp_path):
    """A sweep pretrains an encoder per seed (.../cpc/seed0/..., .../cpc/seed1/...): the runs using them are the
    seeds of one group, while encoders that differ in anything else stay apart."""
    runs = tmp_path / "runs"
    for enc in ("cpc", "moco"):
        for seed in (0, 1):
            d = train_run(runs / f"{enc}-{seed}", seed, "frozen", 200.0)
            cfg = (d / "config.yaml").read_text().replace("note: plain",
                                                           f"checkpoint: sweep/cartpole/{enc}/seed{seed}/encoder")
            (d / "config.yaml").write_text(cfg)
    found = find_runs([runs])
    grouping = group_runs(found.runs)
    labels = {r.path.name: grouping.labels[str(r.path)] for r in found.runs}
    assert labels["cpc-0"] == labels["cpc-1"] != labels["moco-0"] == labels["moco-1"]
    assert sorted(set(labels.values())) == ["cpc", "moco"]  # the paths shortened to the part that differs


def test_jobs_a_sweep_blocked_are_listed(tmp_path):
    """A job `worldssl sweep` blocked (an earlier stage failed to make its input) was never launched, so no
    multirun lists it: the report reads it from sweep.json, for the whole sweep or one stage."""
    sweep = tmp_path / "sweep"
    train_run(sweep / "train" / "ok", 0, "frozen", 200.0)
    record = {"stages": {"train": {"jobs": [
        {"dir": str(sweep / "train" / "ok"), "name": "ok", "status": "finished"},
        {"dir": str(sweep / "train" / "cpc-seed1"), "name": "cpc-seed1", "status": "blocked"}]}}}
    (sweep / "sweep.json").write_text(json.dumps(record))
    for root in (sweep, sweep / "train"):
        found = find_runs([root])
        assert [r.path.name for r in found.runs] == ["ok"]
        assert found.missing == [(sweep / "train", "cpc-seed1 (blocked: an earlier stage did not make its input)")]

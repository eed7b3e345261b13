"""`worldssl eval plan` end to end on a tiny trained Shapes model (a subprocess, as a user runs it), the maze
protocol through the API (goal images and the reward cost, discrete and continuous actions), and one-line
errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli

from worldssl.eval.plan import PlanSettings, evaluate_planning
from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels import build_world_model

TINY = ["encoder.hidden_dim=16", "transition.hidden_dim=16", "batch_size=8", "steps_per_epoch=2", "epochs=1",
        "eval_steps=[1]", "eval_batch_size=4", "progress=false", "probe=false", "figures=false"]


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory, shapes_dataset):
    where = tmp_path_factory.mktemp("wm")
    run_cli("worldmodel", f"data={shapes_dataset}", *TINY, "plan=true", "plan_episodes=1", "plan_distances=[2]",
            "hydra.run.dir=run", cwd=where, check=True)
    return where / "run"


def test_eval_plan_cli_end_to_end(tmp_path, shapes_run):
    proc = run_cli("eval", "plan", f"run={shapes_run}", "episodes=2", "distances=[1,3]", "planner=beam", "horizon=2",
                   "beam_width=2", "hydra.run.dir=ev", cwd=tmp_path, check=True)
    assert "shortest-path oracle" in proc.stdout and "d=3" in proc.stdout and "success %" in proc.stdout
    s = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert s["env_id"] == "worldssl/Shapes-v0" and s["objective"] == "contrastive" and s["plan/episodes"] == 4
    assert s["plan/oracle/success/1"] == s["plan/oracle/success/3"] == 100.0 and s["plan/oracle/steps/3"] == 3.0
    assert 0 <= s["plan/success/all"] <= 100 and s["plan/ms_per_step/all"] > 0
    assert "plan/random/success/3" in s and s["settings"]["planner"] == "beam"


def test_worldmodel_plans_at_its_end(shapes_run):
    s = json.loads((shapes_run / "summary.json").read_text())
    assert s["plan/oracle/success/2"] == 100.0 and "plan/success/2" in s and "plan/random/success/all" in s


@pytest.mark.parametrize("override, message", [
    (["horizon=0"], "horizon must be a positive integer"),  # checked before anything loads
    (["env_id=worldssl/Maze-v0"], "trained on 20 discrete actions but worldssl/Maze-v0 has 6"),  # after loading
    (["run=null"], "run= is required"),
])  # the other bad inputs are one-line ConfigErrors tested through the API (test_planning.py)
def test_eval_plan_bad_input_is_one_line(tmp_path, shapes_run, override, message):
    proc = run_cli("eval", "plan", f"run={shapes_run}", *override, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def maze_model(action_space: dict, reward: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_world_model((3, 32, 32), action_space, {"kind": "cswm_flat", "hidden_dim": 16, "latent_dim": 4},
                             "mlp", latent={"hidden_dim": 16, "reward_hidden_dim": 16}, reward=reward).eval()


def test_maze_planning_goal_and_reward():
    settings = dict(episodes=3, maze_steps=3, maze_goal_steps=3, maze_radius=0.3, seed=1)
    discrete = maze_model({"type": "discrete", "n": 6}, reward=True)
    goal = evaluate_planning(discrete, "worldssl/Maze-v0", {"image_size": 32}, 1, PlanSettings(**settings))
    assert goal["plan/episodes"] == 3 and "plan/random/success/all" in goal and "plan/oracle/success/all" not in goal
    assert 0 <= goal["plan/success/all"] <= 100
    reward = evaluate_planning(discrete, "worldssl/Maze-v0", {"image_size": 32}, 1,
                               PlanSettings(**settings, cost="reward", planner="cem", samples=8, elites=2, horizon=2))
    assert 0 <= reward["plan/success/all"] <= 100
    with pytest.raises(ConfigError, match="needs a world model with a reward head"):
        evaluate_planning(maze_model({"type": "discrete", "n": 6}), "worldssl/Maze-v0", {"image_size": 32}, 1,
                          PlanSettings(**settings, cost="reward"))
    box = maze_model({"type": "box", "shape": [2]})
    kwargs = {"image_size": 32, "action_type": "continuous"}
    for planner in ("cem", "mppi"):
        out = evaluate_planning(box, "worldssl/Maze-v0", kwargs, 1,
                                PlanSettings(**settings, planner=planner, samples=8, elites=2, iterations=2, horizon=2))
        assert 0 <= out["plan/success/all"] <= 100
    with pytest.raises(ConfigError, match="trained on 6 discrete actions but worldssl/Maze-v0 has continuous"):
        evaluate_planning(discrete, "worldssl/Maze-v0", kwargs, 1, PlanSettings(**settings, planner="cem"))
    with pytest.raises(ConfigError, match="takes observations"):
        evaluate_planning(discrete, "worldssl/Maze-v0", {"image_size": 48}, 1, PlanSettings(**settings))


def test_compare_planning_table_plot_and_report(tmp_path):
    from worldssl.eval.plan import append_planning, planning_section, planning_table
    from worldssl.eval.report import aggregate, summarize

    runs = [{"objective": obj, "seed": seed, "metrics": {
        "eval/hits@1/1": 90.0 + seed, "plan/success/1": success, "plan/success/3": success / 2,
        "plan/success/all": success * 0.75, "plan/random/success/1": 10.0, "plan/random/success/3": 0.0,
        "plan/random/success/all": 5.0, "plan/oracle/success/1": 100.0, "plan/oracle/success/3": 100.0,
        "plan/oracle/success/all": 100.0}}
        for obj, values in (("contrastive", (80.0, 100.0, 90.0)), ("generative_ae", (20.0, 40.0, 30.0)))
        for seed, success in enumerate(values)]
    rows = aggregate(runs)
    lines = planning_table(rows, (1,)).splitlines()
    assert lines[0].split() == ["objective", "seeds", "Hits@1", "1", "plan", "d=1", "plan", "d=3", "plan", "all"]
    ci = summarize([80.0, 100.0, 90.0])["ci95"]
    assert lines[2].split()[:3] == ["contrastive", "3", "91.0"] and f"90 ± {ci:.0f}" in lines[2]
    assert lines[4].startswith("random policy") and lines[5].startswith("shortest-path oracle") and "100 ± 0" in lines[5]
    report = tmp_path / "report.md"
    report.write_text("# comparison\n")
    section = planning_section(rows, tmp_path, (1,))
    append_planning(report, section)
    text = report.read_text()
    assert "## Planning success" in text and "| generative_ae | 3 |" in text and (tmp_path / "planning.png").is_file()
    assert planning_table(aggregate([{"objective": "x", "seed": 0, "metrics": {"eval/hits@1/1": 1.0}}])) is None


def test_cubes_planning_runs_with_both_baselines():
    torch.manual_seed(0)
    model = build_world_model((3, 50, 50), {"type": "discrete", "n": 20}, {"kind": "slots", "size": "small",
                              "hidden_dim": 16}, "gnn", latent={"hidden_dim": 16}).eval()
    out = evaluate_planning(model, "worldssl/Cubes-v1", {}, 1, PlanSettings(episodes=1, distances=(1, 2)))
    assert out["plan/oracle/success/2"] == 100.0 and out["plan/oracle/steps/2"] == 2.0
    assert {"plan/success/1", "plan/success/2", "plan/random/success/2"} <= set(out)

"""`worldssl eval returns`: eval returns of train runs grouped by label, with t intervals over seeds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from worldssl.eval.returns import group_returns, read_evals, returns_table
from worldssl.runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def fake_run(path: Path, history: list[tuple[int, float]], finished: bool = True) -> Path:
    path.mkdir(parents=True)
    if finished:
        (path / "summary.json").write_text(json.dumps(
            {"eval_history": [{"frame": f, "return": r, "return_std": 0.0} for f, r in history]}))
    else:  # still training: only metrics.csv, with a replayed row after a resume
        rows = ["step,eval/return,train/critic_loss"] + [f"{f},{r}," for f, r in history]
        rows += ["5,,0.3", f"{history[-1][0]},{history[-1][1] + 1},"]
        (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    return path


def test_table_matches_a_naive_mean_and_t_interval(tmp_path):
    finals = [300.0, 420.0, 390.0]
    runs = [fake_run(tmp_path / f"a{i}", [(0, 20.0), (1000, f - 50), (2000, f)]) for i, f in enumerate(finals)]
    runs.append(fake_run(tmp_path / "b0", [(0, 25.0), (1000, 80.0)], finished=False))
    groups = group_returns([str(r) for r in runs], ["a", "a", "a", "b"])
    rows = {r["label"]: r for r in returns_table(groups)}
    x = np.array(finals)
    ci = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)
    assert rows["a"]["seeds"] == 3 and rows["a"]["frames"] == 2000
    assert rows["a"]["final"]["mean"] == pytest.approx(x.mean()) and rows["a"]["final"]["ci95"] == pytest.approx(ci)
    assert rows["b"]["final"]["values"] == [81.0]  # the replayed (later) row wins
    at = {r["label"]: r for r in returns_table(groups, at_frame=1000)}
    assert at["a"]["final"]["values"] == [250.0, 370.0, 340.0]
    assert read_evals(runs[3]) == [(0, 25.0), (1000, 81.0)]


def test_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="neither summary.json nor metrics.csv"):
        read_evals(tmp_path)
    with pytest.raises(ConfigError, match="one label per run"):
        group_returns(["a", "b"], ["x"])


def test_cli_prints_the_table_and_writes_the_plot(tmp_path):
    runs = [fake_run(tmp_path / f"r{i}", [(0, 10.0), (100, 50.0 + i)]) for i in range(2)]
    out = subprocess.run([sys.executable, "-m", "worldssl.cli", "eval", "returns", f"runs=[{runs[0]},{runs[1]}]",
                          "labels=[x,x]", f"hydra.run.dir={tmp_path / 'ev'}"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "50.5" in out.stdout and (tmp_path / "ev" / "returns.png").stat().st_size > 0
    assert "| x | 2 |" in (tmp_path / "ev" / "returns.md").read_text()

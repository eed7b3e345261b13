"""Per-epoch training curves read back from a world-model run's metrics.csv (`worldssl eval curves`)."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import run_cli
from test_wm_train import trainer

from worldssl.data import EpisodeDataset
from worldssl.eval.curves import curves_table, epoch_records, lowest_loss_epoch, run_curves
from worldssl.runtime.errors import DataError
from worldssl.runtime.logger import Logger


def write_csv(path, rows):
    columns = sorted({k for r in rows for k in r}, key=lambda k: (k != "step", k))
    with open(path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_records_follow_the_trainer_history(shapes_dataset, tmp_path):
    """Every in-loop evaluation lands on its epoch; the final one fills the last epoch with the selected weights."""
    ds = EpisodeDataset(shapes_dataset)
    t = trainer(ds, tmp_path, epochs=3)
    with Logger(tmp_path, tensorboard=False) as logger:
        out = t.train(logger)
    records = epoch_records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["step"] for r in records] == [3, 6, 9]
    in_loop = {h["epoch"]: h for h in t.history[:-1]}
    assert sorted(in_loop) == [1, 2]
    for r in records[:2]:
        h = in_loop[r["epoch"]]
        assert r["hits@1/1"] == pytest.approx(h["eval/hits@1/1"]) and r["mrr/2"] == pytest.approx(h["eval/mrr/2"])
    # the losses are the trainer's per-epoch means: the lowest is the epoch final_model=best_loss kept
    assert lowest_loss_epoch(records) == out["selected_epoch"] == t.best_epoch
    assert min(r["loss"] for r in records) == pytest.approx(t.best_loss)
    # epoch 3 was not evaluated in the loop; the final evaluation ranked epoch 3's weights only if it was the best
    if out["selected_epoch"] == 3:
        assert records[2]["hits@1/1"] == pytest.approx(out["eval/hits@1/1"])
    else:
        assert "hits@1/1" not in records[2]


def test_replayed_rows_legacy_numbering_and_fractional_final(tmp_path):
    rows = [
        {"step": 2, "wm/loss": 0.5},
        {"step": 4, "train/epoch_loss": 0.4},  # legacy: no train/epoch column, numbered by order
        {"step": 4, "eval/hits@1/1": 50.0, "eval/mrr/1": 60.0},
        {"step": 8, "train/epoch_loss": 0.9},  # killed after logging, replayed: the later row wins
        {"step": 8, "train/epoch_loss": 0.3},
        {"step": 8, "eval/hits@1/1": 70.0, "eval/mrr/1": 75.0},
        {"step": 9, "eval/hits@1/1": 1.0},  # an old-style final evaluation mid-epoch: no epoch's
        {"step": 12, "train/epoch_loss": 0.2, "train/epoch": 3},
        {"step": 13, "final/epoch": 3.25, "final/hits@1/1": 5.0},  # live weights a quarter into epoch 4
    ]
    write_csv(tmp_path, rows)
    records = epoch_records(tmp_path)
    assert [(r["epoch"], r["step"], r["loss"]) for r in records] == [(1, 4, 0.4), (2, 8, 0.3), (3, 12, 0.2)]
    assert records[1]["hits@1/1"] == 70.0 and "hits@1/1" not in records[2]
    table = curves_table(records)
    assert "| 3 (lowest loss) |  | 0.2 |" in table and "| 2 | 70.0 / 75.0 | 0.3 |" in table


def test_final_evaluation_fills_the_epoch_whose_weights_it_ranked(tmp_path):
    write_csv(tmp_path, [{"step": 5, "train/epoch_loss": 0.1, "train/epoch": 1},
                         {"step": 10, "train/epoch_loss": 0.2, "train/epoch": 2},
                         {"step": 10, "final/epoch": 1, "final/hits@1/1": 88.0, "final/mrr/1": 90.0}])
    records = epoch_records(tmp_path)
    assert records[0]["hits@1/1"] == 88.0 and records[0]["mrr/1"] == 90.0 and "hits@1/1" not in records[1]


def test_bad_runs_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="no metrics.csv"):
        epoch_records(tmp_path)
    write_csv(tmp_path, [{"step": 1, "wm/loss": 0.5}])
    with pytest.raises(DataError, match="not finished an epoch"):
        run_curves([tmp_path], tmp_path / "c.png")
    with pytest.raises(DataError, match="one label per run"):
        run_curves([tmp_path], tmp_path / "c.png", labels=["a", "b"])


def test_worldmodel_writes_curves_and_eval_curves_tabulates_them(tmp_path, shapes_dataset):
    torch.manual_seed(0)
    args = ["worldmodel", f"data={shapes_dataset}", "encoder.hidden_dim=16", "transition.hidden_dim=16",
            "batch_size=8", "steps_per_epoch=2", "epochs=2", "eval_steps=[1,2]", "eval_batch_size=4",
            "probe=false", "progress=false"]
    for name in ("a", "b"):
        run_cli(*args, f"hydra.run.dir={name}", cwd=tmp_path, check=True)
        assert (tmp_path / name / "curves.png").stat().st_size > 1000
    proc = run_cli("eval", "curves", "runs=[a,b]", "labels=[first,second]", "out=both.png",
                   "hydra.run.dir=ev", cwd=tmp_path, check=True)
    assert (tmp_path / "both.png").stat().st_size > 1000
    assert proc.stdout.count("| epoch | 1 step | 2 steps | mean train loss |") == 2
    assert "first" in proc.stdout and "second" in proc.stdout
    # epoch 1 was evaluated in the loop: its row carries Hits@1 / MRR at both horizons
    assert sum(line.startswith("| 1") and line.count("/") == 2 for line in proc.stdout.splitlines()) == 2
    only = run_cli("eval", "curves", "runs=[a]", "steps=[2]", "out=two.png", "hydra.run.dir=ev2", cwd=tmp_path,
                   check=True)
    assert (tmp_path / "two.png").is_file() and "| epoch | 1 step | 2 steps |" in only.stdout
    for args, message in ((["runs=[a]", "steps=[0]"], "steps must be positive"),
                          (["runs=[a]", "steps=[7]"], "matches no horizon"),
                          (["runs=[nowhere]"], "no metrics.csv"),
                          ([], "runs= is required")):
        bad = run_cli("eval", "curves", *args, "hydra.run.dir=bad", cwd=tmp_path)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr

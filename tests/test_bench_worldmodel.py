"""``worldssl bench worldmodel`` on tiny settings, and the straightforward reference being the same model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from worldssl.bench import worldmodel as bench_wm
from worldssl.bench.common import format_table
from worldssl.bench.straightforward import FloatTransitions, StraightforwardObjective, naive_model
from worldssl.runtime.errors import ConfigError
from worldssl.verbs.bench import BENCHES

TINY = {"wm_batch_size": 8, "wm_hidden_dim": 16, "wm_warmup": 1, "wm_steps": 2, "wm_epoch_steps": 2,
        "wm_memory_steps": 2, "wm_eval_batch_size": 4, "wm_threads": 1, "device": "cpu"}


def _cfg(shapes_dataset, **extra):
    return OmegaConf.create({**TINY, "wm_train_data": str(shapes_dataset), "wm_eval_data": str(shapes_dataset),
                             **extra})


def test_tiny_run_reports_every_objective_with_a_ratio(shapes_dataset, capsys):
    rows = bench_wm.run(_cfg(shapes_dataset, wm_memory=False))
    rates, epoch = rows[:-1], rows[-1]
    assert [r.name for r in rates] == [f"{o} / slots+gnn b8" for o in bench_wm.OBJECTIVES]
    for r in rows:
        assert math.isfinite(r.ours) and r.ours > 0
        assert r.baseline is not None and math.isfinite(r.baseline) and r.baseline > 0
        assert r.ratio is not None and r.ratio > 0
    assert all(r.figure == "train transitions/s" for r in rates)
    assert epoch.figure == "epoch seconds" and "extrapolated from 2 steps" in epoch.name
    assert epoch.ratio == pytest.approx(epoch.baseline / epoch.ours)  # seconds: > 1x means ours is faster
    table = format_table(rows)
    assert "ratio" in table.splitlines()[0]
    for name in bench_wm.OBJECTIVES:
        assert name in table
    assert "bench worldmodel:" in capsys.readouterr().out


def test_cli_tiny_run_collects_missing_data_and_measures_peak_ram(shapes_dataset, tmp_path):
    eval_dir = tmp_path / "shapes-eval"  # missing: the bench collects it
    overrides = [f"{k}={v}" for k, v in TINY.items()]
    proc = run_cli("bench", "worldmodel", *overrides, "wm_objectives=[contrastive]", "wm_epoch=false",
                   f"wm_train_data={shapes_dataset}", f"wm_eval_data={eval_dir}", "wm_eval_episodes=3",
                   "wm_eval_episode_steps=10", cwd=tmp_path, timeout=120, check=True)
    out = proc.stdout
    assert (eval_dir / "manifest.json").is_file() and "collecting 3 Shapes episodes" in out
    header = next(line for line in out.splitlines() if line.startswith("benchmark"))
    assert "ratio" in header
    row = next(line for line in out.splitlines() if line.startswith("contrastive / slots+gnn b8"))
    assert row.split("|")[5].strip().endswith("x")
    for job in ("train", "eval"):
        peaks = [line for line in out.splitlines() if line.startswith((f"  {job} ours:", f"  {job} straightforward:"))]
        assert len(peaks) == 2 and all("peak" in p and "torch +" in p for p in peaks)
    rss = [line for line in out.splitlines() if line.startswith("peak RAM")]
    assert len(rss) == 2 and all("MiB" in line for line in rss)


@pytest.mark.parametrize("name", bench_wm.OBJECTIVES)
def test_straightforward_reference_computes_our_loss(shapes_dataset, name):
    """Same weights, batch and RNG state, float32: the same loss and gradients, so it is the same model."""
    from worldssl.data.episodes import EpisodeDataset
    from worldssl.worldmodels.train import build_from_spec, window_batch

    torch.manual_seed(0)
    model, objective = build_from_spec(bench_wm.model_spec(name, hidden_dim=32))
    reference, ref_objective = naive_model(model), StraightforwardObjective(name, objective)
    assert reference.transition.naive and not model.transition.naive
    floats = FloatTransitions(shapes_dataset)
    items = np.arange(0, len(floats), 5)[:12]
    batch = window_batch(EpisodeDataset(shapes_dataset), floats.episode[items], floats.t[items], 1,
                         torch.device("cpu"))
    torch.manual_seed(1)  # the same negatives / noise on both sides
    ours, _ = objective.loss(model, batch)
    ours.backward()
    torch.manual_seed(1)
    theirs = ref_objective.loss(reference, *default_collate([floats[i] for i in items]))
    theirs.backward()
    torch.testing.assert_close(theirs, ours.detach(), rtol=1e-5, atol=1e-5)
    for (key, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=key)


def test_float_frames_match_our_normalisation(shapes_dataset):
    from worldssl.data.episodes import EpisodeDataset

    frames = EpisodeDataset(shapes_dataset).episode(0).obs
    ours = torch.from_numpy(frames).float().div_(255.0)
    assert torch.equal(torch.from_numpy(FloatTransitions(shapes_dataset).obs[0]), ours)


@pytest.mark.parametrize("override, message", [
    ({"wm_objectives": ["vq"]}, "unknown wm_objectives"),
    ({"wm_batch_size": 0}, "wm_batch_size"),
    ({"wm_load": "disk"}, "wm_load"),
])
def test_bad_settings_are_config_errors(shapes_dataset, override, message):
    with pytest.raises(ConfigError, match=message):
        bench_wm.run(_cfg(shapes_dataset, **override))


def test_registered_as_a_bench():
    assert BENCHES["worldmodel"] == "worldssl.bench.worldmodel"

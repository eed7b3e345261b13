"""Pretraining: every objective trains from the CLI / API, checkpoints reload exactly, resume is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf
from safetensors.torch import load_file

import worldssl.encoders as encoders
from worldssl.data import EpisodeDataset
from worldssl.runtime.errors import CheckpointError, WorldsslError
from worldssl.runtime.logger import Logger
from worldssl.ssl.train import Pretrainer, PretrainSettings
from worldssl.verbs.pretrain import build_objective

TINY_VIT = {"kind": "vit", "kwargs": {"arch": "vit_tiny", "patch_size": 10, "depth": 1}}
CONV = {"kind": "conv", "kwargs": {"feature_dim": 16, "num_filters": 8, "num_layers": 2}}


def _objective(ds, name, backbone=CONV, **kwargs):
    cfg = OmegaConf.create({"ssl": {"name": name, "kwargs": kwargs}, "backbone": backbone})
    torch.manual_seed(0)
    return build_objective(cfg, ds)


def _train(ds, run_dir, name, steps, backbone=CONV, resume=False, **kwargs):
    torch.manual_seed(0)
    trainer = Pretrainer(_objective(ds, name, backbone, **kwargs), ds,
                         PretrainSettings(steps=steps, batch_size=6, log_every=1, save_every=2, sequence_length=4,
                                          progress=False), run_dir, torch.device("cpu"))
    if resume:
        trainer.load(run_dir / "checkpoints")
    with Logger(run_dir, tensorboard=False) as logger:
        trainer.train(logger)
    return trainer


@pytest.mark.parametrize("name, backbone, kwargs", [
    ("moco", CONV, {"queue_size": 12}), ("moco", CONV, {"version": 3, "positive": "temporal"}),
    ("simclr", CONV, {}), ("byol", CONV, {}), ("cpc", CONV, {"action_conditioned": True}), ("mae", TINY_VIT, {}),
])
def test_resume_is_exact_and_encoder_reloads(shapes_dataset, tmp_path, name, backbone, kwargs):
    ds = EpisodeDataset(shapes_dataset)
    straight = _train(ds, tmp_path / "a", name, 4, backbone, **kwargs)
    _train(ds, tmp_path / "b", name, 2, backbone, **kwargs)
    resumed = _train(ds, tmp_path / "b", name, 4, backbone, resume=True, **kwargs)
    assert resumed.step == 4
    a = load_file(str(tmp_path / "a/checkpoints/objective.safetensors"))
    b = load_file(str(tmp_path / "b/checkpoints/objective.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    reloaded = encoders.load(tmp_path / "a/checkpoints/encoder", freeze=True)
    obs = torch.from_numpy(ds.sample_transitions(4, rng=np.random.default_rng(0)).obs)
    original = straight.objective.encoder.eval()
    torch.testing.assert_close(reloaded(obs), original(obs), rtol=0, atol=0)
    meta = json.loads((tmp_path / "a/checkpoints/encoder/encoder.json").read_text())["meta"]
    assert meta["step"] == 4


def test_resume_with_another_objective_is_refused(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    _train(ds, tmp_path, "simclr", 2)
    with pytest.raises(CheckpointError, match="another objective"):
        _train(ds, tmp_path, "byol", 4, resume=True)


def test_non_finite_loss_stops_with_a_clear_error(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    obj = _objective(ds, "simclr")
    with torch.no_grad():
        obj.projector.net[0].weight.fill_(float("nan")) if hasattr(obj.projector, "net") else \
            next(obj.projector.parameters()).fill_(float("nan"))
    trainer = Pretrainer(obj, ds, PretrainSettings(steps=3, batch_size=4, progress=False), tmp_path,
                         torch.device("cpu"))
    with pytest.raises((WorldsslError, FloatingPointError), match="(?i)non-finite|nan"):
        with Logger(tmp_path, tensorboard=False) as logger:
            trainer.train(logger)


def test_pretrain_and_probe_cli_end_to_end(shapes_dataset, tmp_path):
    proc = run_cli("pretrain", "ssl=moco", f"data={shapes_dataset}", "steps=4", "batch_size=8", "save_every=2",
                   "probe_frames=60", "backbone.kwargs.num_filters=8", "hydra.run.dir=run", cwd=tmp_path, check=True)
    assert "random init" in proc.stdout and "pixels 16x16" in proc.stdout
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["step"] == 4 and "probe/encoder/ridge_r2" in summary
    assert (run / "features_pca.png").is_file() and (run / "metrics.csv").is_file()
    more = run_cli("pretrain", "ssl=moco", f"data={shapes_dataset}", "steps=6", "batch_size=8", "probe=false",
                   "backbone.kwargs.num_filters=8", f"resume={run}", cwd=tmp_path, check=True)
    assert "6 steps" in more.stdout
    ev = run_cli("eval", "probe", f"encoder.checkpoint={run}/checkpoints/encoder", f"data={shapes_dataset}",
                 "max_frames=60", "hydra.run.dir=ev", cwd=tmp_path, check=True)
    assert "ridge R2" in ev.stdout
    results = json.loads((tmp_path / "ev/summary.json").read_text())["results"]
    assert [r["name"] for r in results] == ["encoder", "random init", "pixels 16x16"]


@pytest.mark.parametrize("args, message", [
    (["pretrain"], "data= is required"),
    (["pretrain", "data=nowhere"], "dataset directory nowhere does not exist"),
    (["pretrain", "ssl=mae", "backbone=conv", "data=x"], "ssl=mae needs a ViT backbone"),
    (["pretrain", "ssl=swav", "data=x"], "unknown ssl 'swav'"),
    (["pretrain", "data=x", "steps=0"], "steps must be a positive integer"),
    (["eval", "probe", "data=x"], "encoder.checkpoint= is required"),
    (["eval", "probe", "data=x", "encoder.checkpoint=missing.json"], "missing"),
])
def test_pretrain_and_eval_bad_input(tmp_path, args, message):
    proc = run_cli(*args, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "absl" not in ln]
    assert len(lines) == 1 and message in lines[0], proc.stderr

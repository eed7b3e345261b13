"""SIGTERM (cluster preemption) in the pretraining and world-model loops: the loop stops after its step, writes a
checkpoint, ends the run with one line (exit 143 from the CLI), and the resumed run ends with the same weights as
one that was never stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf

from worldssl.data import EpisodeDataset
from worldssl.runtime.checkpoint import StopWhen, load_train_state
from worldssl.runtime.errors import Interrupted
from worldssl.ssl.train import Pretrainer, PretrainSettings
from worldssl.verbs.pretrain import build_objective
from worldssl.worldmodels.train import WorldModelSettings, WorldModelTrainer, build_from_spec

TINY_ENCODER = {"kind": "slots", "size": "small", "num_slots": 5, "embedding_dim": 2, "hidden_dim": 16}
WM_SPEC = {"obs_shape": [3, 50, 50], "action_space": {"type": "discrete", "n": 20}, "encoder": TINY_ENCODER,
           "transition": "gnn", "latent": {"hidden_dim": 16}, "objective": "contrastive", "objective_kwargs": {},
           "reward": False}


class _TermAt:
    """A logger that sends this process SIGTERM when it is handed step ``at`` (as a scheduler would)."""

    def __init__(self, at: int | None):
        self.at = at

    def log(self, metrics: dict, step: int) -> None:
        if step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def _pretrainer(ds, run_dir: Path, steps: int) -> Pretrainer:
    torch.manual_seed(0)
    cfg = OmegaConf.create({"ssl": {"name": "simclr", "kwargs": {}},
                            "backbone": {"kind": "conv", "kwargs": {"feature_dim": 16, "num_filters": 8,
                                                                    "num_layers": 2}}})
    objective = build_objective(cfg, ds)
    settings = PretrainSettings(steps=steps, batch_size=6, log_every=1, save_every=100, progress=False)
    return Pretrainer(objective, ds, settings, run_dir, torch.device("cpu"))


def _wm_trainer(ds, run_dir: Path, epochs: int) -> WorldModelTrainer:
    torch.manual_seed(0)
    model, objective = build_from_spec(WM_SPEC)
    settings = WorldModelSettings(epochs=epochs, batch_size=16, steps_per_epoch=3, eval_every=0, eval_steps=(1,),
                                  eval_batch_size=4, log_every=1, save_every=100, amp=False, progress=False)
    return WorldModelTrainer(model, objective, ds, settings, run_dir, torch.device("cpu"), spec=WM_SPEC)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_pretrain_sigterm_checkpoints_and_resume_is_exact(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    straight = _pretrainer(ds, tmp_path / "a", 4)
    straight.train(_TermAt(None))
    stopped = _pretrainer(ds, tmp_path / "b", 4)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match="stopped by SIGTERM at step 2") as info:
        stopped.train(_TermAt(2))
    assert info.value.signum == signal.SIGTERM
    assert int(load_train_state(tmp_path / "b" / "checkpoints", "pretrain")["step"]) == 2
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is gone with the loop
    resumed = _pretrainer(ds, tmp_path / "b", 4)
    resumed.load(tmp_path / "b" / "checkpoints")
    resumed.train(_TermAt(None))
    a, b = _state(straight.objective), _state(resumed.objective)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_worldmodel_sigterm_mid_epoch_checkpoints_and_resume_is_exact(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    straight = _wm_trainer(ds, tmp_path / "a", 2)
    straight.train(_TermAt(None))
    stopped = _wm_trainer(ds, tmp_path / "b", 2)
    with pytest.raises(Interrupted, match="epoch 1, step 4"):
        stopped.train(_TermAt(4))  # one step into the second epoch
    state = load_train_state(tmp_path / "b" / "checkpoints", "worldmodel")
    assert (int(state["epoch"]), int(state["position"]), int(state["step"])) == (1, 1, 4)
    resumed = _wm_trainer(ds, tmp_path / "b", 2)
    resumed.load(tmp_path / "b" / "checkpoints")
    resumed.train(_TermAt(None))
    assert resumed.step == straight.step == 6
    for mine, theirs in ((straight.model, resumed.model), (straight.objective, resumed.objective)):
        a, b = _state(mine), _state(theirs)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_stop_when_reports_the_budget_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopWhen(max_minutes=0.0) as stop:
        time.sleep(0.01)
        assert stop.reason == "max_minutes"
        stop.raise_if_signalled("step 1", "run")  # no signal: nothing raised
    with StopWhen(max_minutes=None) as stop:
        assert stop.reason is None
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.reason == "SIGTERM"
        with pytest.raises(Interrupted, match="continue with resume=run"):
            stop.raise_if_signalled("step 1", "run")
    assert signal.getsignal(signal.SIGTERM) == before


def _terminate_once_logging(args: list[str], cwd: Path, metrics: Path) -> subprocess.CompletedProcess:
    """Start ``worldssl ARGS``, send SIGTERM once it has logged two steps, wait for it to exit."""
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "worldssl.cli", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("verb", ["pretrain", "worldmodel"])
def test_cli_sigterm_writes_a_checkpoint_and_exits_143(shapes_dataset, tmp_path, verb):
    run = tmp_path / "run"
    if verb == "pretrain":
        args = ["pretrain", "ssl=simclr", f"data={shapes_dataset}", "steps=100000", "batch_size=6", "log_every=1",
                "backbone.kwargs.num_filters=8", "backbone.kwargs.num_layers=2", "probe=false", "progress=false"]
    else:
        args = ["worldmodel", f"data={shapes_dataset}", f"eval_data={shapes_dataset}", "encoder.hidden_dim=16",
                "transition.hidden_dim=16", "batch_size=8", "steps_per_epoch=2", "epochs=100000", "eval_every=0",
                "log_every=1", "eval_steps=[1]", "eval_batch_size=4", "probe=false", "figures=false",
                "progress=false"]
    proc = _terminate_once_logging([*args, "hydra.run.dir=run"], tmp_path, run / "metrics.csv")
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "Traceback" not in proc.stderr and f"worldssl {verb}: stopped by SIGTERM at" in proc.stderr
    assert f"continue with resume={run}" in proc.stderr
    assert not (run / "summary.json").exists()  # not finished: compare would not reuse it
    state = load_train_state(run / "checkpoints", verb)
    step = int(state["step"])
    assert step >= 2
    if verb == "pretrain":
        more = ["steps=" + str(step + 1)]
    else:
        more = ["epochs=" + str(int(state["epoch"]) + 1)]
    run_cli(*args, *more, f"resume={run}", cwd=tmp_path, check=True)
    summary = (run / "summary.json").read_text()
    assert '"step"' in summary

"""Agents and the RL loop: SAC learns a tiny pixel task, every encoder mode trains, runs resume exactly after
SIGKILL, SIGTERM checkpoints and exits, bad input is one line, checkpoints load without executing code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import envs
from agents import build_agent
from agents.encoders import build_features
from agents.loop import AgentTrainer, LoopSettings, episode_seed, load_agent, stack_frames
from agents.sac import NonFiniteLoss, SACAgent, SACConfig
from worldssl.runtime.errors import ConfigError, WorldsslError
from worldssl.runtime.logger import Logger

ROOT = Path(__file__).resolve().parent.parent
SMALL = SACConfig(hidden_dim=64, feature_dim=32, aux_dim=32)
CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
TINY = ["env=point", "batch_size=32", "agent.hidden_dim=64", "agent.feature_dim=32", "seed_frames=100",
        "eval_episodes=3", "threads=1", "progress=false"]


def point_envs(**kw):
    return envs.make("worldssl/PointReach-v0", **kw), envs.make("worldssl/PointReach-v0", **kw)


def make_trainer(tmp_path: Path, mode: str = "scratch", checkpoint: str | None = None, **settings) -> AgentTrainer:
    env, eval_env = point_envs()
    torch.manual_seed(0)
    spec = {"agent": "sac", "mode": mode, "encoder_checkpoint": checkpoint, "conv": {},
            "obs_shape": list(env.observation_space.shape), "action_dim": 1,
            "config": {"hidden_dim": 64, "feature_dim": 32, "aux_dim": 32}}
    agent = build_agent(spec)
    s = LoopSettings(**{"frames": 200, "seed_frames": 50, "batch_size": 32, "eval_every_frames": 100,
                        "eval_episodes": 2, "save_every_frames": 100, "video": False, "progress": False,
                        **settings})
    return AgentTrainer(agent, env, eval_env, s, tmp_path, spec=spec, env_info={"env_id": "worldssl/PointReach-v0"})


def random_return(episodes: int = 10) -> float:
    env = envs.make("worldssl/PointReach-v0")
    rng = np.random.default_rng(0)
    total = []
    for i in range(episodes):
        env.reset(seed=episode_seed(0, i, stream=1))
        done, ret = False, 0.0
        while not done:
            _, r, term, trunc, _ = env.step(rng.uniform(-1, 1, 1).astype(np.float32))
            ret, done = ret + r, term or trunc
        total.append(ret)
    return float(np.mean(total))


# --------------------------------------------------------------------------------------------- learning
def test_sac_learns_the_point_task_from_pixels(tmp_path):
    """Scratch pixel SAC beats a random policy by a wide margin within seconds of CPU (max return 25)."""
    torch.set_num_threads(1)
    trainer = make_trainer(tmp_path, frames=700, seed_frames=100, eval_every_frames=700, eval_episodes=10)
    with Logger(tmp_path, tensorboard=False) as logger:
        summary = trainer.train(logger)
    baseline = random_return()
    assert summary["final_eval_return"] > baseline + 8.0, (summary["final_eval_return"], baseline)
    assert summary["frames"] == 700 and summary["finished"]


@pytest.mark.parametrize("mode", ["scratch", "frozen", "finetune", "curl", "decoupled"])
def test_every_encoder_mode_trains(tmp_path, mode):
    torch.set_num_threads(1)
    ckpt = None
    if mode == "finetune":
        from worldssl.encoders import ConvEncoder, save

        ckpt = str(save(ConvEncoder((3, 16, 16), feature_dim=16), tmp_path / "enc"))
    trainer = make_trainer(tmp_path / "run", mode, ckpt, frames=150, seed_frames=50)
    before = {k: v.clone() for k, v in trainer.agent.features.state_dict().items()}
    with Logger(tmp_path / "run", tensorboard=False) as logger:
        summary = trainer.train(logger)
    after = trainer.agent.features.state_dict()
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed == (mode != "frozen"), f"{mode}: encoder changed={changed}"
    assert summary["updates"] > 0 and np.isfinite(summary["final_eval_return"])
    assert (trainer.replay.feature_dim is not None) == (mode == "frozen")


def test_decoupled_encoder_gets_no_rl_gradient():
    """ATC mode: the critic's loss alone leaves the encoder untouched; the contrastive loss moves it."""
    torch.manual_seed(0)
    f = build_features("decoupled", (3, 16, 16))
    agent = SACAgent(f, 1, "decoupled", SMALL)
    from worldssl.data.replay import ReplayBatch

    obs = torch.randint(0, 255, (8, 3, 16, 16), dtype=torch.uint8).numpy()
    batch = ReplayBatch(obs, np.zeros((8, 1), np.float32), np.ones(8, np.float32), np.full(8, 0.99, np.float32), obs)
    agent.critic_opt.zero_grad()
    h = agent.features(torch.as_tensor(obs))
    q1, _ = agent.critic(h.detach(), torch.zeros(8, 1))
    q1.sum().backward()
    assert all(p.grad is None for p in agent.features.parameters())
    assert not any(p is q for g in agent.critic_opt.param_groups for p in g["params"] for q in f.parameters())
    metrics = agent.update(batch)
    assert "train/atc_loss" in metrics


@pytest.mark.parametrize("mode", ["scratch", "curl", "decoupled"])
def test_gpu_switches_in_their_cpu_form(mode):
    """amp / compile: auto leaves a CPU run in float32 and uncompiled; amp=true runs the update under bf16
    autocast (here on the CPU) with finite float32 losses that differ from the float32 update's, and
    compile=true compiles the trained modules in place (keys unchanged; not run here: inductor's CPU build
    takes minutes)."""
    from dataclasses import replace

    from worldssl.data.replay import ReplayBatch

    obs = torch.randint(0, 255, (8, 3, 16, 16), generator=torch.Generator().manual_seed(1), dtype=torch.uint8).numpy()
    batch = ReplayBatch(obs, np.zeros((8, 1), np.float32), np.ones(8, np.float32), np.full(8, 0.99, np.float32), obs)
    losses = {}
    for amp in ("auto", True):
        torch.manual_seed(0)
        agent = SACAgent(build_features(mode, (3, 16, 16)), 1, mode, replace(SMALL, amp=amp))
        assert not agent.compiled
        torch.manual_seed(1)
        metrics = agent.update(batch)
        assert all(np.isfinite(v) for v in metrics.values())
        losses[amp] = metrics["train/critic_loss"]
    assert losses["auto"] != losses[True]  # bf16 rounding shows: the switch really changes the arithmetic
    agent = SACAgent(build_features(mode, (3, 16, 16)), 1, mode, replace(SMALL, compile=True))
    keys = set(agent.state_dict())
    assert agent.compiled and agent.critic._compiled_call_impl is not None
    assert agent.features._compiled_call_impl is not None and set(agent.state_dict()) == keys
    with pytest.raises(ConfigError, match="compile"):
        replace(SMALL, compile="sometimes").check()


def test_frozen_features_are_cached_and_actor_is_detached(tmp_path):
    """Frozen mode: the loop encodes each frame once; the replay holds features and they equal the encoder's
    output on the rebuilt frame stacks."""
    trainer = make_trainer(tmp_path, "frozen", frames=60, seed_frames=60)
    with Logger(tmp_path, tensorboard=False) as logger:
        trainer.train(logger)
    files = sorted((tmp_path / "replay" / "episodes").glob("*.npz"))
    with np.load(files[0]) as z:
        obs = stack_frames(z["obs"], 1)
    expected = trainer.agent.encode(obs)
    got = trainer.replay.gather(np.arange(len(obs) - 1), features=True).obs
    np.testing.assert_allclose(got, expected[:-1], rtol=1e-5, atol=1e-6)


def test_stack_frames_matches_the_online_frame_stack():
    env = envs.make("worldssl/PointReach-v0", frame_stack=3)
    raw = envs.make("worldssl/PointReach-v0")
    obs, _ = env.reset(seed=1)
    f, _ = raw.reset(seed=1)
    online, frames = [obs], [f]
    for _ in range(5):
        a = np.array([0.7], np.float32)
        online.append(env.step(a)[0])
        frames.append(raw.step(a)[0])
    np.testing.assert_array_equal(stack_frames(np.stack(frames), 3), np.stack(online))


# --------------------------------------------------------------------------------------------- faults
def test_non_finite_loss_stops_without_touching_the_checkpoint(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, frames=400, save_every_frames=50, eval_every_frames=1000)
    calls = {"n": 0}
    real = trainer.agent.update

    def update(batch):
        calls["n"] += 1
        if calls["n"] == 120:
            raise NonFiniteLoss("critic_loss", float("nan"))
        return real(batch)

    monkeypatch.setattr(trainer.agent, "update", update)
    state = tmp_path / "checkpoints" / "train_state.pt"
    with Logger(tmp_path, tensorboard=False) as logger, pytest.raises(WorldsslError) as err:
        original = trainer.save

        def save():
            original()
            save.last = state.read_bytes()

        monkeypatch.setattr(trainer, "save", save)
        trainer.train(logger)
    message = str(err.value)
    assert "critic_loss" in message and "frame" in message and "intact" in message and "\n" not in message
    assert state.read_bytes() == save.last  # the last good checkpoint was not overwritten
    saved = torch.load(state, weights_only=True)
    assert saved["frame"] < trainer.frame


def test_checkpoints_load_without_unpickling(tmp_path):
    trainer = make_trainer(tmp_path, frames=75)
    with Logger(tmp_path, tensorboard=False) as logger:
        trainer.train(logger)
    state = torch.load(tmp_path / "checkpoints" / "train_state.pt", weights_only=True)
    assert state["frame"] == 75
    agent, spec = load_agent(tmp_path)
    assert spec["mode"] == "scratch"
    for k, v in trainer.agent.state_dict().items():
        assert torch.equal(v, agent.state_dict()[k]), k


def test_bad_inputs_are_one_line_errors(tmp_path):
    from worldssl.encoders import ConvEncoder, save

    with pytest.raises(ConfigError, match="valid: scratch"):
        build_features("magic", (3, 16, 16))
    wrong = save(ConvEncoder((3, 32, 32)), tmp_path / "enc32")
    with pytest.raises(ConfigError, match=r"expects observations \(3, 32, 32\).*\(3, 16, 16\)"):
        build_features("frozen", (3, 16, 16), str(wrong))
    with pytest.raises(ConfigError, match="unknown agent"):
        build_agent({"agent": "ppo9"})
    from agents.loop import check_continuous

    with pytest.raises(ConfigError, match="continuous.*Discrete"):
        check_continuous(envs.make("worldssl/Shapes-v0"), "worldssl/Shapes-v0", "sac")
    with pytest.raises(ConfigError, match="action_type=continuous"):
        check_continuous(envs.make("worldssl/Maze-v0"), "worldssl/Maze-v0", "sac")
    from worldssl.runtime.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a `worldssl train` run"):
        load_agent(wrong)


def test_world_model_run_is_accepted_as_encoder_and_refused_as_agent(tmp_path):
    """A worldmodel run's encoder (slots flattened) plugs into SAC; the reverse is a one-line error."""
    from agents.encoders import expect_encoder_file
    from worldssl.runtime.checkpoint import module_bytes
    from worldssl.runtime.io import write_bytes, write_json
    from worldssl.worldmodels.build import build_world_model
    from worldssl.worldmodels.train import MODEL_JSON

    space = {"type": "box", "shape": [1], "dtype": "float32", "low": [-1.0], "high": [1.0]}
    enc = {"kind": "slots", "size": "small", "num_slots": 3, "embedding_dim": 2, "hidden_dim": 32}
    model = build_world_model((3, 16, 16), space, enc, "mlp", latent={}).eval()
    ckpt = tmp_path / "wm" / "checkpoints"
    write_json(ckpt / MODEL_JSON, {"obs_shape": [3, 16, 16], "action_space": space, "encoder": enc,
                                   "transition": "mlp", "latent": {}, "objective": "contrastive"})
    write_bytes(ckpt / "model.safetensors", module_bytes(model))
    f = build_features("frozen", (3, 16, 16), str(tmp_path / "wm"))
    assert f.repr_dim == 6 and f.source.startswith("worldmodel")
    obs = torch.randint(0, 255, (4, 3, 16, 16), dtype=torch.uint8)
    torch.testing.assert_close(f(obs), model.encode(obs).flatten(1))
    with pytest.raises(ConfigError, match="is a `worldssl worldmodel` run"):
        expect_encoder_file(tmp_path / "wm")
    from worldssl.runtime.errors import CheckpointError

    with pytest.raises(CheckpointError, match="worldmodel run"):
        load_agent(tmp_path / "wm")


# --------------------------------------------------------------------------------------------- CLI
def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldssl.cli", "train", *args], capture_output=True, text=True,
                          env=CLI_ENV, cwd=kw.pop("cwd", ROOT), timeout=kw.pop("timeout", 300), **kw)


def test_cli_end_to_end_writes_the_run_directory(tmp_path):
    run = tmp_path / "run"
    out = _cli([*TINY, "frames=200", "eval_every_frames=100", f"hydra.run.dir={run}"])
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    for key in ("final_eval_return", "best_eval_return", "frames", "wall_seconds"):
        assert summary[key] is not None, key
    assert summary["frames"] == 200 and [h["frame"] for h in summary["eval_history"]] == [0, 100, 200]
    assert (run / "curves.png").stat().st_size > 0 and any((run / "tb").iterdir())
    assert sorted(p.name for p in (run / "videos").glob("*.mp4")) == [
        "eval_00000000.mp4", "eval_00000100.mp4", "eval_00000200.mp4"]
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "eval/return" in header and "train/critic_loss" in header
    from worldssl.data import EpisodeDataset

    ds = EpisodeDataset(run / "replay")  # the policy's episodes are a dataset pretrain / worldmodel can read
    assert ds.num_episodes == 8 and ds.num_transitions == 200


def test_cli_bad_values_are_one_line(tmp_path):
    cases = [(["encoder.mode=magic"], "encoder.mode"), (["agent=nope"], "agent"),
             (["env=shapes", f"hydra.run.dir={tmp_path / 'a'}"], "continuous"),
             (["encoder.mode=frozen", f"encoder.checkpoint={tmp_path / 'none'}"], "does not exist"),
             (["frames=0"], "frames")]
    for args, word in cases:
        out = _cli([*TINY, *args])
        assert out.returncode == 2, (args, out.stderr[-500:])
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and word in lines[0], (args, out.stderr)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240, min_frame: int = 0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists():
            try:
                if torch.load(path, weights_only=True)["frame"] >= min_frame:
                    return
            except Exception:  # mid-rename: try again
                pass
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path} appeared: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear in {timeout} s")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    """Kill -9 mid-run, resume: same frame counter, replay and RNG, so the final weights are bit-identical."""
    common = [*TINY, "frames=500", "save_every_frames=100", "eval_every_frames=250", "video=false"]
    straight = tmp_path / "straight"
    out = _cli([*common, f"hydra.run.dir={straight}"])
    assert out.returncode == 0, out.stderr[-2000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "worldssl.cli", "train", *common, f"hydra.run.dir={killed}"],
                            env=CLI_ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for(killed / "checkpoints" / "train_state.pt", proc, min_frame=200)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(killed / "checkpoints" / "train_state.pt", weights_only=True)
    assert 200 <= state["frame"] < 500
    out = _cli([f"resume={killed}", "progress=false"])
    assert out.returncode == 0, out.stderr[-2000:]
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    assert b["frames"] == a["frames"] == 500 and b["updates"] == a["updates"]
    assert [h["return"] for h in b["eval_history"]] == [h["return"] for h in a["eval_history"]]
    wa = (straight / "checkpoints" / "agent.safetensors").read_bytes()
    wb = (killed / "checkpoints" / "agent.safetensors").read_bytes()
    assert wa == wb


def test_sigterm_checkpoints_and_exits(tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "worldssl.cli", "train", *TINY, "frames=100000",
                             "save_every_frames=100", "video=false", f"hydra.run.dir={run}"],
                            env=CLI_ENV, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run / "checkpoints" / "train_state.pt", proc, min_frame=150)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]  # preempted, not finished: a scheduler can requeue
    assert "stopped by SIGTERM" in err and f"resume={run}" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM" and not summary["finished"]
    state = torch.load(run / "checkpoints" / "train_state.pt", weights_only=True)
    assert state["frame"] == summary["frames"] and state["episode"] == summary["episodes"]
    # the episode in progress was closed as truncated: it is in the replay, and the next one resumes cleanly
    from worldssl.data.episodes import list_episode_files

    assert len(list_episode_files(run / "replay")) == state["episode"]
    out = _cli([f"resume={run}", "frames=" + str(summary["frames"] + 50), "progress=false"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((run / "summary.json").read_text())["frames"] >= summary["frames"] + 50


@pytest.mark.parametrize("env_args", [
    ["env=dmc", "env.task=cartpole-swingup", "env.kwargs.image_size=64", "encoder.mode=curl"],
    ["env=dmc", "env.task=reacher-easy", "env.kwargs.image_size=64", "encoder.mode=frozen"],
    ["env=maze", "env.kwargs.action_type=continuous", "env.max_episode_steps=40", "encoder.mode=decoupled"],
], ids=["dmc-cartpole-curl", "dmc-reacher-frozen", "maze-continuous-decoupled"])
def test_cli_trains_on_dmc_and_the_maze(tmp_path, env_args):
    run = tmp_path / "run"
    out = _cli([*env_args, "frames=320", "seed_frames=80", "batch_size=8", "agent.hidden_dim=32",
                "eval_every_frames=100000", "eval_episodes=1", "video=false", "threads=1", "progress=false",
                f"hydra.run.dir={run}"])
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["frames"] >= 320 and summary["updates"] > 0 and np.isfinite(summary["final_eval_return"])

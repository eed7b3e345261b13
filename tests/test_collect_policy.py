"""`worldssl collect policy=RUN_DIR`: a trained agent's episodes, acting on frame stacks, seeded per episode
(resume and parallel workers write the same bytes), in the run's env by default; wrong inputs are one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from omegaconf import OmegaConf

import envs
from agents import build_agent
from agents.loop import AgentTrainer, LoopSettings, load_agent, stack_frames
from worldssl.data import CollectSpec, EpisodeDataset, collect, list_episode_files, read_manifest
from worldssl.runtime.errors import ConfigError
from worldssl.runtime.logger import Logger

POINT = "worldssl/PointReach-v0"
K = 2  # the agent acts on 2 stacked frames; the dataset stores single ones


def train_agent(run: Path, mode: str = "scratch", frames: int = 100) -> Path:
    """A tiny agent on the point task (frame stack 2), with a config.yaml as `worldssl train` writes one."""
    env, eval_env = envs.make(POINT, frame_stack=K), envs.make(POINT, frame_stack=K)
    torch.manual_seed(0)
    spec = {"agent": "sac", "mode": mode, "encoder_checkpoint": None, "conv": {},
            "obs_shape": list(env.observation_space.shape), "action_dim": 1,
            "config": {"hidden_dim": 64, "feature_dim": 32, "aux_dim": 32}}
    s = LoopSettings(frames=frames, seed_frames=50, batch_size=32, eval_every_frames=frames, eval_episodes=1,
                     save_every_frames=frames, video=False, progress=False)
    trainer = AgentTrainer(build_agent(spec), env, eval_env, s, run, spec=spec, env_info={"env_id": POINT})
    with Logger(run, tensorboard=False) as logger:
        summary = trainer.train(logger)
    assert summary["updates"] > 0 or frames <= s.seed_frames
    OmegaConf.save({"env": {"name": "point", "id": POINT, "frame_stack": K, "max_episode_steps": None,
                            "kwargs": {"size": 16, "dims": 1, "max_steps": 25}}}, run / "config.yaml")
    return run


@pytest.fixture(scope="module")
def agent_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return train_agent(tmp_path_factory.mktemp("train") / "run")


def spec(out: Path, run: Path, episodes: int = 3, mode: str = "mean", **kw) -> CollectSpec:
    return CollectSpec(POINT, {}, str(out), episodes=episodes, seed=5, policy=str(run), policy_mode=mode,
                       frame_stack=K, **kw)


def expected_actions(run: Path, obs: np.ndarray) -> np.ndarray:
    """What the agent does on the episode's frame stacks, deterministically, rescaled as the loop does."""
    agent, _ = load_agent(run)
    env = envs.make(POINT)
    low, high = env.action_space.low, env.action_space.high
    out = []
    for o in stack_frames(obs, K)[:-1]:  # the last observation has no action
        x = agent.encode(o) if agent.caches_features else o
        out.append(low + (agent.act(x, eval_mode=True) + 1.0) * 0.5 * (high - low))
    return np.stack(out).astype(np.float32)


def test_mean_policy_actions_are_the_agents_on_the_stored_frames(agent_run, tmp_path):
    result = collect(spec(tmp_path / "d", agent_run), progress=False)
    assert result.episodes == 3 and result.transitions == 75
    ds = EpisodeDataset(tmp_path / "d")
    assert ds.num_episodes == 3 and ds.obs_shape == (2 * 3, 16, 16)  # readers stack as the agent did
    manifest = read_manifest(tmp_path / "d")
    assert manifest["policy"] == str(agent_run.resolve()) and manifest["policy_mode"] == "mean"
    assert manifest["frame_stack"] == K
    for i, path in sorted(list_episode_files(tmp_path / "d").items()):
        with np.load(path) as z:
            obs, action = z["obs"], z["action"]
        assert action.dtype == np.float32 and action.shape == (25, 1)
        np.testing.assert_array_equal(action, expected_actions(agent_run, obs), err_msg=f"episode {i}")
        assert np.abs(action).max() <= 1.0
    # the API takes the run's checkpoints/ too and records the same run directory
    again = collect(spec(tmp_path / "d", agent_run / "checkpoints", episodes=4), progress=False)
    assert again.new_episodes == 1


def test_sample_policy_is_seeded_per_episode_resume_and_workers_write_identical_files(agent_run, tmp_path):
    collect(spec(tmp_path / "a", agent_run, episodes=3, mode="sample"), progress=False)
    first = {i: p.read_bytes() for i, p in list_episode_files(tmp_path / "a").items()}
    with np.load(list_episode_files(tmp_path / "a")[0]) as z:
        obs, action = z["obs"], z["action"]
    assert not np.array_equal(action, expected_actions(agent_run, obs))  # sampled, not the mean
    # the caller's torch RNG is left as it was
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    collect(spec(tmp_path / "c", agent_run, episodes=1, mode="sample"), progress=False)
    assert torch.equal(torch.rand(3), before)
    # resume: a lost episode is rewritten byte for byte
    list_episode_files(tmp_path / "a")[1].unlink()
    assert collect(spec(tmp_path / "a", agent_run, episodes=3, mode="sample"), progress=False).new_episodes == 1
    assert {i: p.read_bytes() for i, p in list_episode_files(tmp_path / "a").items()} == first
    # two spawned workers, each loading the agent itself
    collect(spec(tmp_path / "b", agent_run, episodes=3, mode="sample"), workers=2, progress=False)
    assert {i: p.read_bytes() for i, p in list_episode_files(tmp_path / "b").items()} == first
    with pytest.raises(Exception, match="policy_mode"):
        collect(spec(tmp_path / "a", agent_run, episodes=4, mode="mean"), progress=False)


def test_frozen_agent_acts_on_its_features(tmp_path):
    run = train_agent(tmp_path / "frozen", mode="frozen", frames=50)
    collect(spec(tmp_path / "d", run, episodes=1), progress=False)
    with np.load(list_episode_files(tmp_path / "d")[0]) as z:
        np.testing.assert_array_equal(z["action"], expected_actions(run, z["obs"]))


def test_wrong_policy_or_env_is_one_line(agent_run, tmp_path):
    wm = tmp_path / "wm"
    (wm / "checkpoints").mkdir(parents=True)
    (wm / "checkpoints" / "model.json").write_text("{}")
    enc = tmp_path / "enc"
    enc.mkdir()
    (enc / "encoder.json").write_text("{}")
    for path, message in [(wm, "is a `worldssl worldmodel` run"), (enc, "is an encoder checkpoint"),
                          (tmp_path / "nope", "no such directory"), (tmp_path, "not a `worldssl train` run")]:
        with pytest.raises(ConfigError, match=message) as e:
            collect(spec(tmp_path / "d", path), progress=False)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"acts on observations \(6, 16, 16\) but the env gives frames \(3, 50, 50\)"):
        collect(CollectSpec("worldssl/Shapes-v0", {}, str(tmp_path / "s"), 1, policy=str(agent_run)), progress=False)
    with pytest.raises(ConfigError, match="outputs 1 continuous action"):
        collect(CollectSpec(POINT, {"dims": 2}, str(tmp_path / "p"), 1, policy=str(agent_run)), progress=False)
    assert not (tmp_path / "s").exists() and not (tmp_path / "p").exists()


def test_cli_defaults_to_the_runs_env_and_rejects_a_world_model(agent_run, tmp_path):
    proc = run_cli("collect", f"policy={agent_run}", "episodes=2", "env.max_episode_steps=5", "out=d",
                   "policy_mode=mean", "preview=false", "progress=false", "hydra.run.dir=run", cwd=tmp_path, check=True)
    assert "2 episodes / 10 transitions" in proc.stdout
    manifest = read_manifest(tmp_path / "d")
    assert manifest["env_id"] == POINT and manifest["max_episode_steps"] == 5 and manifest["frame_stack"] == K
    assert manifest["policy"] == str(agent_run.resolve())
    saved = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert saved.env.name == "point" and saved.policy == str(agent_run.resolve())
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["policy"] == str(agent_run.resolve())
    wm = tmp_path / "wm"
    wm.mkdir()
    (wm / "model.json").write_text("{}")
    bad = run_cli("collect", f"policy={wm}", "hydra.run.dir=run2", cwd=tmp_path)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "is a `worldssl worldmodel` run" in lines[0], bad.stderr

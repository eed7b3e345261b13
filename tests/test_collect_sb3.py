"""`worldssl collect policy=RUN_DIR` with `worldssl train agent=sb3_ppo | sb3_sac` runs: the stored actions are the
trained model's `predict` on the stored frames (stacked as in training; PPO's through its precomputed frozen
features), the same seed gives the same bytes (API and CLI), loading never unpickles, and a wrong env or broken
weights are one line."""

from __future__ import annotations

import dataclasses
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from agents.loop import LoopSettings, stack_frames
from envs.config import env_config
from worldssl.data import CollectSpec, collect, list_episode_files, read_manifest
from worldssl.data.collect import SB3Policy, load_policy
from worldssl.runtime.errors import CheckpointError, ConfigError, WorldsslError
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import settings_from
from worldssl.verbs._run import save_config
from worldssl.verbs.collect import check_policy
from worldssl.verbs.train import _sb3_trainer

ROOT = Path(__file__).resolve().parent.parent
K = 2  # both runs act on 2 stacked frames; datasets store single ones
MAZE = ["env=maze", "env.kwargs.layout=open", "env.kwargs.image_size=16", "env.max_episode_steps=10"]
COMMON = [f"env.frame_stack={K}", "threads=1", "progress=false", "video=false", "eval_episodes=1", "device=cpu"]


def train_sb3(run: Path, overrides: list[str]):
    """`worldssl train` in-process (its composed config, config.yaml and SB3 trainer); returns the trainer, whose
    model is the reference the collected actions are checked against."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=[*COMMON, *overrides])
    run.mkdir(parents=True)
    save_config(cfg, run)
    env_cfg = env_config(cfg.env)
    trainer = _sb3_trainer(cfg, env_cfg.make(), env_cfg.make(), settings_from(LoopSettings, cfg), run, "cpu")[0]
    with Logger(run, tensorboard=False) as logger:
        assert trainer.train(logger)["updates"] > 0
    return trainer


@pytest.fixture(scope="module")
def ppo(tmp_path_factory):
    """PPO on the discrete maze with frozen random features precomputed in FrozenFeatures."""
    return train_sb3(tmp_path_factory.mktemp("ppo") / "run",
                     [*MAZE, "agent=sb3_ppo", "encoder.mode=frozen", "encoder.feature_dim=16", "agent.hidden_dim=16",
                      "agent.n_steps=16", "batch_size=8", "frames=32", "eval_every_frames=32"])


@pytest.fixture(scope="module")
def sac(tmp_path_factory):
    """SAC on the continuous point task, its conv encoder trained inside the policy (pixels in)."""
    return train_sb3(tmp_path_factory.mktemp("sac") / "run",
                     ["env=point", "env.kwargs.dims=2", "agent=sb3_sac", "encoder.mode=scratch",
                      "encoder.feature_dim=8", "agent.hidden_dim=16", "batch_size=8", "seed_frames=10", "frames=30",
                      "eval_every_frames=30"])


def spec_of(trainer, out: Path, episodes: int = 2, seed: int = 5, mode: str = "mean", **env_kwargs) -> CollectSpec:
    env = OmegaConf.load(trainer.run_dir / "config.yaml").env
    return CollectSpec(env.id, {**env.kwargs, **env_kwargs}, str(out), episodes=episodes, seed=seed,
                       policy=str(trainer.run_dir), max_episode_steps=env.max_episode_steps, frame_stack=K,
                       policy_mode=mode)


def episodes(out: Path) -> dict[int, dict[str, np.ndarray]]:
    result = {}
    for i, path in sorted(list_episode_files(out).items()):
        with np.load(path, allow_pickle=False) as z:
            result[i] = {k: z[k] for k in z.files}
    return result


def reference_actions(trainer, obs: np.ndarray) -> np.ndarray:
    """The trained model's deterministic actions on an episode's stacked frames, through the run's own
    FrozenFeatures wrapper when it had one (the last frame has no action)."""
    stacks = stack_frames(obs, K)[:-1]
    xs = [trainer.env.observation(o) for o in stacks] if trainer.features is not None else list(stacks)
    return np.stack([trainer.model.predict(x, deterministic=True)[0] for x in xs])


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_mean_actions_are_the_trained_models_predict_on_the_stored_frames(algo, request, tmp_path):
    trainer = request.getfixturevalue(algo)
    result = collect(spec_of(trainer, tmp_path / "d"), progress=False)
    assert result.episodes == 2 and result.transitions > 0
    manifest = read_manifest(tmp_path / "d")
    assert manifest["policy"] == str(trainer.run_dir.resolve()) and manifest["frame_stack"] == K
    for i, ep in episodes(tmp_path / "d").items():
        expected = reference_actions(trainer, ep["obs"])
        if algo == "ppo":
            assert manifest["action_space"]["type"] == "discrete" and ep["action"].dtype == np.int64
            np.testing.assert_array_equal(ep["action"], expected, err_msg=f"episode {i}")
        else:
            assert ep["action"].dtype == np.float32 and ep["action"].shape[1:] == (2,)
            np.testing.assert_allclose(ep["action"], expected, rtol=0, atol=1e-6, err_msg=f"episode {i}")
            assert np.abs(ep["action"]).max() <= 1.0


def test_sample_mode_is_seeded_per_episode_and_matches_the_cli(ppo, tmp_path):
    collect(spec_of(ppo, tmp_path / "a", episodes=3, mode="sample"), progress=False)
    collect(spec_of(ppo, tmp_path / "b", episodes=3, mode="sample"), progress=False)
    collect(spec_of(ppo, tmp_path / "c", episodes=3, seed=6, mode="sample"), progress=False)
    a, b, c = episodes(tmp_path / "a"), episodes(tmp_path / "b"), episodes(tmp_path / "c")
    for i in a:
        for key in a[i]:
            np.testing.assert_array_equal(a[i][key], b[i][key], err_msg=f"episode {i} {key}")
    assert any(not np.array_equal(a[i]["action"], c[i]["action"]) for i in a)  # another seed, other episodes
    # sampled, not the mean action: the untrained policy's entropy is high
    assert any(not np.array_equal(ep["action"], reference_actions(ppo, ep["obs"])) for ep in a.values())
    # the CLI, in a fresh process, takes the run's env from its config.yaml and writes the same episodes
    proc = run_cli("collect", f"policy={ppo.run_dir}", "episodes=3", "seed=5", "policy_mode=sample", "out=d",
                   "preview=false", "progress=false", "hydra.run.dir=run", cwd=tmp_path, check=True)
    assert "3 episodes" in proc.stdout
    cli = episodes(tmp_path / "d")
    assert sorted(cli) == sorted(a)
    for i in a:
        for key in a[i]:
            np.testing.assert_array_equal(cli[i][key], a[i][key], err_msg=f"CLI episode {i} {key}")


def test_loading_never_unpickles_and_leaves_the_callers_rng(ppo, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading an SB3 run")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    torch.manual_seed(7)
    np.random.seed(7)
    expected = torch.rand(2), np.random.rand(2)
    torch.manual_seed(7)
    np.random.seed(7)
    policy = load_policy(ppo.run_dir, "mean")
    assert isinstance(policy, SB3Policy)
    policy.check_env(spec_of(ppo, Path("unused")).make_env())
    assert torch.equal(torch.rand(2), expected[0]) and np.array_equal(np.random.rand(2), expected[1])
    for name, p in ppo.model.policy.state_dict().items():
        assert torch.equal(policy.model.policy.state_dict()[name], p), name


def test_wrong_env_or_broken_weights_are_one_line(ppo, sac, tmp_path):
    cases = [(spec_of(ppo, tmp_path / "a", action_type="continuous"),
              ConfigError, r"outputs one of 6 discrete actions but the env's action space is Box"),
             (spec_of(ppo, tmp_path / "b", image_size=32),
              ConfigError, r"acts on observations \(6, 16, 16\) but the env gives frames \(3, 32, 32\)"),
             (spec_of(sac, tmp_path / "c", dims=1), ConfigError, r"outputs 2 continuous action\(s\)")]
    broken = tmp_path / "broken"
    shutil.copytree(ppo.run_dir, broken)
    weights = broken / "checkpoints" / "policy.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    cases.append((dataclasses.replace(spec_of(ppo, tmp_path / "d"), policy=str(broken)), CheckpointError,
                  "corrupt checkpoint"))
    for spec, error, message in cases:
        with pytest.raises(error, match=message) as e:
            check_policy(spec)
        assert "\n" not in str(e.value)
    weights.unlink()
    with pytest.raises(WorldsslError, match="policy.safetensors is missing") as e:
        collect(cases[-1][0], progress=False)
    assert "\n" not in str(e.value) and not (tmp_path / "d").exists()

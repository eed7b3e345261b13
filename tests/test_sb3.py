"""Stable-Baselines3 integration (agents/sb3.py): the features extractor in PPO and SAC (frozen weights stay, trainable
ones move, either normalize_images gives the same features), the frozen-feature wrapper against gymnasium's
checker, `worldssl train agent=sb3_ppo | sb3_sac` end to end, SIGKILL + resume with SAC's replay restored, and
bad input as one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

import envs
from agents.sb3 import FrozenFeatures, WorldsslExtractor, load_replay, save_replay
from worldssl.runtime.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
POINT = ["env=point", "env.kwargs.dims=2", "batch_size=16", "threads=1", "progress=false"]


def point_env():
    return envs.make("worldssl/PointReach-v0", size=16, dims=2)


def maze_env(size: int = 32):
    return envs.make("worldssl/Maze-v0", layout="open", image_size=size, max_episode_steps=20)


def _encoder_file(tmp_path: Path, obs_shape=(3, 16, 16)) -> Path:
    """A `worldssl pretrain`-format encoder checkpoint (what a pretrain run writes to checkpoints/encoder)."""
    from worldssl.encoders import ConvEncoder, save

    torch.manual_seed(3)
    path = tmp_path / "encoder"
    save(ConvEncoder(obs_shape, feature_dim=12), str(path))
    return path


def _encoder_state(model) -> dict[str, torch.Tensor]:
    exts = {"actor": model.actor.features_extractor, "critic": model.critic.features_extractor} \
        if hasattr(model, "actor") else {"policy": model.policy.features_extractor}
    return {f"{n}.{k}": v.clone() for n, e in exts.items() for k, v in e.encoder.state_dict().items()}


@pytest.mark.parametrize("algo", ["ppo", "sac"])
@pytest.mark.parametrize("freeze", [True, False], ids=["frozen", "trainable"])
def test_extractor_trains_in_ppo_and_sac_exactly_when_not_frozen(tmp_path, algo, freeze):
    """The issue's one-liner, with a pretrain checkpoint: frozen weights are bit-identical after learning,
    trainable ones have moved."""
    ckpt = _encoder_file(tmp_path)
    kwargs = dict(policy_kwargs=dict(features_extractor_class=WorldsslExtractor,
                                     features_extractor_kwargs=dict(checkpoint=str(ckpt), freeze=freeze),
                                     normalize_images=False, net_arch=[16, 16]), seed=0, device="cpu")
    if algo == "ppo":
        model = PPO("CnnPolicy", point_env(), n_steps=32, batch_size=16, n_epochs=2, **kwargs)
    else:
        model = SAC("CnnPolicy", point_env(), buffer_size=200, learning_starts=8, batch_size=16, **kwargs)
    ext = model.actor.features_extractor if algo == "sac" else model.policy.features_extractor
    assert ext.features_dim == 12 and ext.source.startswith("encoder:")
    before = _encoder_state(model)
    model.learn(48)
    after = _encoder_state(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if freeze:
        assert not changed
        assert all(not p.requires_grad for p in ext.parameters())
    else:
        assert any(k.endswith("weight") for k in changed), "a trainable extractor's weights did not change"


@pytest.mark.parametrize("env_id, kwargs", [
    ("worldssl/DMC-cartpole-swingup-v0", {"image_size": 64}), ("worldssl/Maze-v0", {"image_size": 32}),
    ("worldssl/Shapes-v0", {}), ("worldssl/Cubes-v1", {}), ("worldssl/PointReach-v0", {})],
    ids=["dmc", "maze", "shapes", "cubes", "point"])
def test_extractor_runs_ppo_on_every_pixel_env_family(env_id, kwargs):
    """uint8 channel-first frames of each env family (DMC: 3 stacked frames) through the extractor in PPO; the
    continuous ones also through SAC."""
    env = envs.make(env_id, **kwargs)
    policy_kwargs = dict(features_extractor_class=WorldsslExtractor, normalize_images=False, net_arch=[8],
                         features_extractor_kwargs=dict(checkpoint=None, freeze=True, conv={"feature_dim": 8}))
    PPO("CnnPolicy", env, n_steps=8, batch_size=8, n_epochs=1, seed=0, device="cpu",
        policy_kwargs=policy_kwargs).learn(8)
    if isinstance(env.action_space, gym.spaces.Box):
        SAC("CnnPolicy", env, buffer_size=50, learning_starts=4, batch_size=4, seed=0, device="cpu",
            policy_kwargs=policy_kwargs).learn(8)
    env.close()


def test_random_init_extractor_on_the_maze_and_a_world_model_run(tmp_path):
    """checkpoint=None is the DrQ conv encoder at random init; PPO with it acts on the discrete maze; a worldmodel
    run's slot encoder plugs in flattened."""
    env = maze_env()
    model = PPO("CnnPolicy", env, n_steps=16, batch_size=8, n_epochs=1, seed=0, device="cpu",
                policy_kwargs=dict(features_extractor_class=WorldsslExtractor, normalize_images=False,
                                   features_extractor_kwargs=dict(checkpoint=None, freeze=True,
                                                                  conv={"feature_dim": 8})))
    assert model.policy.features_extractor.source == "random" and model.policy.features_extractor.features_dim == 8
    model.learn(16)
    env.close()

    from worldssl.runtime.checkpoint import module_bytes
    from worldssl.runtime.io import write_bytes, write_json
    from worldssl.worldmodels.build import build_world_model
    from worldssl.worldmodels.train import MODEL_JSON

    space = {"type": "box", "shape": [2], "dtype": "float32", "low": [-1.0, -1.0], "high": [1.0, 1.0]}
    enc = {"kind": "slots", "size": "small", "num_slots": 3, "embedding_dim": 2, "hidden_dim": 16}
    wm = build_world_model((3, 16, 16), space, enc, "mlp", latent={}).eval()
    write_json(tmp_path / "wm" / "checkpoints" / MODEL_JSON, {"obs_shape": [3, 16, 16], "action_space": space,
                                                             "encoder": enc, "transition": "mlp", "latent": {},
                                                             "objective": "contrastive"})
    write_bytes(tmp_path / "wm" / "checkpoints" / "model.safetensors", module_bytes(wm))
    ext = WorldsslExtractor(point_env().observation_space, checkpoint=str(tmp_path / "wm"))
    obs = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    assert ext.features_dim == 6
    torch.testing.assert_close(ext(obs.float()), wm.encode(obs).flatten(1))


def test_normalize_images_true_and_false_give_the_same_features_and_actions(tmp_path):
    """SB3 hands [0, 255] floats (normalize_images=False) or pixel / 255 (True): the extractor reads the scale, so
    both policies, with the same weights, act the same; mixing the scales in one extractor is one line."""
    ckpt = _encoder_file(tmp_path)
    ext = WorldsslExtractor(point_env().observation_space, checkpoint=str(ckpt))
    obs = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    ref = ext.encoder(obs)  # the encoder contract on uint8
    torch.testing.assert_close(ext(obs.float()), ref)
    with pytest.raises(ValueError, match="normalize_images"):
        ext(obs.float() / 255.0)
    fresh = WorldsslExtractor(point_env().observation_space, checkpoint=str(ckpt))
    torch.testing.assert_close(fresh(obs.float() / 255.0), ref)

    models = []
    for normalize in (False, True):
        models.append(PPO("CnnPolicy", point_env(), n_steps=16, batch_size=8, seed=0, device="cpu",
                          policy_kwargs=dict(features_extractor_class=WorldsslExtractor, normalize_images=normalize,
                                             features_extractor_kwargs=dict(checkpoint=str(ckpt), freeze=False))))
    models[1].policy.load_state_dict(models[0].policy.state_dict())
    batch = obs.numpy()
    a0, _ = models[0].predict(batch, deterministic=True)
    a1, _ = models[1].predict(batch, deterministic=True)
    np.testing.assert_allclose(a0, a1, rtol=1e-5, atol=1e-6)
    models[1].learn(32)  # SB3's default normalize_images=True trains as well


def test_frozen_feature_wrapper_passes_check_env_and_matches_the_extractor(tmp_path):
    from gymnasium.utils.env_checker import check_env

    ckpt = _encoder_file(tmp_path)
    wrapped = FrozenFeatures(point_env(), checkpoint=str(ckpt))
    check_env(wrapped, skip_render_check=True)
    obs, _ = wrapped.reset(seed=1)
    assert obs.dtype == np.float32 and obs.shape == (12,)
    ext = WorldsslExtractor(point_env().observation_space, checkpoint=str(ckpt))
    pixels = torch.as_tensor(wrapped.pixels)[None]
    np.testing.assert_allclose(obs, ext(pixels.float())[0].numpy(), rtol=1e-5, atol=1e-6)
    model = PPO("MlpPolicy", wrapped, n_steps=16, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(16)


def test_replay_round_trips_through_npz_without_pickle(tmp_path):
    from stable_baselines3.common.buffers import ReplayBuffer

    env = point_env()
    buf = ReplayBuffer(50, env.observation_space, env.action_space, device="cpu")
    rng = np.random.default_rng(0)
    for _ in range(30):
        o = rng.integers(0, 256, (1, 3, 16, 16), dtype=np.uint8)
        buf.add(o, o[::-1], rng.uniform(-1, 1, (1, 2)).astype(np.float32), np.array([0.5]), np.array([False]),
                [{"TimeLimit.truncated": False}])
    save_replay(buf, tmp_path / "replay.npz")
    with np.load(tmp_path / "replay.npz", allow_pickle=False) as z:
        assert z["observations"].shape[0] == 30
    fresh = ReplayBuffer(50, env.observation_space, env.action_space, device="cpu")
    load_replay(fresh, tmp_path / "replay.npz")
    assert fresh.pos == 30 and not fresh.full
    for key in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(fresh, key), getattr(buf, key))


def test_bad_extractor_inputs_are_one_line_errors(tmp_path):
    ckpt = _encoder_file(tmp_path, obs_shape=(3, 32, 32))
    with pytest.raises(ConfigError, match=r"expects observations \(3, 32, 32\) but the env gives \(3, 16, 16\)"):
        WorldsslExtractor(point_env().observation_space, checkpoint=str(ckpt))
    floats = gym.spaces.Box(0.0, 1.0, (3, 16, 16), np.float32)
    with pytest.raises(ConfigError, match="needs uint8 pixel observations") as e:
        WorldsslExtractor(floats)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="needs image observations"):
        WorldsslExtractor(gym.spaces.Box(-1.0, 1.0, (4,), np.float32))


# --------------------------------------------------------------------------------------------- CLI
def _cli(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldssl.cli", "train", *args], capture_output=True, text=True,
                          env=CLI_ENV, cwd=ROOT, timeout=kw.pop("timeout", 300), **kw)


def test_cli_sb3_ppo_on_the_maze_trains_evaluates_and_resumes(tmp_path):
    run = tmp_path / "run"
    common = ["agent=sb3_ppo", "env=maze", "env.kwargs.image_size=32", "env.max_episode_steps=16",
              "encoder.mode=frozen", "agent.n_steps=32", "batch_size=16", "eval_every_frames=64", "eval_episodes=2",
              "threads=1", "progress=false"]
    out = _cli([*common, "frames=64", f"hydra.run.dir={run}"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "success" in out.stdout
    s = json.loads((run / "summary.json").read_text())
    assert s["agent"] == "sb3_ppo" and s["encoder"] == "random" and s["frames"] == 64 and s["updates"] > 0
    assert [h["frame"] for h in s["eval_history"]] == [0, 64] and 0.0 <= s["final_eval_success"] <= 1.0
    assert (run / "curves.png").is_file() and list((run / "videos").glob("eval_*.mp4"))
    assert list((run / "tb").iterdir())
    header = (run / "metrics.csv").read_text().splitlines()[0]
    assert "eval/success" in header and "train/value_loss" in header and "train/episode_return" in header
    ckpt = run / "checkpoints"
    assert {"agent.json", "policy.safetensors", "features.safetensors", "train_state.pt"} <= {p.name for p in ckpt.iterdir()}
    torch.load(ckpt / "train_state.pt", weights_only=True)
    out = _cli([f"resume={run}", "frames=128", "progress=false"])
    assert out.returncode == 0, out.stderr[-2000:]
    s = json.loads((run / "summary.json").read_text())
    assert s["frames"] == 128 and [h["frame"] for h in s["eval_history"]] == [0, 64, 128]


def test_cli_sb3_sac_sigkill_then_resume_restores_the_replay(tmp_path):
    """Kill -9 after a checkpoint; the resumed run starts from it with SB3's replay buffer restored row for row."""
    run = tmp_path / "run"
    args = [*POINT, "agent=sb3_sac", "encoder.mode=scratch", "agent.hidden_dim=16", "encoder.feature_dim=8",
            "seed_frames=20", "save_every_frames=25", "eval_every_frames=100000", "eval_episodes=1", "video=false"]
    proc = subprocess.Popen([sys.executable, "-m", "worldssl.cli", "train", *args, "frames=100000",
                             f"hydra.run.dir={run}"], env=CLI_ENV, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    state_path = run / "checkpoints" / "train_state.pt"
    t0 = time.time()
    while time.time() - t0 < 200:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read()[-2000:])
        try:
            if torch.load(state_path, weights_only=True)["frame"] >= 50:
                break
        except Exception:  # not written yet, or being replaced
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(state_path, weights_only=True)
    with np.load(run / "checkpoints" / "replay.npz", allow_pickle=False) as z:
        saved = {k: z[k] for k in ("observations", "actions", "rewards")}
        pos = int(z["pos"])
    assert pos == state["num_timesteps"] >= 50
    target = state["frame"] + 30
    out = _cli([f"resume={run}", f"frames={target}", "progress=false"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "resumed at frame" in out.stdout + out.stderr
    s = json.loads((run / "summary.json").read_text())
    assert s["frames"] == target and s["updates"] > state["n_updates"]
    with np.load(run / "checkpoints" / "replay.npz", allow_pickle=False) as z:
        assert int(z["pos"]) == target
        for k, v in saved.items():
            np.testing.assert_array_equal(z[k][:pos], v)


def test_cli_bad_sb3_input_is_one_line(tmp_path):
    """sb3_sac on the discrete maze through the real CLI (exit 2, one line); the rest through the CLI's preflight."""
    from worldssl.cli import preflight
    from worldssl.verbs.train import validate

    out = _cli(["agent=sb3_sac", "env=maze", "frames=10", "progress=false", f"hydra.run.dir={tmp_path / 'run'}"],
               timeout=120)
    assert out.returncode == 2, (out.stdout, out.stderr[-2000:])
    lines = [ln for ln in out.stderr.strip().splitlines() if "OpenGL" not in ln]
    assert len(lines) == 1 and "agent=sb3_sac needs a continuous (Box) action space" in lines[0], out.stderr
    assert "agent=sb3_ppo" in lines[0] and "action_type=continuous" in lines[0]

    enc = _encoder_file(tmp_path, obs_shape=(3, 32, 32))
    cases = [(["agent=sb3_ppo", "encoder.mode=curl"], "agent=sb3_ppo runs encoder.mode=scratch | frozen | finetune"),
             (["agent=sb3_ppo", "encoder.mode=frozen", "agent.extractor=nature"], "agent.extractor=nature is SB3's"),
             (["agent=sb3_sac", "encoder.mode=finetune"], "needs encoder.checkpoint=PATH"),
             (["agent=sb3_ppo", "agent.n_steps=0"], "n_steps"),
             (["agent=sb3_sac", "agent.extractor=resnet"], "extractor")]
    for args, message in cases:
        problem = preflight("train", args, validate)
        assert problem is not None and message in problem and "\n" not in problem, (args, problem)
    with pytest.raises(ConfigError, match=r"expects observations \(3, 32, 32\) but the env gives \(3, 16, 16\)"):
        FrozenFeatures(point_env(), checkpoint=str(enc))

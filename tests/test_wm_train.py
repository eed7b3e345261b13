"""The world-model training loop: epochs cover every window once, resume is exact, checkpoints reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from worldssl.data import EpisodeDataset
from worldssl.runtime.errors import CheckpointError, ConfigError
from worldssl.worldmodels.train import (
    WorldModelSettings,
    WorldModelTrainer,
    build_from_spec,
    epoch_line,
    load_world_model,
    window_batch,
)

TINY_ENCODER = {"kind": "slots", "size": "small", "num_slots": 5, "embedding_dim": 2, "hidden_dim": 16}


def spec(objective: str = "contrastive", **kwargs) -> dict:
    return {"obs_shape": [3, 50, 50], "action_space": {"type": "discrete", "n": 20}, "encoder": TINY_ENCODER,
            "transition": "gnn", "latent": {"hidden_dim": 16}, "objective": objective, "objective_kwargs": kwargs,
            "reward": False}


def trainer(ds, run_dir, objective="contrastive", epochs=2, max_minutes=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    model, obj = build_from_spec(spec(objective, **kwargs))
    settings = WorldModelSettings(epochs=epochs, batch_size=16, steps_per_epoch=3, eval_steps=(1, 2),
                                  eval_batch_size=4, log_every=1, seed=seed, amp=False, progress=False,
                                  max_minutes=max_minutes)
    return WorldModelTrainer(model, obj, ds, settings, run_dir, torch.device("cpu"), eval_set=ds,
                             spec=spec(objective, **kwargs))


def weights(t: WorldModelTrainer) -> dict[str, torch.Tensor]:
    return {**{f"m.{k}": v.clone() for k, v in t.model.state_dict().items()},
            **{f"o.{k}": v.clone() for k, v in t.objective.state_dict().items()}}


def test_window_starts_cover_every_window_once(shapes_dataset):
    ds = EpisodeDataset(shapes_dataset)
    for length in (1, 3):
        ep, t = ds.window_starts(length)
        assert len(ep) == int(np.sum(ds.lengths - length + 1))
        assert len(set(zip(ep.tolist(), t.tolist()))) == len(ep)
        assert np.all(t + length <= ds.lengths[ep])


def test_windows_match_episode_arrays(shapes_dataset):
    ds = EpisodeDataset(shapes_dataset)
    s = ds.windows(np.array([1, 4]), np.array([0, 7]), 3)
    for row, (e, t) in enumerate([(1, 0), (4, 7)]):
        ep = ds.episode(e)
        assert np.array_equal(s.obs[row], ep.obs[t:t + 4])
        assert np.array_equal(s.actions[row], ep.actions[t:t + 3])
        assert np.array_equal(s.rewards[row], ep.rewards[t:t + 3])
        assert np.array_equal(s.states[row], ep.states[t:t + 4])


@pytest.mark.parametrize("load", ["memory", "mmap", "stream"])
def test_loading_modes_read_the_same_frames(shapes_dataset, load):
    ref = EpisodeDataset(shapes_dataset, load="memory")
    ds = EpisodeDataset(shapes_dataset, load=load)
    ep, t = np.array([5, 0, 5, 2]), np.array([3, 0, 11, 12])
    assert np.array_equal(ds.frames(ep, t), ref.frames(ep, t))
    sub = ds.subset([4, 1])
    assert sub.num_episodes == 2 and np.array_equal(sub.episode(0).obs, ref.episode(4).obs)
    assert np.array_equal(sub.windows(np.array([1]), np.array([2]), 2).states[0], ref.episode(1).states[2:5])


def test_window_batch_keeps_uint8(shapes_dataset):
    ds = EpisodeDataset(shapes_dataset)
    b = window_batch(ds, np.array([0, 1]), np.array([0, 5]), 2, torch.device("cpu"))
    assert b.obs.dtype == torch.uint8 and b.obs.shape == (2, 3, 3, 50, 50)
    assert b.actions.dtype == torch.int64 and b.actions.shape == (2, 2) and b.rewards.shape == (2, 2)


@pytest.mark.parametrize("objective", ["contrastive", "selfpredictive", "generative_vae"])
def test_resume_mid_epoch_is_exact(shapes_dataset, tmp_path, objective):
    """2 epochs in one go == 1 step (stopped by the time budget), a restart from its checkpoint, the rest."""
    ds = EpisodeDataset(shapes_dataset)
    straight = trainer(ds, tmp_path / "a", objective)
    straight.train()
    first = trainer(ds, tmp_path / "b", objective, max_minutes=1e-9)
    first.train()
    assert (first.epoch, first.position, first.step) == (0, 1, 1)
    resumed = trainer(ds, tmp_path / "b", objective, seed=0)
    torch.manual_seed(123)  # the RNG state must come from the checkpoint, not from here
    resumed.load(tmp_path / "b" / "checkpoints")
    resumed.train()
    assert resumed.step == straight.step == 6
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["epoch"] for h in resumed.history][-1] == 2


def test_epoch_visits_each_window_once(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    t = trainer(ds, tmp_path, epochs=1)
    t.settings.steps_per_epoch = None
    order = t.epoch_order(0)
    assert t.steps_per_epoch == -(-ds.num_transitions // 16)
    assert sorted(order.tolist()) == list(range(ds.num_transitions))
    assert not np.array_equal(order, t.epoch_order(1))


def test_train_reports_ranking_and_checkpoint_reloads(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    t = trainer(ds, tmp_path, epochs=1)
    out = t.train()
    assert {"eval/hits@1/1", "eval/mrr/2", "eval/pool/1", "wm/loss", "epoch", "step"} <= set(out)
    assert out["eval/pool/1"] == ds.num_episodes
    model = load_world_model(tmp_path)
    x = torch.from_numpy(ds.episode(0).obs[:4])
    t.model.eval()
    assert torch.equal(model.encode(x), t.model.encode(x))
    spec_json = json.loads((tmp_path / "checkpoints" / "model.json").read_text())
    assert spec_json["objective"] == "contrastive" and "worldssl_version" in spec_json


def test_checkpoint_of_another_architecture_is_refused(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    trainer(ds, tmp_path / "a", epochs=1).train()
    other = trainer(ds, tmp_path / "b", objective="generative_ae", epochs=1)
    with pytest.raises(CheckpointError, match="another world model"):
        other.load(tmp_path / "a" / "checkpoints")
    (tmp_path / "a" / "checkpoints" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_world_model(tmp_path / "a")


def test_bad_settings_are_config_errors(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    model, obj = build_from_spec(spec(horizon=3))
    with pytest.raises(ConfigError, match="window"):
        WorldModelTrainer(model, obj, ds, WorldModelSettings(window=1), tmp_path, torch.device("cpu"))
    with pytest.raises(ConfigError, match="batch_size"):
        WorldModelTrainer(model, obj, ds, WorldModelSettings(batch_size=0, window=3), tmp_path, torch.device("cpu"))


def test_final_evaluation_ranks_the_lowest_loss_epoch(shapes_dataset, tmp_path):
    """final_model=best_loss (C-SWM's choice) keeps the weights of the epoch with the lowest mean loss."""
    ds = EpisodeDataset(shapes_dataset)
    t = trainer(ds, tmp_path, epochs=3)
    out = t.train()
    losses = [h for h in t.history]
    assert out["final_model"] == "best_loss" and 1 <= out["selected_epoch"] <= 3 and losses
    assert out["best_loss"] == pytest.approx(t.best_loss)
    best = tmp_path / "checkpoints" / "best" / "model.safetensors"
    assert best.is_file()
    selected = t.selected_model()
    if out["selected_epoch"] != 3:
        assert selected is not t.model
        x = torch.from_numpy(ds.episode(0).obs[:2])
        selected.eval()
        t.model.eval()
        assert not torch.equal(selected.encode(x), t.model.encode(x))
    t.settings.final_model = "last"
    assert t.selected_model() is t.model


def test_a_run_stopped_mid_epoch_ranks_the_best_epoch_not_the_live_weights(shapes_dataset, tmp_path):
    ds = EpisodeDataset(shapes_dataset)
    t = trainer(ds, tmp_path, epochs=1)
    t.train()
    assert t.best_epoch == t.epoch == 1 and t.selected_model() is t.model  # nothing moved since epoch 1 ended
    t.update(t.batch(t.epoch_order(t.epoch)[:t.settings.batch_size]))  # one step into epoch 2, as max_minutes can stop
    t.position = 1
    selected = t.selected_model()
    assert selected is not t.model
    x = torch.from_numpy(ds.episode(0).obs[:2])
    selected.eval()
    t.model.eval()
    assert not torch.equal(selected.encode(x), t.model.encode(x))


def test_each_epoch_prints_its_loss_and_ranking(shapes_dataset, tmp_path, capsys):
    ds = EpisodeDataset(shapes_dataset)
    t = trainer(ds, tmp_path, epochs=2)
    t.train()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert lines[0].startswith("epoch 1: mean loss ") and lines[0].endswith("% at 1 / 2 steps")
    assert "Hits@1" not in lines[1]  # the last epoch is ranked once, by the final evaluation
    assert sum("(lowest so far)" in line for line in lines) >= 1
    assert epoch_line(3, 0.25, False, {"eval/hits@1/1": 50.0, "eval/mrr/1": 60.0}) == (
        "epoch 3: mean loss 0.25; Hits@1 50.0% at 1 step")

"""Episode files and the reader: exact round trips, frame stacks, sampling, resume, parallel, corruption."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import envs
from worldssl.data import (
    CollectSpec,
    EpisodeDataset,
    collect,
    episode_seed,
    list_episode_files,
    write_episode,
)
from worldssl.data.episodes import read_manifest, write_manifest
from worldssl.runtime.errors import ConfigError, DataError


def _episode(rng, steps=7, shape=(3, 8, 8), discrete=True):
    return {
        "obs": rng.integers(0, 256, (steps + 1, *shape), dtype=np.uint8),
        "action": rng.integers(0, 20, steps) if discrete else rng.normal(size=(steps, 2)).astype(np.float32),
        "reward": rng.normal(size=steps).astype(np.float32),
        "terminated": np.zeros(steps, bool),
        "truncated": np.eye(1, steps, steps - 1, dtype=bool)[0],
        "state": rng.normal(size=(steps + 1, 4)).astype(np.float32),
    }


def _handmade(tmp_path, n=3, frame_stack=2, **kw):
    rng = np.random.default_rng(0)
    write_manifest(tmp_path, {"env_id": "handmade", "frame_shape": [3, 8, 8], "frame_stack": frame_stack})
    eps = [_episode(rng, steps=5 + i, **kw) for i in range(n)]
    for i, ep in enumerate(eps):
        write_episode(tmp_path, i, ep)
    return eps


@pytest.mark.parametrize("load", ["memory", "mmap"])
def test_round_trip_is_exact(tmp_path, load):
    eps = _handmade(tmp_path, frame_stack=1)
    ds = EpisodeDataset(tmp_path, load=load)
    assert ds.in_memory == (load == "memory")
    assert ds.num_episodes == 3 and ds.num_transitions == 5 + 6 + 7
    for i, ep in enumerate(eps):
        got = ds.episode(i)
        np.testing.assert_array_equal(got.obs, ep["obs"])
        np.testing.assert_array_equal(got.actions, ep["action"])
        np.testing.assert_array_equal(got.rewards, ep["reward"])
        np.testing.assert_array_equal(got.truncated, ep["truncated"])
        np.testing.assert_array_equal(got.states, ep["state"])


def test_memory_is_one_byte_per_pixel(tmp_path):
    _handmade(tmp_path, frame_stack=4)
    ds = EpisodeDataset(tmp_path, load="memory")
    pixels = ds.num_frames * 3 * 8 * 8
    assert ds._frames.nbytes == pixels  # each frame once, uint8, whatever the frame stack


def test_frame_stack_matches_naive_stacking(tmp_path):
    eps = _handmade(tmp_path, frame_stack=3)
    ds = EpisodeDataset(tmp_path)
    frames = eps[1]["obs"]
    got = ds.episode(1).obs
    for t in range(len(frames)):
        want = np.concatenate([frames[max(t - 2, 0)], frames[max(t - 1, 0)], frames[t]])
        np.testing.assert_array_equal(got[t], want)


def test_transitions_and_sequences_index_the_right_steps(tmp_path):
    eps = _handmade(tmp_path, frame_stack=1)
    ds = EpisodeDataset(tmp_path)
    rng = np.random.default_rng(1)
    b = ds.sample_transitions(64, k=3, rng=rng)
    assert b.actions.shape == (64, 3) and b.next_obs.shape == (64, 3, 8, 8)
    for i in range(64):
        ep, t = eps[b.episode[i]], b.t[i]
        assert t + 3 <= len(ep["action"])
        np.testing.assert_array_equal(b.obs[i], ep["obs"][t])
        np.testing.assert_array_equal(b.next_obs[i], ep["obs"][t + 3])
        np.testing.assert_array_equal(b.actions[i], ep["action"][t:t + 3])
        np.testing.assert_array_equal(b.next_states[i], ep["state"][t + 3])
    s = ds.sample_sequences(16, length=4, rng=rng)
    assert s.obs.shape == (16, 5, 3, 8, 8) and s.actions.shape == (16, 4)
    for i in range(16):
        ep, t = eps[s.episode[i]], s.t[i]
        np.testing.assert_array_equal(s.obs[i], ep["obs"][t:t + 5])
        np.testing.assert_array_equal(s.rewards[i], ep["reward"][t:t + 4])
    starts = {(e, t) for e, t in zip(*ds.sample_transitions(2000, k=5, rng=rng)[-2:])}
    assert starts == {(e, t) for e in range(3) for t in range(len(eps[e]["action"]) - 4)}  # uniform cover
    with pytest.raises(DataError, match="no episode"):
        ds.sample_transitions(4, k=50, rng=rng)


def test_dataset_matches_online_frame_stack(tmp_path):
    spec = CollectSpec("worldssl/DMC-cartpole-swingup-v0", {"image_size": 24}, str(tmp_path), 1,
                       max_episode_steps=6)
    collect(spec, progress=False)
    ds = EpisodeDataset(tmp_path)
    assert ds.frame_stack == 3 and ds.obs_shape == (9, 24, 24)
    env = envs.make("worldssl/DMC-cartpole-swingup-v0", image_size=24, max_episode_steps=6)
    seed = episode_seed(0, 0)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    online = [obs] + [env.step(env.action_space.sample())[0] for _ in range(6)]
    np.testing.assert_array_equal(ds.episode(0).obs, np.stack(online))


def test_collect_resumes_and_appends_without_clobbering(shapes_dataset, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(shapes_dataset, out)
    before = {i: p.read_bytes() for i, p in list_episode_files(out).items()}
    list_episode_files(out)[2].unlink()  # as if killed before episode 2 was written
    result = collect(CollectSpec("worldssl/Shapes-v0", {}, str(out), episodes=8, seed=3, max_episode_steps=12),
                     progress=False)
    assert result.new_episodes == 3 and result.episodes == 8
    after = list_episode_files(out)
    for i, data in before.items():
        assert after[i].read_bytes() == data  # same seed per episode index: identical bytes
    assert read_manifest(out)["episodes"] == 8


def test_parallel_workers_write_the_same_data(shapes_dataset, tmp_path):
    collect(CollectSpec("worldssl/Shapes-v0", {}, str(tmp_path), episodes=6, seed=3, max_episode_steps=12),
            workers=2, progress=False)
    for i, _p in list_episode_files(shapes_dataset).items():
        a, b = EpisodeDataset(shapes_dataset), EpisodeDataset(tmp_path)
        np.testing.assert_array_equal(a.episode(i).obs, b.episode(i).obs)
        np.testing.assert_array_equal(a.episode(i).actions, b.episode(i).actions)


def test_collect_refuses_another_env_or_a_foreign_directory(shapes_dataset, tmp_path):
    with pytest.raises(DataError, match="env_id='worldssl/Shapes-v0'"):
        collect(CollectSpec("worldssl/Cubes-v1", {}, str(shapes_dataset), episodes=7, seed=3, max_episode_steps=12),
                progress=False)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a worldssl dataset"):
        collect(CollectSpec("worldssl/Shapes-v0", {}, str(tmp_path), episodes=1), progress=False)
    with pytest.raises(ConfigError, match="episodes must be"):
        collect(CollectSpec("worldssl/Shapes-v0", {}, str(tmp_path / "x"), episodes=0), progress=False)


def test_reader_errors_name_the_problem(shapes_dataset, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        EpisodeDataset(tmp_path / "missing")
    with pytest.raises(DataError, match="not a worldssl dataset"):
        EpisodeDataset(tmp_path)
    with pytest.raises(DataError, match="collected from worldssl/Shapes-v0, not worldssl/Cubes-v1"):
        EpisodeDataset(shapes_dataset, expect_env="worldssl/Cubes-v1")


def test_corrupt_episode_is_named_and_skipped_only_on_request(shapes_dataset, tmp_path):
    out = tmp_path / "d"
    shutil.copytree(shapes_dataset, out)
    victim = list_episode_files(out)[4]
    victim.write_bytes(victim.read_bytes()[:3000])  # truncated
    with pytest.raises(DataError, match=f"corrupt episode file .*{victim.name}.*skip_corrupt"):
        EpisodeDataset(out)
    with pytest.warns(UserWarning, match=victim.name):
        ds = EpisodeDataset(out, skip_corrupt=True)
    assert ds.num_episodes == 5 and ds.skipped == [victim]
    (out / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt manifest"):
        EpisodeDataset(out)


def test_no_pickle_in_episode_files(shapes_dataset):
    for path in list_episode_files(shapes_dataset).values():
        with np.load(path, allow_pickle=False) as z:
            assert {"obs", "action", "reward", "terminated", "truncated", "state", "seed"} <= set(z.files)
            assert all(z[k].dtype != object for k in z.files)


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    from worldssl.runtime.io import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "x.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600

"""``worldssl bench agents`` at tiny sizes: rows, baselines and ratios are computed and printed (timings' values
are not checked); the replay-bytes figure meets its 1/4 target (deterministic)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from worldssl.bench import agents as bench_agents
from worldssl.runtime.errors import ConfigError
from worldssl.verbs import bench as bench_verb

pytest.importorskip("stable_baselines3")

TINY = {"what": "agents", "steps": 1, "repeats": 1, "out": None, "device": "cpu", "agent_batch": 4,
        "agent_image_size": 16, "agent_hidden_dim": 16, "agent_feature_dim": 8, "agent_action_dim": 2,
        "agent_replay_size": 10, "agent_updates": 1, "agent_warmup": 1, "agent_bytes_capacity": 50,
        "agent_sb3_share_features_extractor": [True, False], "agent_e2e": False, "agent_threads": 1,
        "agent_bf16": False}


def test_tiny_run_prints_every_row_with_its_baseline_and_ratio(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = OmegaConf.create({**TINY, "out": str(tmp_path / "bench.md")})
    bench_verb.run(cfg)
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bench"] == "agents"
    rows = summary["rows"]
    assert [(r["figure"], r["baseline_name"], r["target"]) for r in rows] == [
        ("updates/s", bench_agents.SB3_NAMES[True], ">= 2x"),
        ("updates/s", bench_agents.SB3_NAMES[False], ">= 2x"),
        ("bytes / transition (lower is better)", "SB3 ReplayBuffer (optimize_memory_usage=False)", "<= 0.25x"),
        ("bytes / transition (lower is better)", "SB3 ReplayBuffer (optimize_memory_usage=True)", ""),
    ]
    assert rows[0]["name"] == "sac update scratch 9x16x16 b4 h16"
    for r in rows:
        assert r["ours"] > 0 and r["baseline"] > 0
        assert r["ratio"] == pytest.approx(r["ours"] / r["baseline"])
        assert f"{r['ratio']:.2f}x" in out  # the table prints each ratio
    assert rows[0]["ours"] == rows[1]["ours"]  # one measurement of ours, against each SB3 configuration
    assert "bench agents:" in out and out.count("vs SB3") == 4
    assert "trained by the actor loss only" in out  # what SB3 does with a shared extractor is stated
    table = (tmp_path / "bench.md").read_text()
    assert table.startswith("| benchmark |") and table.count("\n") == len(rows) + 2


def test_bf16_rows_time_a_second_agent_under_autocast(monkeypatch, capsys):
    """agent_bf16=true adds ours under bf16 autocast beside each SB3 side; SB3's own rows are unchanged."""
    import agents.sac

    built = []
    original = agents.sac.SACAgent.__init__

    def spy(self, features, action_dim, mode, cfg, device):
        built.append(cfg.amp)
        original(self, features, action_dim, mode, cfg, device)

    monkeypatch.setattr(agents.sac.SACAgent, "__init__", spy)
    cfg = OmegaConf.create({**TINY, "agent_bf16": True, "agent_sb3_share_features_extractor": [True]})
    s = bench_agents.Settings.from_cfg(cfg)
    import torch

    rows = bench_agents.update_rows(s, torch.device("cpu"))
    assert built == ["auto", True]  # the default agent, then one with amp forced on
    assert [r.name for r in rows] == ["sac update scratch 9x16x16 b4 h16",
                                      "sac update scratch 9x16x16 b4 h16 (ours agent.amp=true: bf16 autocast)"]
    assert rows[0].baseline == rows[1].baseline and rows[1].baseline_name.endswith("(float32)")
    assert "with agent.amp=true (bf16 autocast)" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="agent_bf16"):
        bench_agents.Settings.from_cfg(OmegaConf.create({**TINY, "agent_bf16": "sometimes"}))


def test_end_to_end_row_frozen_against_scratch(capsys):
    import torch

    pytest.importorskip("dm_control")
    cfg = OmegaConf.create({**TINY, "agent_e2e": True, "agent_e2e_image_size": 16, "agent_e2e_batch": 4,
                            "agent_e2e_seed_frames": 16, "agent_e2e_frames": 32})
    s = bench_agents.Settings.from_cfg(cfg)
    rows = bench_agents.e2e_rows(s, torch.device("cpu"))
    (row,) = rows
    assert row.name == "train dmc cartpole-swingup 16x16 b4 h16" and row.baseline_name == "scratch mode (same run)"
    assert row.ours > 0 and row.baseline > 0 and row.ratio == pytest.approx(row.ours / row.baseline)
    out = capsys.readouterr().out
    assert "cartpole-swingup frozen:" in out and "cartpole-swingup scratch:" in out
    assert "eval return" not in out  # the loop's own lines stay out of the bench output


def test_replay_bytes_meet_a_quarter_of_sb3():
    """At the default 3x84x84 frames, 3 stacked, 6-d actions: SB3 stores obs and next_obs stacks per transition."""
    s = bench_agents.Settings()
    main, optimized = bench_agents.bytes_rows(s)
    assert main.baseline == 2 * 9 * 84 * 84 + 6 * 4 + 3 * 4  # obs, next_obs, actions, rewards, dones, timeouts
    assert optimized.baseline == 9 * 84 * 84 + 6 * 4 + 3 * 4
    assert main.ours < 1.01 * 3 * 84 * 84 + 64  # each frame once, plus a few bytes of per-step fields
    assert main.ratio <= 0.25 and main.target == "<= 0.25x"
    assert optimized.ratio == pytest.approx(main.ours / optimized.baseline)


def test_sb3_baseline_has_our_conv_architecture_and_shares_as_stated():
    import torch

    from agents.encoders import build_features

    s = bench_agents.Settings.from_cfg(OmegaConf.create(TINY))
    model = bench_agents.build_sb3(s, True, torch.device("cpu"))
    extractor = model.policy.actor.features_extractor
    ours = build_features("scratch", s.obs_shape).encoder
    shapes = lambda m: [tuple(p.shape) for p in m.parameters()]  # noqa: E731
    assert shapes(extractor.convs) == shapes(ours.convs)
    assert [c.stride for c in extractor.convs if isinstance(c, torch.nn.Conv2d)] == [(2, 2), (1, 1), (1, 1), (1, 1)]
    assert extractor.features_dim == s.feature_dim
    # shared: the critic uses the actor's extractor, and its optimiser leaves it out
    assert model.policy.critic.features_extractor is extractor
    critic_params = {id(p) for g in model.critic.optimizer.param_groups for p in g["params"]}
    assert not critic_params & {id(p) for p in extractor.parameters()}
    separate = bench_agents.build_sb3(s, False, torch.device("cpu"))
    assert separate.policy.critic.features_extractor is not separate.policy.actor.features_extractor


def test_both_replays_hold_the_same_transitions():
    """The SB3 replay's stacked obs / next_obs are the stacks our replay rebuilds from single frames."""
    from worldssl.data.replay import ReplayBuffer

    s = bench_agents.Settings.from_cfg(OmegaConf.create(TINY))
    episodes = list(bench_agents.random_episodes(s, np.random.default_rng(0)))
    assert sum(len(a) for _, a, _ in episodes) == s.replay_size
    ours = ReplayBuffer(s.replay_size + len(episodes), (3, 16, 16), s.frame_stack, (s.action_dim,))
    bench_agents.fill_ours(ours, episodes)
    model = bench_agents.build_sb3(s, True, "cpu")
    bench_agents.fill_sb3(model.replay_buffer, episodes, s.frame_stack)
    batch = ours.gather(ours.indices()[:3])
    np.testing.assert_array_equal(batch.obs, model.replay_buffer.observations[:3, 0])
    np.testing.assert_array_equal(batch.next_obs, model.replay_buffer.next_observations[:3, 0])
    np.testing.assert_array_equal(batch.action, model.replay_buffer.actions[:3, 0])


@pytest.mark.parametrize("override, message", [
    ({"agent_batch": 0}, "agent_batch"),
    ({"agent_warmup": -1}, "agent_warmup"),
    ({"agent_e2e_task": "cartpole"}, "agent_e2e_task"),
])
def test_bad_settings_are_config_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        bench_agents.run(OmegaConf.create({**TINY, **override}))


def test_registered_as_a_bench():
    assert bench_verb.BENCHES["agents"] == "worldssl.bench.agents"
    cfg = OmegaConf.load(bench_verb.Path(__file__).resolve().parents[1] / "configs" / "bench.yaml")
    assert cfg.agent_batch == bench_agents.Settings().batch and cfg.agent_sb3_share_features_extractor == [True]

"""World-model evaluation: pixel prediction error, figures, latent probes, and the multi-seed comparison report."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldssl.data.episodes import EpisodeDataset
from worldssl.eval.prediction import (
    best_matching,
    object_state_groups,
    pixel_prediction_error,
    prediction_grid,
    probe_latents,
    slot_alignment,
    slot_maps,
)
from worldssl.eval.report import (
    aggregate,
    append_section,
    comparison_plot,
    comparison_table,
    markdown_table,
    probe_tables,
    write_report,
)
from worldssl.runtime.errors import DataError
from worldssl.worldmodels.build import build_world_model

ACTIONS = {"type": "discrete", "n": 20}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def slot_model(decoder: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return build_world_model((3, 50, 50), ACTIONS, {"kind": "slots", "hidden_dim": 32}, "gnn",
                             latent={"hidden_dim": 32}, objective_needs_decoder=decoder)


def flat_model():
    torch.manual_seed(1)
    return build_world_model((3, 50, 50), ACTIONS, {"kind": "cswm_flat", "hidden_dim": 32, "num_maps": 4,
                                                    "latent_dim": 8}, "mlp", latent={"hidden_dim": 32},
                             objective_needs_decoder=True)


@pytest.fixture(scope="module")
def ds(shapes_dataset) -> EpisodeDataset:
    return EpisodeDataset(shapes_dataset)


@pytest.fixture(scope="module")
def model():
    return slot_model()


def png_shape(path) -> tuple[int, int]:
    import matplotlib.image as mpimg

    assert path.read_bytes()[:8] == PNG_MAGIC
    img = mpimg.imread(path)
    return img.shape[0], img.shape[1]


# ---------------------------------------------------------------------------------------------- pixel error
@torch.no_grad()
def naive_pixel_mse(model, ds, k: int) -> float:
    model.eval()
    errors = []
    for i in range(ds.num_episodes):
        ep = ds.episode(i)
        if len(ep.actions) < k:
            continue
        z = model.encode(torch.from_numpy(ep.obs[:1]))
        for t in range(k):
            z = model.next(z, torch.from_numpy(ep.actions[t:t + 1]))
        pred = model.decode(z)[0].double()
        true = torch.from_numpy(ep.obs[k]).double() / 255.0
        errors.append(float(((pred - true) ** 2).mean()))
    return float(np.mean(errors))


def test_pixel_error_matches_naive_loop_and_restores_mode(model, ds):
    model.train()
    got = pixel_prediction_error(model, ds, steps=(1, 5, 10, 40), batch_size=4)
    assert model.training
    assert set(got) == {"pixel_mse/1", "pixel_mse/5", "pixel_mse/10"}  # 40 > every episode: left out
    for k in (1, 5, 10):
        assert got[f"pixel_mse/{k}"] == pytest.approx(naive_pixel_mse(model, ds, k), rel=1e-5)
    assert pixel_prediction_error(model, ds, steps=(5,), batch_size=256) == pytest.approx({"pixel_mse/5": got["pixel_mse/5"]})
    sub = ds.subset([0, 1])
    assert pixel_prediction_error(model, ds, steps=(1,), max_episodes=2) == pytest.approx(
        {"pixel_mse/1": naive_pixel_mse(model, sub, 1)}, rel=1e-5)


def test_pixel_error_refuses_non_generative_models(ds):
    with pytest.raises(ValueError, match="decoder"):
        pixel_prediction_error(slot_model(decoder=False), ds)
    with pytest.raises(ValueError, match="decoder"):
        prediction_grid(slot_model(decoder=False), ds, "unused.png")


# ---------------------------------------------------------------------------------------------- figures
def test_prediction_grid_png(model, ds, tmp_path):
    path = prediction_grid(model, ds, tmp_path / "figs" / "pred.png", steps=(1, 5, 10), episodes=6)
    h, w = png_shape(path)
    assert w / h == pytest.approx((1 + 2 * 3) / 6, rel=0.02)  # obs[0] + (true, pred) per step; 6 episodes
    path = prediction_grid(flat_model(), ds, tmp_path / "flat.png", steps=(1, 40), episodes=2)
    h, w = png_shape(path)
    assert w / h == pytest.approx(3 / 2, rel=0.02)  # 40 steps is longer than every episode: no columns
    assert not list(tmp_path.rglob(".*.tmp"))


def test_slot_maps_png_and_refusals(model, ds, tmp_path):
    path = slot_maps(model, ds, tmp_path / "maps.png", frames=4)
    h, w = png_shape(path)
    assert w / h == pytest.approx((1 + model.encoder.num_slots) / 4, rel=0.02)
    with pytest.raises(ValueError, match="slot encoder"):
        slot_maps(flat_model(), ds, tmp_path / "no.png")
    projected = build_world_model((3, 50, 50), ACTIONS, {"kind": "cswm_flat", "hidden_dim": 32, "num_maps": 4,
                                                         "latent_dim": 8}, "recurrent",
                                  latent={"hidden_dim": 16, "deterministic_dim": 8})
    with pytest.raises(ValueError, match="slot encoder"):
        slot_maps(projected, ds, tmp_path / "no.png")
    assert not (tmp_path / "no.png").exists()


# ---------------------------------------------------------------------------------------------- probes
def test_probe_latents(model, ds):
    results = probe_latents(model, ds, max_frames=60, baseline=slot_model(seed=5))
    assert [r.name for r in results] == ["encoder", "random init", "pixels 16x16"]
    for r in results:
        assert math.isfinite(r.r2_ridge) and math.isfinite(r.r2_knn)
    assert results[0].feature_dim == model.encoder.num_slots * model.encoder.embedding_dim
    assert results[2].feature_dim == 3 * 16 * 16
    assert [r.name for r in probe_latents(model, ds, max_frames=60)] == ["encoder", "pixels 16x16"]


def test_probe_latents_needs_states(model, ds, monkeypatch):
    monkeypatch.setattr(ds, "has_state", False)
    with pytest.raises(DataError, match="no true states"):
        probe_latents(model, ds)


# ---------------------------------------------------------------------------------------------- report
def runs() -> list[dict]:
    out = []
    for objective, hits in (("contrastive", (90.0, 94.0, 98.0)), ("generative_ae", (50.0,))):
        for seed, h in enumerate(hits):
            out.append({"objective": objective, "seed": seed, "seconds": 3.0,
                        "metrics": {"eval/hits@1/1": h, "eval/mrr/1": h + 1.0, "eval/pool/1": 100,
                                    "eval/hits@1/5": h / 2, "eval/mrr/5": h / 2 + 1.0, "eval/pool/5": 100}})
    return out


def test_aggregate_by_hand():
    rows = aggregate(runs())
    assert [r["objective"] for r in rows] == ["contrastive", "generative_ae"]
    assert [r["n"] for r in rows] == [3, 1]
    hits = rows[0]["metrics"]["eval/hits@1/1"]
    assert hits["values"] == [90.0, 94.0, 98.0]
    assert hits["mean"] == pytest.approx(94.0)
    assert hits["std"] == pytest.approx(4.0)  # sqrt((16 + 0 + 16) / 2)
    assert hits["ci95"] == pytest.approx(4.303 * 4.0 / math.sqrt(3), rel=1e-4)  # t(0.975, 2) to 3 decimals
    assert rows[0]["metrics"]["eval/pool/5"]["mean"] == 100
    single = rows[1]["metrics"]["eval/mrr/1"]
    assert (single["mean"], single["std"], single["ci95"]) == (51.0, 0.0, 0.0)
    many = aggregate([{"objective": "x", "seed": s, "metrics": {"m": float(s % 2)}} for s in range(40)])
    m = many[0]["metrics"]["m"]
    assert m["ci95"] == pytest.approx(2.023 * m["std"] / math.sqrt(40), rel=1e-3)  # t(0.975, 39), not 1.96


def test_tables_and_report(tmp_path):
    rows = aggregate(runs())
    ci = 4.303 * 4.0 / math.sqrt(3)
    for table in (comparison_table(rows, (1, 5)), markdown_table(rows, (1, 5))):
        assert "contrastive" in table and "generative_ae" in table
        assert f"94.0 ± {ci:.1f}" in table and f"95.0 ± {ci:.1f}" in table
        assert "50.0 ± 0.0" in table and "100" in table
        assert "-" in comparison_table(rows, (1, 10))  # a step no run has
    md = markdown_table(rows, (1, 5))
    assert md.splitlines()[0].startswith("| objective |") and "Hits@1 (5 steps)" in md
    assert len(md.splitlines()) == 4
    plot = comparison_plot(rows, tmp_path / "comparison.png", (1, 5, 10))
    h, w = png_shape(plot)
    assert w > h
    report = write_report(tmp_path / "report.md", "Objectives on Shapes", rows, (1, 5),
                          {"Hits@1 and MRR vs prediction steps": plot.name, "maps": "runs/a b/maps.png"},
                          ["trained 1 epoch"])
    text = report.read_text()
    assert text.startswith("# Objectives on Shapes")
    assert md in text and "mean ± 95% CI over 1-3 seeds" in text
    assert "![Hits@1 and MRR vs prediction steps](comparison.png)" in text
    assert "![maps](<runs/a b/maps.png>)" in text
    assert "- trained 1 epoch" in text


def test_probe_tables_by_hand_and_report_section(tmp_path):
    """The probe table gives mean ± CI over seeds per objective, leaves out columns no run has, and is None
    when no run was probed."""
    runs_ = [{"objective": "a", "seed": s, "metrics": {"probe/encoder/ridge_r2": v, "probe/random_init/ridge_r2": 0.1}}
             for s, v in enumerate([0.5, 0.7, 0.9])]
    runs_.append({"objective": "b", "seed": 0, "metrics": {"probe/encoder/ridge_r2": 0.2, "probe/encoder/knn_r2": -0.3}})
    text, md = probe_tables(aggregate(runs_))
    ci = 4.303 * 0.2 / math.sqrt(3)
    assert f"0.700 ± {ci:.3f}" in text and "0.100 ± 0.000" in text and "-0.300 ± 0.000" in text
    assert "slot R2" not in text and "twin kNN R2" not in text  # no run has them
    header, _, row_a, row_b = md.splitlines()
    assert header == "| objective | seeds | ridge R2 | twin ridge R2 | kNN R2 |"
    assert row_a.startswith("| a | 3 |") and row_b.endswith("| 0.200 ± 0.000 | - | -0.300 ± 0.000 |")
    assert probe_tables(aggregate(runs())) is None
    report = tmp_path / "report.md"
    report.write_text("# R\n\ntable\n")
    append_section(report, "State probes", md)
    assert report.read_text() == f"# R\n\ntable\n\n## State probes\n\n{md}\n"


# ---------------------------------------------------------------------------------------------- slot alignment
class OracleSlots(torch.nn.Module):
    """Shapes frames -> each object's colour centroid in cells; slot k holds object ``order[k]``, blended
    with the mean of all objects by ``mix`` (0: one object per slot)."""

    kind = "slots"
    obs_shape = (3, 50, 50)
    out_shape = (5, 2)

    def __init__(self, order, mix: float = 0.0):
        super().__init__()
        self.order, self.mix = list(order), mix

    def forward(self, obs):
        from envs.gridworld import SET1_RGB

        x, idx = obs.long(), torch.arange(50, dtype=torch.float32)
        pos = []
        for i in range(5):
            m = (x == torch.from_numpy(SET1_RGB[i].astype(np.int64)).view(1, 3, 1, 1)).all(1).float()
            n = m.sum((1, 2)).clamp_min(1)
            pos.append(torch.stack([(m.sum(2) * idx).sum(1) / n, (m.sum(1) * idx).sum(1) / n], 1) / 10)
        pos = torch.stack(pos, 1)[:, self.order]
        return (1 - self.mix) * pos + self.mix * pos.mean(1, keepdim=True)


class EncoderOnly(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def encode(self, obs):
        return self.encoder(obs)


@pytest.fixture(scope="module")
def shapes20(tmp_path_factory) -> EpisodeDataset:
    from worldssl.data import CollectSpec, collect

    out = tmp_path_factory.mktemp("data") / "shapes20"
    collect(CollectSpec("worldssl/Shapes-v0", {}, str(out), episodes=20, seed=4, max_episode_steps=20), progress=False)
    return EpisodeDataset(out)


def test_object_state_groups_and_matching_against_brute_force():
    assert object_state_groups(["obj0_row", "obj0_col", "obj1_row", "obj1_col", "speed"]) == [[0, 1], [2, 3]]
    assert object_state_groups(["cart_x", "pole_angle"]) == []
    rng = np.random.default_rng(0)
    for rows, cols in [(3, 3), (4, 6), (5, 5)]:
        m = rng.random((rows, cols))
        assign, mean = best_matching(m)
        assert len(set(assign)) == rows
        import itertools

        brute = max(sum(m[i, p[i]] for i in range(rows)) for p in itertools.permutations(range(cols), rows))
        assert math.isclose(mean * rows, brute, rel_tol=1e-12)
    large, _ = best_matching(np.eye(10))  # past 8 rows too (tests/test_eval_scipy.py: a case greedy gets wrong)
    assert large == list(range(10))
    with pytest.raises(ValueError):
        best_matching(rng.random((4, 3)))


def test_slot_alignment_finds_each_objects_slot(shapes20):
    order = [2, 0, 4, 1, 3]  # slot k holds object order[k]
    clean = slot_alignment(EncoderOnly(OracleSlots(order)), shapes20)
    assert clean["matched_r2"] > 0.99
    assert clean["assignment"] == [order.index(i) for i in range(5)]
    r2 = np.array(clean["r2"])
    assert r2.shape == (5, 5) and (r2[np.arange(5), clean["assignment"]] > 0.99).all()
    mixed = slot_alignment(EncoderOnly(OracleSlots(order, mix=0.8)), shapes20)
    assert mixed["matched_r2"] < clean["matched_r2"] - 0.1


def test_slot_alignment_refuses_what_it_cannot_judge(shapes20, tmp_path):
    with pytest.raises(DataError, match="slot latents"):
        slot_alignment(flat_model(), shapes20)
    from worldssl.data import CollectSpec, collect

    out = tmp_path / "maze"
    collect(CollectSpec("worldssl/Maze-v0", {}, str(out), episodes=3, seed=0, max_episode_steps=3), progress=False)
    with pytest.raises(DataError, match="per-object state"):
        slot_alignment(slot_model(decoder=False), EpisodeDataset(out))

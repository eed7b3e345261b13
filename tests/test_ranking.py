"""C-SWM ranking metrics against a brute-force reference, and the episode-level evaluation protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldssl.data.episodes import Episode
from worldssl.eval import ranking
from worldssl.eval.ranking import evaluate_ranking, ranking_metrics, ranks
from worldssl.worldmodels import build_world_model


def brute_force(pred: torch.Tensor, target: torch.Tensor, ks=(1,), query: str = "target") -> dict:
    """Python loops: for each query row, count candidates strictly closer than its own match."""
    n = len(pred)
    p = pred.reshape(n, -1).double().tolist()
    t = target.reshape(n, -1).double().tolist()
    queries, pool = (t, p) if query == "target" else (p, t)

    def dist(x, y):
        return sum((a - b) ** 2 for a, b in zip(x, y))

    rs = []
    for i in range(n):
        right = dist(queries[i], pool[i])
        rs.append(1 + sum(1 for j in range(n) if dist(queries[i], pool[j]) < right))
    out = {f"hits@{k}": 100.0 * sum(r <= k for r in rs) / n for k in ks}
    out["mrr"] = 100.0 * sum(1.0 / r for r in rs) / n
    out["pool"] = n
    return out


def with_ties(n: int, shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Small-integer latents (so exact ties are common) with duplicated rows in both sets."""
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(-2, 3, (n, *shape), generator=g).float()
    target = pred + torch.randint(-1, 2, (n, *shape), generator=g).float()
    pred[1] = pred[0]  # duplicate predictions
    target[3] = target[2]  # duplicate targets
    pred[5], target[5] = pred[4], target[4]  # a duplicated pair
    return pred, target


@pytest.mark.parametrize("query", ["target", "prediction"])
@pytest.mark.parametrize("seed, shape", [(0, (5, 2)), (1, (3,)), (2, (2, 2, 2))])
def test_matches_brute_force_with_ties(seed, shape, query):
    pred, target = with_ties(40, shape, seed)
    got = ranking_metrics(pred, target, ks=(1, 3, 10), query=query)
    want = brute_force(pred, target, ks=(1, 3, 10), query=query)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_blocks_do_not_change_ranks(monkeypatch):
    pred, target = with_ties(37, (4,), 5)
    whole = ranks(pred, target)
    monkeypatch.setattr(ranking, "_BLOCK_ELEMENTS", 37 * 3)  # 3 query rows per block
    assert torch.equal(ranks(pred, target), whole)


def test_duplicated_pool_ties_exactly_with_float_latents(monkeypatch):
    """Every prediction duplicated: each strictly closer candidate counts twice, the right one's twin never."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, 2, generator=g)
    t = x + 0.7 * torch.randn(60, 5, 2, generator=g)
    half = ranks(x, t)
    monkeypatch.setattr(ranking, "_BLOCK_ELEMENTS", 120 * 7)
    full = ranks(torch.cat([x, x]), torch.cat([t, t]))
    assert torch.equal(full[:60] - 1, 2 * (half - 1)) and torch.equal(full[60:], full[:60])
    assert (half > 1).any()


def test_known_answer():
    target = torch.tensor([[0.0], [1.0], [2.0]])
    pred = torch.tensor([[0.0], [2.0], [1.0]])
    # target 0: own prediction at 0, rank 1; target 1: pred 2 (=1.0) is closer than its own (=2.0), rank 2;
    # target 2: pred 1 (=2.0) is closer than its own (=1.0), rank 2
    assert ranks(pred, target).tolist() == [1, 2, 2]
    m = ranking_metrics(pred, target, ks=(1, 2))
    assert m["hits@1"] == pytest.approx(100 / 3) and m["hits@2"] == pytest.approx(100.0)
    assert m["mrr"] == pytest.approx(100 * (1 + 0.5 + 0.5) / 3) and m["pool"] == 3


def test_ties_favour_the_right_answer():
    same = torch.zeros(10, 5, 2)
    m = ranking_metrics(same, same.clone())
    assert m == {"hits@1": 100.0, "mrr": 100.0, "pool": 10}
    perfect = torch.randn(50, 8)
    assert ranking_metrics(perfect, perfect.clone())["hits@1"] == 100.0
    shuffled = ranking_metrics(perfect, perfect[torch.roll(torch.arange(50), 1)])
    assert shuffled["hits@1"] == 0.0


def test_shape_mismatch():
    with pytest.raises(ValueError):
        ranking_metrics(torch.zeros(3, 2), torch.zeros(4, 2))


# ------------------------------------------------------------------------------------------ protocol
@pytest.fixture(scope="module")
def shapes_eval(tmp_path_factory):
    from worldssl.data import CollectSpec, EpisodeDataset, collect

    out = tmp_path_factory.mktemp("ranking") / "shapes_eval"
    collect(CollectSpec("worldssl/Shapes-v0", {}, str(out), episodes=20, seed=2, max_episode_steps=10),
            progress=False)
    return EpisodeDataset(out)


@pytest.fixture(scope="module")
def cswm():
    torch.manual_seed(0)
    return build_world_model((3, 50, 50), {"type": "discrete", "n": 20}, {"kind": "slots", "hidden_dim": 32},
                             "gnn", {"hidden_dim": 32})


def reference_protocol(model, dataset, k: int) -> dict:
    """One episode at a time: encode obs[0], k calls of next, encode obs[k]."""
    preds, targets = [], []
    model.eval()
    with torch.no_grad():
        for i in range(len(dataset)):
            ep = dataset.episode(i)
            if len(ep.actions) < k:
                continue
            z = model.encode(torch.from_numpy(ep.obs[:1]))
            for t in range(k):
                z = model.next(z, torch.from_numpy(ep.actions[t:t + 1]))
            preds.append(z)
            targets.append(model.encode(torch.from_numpy(ep.obs[k:k + 1])))
    model.train()
    return ranking_metrics(torch.cat(preds), torch.cat(targets))


def test_evaluate_ranking_on_shapes(shapes_eval, cswm):
    assert cswm.training
    out = evaluate_ranking(cswm, shapes_eval, steps=(1, 5, 10), batch_size=7)
    assert cswm.training  # mode restored
    for k in (1, 5, 10):
        assert out[f"pool/{k}"] == 20
        assert 0 <= out[f"hits@1/{k}"] <= 100 and 0 < out[f"mrr/{k}"] <= 100
    for k in (1, 5):
        want = reference_protocol(cswm, shapes_eval, k)
        assert out[f"hits@1/{k}"] == pytest.approx(want["hits@1"])
        assert out[f"mrr/{k}"] == pytest.approx(want["mrr"], abs=1e-6)


class RaggedDataset:
    """Duck-typed stand-in for EpisodeDataset with episodes of different lengths."""

    def __init__(self, lengths, seed=0):
        rng = np.random.default_rng(seed)
        self.lengths = np.asarray(lengths)
        self._episodes = [Episode(rng.integers(0, 256, (n + 1, 3, 50, 50), dtype=np.uint8),
                                  rng.integers(0, 20, n).astype(np.int64), np.zeros(n, np.float32),
                                  np.zeros(n, bool), np.zeros(n, bool), None) for n in lengths]

    def __len__(self):
        return len(self._episodes)

    def episode(self, i):
        return self._episodes[i]


def test_short_episodes_are_skipped_per_k(cswm):
    data = RaggedDataset([3, 10, 1, 6, 10, 5, 2, 8])
    out = evaluate_ranking(cswm, data, steps=(1, 5, 10, 20), batch_size=3)
    assert (out["pool/1"], out["pool/5"], out["pool/10"]) == (8, 5, 2)
    assert "pool/20" not in out
    for k in (1, 5, 10):
        want = reference_protocol(cswm, data, k)
        assert out[f"hits@1/{k}"] == pytest.approx(want["hits@1"])
        assert out[f"mrr/{k}"] == pytest.approx(want["mrr"], abs=1e-6)

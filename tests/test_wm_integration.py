"""Built world models and transition objectives work together on real Shapes data (issue 4 groundwork)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldssl.data import EpisodeDataset
from worldssl.eval.ranking import evaluate_ranking
from worldssl.worldmodels import WorldModelBatch, build_world_model
from worldssl.worldmodels.objectives import build_objective

SETUPS = {
    "contrastive": ({"kind": "slots", "size": "small", "num_slots": 5, "embedding_dim": 2}, "gnn"),
    "infonce": ({"kind": "slots", "size": "small", "num_slots": 5, "embedding_dim": 2}, "gnn"),
    "generative_ae": ("cswm_flat", "mlp"),
    "generative_vae": ("cswm_flat", "mlp"),
    "generative_ae:latent": ("cswm_flat", "mlp"),
    "generative_vae:latent": ("cswm_flat", "mlp"),
    "selfpredictive": ({"kind": "slots", "size": "small", "num_slots": 5, "embedding_dim": 2}, "gnn"),
}


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_objective_trains_a_built_model_and_ranking_runs(shapes_dataset, name):
    ds = EpisodeDataset(shapes_dataset)
    encoder, transition = SETUPS[name]
    torch.manual_seed(0)
    objective = build_objective(name.split(":")[0], **({"transition_loss": "latent"} if ":latent" in name else {}))
    model = build_world_model(ds.obs_shape, ds.manifest["action_space"], encoder, transition,
                              latent={"hidden_dim": 32}, objective_needs_decoder=objective.needs_decoder)
    z = model.encode(torch.zeros(1, *ds.obs_shape, dtype=torch.uint8))
    if hasattr(objective, "attach"):
        objective.attach(model, tuple(z.shape[1:]))
    params = [p for p in [*model.parameters(), *objective.parameters()] if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    seq = ds.sample_sequences(16, getattr(objective, "horizon", 1), rng=np.random.default_rng(0))
    batch = WorldModelBatch(torch.from_numpy(seq.obs), torch.from_numpy(seq.actions), torch.from_numpy(seq.rewards))
    losses = []
    for _ in range(8):
        loss, metrics = objective.loss(model, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        objective.update_momentum(model)
        losses.append(loss.item())
        assert metrics["wm/loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert losses[-1] < losses[0]
    result = evaluate_ranking(model, ds, steps=(1, 5))
    assert result["pool/1"] == ds.num_episodes and 0 <= result["hits@1/1"] <= 100

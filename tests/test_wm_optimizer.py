"""The world-model loop's optimiser is torch.optim.Adam (fused); checkpoints written by the loop's former
hand-written Adam (same update, ``torch.optim`` state layout with a float32 ``step`` and no ``fused`` /
``foreach`` keys) still resume exactly."""

from __future__ import annotations

import torch


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _train(model: torch.nn.Module, opt, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = (model(torch.randn(16, 6, generator=g)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _old_layout(opt: torch.optim.Adam) -> dict:
    """``opt``'s state as the former ``worldssl.runtime.optim.Adam.state_dict()`` wrote it."""
    sd = opt.state_dict()
    group = sd["param_groups"][0]
    return {"state": {i: {"step": torch.as_tensor(float(s["step"]), dtype=torch.float32),
                          "exp_avg": s["exp_avg"].clone(), "exp_avg_sq": s["exp_avg_sq"].clone()}
                      for i, s in sd["state"].items()},
            "param_groups": [{"lr": group["lr"], "betas": tuple(group["betas"]), "eps": group["eps"],
                              "weight_decay": group["weight_decay"], "params": list(group["params"])}]}


def test_fused_adam_takes_the_for_loop_steps():
    a, b = _model(0), _model(0)
    _train(a, torch.optim.Adam(a.parameters(), lr=3e-3, weight_decay=0.01, fused=True), 25)
    _train(b, torch.optim.Adam(b.parameters(), lr=3e-3, weight_decay=0.01, foreach=False), 25)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_a_checkpoint_in_the_former_layout_resumes():
    a, b = _model(0), _model(0)
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-3, foreach=False)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-3, foreach=False)
    _train(a, opt_a, 5)
    _train(b, opt_b, 5)
    resumed = torch.optim.Adam(a.parameters(), lr=1e-3, fused=True)
    resumed.load_state_dict(_old_layout(opt_a))
    _train(a, resumed, 5, seed=2)
    _train(b, opt_b, 5, seed=2)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert float(resumed.state_dict()["state"][0]["step"]) == 10


def test_trainer_uses_a_fused_torch_adam(shapes_dataset, tmp_path):
    from worldssl.data.episodes import EpisodeDataset
    from worldssl.worldmodels.train import WorldModelSettings, WorldModelTrainer, build_from_spec

    spec = {"obs_shape": [3, 50, 50], "action_space": {"type": "discrete", "n": 20},
            "encoder": {"kind": "slots", "size": "small", "num_slots": 5, "embedding_dim": 2, "hidden_dim": 16},
            "transition": "gnn", "latent": {"hidden_dim": 16}, "objective": "contrastive", "objective_kwargs": {},
            "reward": False}
    model, objective = build_from_spec(spec)
    settings = WorldModelSettings(batch_size=16, lr=1e-3, weight_decay=0.01, amp=False, progress=False)
    trainer = WorldModelTrainer(model, objective, EpisodeDataset(shapes_dataset), settings, tmp_path,
                                torch.device("cpu"))
    opt = trainer.optimizer
    assert type(opt) is torch.optim.Adam
    group = opt.param_groups[0]
    assert group["fused"] and group["lr"] == 1e-3 and group["weight_decay"] == 0.01 and not group["amsgrad"]

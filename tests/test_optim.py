"""Our Adam (no torch._dynamo import) takes the same steps as torch.optim.Adam and shares its state format."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from worldssl.runtime.optim import Adam


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.LayerNorm(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _train(model: torch.nn.Module, opt, steps: int, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=g)
        loss = (model(x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_same_steps_as_torch_adam(weight_decay):
    ours, ref = _model(0), _model(0)
    _train(ours, Adam(ours.parameters(), lr=3e-3, weight_decay=weight_decay), 25)
    _train(ref, torch.optim.Adam(ref.parameters(), lr=3e-3, weight_decay=weight_decay, foreach=False), 25)
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_state_dict_round_trips_with_torch_adam():
    """A torch.optim.Adam state continues in ours exactly as it would in torch's, and back."""
    a, b = _model(0), _model(0)
    opt_a = torch.optim.Adam(a.parameters(), lr=1e-3, foreach=False)
    opt_b = torch.optim.Adam(b.parameters(), lr=1e-3, foreach=False)
    _train(a, opt_a, 5)
    _train(b, opt_b, 5)
    ours = Adam(a.parameters(), lr=1e-3)
    ours.load_state_dict(opt_a.state_dict())
    _train(a, ours, 5, seed=2)
    _train(b, opt_b, 5, seed=2)
    for x, y in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    back = torch.optim.Adam(b.parameters(), lr=1e-3, foreach=False)
    back.load_state_dict(ours.state_dict())
    assert back.state_dict()["state"][0]["step"] == 10


def test_state_for_other_parameters_is_refused():
    ours = Adam(_model(0).parameters())
    _train(_model(0), ours, 1)
    other = Adam(torch.nn.Linear(2, 2).parameters())
    with pytest.raises(ValueError, match="parameters"):
        other.load_state_dict(ours.state_dict())


def test_does_not_import_dynamo():
    code = ("import sys, torch\nfrom worldssl.runtime.optim import Adam\nm = torch.nn.Linear(2, 2)\n"
            "o = Adam(m.parameters())\nm(torch.ones(1, 2)).sum().backward()\no.step()\n"
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

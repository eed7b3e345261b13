"""Adam without ``torch.optim``: the same update, and no import of ``torch._dynamo``.

Every ``torch.optim`` optimizer imports ``torch._dynamo`` when it is built and on each step (its methods are
wrapped to keep dynamo out), which costs about 150 MB of resident memory in a process that never compiles
anything. The world-model loop, whose peak memory is a benchmark target, uses this class instead. The update
is ``torch.optim.Adam``'s (Kingma & Ba, 2015; L2 ``weight_decay`` added to the gradient, no AMSGrad), and
``state_dict()`` has ``torch.optim``'s layout, so checkpoints of either load in the other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch


class Adam:
    """``torch.optim.Adam(params, lr, betas, eps, weight_decay)`` for one parameter group."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        if not lr > 0 or not eps >= 0 or not weight_decay >= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"bad Adam hyperparameters: lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        params = list(params)
        if not params:
            raise ValueError("Adam got an empty parameter list")
        self.param_groups = [{"params": params, "lr": float(lr), "betas": tuple(float(b) for b in betas),
                              "eps": float(eps), "weight_decay": float(weight_decay)}]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        group = self.param_groups[0]
        lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad if wd == 0 else p.grad.add(p, alpha=wd)
            state = self.state.get(p)
            if state is None:
                state = self.state[p] = {"step": torch.zeros((), dtype=torch.float32),
                                         "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
            state["step"] += 1
            step = float(state["step"])
            state["exp_avg"].lerp_(grad, 1 - beta1)
            state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
            p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1**step))

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s layout: ``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}``."""
        group = self.param_groups[0]
        index = {id(p): i for i, p in enumerate(group["params"])}
        return {"state": {index[id(p)]: {k: v.clone() for k, v in s.items()} for p, s in self.state.items()},
                "param_groups": [{**{k: v for k, v in group.items() if k != "params"},
                                  "params": list(range(len(group["params"])))}]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state saved by this class or by ``torch.optim.Adam``; ValueError when it is for other params."""
        groups = state_dict.get("param_groups", [])
        params = self.param_groups[0]["params"]
        if len(groups) != 1 or len(groups[0].get("params", [])) != len(params):
            raise ValueError(f"optimizer state has {[len(g.get('params', [])) for g in groups]} parameters per "
                             f"group, this model has [{len(params)}]")
        new_state = {}
        for i, s in state_dict.get("state", {}).items():
            p = params[int(i)]
            for key in ("exp_avg", "exp_avg_sq"):
                if tuple(s[key].shape) != tuple(p.shape):
                    raise ValueError(f"optimizer state for parameter {i} has shape {tuple(s[key].shape)}, "
                                     f"the parameter has {tuple(p.shape)}")
            new_state[p] = {"step": torch.as_tensor(s["step"], dtype=torch.float32).clone(),
                            "exp_avg": s["exp_avg"].to(p.device, p.dtype).clone(),
                            "exp_avg_sq": s["exp_avg_sq"].to(p.device, p.dtype).clone()}
        g = groups[0]
        self.param_groups[0].update(lr=float(g["lr"]), betas=tuple(g["betas"]), eps=float(g["eps"]),
                                    weight_decay=float(g["weight_decay"]))
        self.state = new_state

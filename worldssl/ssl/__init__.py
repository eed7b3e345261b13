"""Self-supervised objectives over pixel encoders: MoCo v2/v3, SimCLR, BYOL, MAE, CPC.

Each objective is an ``nn.Module`` built as ``Objective(encoder, **hyperparameters)`` with the online
encoder as ``.encoder``, ``batch_kind`` in {"frames", "pairs", "sequences"} telling the trainer what to
sample, ``loss(batch) -> (loss, metrics)``, and ``update_momentum()`` to call after each optimiser step.
"""

from __future__ import annotations

from worldssl.encoders.base import Encoder
from worldssl.runtime.errors import ConfigError
from worldssl.ssl.base import BATCH_KINDS, SSLObjective
from worldssl.ssl.batch import SSLBatch
from worldssl.ssl.byol import BYOL
from worldssl.ssl.cpc import CPC
from worldssl.ssl.mae import MAE
from worldssl.ssl.moco import MoCo
from worldssl.ssl.momentum import update_momentum
from worldssl.ssl.simclr import SimCLR

OBJECTIVES: dict[str, type[SSLObjective]] = {"moco": MoCo, "mae": MAE, "cpc": CPC, "simclr": SimCLR, "byol": BYOL}


def build(name: str, encoder: Encoder, **kwargs) -> SSLObjective:
    """Instantiate the objective registered as ``name`` around ``encoder``."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown SSL objective {name!r}; valid: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name](encoder, **kwargs)


__all__ = ["BATCH_KINDS", "BYOL", "CPC", "MAE", "OBJECTIVES", "MoCo", "SSLBatch", "SSLObjective", "SimCLR",
           "build", "update_momentum"]

"""Transition objectives for world models, one per module, each a
:class:`~worldssl.worldmodels.base.TransitionObjective`.

``loss(model, batch) -> (loss, {"wm/...": float})`` uses the first ``horizon`` steps of a
:class:`~worldssl.worldmodels.base.WorldModelBatch` window; ``update_momentum(model)`` follows each optimiser
step; ``attach(model, latent_shape=None)`` is called once after building (target networks, latent-sized
heads). Objectives with parameters of their own (the VAE's log-variance head, SelfPredictive's heads) are
optimised together with the model: ``model.parameters()`` + ``objective.parameters()``.
"""

from __future__ import annotations

from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels.base import TransitionObjective
from worldssl.worldmodels.objectives.contrastive import ContrastiveHinge
from worldssl.worldmodels.objectives.energy import energy, pairwise_energy
from worldssl.worldmodels.objectives.generative import GenerativeAE, GenerativeVAE
from worldssl.worldmodels.objectives.infonce import TransitionInfoNCE
from worldssl.worldmodels.objectives.selfpredictive import SelfPredictive

OBJECTIVES: dict[str, type[TransitionObjective]] = {
    "contrastive": ContrastiveHinge,
    "infonce": TransitionInfoNCE,
    "generative_ae": GenerativeAE,
    "generative_vae": GenerativeVAE,
    "selfpredictive": SelfPredictive,
}


def build_objective(name: str, **kwargs) -> TransitionObjective:
    """Instantiate the transition objective registered as ``name`` with its hyperparameters."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown world-model objective {name!r}; valid: {', '.join(sorted(OBJECTIVES))}")
    try:
        return OBJECTIVES[name](**kwargs)
    except TypeError as exc:  # an unknown keyword from the config
        raise ConfigError(f"world-model objective {name!r}: {exc}") from exc


__all__ = ["OBJECTIVES", "ContrastiveHinge", "GenerativeAE", "GenerativeVAE", "SelfPredictive",
           "TransitionInfoNCE", "build_objective", "energy", "pairwise_energy"]

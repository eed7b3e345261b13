"""World models: the contract (``base``), C-SWM's slot encoder, transition families, pixel decoders and the
builder; the training loop and checkpoint loader (``train``). Transition objectives live in
:mod:`worldssl.worldmodels.objectives`."""

from worldssl.worldmodels.base import ActionEncoder, TransitionObjective, WorldModel, WorldModelBatch
from worldssl.worldmodels.build import TRANSITIONS, build_encoder, build_world_model
from worldssl.worldmodels.decoders import FlatDecoder, SlotDecoder, Upsampler
from worldssl.worldmodels.slots import EXTRACTORS, FlatMapEncoder, SlotEncoder, object_extractor, object_mlp
from worldssl.worldmodels.train import WorldModelSettings, WorldModelTrainer, load_world_model
from worldssl.worldmodels.transitions import (
    GNNTransition,
    LatentProjection,
    MLPTransition,
    RecurrentTransition,
    mlp,
)

__all__ = [
    "EXTRACTORS", "TRANSITIONS", "ActionEncoder", "FlatDecoder", "FlatMapEncoder", "GNNTransition",
    "LatentProjection", "MLPTransition", "RecurrentTransition", "SlotDecoder", "SlotEncoder", "TransitionObjective",
    "Upsampler", "WorldModel", "WorldModelBatch", "WorldModelSettings", "WorldModelTrainer", "build_encoder",
    "build_world_model", "load_world_model", "mlp", "object_extractor", "object_mlp",
]

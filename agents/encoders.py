"""The representation an agent acts on: pixels -> a flat feature vector, and how it is trained.

``encoder.mode`` picks who trains the encoder:

=============  ============================================================================================
``scratch``    the DrQ conv trunk (random init), trained end to end by the critic
``frozen``     any encoder checkpoint, frozen; the loop encodes each frame once and caches the features
``finetune``   a pretrained checkpoint, trained further by the critic
``curl``       CURL: the critic and an auxiliary InfoNCE loss between two crops train the encoder
``decoupled``  ATC: only an augmented temporal-contrast loss trains the encoder; RL gradients never reach it
=============  ============================================================================================

``encoder.checkpoint=`` takes a ``worldssl pretrain`` encoder directory, a published MoCo / MAE / R3M file, or a
``worldssl worldmodel`` run directory (its encoder; slot latents ``(K, D)`` are flattened to ``K * D``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldssl.runtime.errors import CheckpointError, ConfigError

MODES = ("scratch", "frozen", "finetune", "curl", "decoupled")
#: modes whose encoder is trained by a loss (the critic's, an auxiliary one, or both)
TRAINED = {"scratch": "critic", "finetune": "critic", "curl": "critic+curl", "decoupled": "atc", "frozen": None}


class Features(nn.Module):
    """uint8 ``(B, C, H, W)`` -> float ``(B, repr_dim)``.

    Wraps a suite :class:`~worldssl.encoders.Encoder` (for the scratch conv encoder only its conv trunk, as DrQ-v2
    does: the actor and critic each put their own Linear-LayerNorm-tanh trunk on top), or a world model's encoder
    (flattened). ``repr_dim`` is measured with a dummy forward pass.
    """

    def __init__(self, encoder: nn.Module, obs_shape: tuple[int, int, int], trunk_only: bool = False,
                 source: str = "scratch"):
        super().__init__()
        self.encoder = encoder
        self.obs_shape = tuple(int(s) for s in obs_shape)
        self.trunk_only = bool(trunk_only)
        self.source = source
        with torch.no_grad():
            was = self.encoder.training
            self.encoder.eval()
            out = self(torch.zeros(2, *self.obs_shape, dtype=torch.uint8))
            self.encoder.train(was)
        self.repr_dim = int(out.shape[1])

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.trunk_only:
            return self.encoder.forward_conv(obs)
        return self.encoder(obs).flatten(1).float()


def build_features(mode: str, obs_shape: tuple[int, int, int], checkpoint: str | None = None,
                   conv: dict[str, Any] | None = None) -> Features:
    """The representation for ``mode``: a fresh DrQ conv trunk, or the encoder found at ``checkpoint``."""
    if mode not in MODES:
        raise ConfigError(f"unknown encoder.mode {mode!r}; valid: {', '.join(MODES)}")
    if checkpoint in (None, ""):
        if mode in ("frozen", "finetune"):
            if mode == "finetune":
                raise ConfigError("encoder.mode=finetune needs encoder.checkpoint=PATH (a pretrained encoder or a "
                                  "worldmodel run); for a random-init encoder use encoder.mode=scratch")
        from worldssl.encoders import ConvEncoder

        enc = ConvEncoder(obs_shape, **(conv or {}))
        # frozen without a checkpoint: a random-init encoder's full output (the frozen-random baseline)
        return Features(enc, obs_shape, trunk_only=mode != "frozen", source="random" if mode == "frozen" else "scratch")
    enc, source = load_encoder(checkpoint)
    want = tuple(getattr(enc, "obs_shape", obs_shape))
    if want != tuple(obs_shape):
        raise ConfigError(f"encoder.checkpoint {checkpoint} expects observations {want} but the env gives "
                          f"{tuple(obs_shape)}; collect/pretrain at the env's image size and frame stack, or set "
                          f"env.kwargs.image_size / env.frame_stack to match")
    return Features(enc, obs_shape, trunk_only=False, source=source)


def load_encoder(path: str | Path) -> tuple[nn.Module, str]:
    """An encoder from a ``worldssl pretrain`` encoder, a published file, or a ``worldssl worldmodel`` run."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"encoder.checkpoint {path} does not exist; give a `worldssl pretrain` run's "
                          f"checkpoints/encoder, a published MoCo/MAE/R3M file, or a `worldssl worldmodel` run directory")
    if _is_world_model(path):
        from worldssl.worldmodels.train import load_world_model

        model = load_world_model(path)
        enc = model.encoder
        if not hasattr(enc, "obs_shape"):
            raise CheckpointError(f"the world model in {path} has no encoder with an obs_shape; it cannot act from pixels")
        return enc, f"worldmodel:{path}"
    if path.is_dir() and any(path.glob("*/train_state.pt")) or (path / "checkpoints" / "encoder").is_dir():
        # a pretrain run directory: take its encoder
        path = path / "checkpoints" / "encoder"
    from worldssl.encoders import load

    return load(str(path)), f"encoder:{path}"


def _is_world_model(path: Path) -> bool:
    return (path / "model.json").is_file() or (path / "checkpoints" / "model.json").is_file()


def expect_encoder_file(path: str | Path) -> None:
    """For places that take an encoder file only: a world-model run given instead is a one-line error."""
    if _is_world_model(Path(path)):
        raise ConfigError(f"{path} is a `worldssl worldmodel` run, not an encoder checkpoint; pass its encoder via "
                          f"`worldssl train encoder.checkpoint={path}` (world-model runs are accepted there), or give "
                          f"a `worldssl pretrain` run's checkpoints/encoder")

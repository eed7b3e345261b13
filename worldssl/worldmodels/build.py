"""Build a :class:`~worldssl.worldmodels.base.WorldModel` from plain config values (the composition root's job).

Every size is derived from the encoder's measured ``out_shape`` and the dataset's action space, never typed.

``encoder`` (str or dict):

- ``"slots"`` / ``{"kind": "slots", "size": "small"|"medium"|"large", "num_slots": 5, "embedding_dim": 2,
  "hidden_dim": 512}``: C-SWM's :class:`~worldssl.worldmodels.slots.SlotEncoder`, latents ``(B, K, D)``.
- ``"cswm_flat"`` / ``{"kind": "cswm_flat", "size": ..., "num_maps": 32, "latent_dim": 32}``: the AE / VAE
  baselines' :class:`~worldssl.worldmodels.slots.FlatMapEncoder`, latents ``(B, D)``.
- any :mod:`worldssl.encoders` kind, ``"conv"`` or ``{"kind": "conv", **kwargs}``: latents ``(B, D)``.
- a checkpoint: ``{"checkpoint": path, "freeze": true}`` (or a path string, not frozen), read with
  :func:`worldssl.encoders.load`.

``transition``: ``"mlp"`` (flat, or slot latents flattened jointly), ``"gnn"`` (slot latents only) or
``"recurrent"`` (flat latents only). ``latent`` holds the transition's options:

- mlp: ``hidden_dim`` (512), ``residual`` (true).
- gnn: ``hidden_dim`` (512), ``residual`` (true), ``action_mode``: ``"per_slot"`` (C-SWM's grid worlds;
  the default for discrete action counts divisible by the number of slots), ``"copy"`` (the action to every
  slot; the default otherwise) or ``"ignore"``.
- recurrent: ``hidden_dim`` (256), ``stochastic_dim`` (0), ``deterministic_dim`` (default: the encoder's
  width), ``min_std`` (0.1). With ``stochastic_dim > 0`` or a ``deterministic_dim``, a
  :class:`~worldssl.worldmodels.transitions.LatentProjection` maps the encoder's features to ``[h, s]``.
- any: ``reward_hidden_dim`` (256), ``decoder_hidden_dim`` (512), ``decoder_channels`` (32), ``decoder``
  (``"patch"``, C-SWM's small decoder, or ``"upsample"``) and ``decoder_patch`` (10).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from worldssl.runtime.errors import ConfigError
from worldssl.worldmodels.base import ActionEncoder, WorldModel
from worldssl.worldmodels.decoders import FlatDecoder, SlotDecoder
from worldssl.worldmodels.slots import EXTRACTORS, FlatMapEncoder, SlotEncoder
from worldssl.worldmodels.transitions import (
    GNNTransition,
    LatentProjection,
    MLPTransition,
    RecurrentTransition,
)

TRANSITIONS = ("mlp", "gnn", "recurrent")
_LATENT_KEYS = {
    "mlp": {"hidden_dim", "residual"},
    "gnn": {"hidden_dim", "residual", "action_mode"},
    "recurrent": {"hidden_dim", "stochastic_dim", "deterministic_dim", "min_std"},
}
_SHARED_KEYS = {"reward_hidden_dim", "decoder_hidden_dim", "decoder_channels", "decoder", "decoder_patch"}
_MAP_ENCODERS = {"slots": (SlotEncoder, {"size": "extractor"}), "cswm_flat": (FlatMapEncoder, {"size": "extractor"})}


def build_world_model(obs_shape: tuple[int, int, int], action_space: dict[str, Any], encoder: str | dict[str, Any],
                      transition: str, latent: dict[str, Any] | None = None, objective_needs_decoder: bool = False,
                      reward: bool = False) -> WorldModel:
    """A world model for ``obs_shape = (C, H, W)`` (frame stack included) and a manifest ``action_space``.

    Args:
        obs_shape: observation shape the encoder takes.
        action_space: as stored in dataset manifests, ``{"type": "discrete", "n": 20}`` or
            ``{"type": "box", "shape": [2]}``.
        encoder: see the module docstring.
        transition: ``"mlp"``, ``"gnn"`` or ``"recurrent"``.
        latent: transition / head options (see the module docstring); unknown keys are refused.
        objective_needs_decoder: attach a pixel decoder (``SlotDecoder`` for slot latents, else ``FlatDecoder``).
        reward: attach a reward head ``MLP([z, a_enc]) -> r``.

    Raises:
        ConfigError: unknown names or options, or a combination that cannot work.
    """
    latent = dict(latent or {})
    if transition not in TRANSITIONS:
        raise ConfigError(f"unknown transition {transition!r}; valid: {', '.join(TRANSITIONS)}")
    unknown = sorted(set(latent) - _LATENT_KEYS[transition] - _SHARED_KEYS)
    if unknown:
        raise ConfigError(f"transition {transition!r} has no latent option(s) {', '.join(unknown)}; valid: "
                          f"{', '.join(sorted(_LATENT_KEYS[transition] | _SHARED_KEYS))}")
    discrete, action_dim = _action_space(action_space)
    obs_shape = tuple(int(s) for s in obs_shape)
    enc = build_encoder(obs_shape, encoder)
    out_shape = tuple(int(s) for s in enc.out_shape)
    if transition == "mlp":
        action_encoder = ActionEncoder(discrete, action_dim)
        trans: nn.Module = MLPTransition(int(torch.tensor(out_shape).prod()), action_encoder.out_dim,
                                         hidden_dim=latent.get("hidden_dim", 512),
                                         residual=latent.get("residual", True))
    elif transition == "gnn":
        action_encoder, trans = _gnn(out_shape, discrete, action_dim, latent)
    else:
        enc, action_encoder, trans = _recurrent(enc, out_shape, discrete, action_dim, latent)
        out_shape = tuple(enc.out_shape)
    reward_head = _reward_head(out_shape, action_encoder, latent.get("reward_hidden_dim", 256)) if reward else None
    decoder = _decoder(out_shape, obs_shape, latent) if objective_needs_decoder else None
    return WorldModel(enc, trans, action_encoder, reward_head=reward_head, decoder=decoder)


def _action_space(space: dict[str, Any]) -> tuple[bool, int]:
    kind = space.get("type") if isinstance(space, dict) else None
    if kind == "discrete":
        n = int(space.get("n", 0))
        if n < 1:
            raise ConfigError(f"discrete action space needs n >= 1, got {space!r}")
        return True, n
    if kind == "box":
        shape = space.get("shape") or []
        dim = int(torch.tensor(shape, dtype=torch.long).prod()) if shape else 0
        if dim < 1:
            raise ConfigError(f"box action space needs a non-empty shape, got {space!r}")
        return False, dim
    raise ConfigError(f"action_space must be {{'type': 'discrete', 'n': N}} or {{'type': 'box', 'shape': [...]}}, "
                      f"got {space!r}")


def build_encoder(obs_shape: tuple[int, int, int], encoder: str | dict[str, Any]) -> nn.Module:
    """The pixel encoder for an ``encoder`` config (see the module docstring)."""
    from worldssl import encoders

    if isinstance(encoder, (str, Path)):
        name = str(encoder)
        if name in _MAP_ENCODERS or name in encoders.ENCODERS:
            encoder = {"kind": name}
        elif "/" in name or Path(name).exists():
            encoder = {"checkpoint": name}
        else:
            raise ConfigError(f"unknown encoder {name!r}; valid: {', '.join([*_MAP_ENCODERS, *encoders.ENCODERS])}, "
                              f"or a checkpoint path")
    if not isinstance(encoder, dict):
        raise ConfigError(f"encoder must be a kind name, a checkpoint path or a dict, got {encoder!r}")
    cfg = dict(encoder)
    if "checkpoint" in cfg:
        extra = sorted(set(cfg) - {"checkpoint", "freeze"})
        if extra:
            raise ConfigError(f"a checkpoint encoder takes only checkpoint and freeze, got {', '.join(extra)}")
        return encoders.load(cfg["checkpoint"], freeze=bool(cfg.get("freeze", False)), obs_shape=obs_shape)
    kind = cfg.pop("kind", None)
    freeze = bool(cfg.pop("freeze", False))
    if kind in _MAP_ENCODERS:
        cls, renames = _MAP_ENCODERS[kind]
        cfg = {renames.get(k, k): v for k, v in cfg.items()}
        if cfg.get("extractor", "small") not in EXTRACTORS:
            raise ConfigError(f"encoder size must be one of {', '.join(EXTRACTORS)}, got {cfg['extractor']!r}")
        try:
            enc = cls(obs_shape, **cfg)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"cannot build a {kind!r} encoder for obs_shape {obs_shape} from {encoder!r}: {e}") from e
    elif kind in encoders.ENCODERS:
        enc = encoders.build(kind, obs_shape, **cfg)
    else:
        raise ConfigError(f"unknown encoder kind {kind!r}; valid: {', '.join([*_MAP_ENCODERS, *encoders.ENCODERS])}")
    return enc.freeze() if freeze else enc


def _gnn(out_shape: tuple[int, ...], discrete: bool, action_dim: int,
         latent: dict[str, Any]) -> tuple[ActionEncoder, GNNTransition]:
    if len(out_shape) != 2:
        raise ConfigError(f"transition gnn needs slot latents (B, K, D) from the slot encoder (encoder=slots); "
                          f"this encoder gives {out_shape}: use transition mlp or recurrent")
    k, d = out_shape
    mode = latent.get("action_mode") or ("per_slot" if discrete and action_dim % k == 0 else "copy")
    if mode not in ("per_slot", "copy", "ignore"):
        raise ConfigError(f"gnn action_mode must be per_slot, copy or ignore, got {mode!r}")
    if mode == "per_slot" and (not discrete or action_dim % k):
        what = f"{action_dim} discrete actions" if discrete else "continuous actions"
        raise ConfigError(f"action_mode per_slot needs a discrete action count divisible by num_slots "
                          f"({what}, {k} slots); use action_mode copy")
    action_encoder = ActionEncoder(discrete, action_dim, num_slots=k, mode="copy" if mode == "ignore" else mode)
    trans = GNNTransition(d, action_encoder.out_dim, k, hidden_dim=latent.get("hidden_dim", 512),
                          copy_action=mode == "copy", ignore_action=mode == "ignore",
                          residual=latent.get("residual", True))
    return action_encoder, trans


def _recurrent(enc: nn.Module, out_shape: tuple[int, ...], discrete: bool, action_dim: int,
               latent: dict[str, Any]) -> tuple[nn.Module, ActionEncoder, RecurrentTransition]:
    if len(out_shape) != 1:
        raise ConfigError(f"transition recurrent needs flat latents (B, D); this encoder gives {out_shape}: "
                          f"use transition gnn or mlp for slot encoders")
    stochastic = int(latent.get("stochastic_dim", 0))
    deterministic = latent.get("deterministic_dim")
    if stochastic < 0 or (deterministic is not None and int(deterministic) < 1):
        raise ConfigError(f"recurrent needs stochastic_dim >= 0 and deterministic_dim >= 1, got {latent!r}")
    if stochastic or deterministic is not None:
        enc = LatentProjection(enc, int(deterministic or out_shape[0]), stochastic)
    action_encoder = ActionEncoder(discrete, action_dim)
    trans = RecurrentTransition(int(enc.out_shape[0]), action_encoder.out_dim,
                                hidden_dim=latent.get("hidden_dim", 256), stochastic_dim=stochastic,
                                min_std=latent.get("min_std", 0.1))
    return enc, action_encoder, trans


def _reward_head(out_shape: tuple[int, ...], action_encoder: ActionEncoder, hidden_dim: int) -> nn.Module:
    """``[z.flatten(), a_enc.flatten()] -> Linear -> LayerNorm -> ReLU -> Linear -> ReLU -> Linear -> r``."""
    z_dim = int(torch.tensor(out_shape).prod())
    slots = action_encoder.num_slots if action_encoder.mode in ("copy", "per_slot") else 1
    in_dim = z_dim + action_encoder.out_dim * slots
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(),
                         nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1))


def _decoder(out_shape: tuple[int, ...], obs_shape: tuple[int, int, int], latent: dict[str, Any]) -> nn.Module:
    kw = {"hidden_dim": latent.get("decoder_hidden_dim", 512), "channels": latent.get("decoder_channels", 32),
          "style": latent.get("decoder", "patch"), "patch": latent.get("decoder_patch", 10)}
    if kw["style"] not in ("patch", "upsample"):
        raise ConfigError(f"decoder must be 'patch' or 'upsample', got {kw['style']!r}")
    if len(out_shape) == 2:
        return SlotDecoder(out_shape[0], out_shape[1], obs_shape, **kw)
    return FlatDecoder(int(torch.tensor(out_shape).prod()), obs_shape, **kw)

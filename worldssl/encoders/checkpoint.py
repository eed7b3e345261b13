"""Encoder checkpoints: a safetensors + JSON pair that rebuilds the exact encoder, and published checkpoints.

``save(encoder, dir)`` writes ``dir/encoder.safetensors`` (the state dict) and ``dir/encoder.json`` (format,
kind, ``arch_config``, ``obs_shape``, ``out_shape``, normalisation, worldssl version, free-form ``meta``),
each atomically. ``load(path)`` rebuilds the encoder from that pair alone, loading the weights strictly.

``load`` also reads the published checkpoints used for frozen encoders in control (PVR, MVP, R3M). These are
pickles, so they are opened only with ``torch.load(..., weights_only=True)``; one that needs full unpickling is
refused, never retried unsafely.

- MoCo v1/v2 ResNet-50: ``["state_dict"]``, keys ``module.encoder_q.<torchvision resnet key>``; the ``fc``
  head (v2: ``fc.0`` / ``fc.2``) is dropped. (``module.base_encoder.`` of MoCo v3 is read the same way.)
- MAE / MVP ViT: ``["model"]`` with timm ViT key names; ``decoder*``, ``mask_token`` and ``head*`` are dropped.
  Width, depth, patch and image size come from the tensor shapes; heads from the standard ViT table.
- R3M: ``["r3m"]``, keys ``module.convnet.<torchvision resnet key>``; language heads and ``fc`` dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import worldssl
from worldssl.encoders.base import Encoder
from worldssl.runtime.errors import CheckpointError, ConfigError
from worldssl.runtime.io import atomic_open, write_json

FORMAT = "worldssl-encoder"
VERSION = 1
WEIGHTS_NAME = "encoder.safetensors"
CONFIG_NAME = "encoder.json"
PUBLISHED_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt")
ACCEPTED = ("a worldssl encoder directory (encoder.json + encoder.safetensors, or either file), or a published "
            "checkpoint (.pth/.pt/.tar/.ckpt): MoCo v1/v2 ResNet-50 ['state_dict'] with module.encoder_q.* keys, "
            "MAE/MVP ViT ['model'] with timm ViT keys, R3M ['r3m'] with module.convnet.* keys")
# published checkpoint layout: top-level key -> key prefixes of the encoder (first match wins)
PUBLISHED = {
    "state_dict": ("moco", ("module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.")),
    "model": ("mae", ("module.", "")),
    "r3m": ("r3m", ("module.convnet.", "convnet.")),
}
# embed_dim -> heads of the standard ViTs (heads cannot be read from the weights); otherwise embed_dim // 64
_VIT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
_SHOW = 4  # how many offending keys an error message lists


# ------------------------------------------------------------------------------------------------ save
def save(encoder: Encoder, directory: str | Path, meta: dict | None = None) -> Path:
    """Write ``directory/encoder.safetensors`` and ``directory/encoder.json``; returns ``directory``.

    ``meta`` (JSON-serialisable: SSL objective, dataset, env id, step, ...) is stored verbatim under ``"meta"``.
    The JSON, written last, carries the SHA-256 of the weights so a half-updated pair is detected on load.
    """
    directory = Path(directory)
    doc = {"format": FORMAT, "version": VERSION, "kind": encoder.kind, "arch_config": encoder.arch_config(),
           "obs_shape": list(encoder.obs_shape), "out_shape": list(encoder.out_shape),
           "normalization": _normalization(encoder), "worldssl_version": worldssl.__version__, "meta": meta}
    try:
        json.dumps(doc, default=_jsonable)
    except (TypeError, ValueError) as e:
        raise ValueError(f"encoder checkpoint meta/arch_config must be JSON-serialisable: {e}") from e
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    blob = st_save(tensors, metadata={"format": FORMAT, "kind": encoder.kind})
    with atomic_open(directory / WEIGHTS_NAME, "wb") as f:
        f.write(blob)
    doc["weights_sha256"] = hashlib.sha256(blob).hexdigest()
    write_json(directory / CONFIG_NAME, doc)
    return directory


def _normalization(encoder: Encoder) -> dict[str, Any]:
    describe = getattr(encoder, "normalization", None)
    if callable(describe):
        return describe()
    return {"type": "center", "formula": "x / 255 - 0.5", "input": "uint8 [0, 255] or float [0, 1] (pixel / 255)"}


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item") and hasattr(o, "dtype"):  # numpy / torch scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ------------------------------------------------------------------------------------------------ load
def load(path: str | Path, freeze: bool = False, obs_shape: tuple[int, int, int] | None = None) -> Encoder:
    """Rebuild an encoder from ``path`` with its weights, strictly (every key, every shape).

    Args:
        path: a directory with ``encoder.json`` + ``encoder.safetensors``, either of those two files, or a
            published ``.pth`` / ``.pt`` / ``.tar`` / ``.ckpt`` checkpoint (MoCo v1/v2, MAE / MVP, R3M).
        freeze: call :meth:`Encoder.freeze` (no gradients, eval mode) on the result.
        obs_shape: the ``(C, H, W)`` to build for, when it differs from the saved one. ResNets take any size;
            a ViT gets its position embedding resampled; the conv encoder's head fixes its input size.

    Raises:
        CheckpointError: missing or corrupt files, an unknown format, or weights that do not fit.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no encoder checkpoint at {path}; expected {ACCEPTED}")
    if path.is_dir() or path.suffix in (".json", ".safetensors"):
        config_path, weights_path = _pair(path)
        doc = _read_config(config_path)
        state = _read_weights(weights_path, doc)
        encoder = _rebuild(doc, state, obs_shape, source=str(config_path))
        encoder.checkpoint_meta = doc.get("meta") or {}
    elif path.suffix in PUBLISHED_SUFFIXES:
        fmt, state = _published_state(path)
        encoder = _build_published(fmt, state, obs_shape, source=str(path))
        encoder.checkpoint_meta = {"source_format": fmt, "source_path": str(path)}
    else:
        raise CheckpointError(f"cannot tell the format of {path}; expected {ACCEPTED}")
    return encoder.freeze() if freeze else encoder


def load_weights(encoder: Encoder, path: str | Path) -> Encoder:
    """Load the weights at ``path`` (a worldssl checkpoint or a published one) into ``encoder``, strictly.

    Every key and shape is checked before anything is copied, so a mismatch leaves ``encoder`` untouched.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no encoder checkpoint at {path}; expected {ACCEPTED}")
    if path.is_dir() or path.suffix in (".json", ".safetensors"):
        config_path, weights_path = _pair(path)
        state = _read_weights(weights_path, _read_config(config_path))
    elif path.suffix in PUBLISHED_SUFFIXES:
        _, state = _published_state(path)
        state = {f"{'net' if _family(state) == 'resnet' else 'vit'}.{k}": v for k, v in state.items()}
    else:
        raise CheckpointError(f"cannot tell the format of {path}; expected {ACCEPTED}")
    _load_strict(encoder, state, source=str(path))
    return encoder


def _pair(path: Path) -> tuple[Path, Path]:
    """``(config, weights)`` paths for a checkpoint directory or for either file of the pair."""
    if path.is_dir():
        config_path, weights_path = path / CONFIG_NAME, path / WEIGHTS_NAME
    else:
        config_path, weights_path = path.with_suffix(".json"), path.with_suffix(".safetensors")
    for p in (config_path, weights_path):
        if not p.is_file():
            raise CheckpointError(f"encoder checkpoint is incomplete: {p} is missing (save() writes "
                                  f"{CONFIG_NAME} and {WEIGHTS_NAME} side by side)")
    return config_path, weights_path


def _read_config(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is corrupt or truncated (not valid JSON: {e}); re-save the encoder") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise CheckpointError(f"{path} is not a worldssl encoder checkpoint (format {got!r}, expected {FORMAT!r})")
    if not isinstance(doc.get("version"), int) or doc["version"] > VERSION:
        raise CheckpointError(f"{path} has encoder checkpoint version {doc.get('version')!r}; this worldssl "
                              f"({worldssl.__version__}) reads version <= {VERSION}: upgrade worldssl")
    for key, typ in (("kind", str), ("arch_config", dict), ("obs_shape", list)):
        if not isinstance(doc.get(key), typ):
            raise CheckpointError(f"{path} is corrupt: field {key!r} is missing or not a {typ.__name__}")
    return doc


def _read_weights(path: Path, doc: dict[str, Any]) -> dict[str, torch.Tensor]:
    blob = path.read_bytes()
    expected = doc.get("weights_sha256")
    if expected is not None and hashlib.sha256(blob).hexdigest() != expected:
        raise CheckpointError(f"{path} does not match its {CONFIG_NAME} (checksum differs): the file is truncated, "
                              f"corrupt or from another save; re-save the encoder")
    try:
        return st_load(blob)
    except SafetensorError as e:
        raise CheckpointError(f"{path} is corrupt or truncated ({e}); re-save the encoder") from e


def _rebuild(doc: dict[str, Any], state: dict[str, torch.Tensor], obs_shape: tuple[int, int, int] | None,
             source: str) -> Encoder:
    """The encoder ``doc`` describes, built for ``obs_shape`` (default: the saved one), with ``state`` loaded."""
    saved = tuple(int(s) for s in doc["obs_shape"])
    target = saved if obs_shape is None else tuple(int(s) for s in obs_shape)
    kind, cfg = doc["kind"], {k: v for k, v in doc["arch_config"].items() if k != "obs_shape"}
    try:
        encoder = _construct(kind, target, cfg)
    except (ConfigError, ValueError) as e:
        if target != saved:
            raise CheckpointError(f"{source}: the {kind} encoder saved for obs_shape {saved} cannot take "
                                  f"obs_shape {target}: {e}") from e
        raise CheckpointError(f"{source}: cannot rebuild the {kind} encoder it describes: {e}") from e
    if target != saved:
        state = _adapt_to_shape(encoder, state, saved)
    note = f" (input shape mismatch? saved for obs_shape {saved}, asked for {target})" if target != saved else ""
    _load_strict(encoder, state, source=source + note)
    return encoder


def _construct(kind: str, obs_shape: tuple[int, int, int], cfg: dict[str, Any]) -> Encoder:
    from worldssl.encoders import ENCODERS, build

    if kind == FrameWise.kind:
        frames = int(cfg["frames"])
        c, h, w = obs_shape
        if c % frames:
            raise ValueError(f"{c} channels do not split into {frames} frames")
        return FrameWise(_construct(cfg["inner_kind"], (c // frames, h, w), cfg["inner_config"]), frames)
    if kind not in ENCODERS:
        raise CheckpointError(f"unknown encoder kind {kind!r} in checkpoint; valid: {', '.join(ENCODERS)}")
    return build(kind, obs_shape, **cfg)


def _adapt_to_shape(encoder: Encoder, state: dict[str, torch.Tensor],
                    saved: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """Resample a ViT's position embedding from the saved image size to the encoder's."""
    vit = getattr(encoder, "vit", None)
    key = "vit.pos_embed"
    if vit is None or key not in state:
        return state
    patch = encoder.patch_size
    return {**state, key: _resample_pos_embed(state[key], (saved[1] // patch, saved[2] // patch),
                                              tuple(vit.patch_embed.grid_size), int(vit.num_prefix_tokens))}


def _resample_pos_embed(pos: torch.Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int],
                        num_prefix: int) -> torch.Tensor:
    if tuple(old_grid) == tuple(new_grid) or pos.shape[1] != num_prefix + old_grid[0] * old_grid[1]:
        return pos  # nothing to do, or a shape the strict check will report
    from timm.layers import resample_abs_pos_embed

    return resample_abs_pos_embed(pos.float(), new_size=list(new_grid), old_size=list(old_grid),
                                  num_prefix_tokens=num_prefix)


def _describe(encoder: Encoder) -> str:
    c, h, w = encoder.obs_shape
    name = getattr(encoder, "arch", None) or encoder.kind
    extra = ""
    if encoder.kind == "vit":
        extra = f", patch {encoder.patch_size}, depth {encoder.depth}, embed {encoder.embed_dim}"
    elif encoder.kind == "conv":
        extra = f", {encoder.num_layers}x{encoder.num_filters} filters, feature_dim {encoder.feature_dim}"
    return f"{name} (in_chans {c}, {h}x{w}{extra})"


def _load_strict(encoder: Encoder, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``encoder`` only if every key and shape matches; otherwise raise and copy nothing."""
    own = encoder.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = sorted(k for k in state if k not in own)
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{label} {len(items)}: {', '.join(items[:_SHOW])}{', ...' if len(items) > _SHOW else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected),
                                      ("wrong shape (checkpoint vs model)", wrong)) if items]
        raise CheckpointError(f"checkpoint {source} does not match {_describe(encoder)}: {'; '.join(parts)}")
    encoder.load_state_dict(state, strict=True)


# ------------------------------------------------------------------------------------------------ published
def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True`` (plus ``argparse.Namespace``, which MAE stores as ``args``)."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f" (it pickles {found.group(1)})" if found else ""
        raise CheckpointError(
            f"{path} needs full unpickling{what}, which could run arbitrary code; worldssl only reads published "
            f"checkpoints with torch.load(weights_only=True). In a trusted environment, re-save just the weights, "
            f"e.g. torch.save({{k: ckpt[k]}}, 'clean.pth') for k = 'state_dict' (MoCo), 'model' (MAE), 'r3m'") from e
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as e:
        raise CheckpointError(f"{path} is corrupt, truncated or not a torch checkpoint ({str(e)[:200]})") from e


def _published_state(path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """``(format, encoder state dict with published key names)`` of a published checkpoint."""
    ckpt = _torch_load(path)
    top = [k for k in PUBLISHED if isinstance(ckpt, dict) and isinstance(ckpt.get(k), dict)]
    if not top:
        keys = list(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: unknown checkpoint layout (top level: {keys}); expected {ACCEPTED}")
    fmt, prefixes = PUBLISHED[top[0]]
    raw = {k: v for k, v in ckpt[top[0]].items() if isinstance(v, torch.Tensor)}
    for prefix in prefixes:
        state = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
        if state:
            break
    else:
        raise CheckpointError(f"{path}: {fmt} checkpoint [{top[0]!r}] has no keys under "
                              f"{' / '.join(p for p in prefixes if p)}; first keys: {list(raw)[:_SHOW]}")
    family = _family(state)
    if family is None:
        raise CheckpointError(f"{path}: the {fmt} weights are neither a ResNet (conv1, layer1..4) nor a timm ViT "
                              f"(patch_embed, blocks); first keys: {list(state)[:_SHOW]}; expected {ACCEPTED}")
    drop = ("fc.",) if family == "resnet" else ("decoder", "mask_token", "head")
    return fmt, {k: v for k, v in state.items() if not k.startswith(drop)}


def _family(state: dict[str, torch.Tensor]) -> str | None:
    if "conv1.weight" in state and any(k.startswith("layer4.") for k in state):
        return "resnet"
    if "patch_embed.proj.weight" in state and "blocks.0.attn.qkv.weight" in state:
        return "vit"
    return None


def _build_published(fmt: str, state: dict[str, torch.Tensor], obs_shape: tuple[int, int, int] | None,
                     source: str) -> Encoder:
    from worldssl.encoders.timm_backbones import ResNetEncoder

    if _family(state) == "resnet":
        arch = _resnet_arch(state, source)
        in_chans = int(state["conv1.weight"].shape[1])
        target = _target_shape(obs_shape, (in_chans, 224, 224), source)
        encoder = ResNetEncoder(target, arch)
        _load_strict(encoder, {f"net.{k}": v for k, v in state.items()}, source=f"{source} ({fmt})")
        return encoder
    encoder, state = _vit_from_state(state, obs_shape, source)
    _load_strict(encoder, {f"vit.{k}": v for k, v in state.items()}, source=f"{source} ({fmt})")
    return encoder


def _target_shape(obs_shape: tuple[int, int, int] | None, native: tuple[int, int, int],
                  source: str) -> tuple[int, int, int]:
    if obs_shape is None:
        return native
    target = tuple(int(s) for s in obs_shape)
    if len(target) != 3 or target[0] != native[0]:
        hint = (f"; for {target[0] // native[0]} stacked frames wrap it: FrameWise(load(path), "
                f"frames={target[0] // native[0]})" if len(target) == 3 and target[0] % native[0] == 0 else "")
        raise CheckpointError(f"{source} takes {native[0]}-channel images; obs_shape {obs_shape} does not fit{hint}")
    return target


def _resnet_arch(state: dict[str, torch.Tensor], source: str) -> str:
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("layer3.")}
    bottleneck = "layer1.0.conv3.weight" in state
    arch = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50"}.get((bottleneck, len(blocks)))
    if arch is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise CheckpointError(f"{source}: a ResNet with {len(blocks)} {kind} blocks in layer3 is not supported "
                              f"(resnet18, resnet34, resnet50 are)")
    return arch


def _vit_from_state(state: dict[str, torch.Tensor], obs_shape: tuple[int, int, int] | None,
                    source: str) -> tuple[Encoder, dict[str, torch.Tensor]]:
    """A :class:`ViTEncoder` shaped like the timm-keyed ``state``, and the state (pos_embed resampled if asked)."""
    from worldssl.encoders.timm_backbones import VIT_ARCHES, ViTEncoder

    embed, in_chans, patch, patch_w = state["patch_embed.proj.weight"].shape
    if patch != patch_w:
        raise CheckpointError(f"{source}: non-square patches {patch}x{patch_w} are not supported")
    if "cls_token" not in state or "pos_embed" not in state:
        raise CheckpointError(f"{source}: ViT without cls_token / pos_embed is not supported")
    depth = len({int(k.split(".")[1]) for k in state if k.startswith("blocks.")})
    heads = _VIT_HEADS.get(int(embed), max(1, int(embed) // 64))
    mlp_ratio = state["blocks.0.mlp.fc1.weight"].shape[0] / embed
    prefix = state["cls_token"].shape[1]
    side = math.isqrt(state["pos_embed"].shape[1] - prefix)
    if side * side != state["pos_embed"].shape[1] - prefix:
        raise CheckpointError(f"{source}: pos_embed of {state['pos_embed'].shape[1]} tokens is not a square grid")
    arch = next((a for a, (e, d, h) in VIT_ARCHES.items() if (e, d, h) == (embed, depth, heads)),
                next((a for a, (e, _, _) in VIT_ARCHES.items() if e == embed), "vit_base"))
    global_pool = "avg" if "fc_norm.weight" in state else "token"
    target = _target_shape(obs_shape, (int(in_chans), side * patch, side * patch), source)
    try:
        encoder = ViTEncoder(target, arch=arch, patch_size=int(patch), global_pool=global_pool, depth=depth,
                             embed_dim=int(embed), num_heads=heads, mlp_ratio=mlp_ratio)
    except ValueError as e:
        raise CheckpointError(f"{source}: cannot build its ViT for obs_shape {target}: {e}") from e
    grid = tuple(encoder.vit.patch_embed.grid_size)
    state = {**state, "pos_embed": _resample_pos_embed(state["pos_embed"], (side, side), grid, prefix)}
    return encoder, state


# ------------------------------------------------------------------------------------------------ frame-wise
class FrameWise(Encoder):
    """Apply a single-frame encoder to each frame of a stacked observation and concatenate the features.

    How PVR uses ImageNet encoders on frame stacks: ``(B, F*C, H, W)`` -> ``F`` passes of ``(B, C, H, W)`` ->
    ``(B, F*D)``. The inner encoder normalises its own frames.
    """

    kind = "framewise"

    def __init__(self, encoder: Encoder, frames: int):
        c, h, w = encoder.obs_shape
        super().__init__((c * int(frames), h, w))
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.frames, self.encoder = int(frames), encoder
        self.frozen = encoder.frozen
        self.finish_init()

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return obs  # the inner encoder normalises each frame (same input contract)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        frames = x.reshape(b * self.frames, -1, h, w)  # [B*F, C, H, W], frame-major within a sample
        return self.encoder(frames).reshape(b, -1)  # [B, F*D]

    def arch_config(self) -> dict[str, Any]:
        return {"frames": self.frames, "inner_kind": self.encoder.kind, "inner_config": self.encoder.arch_config()}

    def normalization(self) -> dict[str, Any]:
        return {"type": "per_frame", "frames": self.frames, "inner": _normalization(self.encoder)}

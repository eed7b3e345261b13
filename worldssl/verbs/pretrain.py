"""``worldssl pretrain``: self-supervised encoder training on an episode dataset, resumable."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.runtime.errors import ConfigError
from worldssl.runtime.logger import Logger
from worldssl.verbs._run import run_dir, save_config

log = logging.getLogger("worldssl.pretrain")
_POSITIVE = ("steps", "batch_size", "log_every", "save_every", "temporal_offset", "sequence_length", "probe_frames")


def validate(cfg: Any) -> None:
    from worldssl.encoders import ENCODERS
    from worldssl.ssl import OBJECTIVES

    if OmegaConf.is_missing(cfg, "data"):
        raise ConfigError("data= is required: a dataset directory from `worldssl collect` (e.g. data=data/shapes)")
    for key in _POSITIVE:
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if not float(cfg.lr) > 0:
        raise ConfigError(f"lr must be > 0, got {cfg.lr!r}")
    if cfg.ssl.name not in OBJECTIVES:
        raise ConfigError(f"unknown ssl {cfg.ssl.name!r}; valid: {', '.join(OBJECTIVES)}")
    if cfg.backbone.kind not in ENCODERS:
        raise ConfigError(f"unknown backbone kind {cfg.backbone.kind!r}; valid: {', '.join(ENCODERS)}")
    if cfg.ssl.name == "mae" and cfg.backbone.kind != "vit":
        raise ConfigError("ssl=mae needs a ViT backbone; use backbone=vit_tiny or backbone=vit_small")


def settings_from(cfg: Any) -> Any:
    from worldssl.ssl.train import PretrainSettings

    names = {f.name for f in dataclasses.fields(PretrainSettings)}
    values = {k: cfg[k] for k in names if k in cfg}
    values["progress"] = bool(cfg.progress)
    return PretrainSettings(**values)


def build_objective(cfg: Any, ds: Any):
    """Backbone + objective from the config, sized from the dataset (never typed by hand)."""
    import worldssl.encoders as encoders
    import worldssl.ssl as ssl

    encoder = encoders.build(cfg.backbone.kind, ds.obs_shape, **OmegaConf.to_container(cfg.backbone.kwargs))
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.ssl.kwargs).items() if v is not None}
    if cfg.ssl.name == "cpc" and kwargs.get("action_conditioned"):
        space = ds.manifest["action_space"]
        kwargs.setdefault("discrete", space["type"] == "discrete")
        kwargs.setdefault("action_dim", space["n"] if space["type"] == "discrete" else int(space["shape"][0]))
    try:
        return ssl.build(cfg.ssl.name, encoder, **kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad ssl.kwargs for {cfg.ssl.name}: {e}") from e


def run(cfg: Any) -> dict[str, Any]:
    from worldssl.data import EpisodeDataset
    from worldssl.eval.probe import format_results, pca_plot, probe_encoder, probed_names
    from worldssl.runtime.device import resolve_device, seed_everything
    from worldssl.ssl.train import Pretrainer

    validate(cfg)
    directory = Path(cfg.resume) if cfg.resume else run_dir()
    if cfg.resume and not (directory / "checkpoints" / "train_state.pt").is_file():
        raise ConfigError(f"resume={cfg.resume} has no checkpoints/train_state.pt; give a pretrain run directory")
    save_config(cfg, directory)
    device = resolve_device(cfg.device)
    ds = EpisodeDataset(cfg.data)
    seed_everything(int(cfg.seed))  # before building: the initial weights come from torch's RNG
    objective = build_objective(cfg, ds)
    meta = {"ssl": cfg.ssl.name, "ssl_kwargs": OmegaConf.to_container(cfg.ssl.kwargs),
            "dataset": str(Path(cfg.data).resolve()), "env_id": ds.manifest["env_id"], "seed": cfg.seed}
    trainer = Pretrainer(objective, ds, settings_from(cfg), directory, device, encoder_meta=meta)
    if cfg.resume:
        trainer.load(directory / "checkpoints")
        log.info("resumed from step %d", trainer.step)
    with Logger(directory) as logger:
        summary: dict[str, Any] = {"ssl": cfg.ssl.name, "backbone": cfg.backbone.kind, "dataset": meta["dataset"],
                                   "device": str(device), "encoder": str(directory / "checkpoints" / "encoder")}
        summary.update(trainer.train(logger))
        if cfg.probe:
            dims = OmegaConf.to_container(cfg.probe_dims) if cfg.probe_dims is not None else None
            results, feats, states = probe_encoder(objective.encoder, ds, cfg.probe_frames, device=device,
                                                   seed=cfg.seed, dims=dims)
            print(format_results(results))
            for r in results:
                summary[f"probe/{r.name}/ridge_r2"] = r.r2_ridge
                summary[f"probe/{r.name}/knn_r2"] = r.r2_knn
            logger.log({f"probe/{r.name.replace(' ', '_')}/ridge_r2": r.r2_ridge for r in results}, trainer.step)
            first = probed_names(ds, dims)[0]
            pca_plot(feats, states[:, 0], directory / "features_pca.png", f"{cfg.ssl.name} features, coloured by {first}")
        logger.summary(summary)
    print(f"pretrain: {cfg.ssl.name} on {cfg.backbone.kind}, {summary['step']} steps; encoder at {summary['encoder']}")
    return summary

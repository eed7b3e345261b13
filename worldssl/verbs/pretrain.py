"""``worldssl pretrain``: self-supervised encoder training on an episode dataset, resumable."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.runtime import settings as runtime_settings
from worldssl.runtime.errors import ConfigError
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import boolean, positive_int, setting
from worldssl.ssl.train import PretrainSettings
from worldssl.verbs._run import probe_summary, resolve_auto_resume, run_dir, save_config

log = logging.getLogger("worldssl.pretrain")


@dataclasses.dataclass
class PretrainRunSettings(PretrainSettings):
    """The verb's checked keys: the loop's (:class:`~worldssl.ssl.train.PretrainSettings`) plus its own."""

    probe: bool = setting(True, boolean, "probe the true state from frozen features at the end")
    probe_frames: int = setting(4000, positive_int, "frames used by that probe")


def validate(cfg: Any) -> None:
    from worldssl.encoders import ENCODERS
    from worldssl.ssl import OBJECTIVES

    if OmegaConf.is_missing(cfg, "data"):
        raise ConfigError("data= is required: a dataset directory from `worldssl collect` (e.g. data=data/shapes)")
    settings_from(cfg)
    if cfg.ssl.name not in OBJECTIVES:
        raise ConfigError(f"unknown ssl {cfg.ssl.name!r}; valid: {', '.join(OBJECTIVES)}")
    if cfg.backbone.kind not in ENCODERS:
        raise ConfigError(f"unknown backbone kind {cfg.backbone.kind!r}; valid: {', '.join(ENCODERS)}")
    if cfg.ssl.name == "mae" and cfg.backbone.kind != "vit":
        raise ConfigError("ssl=mae needs a ViT backbone; use backbone=vit_tiny or backbone=vit_small")


def settings_from(cfg: Any) -> Any:
    """The run's settings from the config, every declared key checked (one-line ConfigError)."""
    return runtime_settings.settings_from(PretrainRunSettings, cfg)


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

    done = resolve_auto_resume(cfg, "pretrain")
    if done is not None:
        return done
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
    settings = settings_from(cfg)
    trainer = Pretrainer(objective, ds, settings, directory, device, encoder_meta=meta)
    if cfg.resume:
        trainer.load(directory / "checkpoints")
        log.info("resumed from step %d", trainer.step)
    with Logger(directory) as logger:
        summary: dict[str, Any] = {"ssl": cfg.ssl.name, "backbone": cfg.backbone.kind, "dataset": meta["dataset"],
                                   "device": str(device), "encoder": str(directory / "checkpoints" / "encoder")}
        summary.update(trainer.train(logger))
        if settings.probe:
            dims = OmegaConf.to_container(cfg.probe_dims) if cfg.probe_dims is not None else None
            results, feats, states = probe_encoder(objective.encoder, ds, settings.probe_frames, device=device,
                                                   seed=settings.seed, dims=dims)
            print(format_results(results))
            probed = probe_summary(results)
            summary.update(probed)
            logger.log({k: v for k, v in probed.items() if k.endswith("/ridge_r2")}, trainer.step)
            first = probed_names(ds, dims)[0]
            pca_plot(feats, states[:, 0], directory / "features_pca.png", f"{cfg.ssl.name} features, coloured by {first}")
        logger.summary(summary)
    print(f"pretrain: {cfg.ssl.name} on {cfg.backbone.kind}, {summary['step']} steps; encoder at {summary['encoder']}")
    return summary

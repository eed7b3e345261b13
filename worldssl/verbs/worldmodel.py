"""``worldssl worldmodel``: train a latent world model on an episode dataset, evaluating as it goes; resumable.

The model is ``encoder`` + ``transition`` (+ heads) and the loss is ``objective``; comparing objectives is one
override (``objective=contrastive|infonce|generative_ae|generative_vae|selfpredictive``) with everything else
fixed. :func:`train` is the API the ``compare`` verb reuses.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.runtime import settings as runtime_settings
from worldssl.runtime.errors import ConfigError, DataError
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import boolean, list_of, one_of, positive_int, setting
from worldssl.verbs._run import probe_summary, resolve_auto_resume, run_dir, save_config
from worldssl.worldmodels.train import WorldModelSettings

log = logging.getLogger("worldssl.worldmodel")
LOADS = ("auto", "memory", "mmap", "stream")


@dataclasses.dataclass
class WorldModelRunSettings(WorldModelSettings):
    """The verb's checked keys: the loop's (:class:`~worldssl.worldmodels.train.WorldModelSettings`) plus its
    own (``compare`` extends these)."""

    holdout_episodes: int = setting(100, positive_int, "with eval_data null: the last N episodes of data are held out")
    load: str = setting("auto", one_of(*LOADS), "how datasets are read (stream: from disk, nothing held)")
    reward: bool = setting(False, boolean, "add a reward head")
    figures: bool = setting(True, boolean, "write curves.png, object maps and prediction PNGs")
    probe: bool = setting(True, boolean, "probe the true state from the latent at the end")
    probe_frames: int = setting(2000, positive_int, "frames used by that probe")
    plan: bool = setting(False, boolean, "at the end, planning success (Shapes, Cubes, maze; worldssl eval plan)")
    plan_planner: str = setting("exhaustive", one_of("exhaustive", "beam", "cem", "mppi"), "that evaluation's planner")
    plan_horizon: int = setting(1, positive_int, "its planning horizon")
    plan_episodes: int = setting(10, positive_int, "its episodes per goal distance (the maze: episodes)")
    plan_distances: tuple[int, ...] = setting((1, 2, 3, 5, 8, 10), list_of(positive_int), "its true goal distances")


def validate(cfg: Any) -> None:
    from worldssl.worldmodels.build import TRANSITIONS
    from worldssl.worldmodels.objectives import OBJECTIVES

    if OmegaConf.is_missing(cfg, "data"):
        raise ConfigError("data= is required: a dataset directory from `worldssl collect` "
                          "(e.g. worldssl collect env=shapes out=data/shapes episodes=1000)")
    settings_from(cfg)
    if cfg.objective.name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {cfg.objective.name!r}; valid: {', '.join(OBJECTIVES)}")
    if cfg.transition.name not in TRANSITIONS:
        raise ConfigError(f"unknown transition {cfg.transition.name!r}; valid: {', '.join(TRANSITIONS)}")


def settings_from(cfg: Any) -> Any:
    """The run's settings from the config, every declared key checked (one-line ConfigError); ``window: null``
    stays None and the trainer makes it the objective's horizon."""
    return runtime_settings.settings_from(WorldModelRunSettings, cfg)


def encoder_config(cfg: Any, env_id: str) -> dict[str, Any] | str:
    """The encoder entry of the model spec: ``size: auto`` picks C-SWM's extractor for the env."""
    enc = OmegaConf.to_container(cfg.encoder, resolve=True)
    if "checkpoint" in enc:
        return {"checkpoint": str(Path(enc["checkpoint"]).resolve()), "freeze": bool(enc.get("freeze", True))}
    if enc.get("size") == "auto":
        enc["size"] = "large" if "Cubes" in env_id else "small"
    return enc


def model_spec(cfg: Any, ds: Any) -> dict[str, Any]:
    """What :func:`worldssl.worldmodels.train.build_from_spec` needs, from the config and the dataset."""
    transition = OmegaConf.to_container(cfg.transition, resolve=True)
    name = transition.pop("name")
    latent = {k: v for k, v in transition.items() if v is not None}
    kwargs = {k: v for k, v in OmegaConf.to_container(cfg.objective.kwargs, resolve=True).items() if v is not None}
    return {"obs_shape": list(ds.obs_shape), "action_space": ds.manifest["action_space"],
            "encoder": encoder_config(cfg, ds.manifest["env_id"]), "transition": name, "latent": latent,
            "objective": cfg.objective.name, "objective_kwargs": kwargs,
            "reward": bool(cfg.reward) or float(kwargs.get("reward_weight", 0.0)) > 0,
            "dataset": str(Path(cfg.data).resolve()), "env_id": ds.manifest["env_id"], "seed": int(cfg.seed)}


def open_datasets(cfg: Any) -> tuple[Any, Any, str]:
    """Train and eval datasets; without ``eval_data``, the last ``holdout_episodes`` of ``data`` are held out."""
    from envs.config import env_config
    from worldssl.data import EpisodeDataset

    env = cfg.get("env")
    expect = env_config(env).id if env is not None else None
    train = EpisodeDataset(cfg.data, load=cfg.load, expect_env=expect)
    if cfg.eval_data:
        eval_set = EpisodeDataset(cfg.eval_data, load=cfg.load, expect_env=train.manifest["env_id"])
        if tuple(eval_set.obs_shape) != tuple(train.obs_shape):
            raise DataError(f"eval_data {cfg.eval_data} gives observations {eval_set.obs_shape} but data gives "
                            f"{train.obs_shape}; collect both with the same env settings")
        return train, eval_set, str(Path(cfg.eval_data).resolve())
    n = train.num_episodes
    hold = min(int(cfg.holdout_episodes), n // 5)  # checked by validate
    if hold < 1:
        raise DataError(f"{cfg.data} has only {n} episodes: too few to hold some out for evaluation; "
                        f"collect more or give eval_data=DIR")
    log.info("no eval_data: holding out the last %d of %d episodes for evaluation (pool %d)", hold, n, hold)
    return train.subset(range(n - hold)), train.subset(range(n - hold, n)), f"last {hold} episodes of data"


def train(cfg: Any, directory: Path, quiet: bool = False) -> dict[str, Any]:
    """Train (or resume) one world model into ``directory``; returns the summary (also in summary.json)."""
    from worldssl.runtime.device import resolve_device, seed_everything
    from worldssl.worldmodels.train import WorldModelTrainer, build_from_spec

    validate(cfg)
    settings = settings_from(cfg)
    if cfg.resume and not (Path(cfg.resume) / "checkpoints" / "train_state.pt").is_file():
        raise ConfigError(f"resume={cfg.resume} has no checkpoints/train_state.pt; give a worldmodel run directory")
    save_config(cfg, directory)
    device = resolve_device(cfg.device)
    train_set, eval_set, eval_name = open_datasets(cfg)
    spec = model_spec(cfg, train_set)
    seed_everything(int(cfg.seed))  # before building: initial weights come from torch's RNG
    model, objective = build_from_spec(spec)
    trainer = WorldModelTrainer(model, objective, train_set, settings, directory, device, eval_set=eval_set, spec=spec)
    generative = model.decoder is not None
    if generative:
        from worldssl.eval.prediction import pixel_prediction_error

        trainer.evaluators.append(lambda m: pixel_prediction_error(m, eval_set, steps=settings.eval_steps,
                                                                   device=device))
    if cfg.resume:
        trainer.load(Path(cfg.resume) / "checkpoints")
        log.info("resumed at epoch %d, step %d", trainer.epoch, trainer.step)
    with Logger(directory) as logger:
        summary: dict[str, Any] = {"objective": spec["objective"], "encoder": spec["encoder"],
                                   "transition": spec["transition"], "dataset": spec["dataset"],
                                   "eval_dataset": eval_name, "env_id": spec["env_id"], "seed": spec["seed"],
                                   "device": str(device), "steps_per_epoch": trainer.steps_per_epoch,
                                   "checkpoint": str(directory / "checkpoints")}
        summary.update(trainer.train(logger))
        model = trainer.selected_model()  # what the final evaluation ranked
        if settings.figures:
            summary["figures"] = _figures(model, eval_set, directory, settings.eval_steps, device)
            summary["figures"] += _curves(directory, str(spec["objective"]))
        if settings.probe and train_set.has_state:
            summary.update(_probe(model, spec, eval_set if eval_set.num_episodes >= 10 else train_set,
                                  settings.probe_frames, device, settings.seed, quiet))
        if settings.plan:
            summary.update(_plan(model, spec, settings, device, quiet))
        logger.summary(summary)
    if not quiet:
        print(ranking_line(summary))
    return summary


def _figures(model: Any, ds: Any, directory: Path, steps: tuple[int, ...], device: Any) -> list[str]:
    from worldssl.eval.prediction import prediction_grid, slot_maps

    made = []
    if getattr(model.encoder, "kind", None) == "slots":
        made.append(str(slot_maps(model, ds, directory / "object_maps.png", device=device)))
    if model.decoder is not None:
        made.append(str(prediction_grid(model, ds, directory / "predictions.png", steps=steps, device=device)))
    return made


def _curves(directory: Path, label: str) -> list[str]:
    """``curves.png``: this run's loss and Hits@1 per epoch (once an epoch has finished)."""
    from worldssl.eval.curves import curves_plot, epoch_records

    records = epoch_records(directory)
    return [str(curves_plot([(label, records)], directory / "curves.png"))] if records else []


def _probe(model: Any, spec: dict[str, Any], ds: Any, frames: int, device: Any, seed: int,
           quiet: bool) -> dict[str, float]:
    import torch

    from worldssl.eval.prediction import object_state_groups, probe_latents, slot_alignment
    from worldssl.eval.probe import format_results
    from worldssl.worldmodels.train import build_from_spec

    torch.manual_seed(seed + 1)
    twin, _ = build_from_spec(spec)
    results = probe_latents(model, ds, max_frames=frames, device=device, seed=seed, baseline=twin.to(device))
    if not quiet:
        print(format_results(results))
    out: dict[str, Any] = probe_summary(results)
    if getattr(model.encoder, "kind", None) == "slots" and object_state_groups(ds.manifest.get("state_names") or []):
        align = slot_alignment(model, ds, max_frames=frames, device=device, seed=seed)
        out["probe/slots/matched_r2"] = align["matched_r2"]
        out["probe/slots/assignment"] = align["assignment"]
        out["probe/slots/r2"] = align["r2"]
        if not quiet:
            print(f"slot alignment: mean R^2 of each object's coordinates from its matched slot "
                  f"{align['matched_r2']:.3f} (object -> slot {align['assignment']})")
    return out


def _plan(model: Any, spec: dict[str, Any], settings: Any, device: Any, quiet: bool) -> dict[str, Any]:
    """Planning success of the final model (:mod:`worldssl.eval.plan`); envs without one are skipped."""
    from worldssl.eval.plan import (
        GRID_ENVS,
        MAZE_ENVS,
        PlanSettings,
        env_for_model,
        evaluate_planning,
        format_planning,
    )

    if spec["env_id"] not in GRID_ENVS + MAZE_ENVS:
        log.warning("plan=true: planning success is defined for Shapes, Cubes and the maze, not %s; skipped",
                    spec["env_id"])
        return {}
    env_id, kwargs, stack = env_for_model(spec)
    plan = PlanSettings(planner=settings.plan_planner, horizon=settings.plan_horizon, episodes=settings.plan_episodes,
                        distances=settings.plan_distances, seed=settings.seed)
    out = evaluate_planning(model, env_id, kwargs, stack, plan, device)
    if not quiet:
        print(format_planning(out, plan.planner))
    return out


def ranking_line(summary: dict[str, Any]) -> str:
    """``worldmodel contrastive: Hits@1 / MRR at 1 step 99.2 / 99.6, ... (pool 1000)``."""
    parts = []
    for key in sorted((k for k in summary if k.startswith("eval/hits@1/")), key=lambda k: int(k.rsplit("/", 1)[1])):
        k = key.rsplit("/", 1)[1]
        parts.append(f"{k} step{'s' if k != '1' else ''} {summary[key]:.1f} / {summary[f'eval/mrr/{k}']:.1f}")
    pool = next((summary[k] for k in summary if k.startswith("eval/pool/")), "?")
    return (f"worldmodel {summary['objective']}: Hits@1 / MRR at " + ", ".join(parts) + f" (pool {pool}); "
            f"{summary['epoch']} epochs, {summary['seconds']} s; checkpoint {summary['checkpoint']}")


def run(cfg: Any) -> dict[str, Any]:
    done = resolve_auto_resume(cfg, "worldmodel")
    if done is not None:
        return done
    directory = Path(cfg.resume) if cfg.resume else run_dir()
    return train(cfg, directory)

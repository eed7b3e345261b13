"""``worldssl eval WHAT``: judge a representation (``probe``: state probes from frozen features; ``curves``:
per-epoch training loss and ranking of world-model runs, as a table and a PNG; ``returns``: eval returns of
``worldssl train`` runs grouped by label, with 95% intervals over seeds and the curves; ``plan``: closed-loop
planning success of a world-model run on Shapes, Cubes or the maze, beside a random policy and an oracle)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.runtime.errors import ConfigError
from worldssl.runtime.logger import Logger
from worldssl.runtime.settings import (
    Settings,
    between,
    boolean,
    integer,
    non_negative_int,
    optional,
    positive_int,
    setting,
    settings_from,
)
from worldssl.verbs._run import probe_summary, run_dir, save_config

WHAT = ("probe", "curves", "returns", "plan")


@dataclasses.dataclass
class ProbeSettings(Settings):
    """``eval probe``'s checked keys (``data`` and ``encoder.checkpoint`` are required, see :func:`validate`)."""

    max_frames: int | None = setting(4000, optional(positive_int), "frames probed (an even random subset); null: all")
    test_fraction: float = setting(0.2, between(0, 1), "share of episodes held out (the last ones)")
    knn_k: int = setting(5, positive_int, "neighbours of the k-NN probe")
    batch_size: int = setting(256, positive_int, "frames per encoder batch")
    seed: int = setting(0, integer, "seeds the frame subset")
    baselines: bool = setting(True, boolean, "also probe a random-init twin and raw 16x16 pixels")
    plot: bool = setting(True, boolean, "PCA of the features coloured by a state variable, as PNG")
    plot_state: int = setting(0, non_negative_int, "index (among the probed variables) of that state variable")


def validate(cfg: Any) -> None:
    if cfg.what not in WHAT:
        raise ConfigError(f"unknown evaluation {cfg.what!r}; valid: {', '.join(WHAT)} (e.g. `worldssl eval probe`)")
    if cfg.what == "returns":
        if not cfg.runs:
            raise ConfigError("runs= is required: train run directories, e.g. worldssl eval returns "
                              "runs=[runs/train/A,runs/train/B] labels=[scratch,scratch]")
        if cfg.at_frame is not None and (not isinstance(cfg.at_frame, int) or cfg.at_frame < 0):
            raise ConfigError(f"at_frame must be a frame count >= 0 or null, got {cfg.at_frame!r}")
        return
    if cfg.what == "plan":
        from worldssl.eval.plan import PlanSettings

        if not cfg.run:
            raise ConfigError("run= is required: a worldmodel run directory, e.g. worldssl eval plan "
                              "run=runs/worldmodel/DATE/TIME")
        if cfg.env_kwargs is not None and not OmegaConf.is_dict(cfg.env_kwargs):
            raise ConfigError(f"env_kwargs must be a mapping, e.g. env_kwargs={{action_type: continuous}}, "
                              f"got {cfg.env_kwargs!r}")
        settings_from(PlanSettings, cfg)
        return
    if cfg.what == "curves":
        if not cfg.runs:
            raise ConfigError("runs= is required: worldmodel run directories, e.g. worldssl eval curves "
                              "runs=[runs/worldmodel/DATE/TIME]")
        if cfg.steps is not None and not all(str(k).isdigit() and int(k) > 0 for k in _as_list(cfg.steps)):
            raise ConfigError(f"steps must be positive prediction horizons, e.g. steps=[10], got {cfg.steps}")
        return
    for key, missing in (("data", OmegaConf.is_missing(cfg, "data")),
                         ("encoder.checkpoint", OmegaConf.is_missing(cfg.encoder, "checkpoint"))):
        if missing:
            raise ConfigError(f"{key}= is required (e.g. worldssl eval probe encoder.checkpoint=RUN/checkpoints/encoder "
                              f"data=data/shapes)")
    settings_from(ProbeSettings, cfg)


def run(cfg: Any) -> dict[str, Any]:
    validate(cfg)
    if cfg.what == "curves":
        return curves(cfg)
    if cfg.what == "returns":
        return returns(cfg)
    if cfg.what == "plan":
        return plan(cfg)
    return probe(cfg)


def plan(cfg: Any) -> dict[str, Any]:
    """``eval plan``: planning success of a world-model run by true goal distance, with the baselines."""
    import json

    from worldssl.eval.plan import PlanSettings, env_for_model, evaluate_planning, format_planning
    from worldssl.runtime.device import resolve_device
    from worldssl.worldmodels.train import MODEL_JSON, load_world_model

    s = settings_from(PlanSettings, cfg)
    device = resolve_device(cfg.device)
    model = load_world_model(cfg.run, device)
    ckpt = Path(cfg.run) / "checkpoints" if (Path(cfg.run) / "checkpoints").is_dir() else Path(cfg.run)
    spec = json.loads((ckpt / MODEL_JSON).read_text())
    env_id, kwargs, stack = env_for_model(spec)
    env_id = cfg.env_id or env_id
    kwargs = {**kwargs, **(OmegaConf.to_container(cfg.env_kwargs) if cfg.env_kwargs else {})}
    directory = run_dir()
    save_config(cfg, directory)
    summary = evaluate_planning(model, env_id, kwargs, stack, s, device)
    print(f"eval plan: {spec.get('objective')} world model {cfg.run} in {env_id}, planner {s.planner} "
          f"(horizon {s.horizon}), cost {s.cost}, {'batched' if s.batched else 'one episode at a time'}")
    print(format_planning(summary, s.planner))
    summary.update({"run": str(Path(cfg.run).resolve()), "objective": spec.get("objective"), "env_id": env_id,
                    "settings": dataclasses.asdict(s)})
    with Logger(directory, tensorboard=False) as logger:
        logger.summary(summary)
    return summary


def returns(cfg: Any) -> dict[str, Any]:
    """``eval returns``: final / best eval return per label over its seeds, as a table, markdown and a PNG."""
    from worldssl.eval.returns import format_returns, group_returns, returns_figure, returns_table
    from worldssl.runtime.io import atomic_open, save_figure

    directory = run_dir()
    save_config(cfg, directory)
    runs = _as_list(cfg.runs)
    labels = _as_list(cfg.labels) if cfg.labels is not None else None
    groups = group_returns(runs, labels)
    rows = returns_table(groups, cfg.at_frame)
    print(format_returns(rows))
    with atomic_open(directory / "returns.md", "w") as f:
        f.write(format_returns(rows, markdown=True) + "\n")
    path = save_figure(returns_figure(groups, cfg.title or ""), cfg.out or directory / "returns.png")
    print(f"returns: {path}")
    summary = {"rows": rows, "plot": str(path)}
    with Logger(directory, tensorboard=False) as logger:
        logger.summary(summary)
    return summary


def curves(cfg: Any) -> dict[str, Any]:
    """``eval curves``: print each run's per-epoch table and write one PNG of them all."""
    from worldssl.eval.curves import run_curves

    directory = run_dir()
    save_config(cfg, directory)
    runs = _as_list(cfg.runs)
    labels = _as_list(cfg.labels) if cfg.labels is not None else None
    steps = [int(k) for k in _as_list(cfg.steps)] if cfg.steps is not None else None
    tables, path = run_curves(runs, cfg.out or directory / "curves.png", labels, steps)
    print(tables)
    print(f"curves: {path}")
    summary = {"runs": runs, "plot": str(path)}
    with Logger(directory, tensorboard=False) as logger:
        logger.summary(summary)
    return summary


def _as_list(value: Any) -> list[str]:
    return [str(v) for v in value] if OmegaConf.is_list(value) else [str(value)]


def probe(cfg: Any) -> dict[str, Any]:
    import worldssl.encoders as encoders
    from worldssl.data import EpisodeDataset
    from worldssl.eval.probe import format_results, pca_plot, probe_encoder, probed_names
    from worldssl.runtime.device import resolve_device

    directory = run_dir()
    save_config(cfg, directory)
    device = resolve_device(cfg.device)
    encoder = encoders.load(cfg.encoder.checkpoint, freeze=True)
    ds = EpisodeDataset(cfg.data)
    s = settings_from(ProbeSettings, cfg)
    dims = OmegaConf.to_container(cfg.dims) if cfg.dims is not None else None
    results, feats, states = probe_encoder(encoder, ds, s.max_frames, s.test_fraction, s.knn_k, s.baselines,
                                           device, s.seed, s.batch_size, dims)
    print(format_results(results))
    summary = {"encoder": str(cfg.encoder.checkpoint), "dataset": str(Path(cfg.data).resolve()),
               "state_names": ds.manifest.get("state_names", []),
               "results": [dataclasses.asdict(r) for r in results]}
    if s.plot:
        names = probed_names(ds, dims)
        if not s.plot_state < states.shape[1]:
            raise ConfigError(f"plot_state must be in [0, {states.shape[1] - 1}], got {s.plot_state}")
        summary["plot"] = str(pca_plot(feats, states[:, s.plot_state], directory / "features_pca.png",
                                       f"features coloured by {names[s.plot_state]}"))
    with Logger(directory) as logger:
        logger.log({k: v for k, v in probe_summary(results).items() if k.endswith("/ridge_r2")}, step=0)
        logger.summary(summary)
    return summary

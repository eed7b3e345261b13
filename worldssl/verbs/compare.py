"""``worldssl compare``: the main job. Is a generative transition objective better than a contrastive one?

One world model is trained per ``(objective, seed)`` with everything else identical: encoder, transition,
train and eval data, number of updates, evaluation. Each is ranked with C-SWM's protocol (Hits@1 / MRR at
1, 5 and 10 steps), and the table gives the mean and a 95% confidence interval over seeds. Missing datasets
are collected first. compare is a sweep plus a report: the runs are ``worldssl worldmodel`` jobs of one hydra
multirun (:mod:`worldssl.sweep.jobs`), launched by the launcher given on the command line
(``submitit_slurm`` on a cluster). Without one, ``jobs`` picks how many run at once on this machine: ``auto``
runs one per CPU core (as far as memory allows) through hydra's joblib launcher, one thread each, or one at a
time on a GPU. Every run lives in ``<out>/runs/<objective>/seed<seed>/``: a finished run (its
``summary.json``) is not run again and an interrupted one resumes from its checkpoint, so re-running the same
command (with the same ``out=``) continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.runtime.errors import ConfigError, WorldsslError
from worldssl.runtime.settings import Check, integer, list_of, positive_int, setting, settings_from
from worldssl.verbs._run import run_dir, save_config
from worldssl.verbs.worldmodel import WorldModelRunSettings

log = logging.getLogger("worldssl.compare")


def _distinct(check: Check) -> Check:
    return Check(check.valid.replace("list of", "list of distinct"), lambda v: check(v) and len(set(v)) == len(v),
                 check.convert)


@dataclasses.dataclass
class CompareSettings(WorldModelRunSettings):
    """The verb's checked keys: every ``worldmodel`` key (each run's settings) plus the comparison's own."""

    objectives: tuple[str, ...] = setting(("contrastive", "generative_ae", "selfpredictive"),
                                          _distinct(list_of(Check("a string", lambda v: isinstance(v, str)))),
                                          "the objectives compared")
    seeds: tuple[int, ...] = setting((0, 1, 2), _distinct(list_of(integer)), "one run per objective and seed")
    train_episodes: int = setting(1000, positive_int, "episodes collected for training when data is null")
    train_episode_steps: int = setting(100, positive_int, "steps of each collected train episode")
    eval_episodes: int = setting(1000, positive_int, "episodes collected for evaluation when eval_data is null")
    eval_episode_steps: int = setting(10, positive_int, "steps of each collected eval episode")
    jobs: Any = setting("auto", Check("auto or a positive integer", lambda v: v == "auto" or positive_int(v)),
                        "runs at once on this machine when no hydra/launcher is given")


def validate(cfg: Any) -> None:
    from worldssl.verbs import worldmodel
    from worldssl.worldmodels.objectives import OBJECTIVES

    settings = settings_from(CompareSettings, cfg)
    objectives = list(settings.objectives)
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise ConfigError(f"unknown objective(s) {', '.join(map(str, unknown))}; valid: {', '.join(OBJECTIVES)}")
    # entries for registered objectives that this run leaves out are allowed (compare.yaml sets one by default)
    extra = sorted(set(cfg.objective_kwargs or {}) - set(OBJECTIVES))
    if extra:
        raise ConfigError(f"objective_kwargs has entries for {', '.join(extra)}, which are not objectives; "
                          f"valid: {', '.join(OBJECTIVES)}")
    for name in sorted(set(objectives) | set(cfg.objective_kwargs or {})):
        objective_config(cfg, name)
    check = OmegaConf.merge(cfg, {"data": cfg.data or "<collected>"})
    worldmodel.validate(check)


def objective_config(cfg: Any, name: str) -> Any:
    """``configs/objective/<name>.yaml`` with ``objective_kwargs[name]`` merged over its defaults."""
    from worldssl.cli import CONFIG_DIR

    base = OmegaConf.load(Path(CONFIG_DIR) / "objective" / f"{name}.yaml")
    extra = (cfg.objective_kwargs or {}).get(name) or {}
    unknown = sorted(set(extra) - set(base.kwargs))
    if unknown:
        raise ConfigError(f"objective_kwargs.{name} has unknown option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(base.kwargs)}")
    return OmegaConf.merge(base, {"kwargs": extra})


def dataset_tag(env_id: str, kwargs: dict[str, Any]) -> str:
    """The name under ``data_root`` of an env's collected sets: its id (version included), plus a short hash of
    its kwargs when it has any, so another env, version, DMC task or look never lands on the same directory."""
    tag = env_id.split("/")[-1].lower()
    if kwargs:
        blob = json.dumps(kwargs, sort_keys=True, default=str).encode()
        tag += "-" + hashlib.sha1(blob).hexdigest()[:8]
    return tag


def datasets(cfg: Any) -> tuple[str, str]:
    """The train and eval dataset directories, collected first if the config names none."""
    from envs.config import env_config
    from worldssl.data import CollectSpec, collect

    env = env_config(cfg.env)
    tag = dataset_tag(env.id, env.kwargs)
    dirs = []
    for part, episodes, steps, seed, given in (
            ("train", cfg.train_episodes, cfg.train_episode_steps, 1, cfg.data),
            ("eval", cfg.eval_episodes, cfg.eval_episode_steps, 2, cfg.eval_data)):
        if given:
            dirs.append(str(given))
            continue
        out = Path(cfg.data_root) / f"{tag}-{part}-{episodes}x{steps}-seed{seed}"
        spec = CollectSpec(env_id=env.id, env_kwargs=env.kwargs, out=str(out), episodes=int(episodes), seed=seed,
                           max_episode_steps=int(steps), frame_stack=env.frame_stack)
        result = collect(spec, workers=1, progress=bool(cfg.progress))
        if result.new_episodes:
            print(f"compare: collected {result.new_episodes} {part} episodes of {env.id} into {out} "
                  f"({result.seconds:.1f} s)")
        dirs.append(str(out))
    return dirs[0], dirs[1]


def worldmodel_overrides(cfg: Any) -> list[str]:
    """The ``worldssl worldmodel`` overrides that reproduce this config's shared settings (every key but the
    comparison's own): its group choices (``encoder=``, ``transition=``, ``env=``) and each value that differs
    from what worldmodel composes to with them."""
    from worldssl.cli import compose_verb
    from worldssl.sweep.jobs import override

    try:
        from hydra.core.hydra_config import HydraConfig

        choices = dict(HydraConfig.get().runtime.choices)
    except ValueError:  # API use outside hydra: compare's own defaults
        choices = {"encoder": "slots", "transition": "gnn", "env": "shapes"}
    groups = [f"{g}={choices[g]}" for g in ("encoder", "transition", "env") if choices.get(g) not in (None, "null")]
    base = compose_verb("worldmodel", groups)
    mine = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k not in _COMPARE_KEYS]), resolve=True)
    theirs = OmegaConf.create(OmegaConf.to_container(base, resolve=True))
    out = list(groups)
    for key, value in _leaves({k: v for k, v in mine.items() if k not in ("data", "eval_data", "resume")}):
        there = OmegaConf.select(theirs, key, default="<absent>")
        if isinstance(there, str) and there == "<absent>":
            out.append("+" + override(key, value))
        elif (OmegaConf.to_container(there) if OmegaConf.is_config(there) else there) != value:
            out.append(override(key, value))
    return out


def _leaves(tree: dict[str, Any], prefix: str = ""):
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def run_jobs(cfg: Any, data: str, eval_data: str) -> list[Any]:
    """One ``worldssl worldmodel`` job per (seed, objective), in ``runs/<objective>/seed<seed>``."""
    from worldssl.sweep.jobs import Job, override

    shared = [*worldmodel_overrides(cfg), override("data", data), override("eval_data", eval_data)]
    jobs = []
    for seed in cfg.seeds:
        for objective in cfg.objectives:
            kwargs = OmegaConf.to_container(objective_config(cfg, objective).kwargs, resolve=True)
            given = (cfg.objective_kwargs or {}).get(objective) or {}
            own = [override(f"objective.kwargs.{k}", kwargs[k]) for k in given]
            jobs.append(Job("worldmodel", f"{objective}/seed{seed}",
                            (*shared, f"objective={objective}", *own, override("seed", int(seed)))))
    return jobs


_COMPARE_KEYS = ("objectives", "seeds", "objective_kwargs", "data_root", "train_episodes", "train_episode_steps",
                 "eval_episodes", "eval_episode_steps", "out", "objective", "jobs")


#: resident memory of one default Shapes run (1,000 x 100 train frames), with margin: 2.2-2.4 GB measured
RUN_GB = 3.0


def local_jobs(jobs: Any, count: int, device: str = "auto") -> int:
    """How many of ``count`` runs go at once on this machine: ``jobs``, or for ``auto`` one per usable CPU core
    on a CPU, as many as the available memory holds at :data:`RUN_GB` each, and one at a time on a GPU or MPS (the
    runs are small: several on one GPU gain little and share its memory). On a 2-core CPU two one-thread runs
    at once take about half the time of running them one after another (docs/results/compare-shapes.md)."""
    if jobs != "auto":
        return max(1, min(int(jobs), count))
    import os

    from worldssl.runtime.device import resolve_device

    if not (str(resolve_device()) if device == "auto" else device).startswith("cpu"):
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, count, int(available_gb() // RUN_GB)))


def available_gb() -> float:
    """Memory available to new processes (``MemAvailable`` of /proc/meminfo); unknown elsewhere: unlimited."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("inf")


def parallel_launcher(n: int) -> list[str]:
    """Launcher overrides that run ``n`` jobs at once through hydra's joblib launcher (none for ``n == 1``:
    hydra's basic launcher, in order). joblib's loky workers get ``cores // n`` threads each unless
    ``OMP_NUM_THREADS`` is set."""
    return [] if n <= 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n}"]


#: compare only launches jobs: the CLI does not claim a GPU for it (see worldssl.sweep.gpus)
ORCHESTRATOR = True


def run(cfg: Any) -> dict[str, Any]:
    from worldssl.eval.plan import append_planning, planning_section
    from worldssl.eval.report import (
        aggregate,
        append_section,
        comparison_plot,
        comparison_table,
        probe_tables,
        write_report,
    )
    from worldssl.runtime.io import write_json
    from worldssl.sweep.jobs import launch, launcher_overrides
    from worldssl.verbs import worldmodel

    validate(cfg)
    directory = Path(cfg.out) if cfg.out else run_dir()
    save_config(cfg, directory)
    data, eval_data = datasets(cfg)
    steps = tuple(int(k) for k in cfg.eval_steps)
    jobs = run_jobs(cfg, data, eval_data)
    launcher = launcher_overrides() or parallel_launcher(local_jobs(cfg.jobs, len(jobs), str(cfg.device)))
    results = launch(jobs, directory / "runs", launcher, label="compare")
    runs, images, missing = [], {}, []
    for result in results:
        objective, seed = result.job.name.split("/")[0], int(result.job.name.rsplit("seed", 1)[1])
        summary = result.summary
        if summary is None:
            missing.append(f"{objective} seed {seed} ({result.directory})")
            continue
        if result.status == "finished earlier":
            print(f"compare: {objective} seed {seed}: finished earlier, reusing {result.directory}")
        else:
            print("  " + worldmodel.ranking_line(summary))
        runs.append({"objective": objective, "seed": seed,
                     "metrics": {k: v for k, v in summary.items() if k.startswith(("eval/", "probe/", "plan/"))},
                     "seconds": summary.get("seconds")})
        for fig in summary.get("figures", []) if seed == cfg.seeds[0] else []:
            images[f"{objective}: {Path(fig).stem.replace('_', ' ')} (seed {seed})"] = str(
                Path(fig).resolve().relative_to(directory.resolve()))
    if not runs:
        raise WorldsslError(f"no run of the comparison finished (see the errors above); re-run the same command with "
                       f"out={directory} to retry")
    rows = aggregate(runs)
    table = comparison_table(rows, steps)
    print(table)
    probes = probe_tables(rows)  # None unless the runs probed the true state (probe=true)
    if probes:
        print("state probes (R^2 of the true object coordinates from the latent; twin = the same encoder untrained):")
        print(probes[0])
    planning = planning_section(rows, directory, steps)  # None unless the runs evaluated planning (plan=true)
    plot = comparison_plot(rows, directory / "comparison.png", steps)
    env_id = json.loads((Path(data) / "manifest.json").read_text())["env_id"]
    notes = [f"env {env_id}; train data {Path(data).resolve()}; eval data {Path(eval_data).resolve()}",
             f"encoder {OmegaConf.to_container(cfg.encoder)}, transition {OmegaConf.to_container(cfg.transition)}",
             f"{cfg.epochs} epochs of batch {cfg.batch_size} (lr {cfg.lr}) for every objective; seeds "
             f"{list(cfg.seeds)}",
             "ranking as in C-SWM: the candidate pool is the whole eval set (pool column); ties count for the "
             "right answer"]
    if missing:
        notes.append(f"not in the table (failed or not finished): {'; '.join(missing)}")
    report = write_report(directory / "report.md", f"World-model objectives on {env_id}", rows, steps,
                          {"Hits@1 and MRR vs prediction steps": plot.name, **images}, notes)
    if probes:
        notes_probe = ("R^2 of a ridge and a k-NN regression of the true state from the latent on held-out eval frames, "
                       "mean ± 95% CI over seeds; the twin is the same encoder at its random initialisation; slot R2 "
                       "reads each object from its best-matched slot")
        append_section(report, "State probes", f"{probes[1]}\n\n{notes_probe}.")
    append_planning(report, planning)
    result = {"report": str(report), "runs": runs, "table": table, "unfinished": missing}
    write_json(directory / "summary.json", result)
    print(f"compare: report at {report}")
    return result

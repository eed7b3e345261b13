"""The named experiments of ``configs/experiment/`` as stages of jobs.

An experiment config holds the numbers (axes, and each size's budgets as lists of CLI overrides); the builder
here holds the structure: which verbs run in which order and which run feeds which (the frozen encoder of a
task is the one pretrained on that task's frames, with the same seed). Every job's run directory is named
after what varies (``<stage>/<task>/<encoder>-<mode>/seed<seed>``), so a re-run of the sweep finds its jobs,
and a job whose input (a dataset, a checkpoint) an earlier stage failed to make is reported as blocked instead
of launched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.runtime.errors import ConfigError
from worldssl.sweep.jobs import Job, override


@dataclasses.dataclass
class Stage:
    """Jobs of one verb run as one multirun in ``<sweep>/<name>/``; ``needs[job.name]`` lists the paths an
    earlier stage must have made for that job to start."""

    name: str
    jobs: list[Job]
    needs: dict[str, list[Path]] = dataclasses.field(default_factory=dict)


def _list(node: Any) -> list[str]:
    return [str(v) for v in (OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node or [])]


def _pick(table: Any, names: Any, what: str, experiment: str) -> dict[str, Any]:
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"experiment {experiment}: unknown {what} {', '.join(unknown)}; valid: {', '.join(table)}")
    return {n: table[n] for n in names}


def _collect(root: Path, name: str, env: list[str], size: list[str], seed: int) -> tuple[Job, Path]:
    out = root / "data" / name
    return Job("collect", name, (*env, *size, override("seed", seed), override("out", str(out)), "preview=false",
                                 "progress=false")), out


def objective_comparison(exp: Any, size: Any, root: Path) -> list[Stage]:
    envs = _pick(exp.envs, size.envs, "env", exp.name)
    collect, wm = Stage("collect", []), Stage("worldmodel", [])
    for env_name, env in envs.items():
        sets = {}
        for part, seed in (("train", 1), ("eval", 2)):  # C-SWM: train episodes seeded 1, eval episodes 2
            job, sets[part] = _collect(root, f"{env_name}-{part}", _list(env.env), _list(size[f"{part}_data"]), seed)
            collect.jobs.append(job)
        plan = ["plan=true", *_list(size.plan)] if env.plan else []  # planning success in the same run
        for objective in exp.objectives:
            for seed in size.seeds:
                name = f"{env_name}/{objective}/seed{seed}"
                wm.jobs.append(Job("worldmodel", name, (
                    *_list(env.env), *_list(env.worldmodel), f"objective={objective}",
                    override("data", str(sets["train"])), override("eval_data", str(sets["eval"])),
                    *_list(size.worldmodel), *plan, override("seed", int(seed)))))
                wm.needs[name] = [sets["train"] / "manifest.json", sets["eval"] / "manifest.json"]
    return [collect, wm]


def _pretrain_stages(exp: Any, size: Any, root: Path, tasks: dict[str, Any],
                     encoders: dict[str, Any]) -> tuple[list[Stage], dict[tuple[str, str, int], tuple[Path, Path]]]:
    """collect per task, then each encoder per task and seed; returns the stages and, per (task, encoder, seed),
    the checkpoint to give ``encoder.checkpoint=`` and the file that says its run finished."""
    collect, pre, wm = Stage("collect", []), Stage("pretrain", []), Stage("worldmodel", [])
    made: dict[tuple[str, str, int], tuple[Path, Path]] = {}
    extra = size.get("encoder_overrides") or {}
    for task, env in tasks.items():
        job, data = _collect(root, task, _list(env), _list(size.data), 1)
        collect.jobs.append(job)
        for encoder, ssl in encoders.items():
            for seed in size.seeds:
                name = f"{task}/{encoder}/seed{seed}"
                if ssl is None:  # a world model's encoder
                    wm.jobs.append(Job("worldmodel", name, (
                        override("data", str(data)), "objective=contrastive", *_list(size.worldmodel),
                        override("seed", int(seed)))))
                    wm.needs[name] = [data / "manifest.json"]
                    made[(task, encoder, seed)] = (root / "worldmodel" / name, root / "worldmodel" / name / "summary.json")
                else:
                    pre.jobs.append(Job("pretrain", name, (
                        *_list(ssl), override("data", str(data)), *_list(size.pretrain), *_list(extra.get(encoder)),
                        override("seed", int(seed)))))
                    pre.needs[name] = [data / "manifest.json"]
                    run = root / "pretrain" / name
                    made[(task, encoder, seed)] = (run / "checkpoints" / "encoder", run / "summary.json")
    return [collect, pre, wm], made


def encoder_comparison(exp: Any, size: Any, root: Path) -> list[Stage]:
    tasks = _pick(exp.tasks, size.tasks, "task", exp.name)
    encoders = dict(exp.encoders)
    stages, made = _pretrain_stages(exp, size, root, tasks, encoders)
    train = Stage("train", [])
    for task, env in tasks.items():
        for seed in size.seeds:
            common = (*_list(env), *_list(size.train), override("seed", int(seed)))
            train.jobs.append(Job("train", f"{task}/scratch/seed{seed}", ("encoder.mode=scratch", *common)))
            for encoder in encoders:
                ckpt, done = made[(task, encoder, seed)]
                for mode in exp.modes:
                    name = f"{task}/{encoder}-{mode}/seed{seed}"
                    train.jobs.append(Job("train", name, (f"encoder.mode={mode}", override("encoder.checkpoint",
                                                                                            str(ckpt)), *common)))
                    train.needs[name] = [done]
    return [*stages, train]


def agent_comparison(exp: Any, size: Any, root: Path) -> list[Stage]:
    tasks = _pick(exp.tasks, size.tasks, "task", exp.name)
    for mode in exp.modes:
        if mode not in ("scratch", "frozen", "finetune", "curl", "decoupled"):
            raise ConfigError(f"experiment {exp.name}: unknown mode {mode}")
    frames = sorted(int(f) for f in size.frames)
    stages, made = _pretrain_stages(exp, size, root, tasks, {"moco": []})
    train = Stage("train", [])
    # one run per task x mode x seed to the largest budget, evaluated on the way (size.train sets how often)
    for task, env in tasks.items():
        for seed in size.seeds:
            for mode in exp.modes:
                name = f"{task}/{mode}/seed{seed}"
                ckpt, done = made[(task, "moco", seed)]
                uses = mode in ("frozen", "finetune")
                train.jobs.append(Job("train", name, (
                    f"encoder.mode={mode}", *([override("encoder.checkpoint", str(ckpt))] if uses else []),
                    *_list(env), *_list(size.train), override("frames", frames[-1]), override("seed", int(seed)))))
                if uses:
                    train.needs[name] = [done]
    return [*[s for s in stages if s.jobs], train]


EXPERIMENTS: dict[str, Callable[[Any, Any, Path], list[Stage]]] = {
    "objective_comparison": objective_comparison,
    "encoder_comparison": encoder_comparison,
    "agent_comparison": agent_comparison,
}


def build(exp: Any, size: str, root: Path) -> list[Stage]:
    """The stages of experiment ``exp`` (its config node) at ``size``, rooted at the sweep directory."""
    if exp.name not in EXPERIMENTS:
        raise ConfigError(f"no builder for experiment {exp.name!r}; known: {', '.join(EXPERIMENTS)}")
    if size not in exp.sizes:
        raise ConfigError(f"experiment {exp.name} has no size {size!r}; valid sizes: {', '.join(exp.sizes)}")
    return EXPERIMENTS[exp.name](exp, exp.sizes[size], Path(root).resolve())

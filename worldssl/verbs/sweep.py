"""``worldssl sweep experiment=NAME size=smoke|full``: a named experiment as stages of hydra multiruns.

Each stage (collect, pretrain, worldmodel, train) is one multirun of its verb through the launcher given on
the command line (``hydra/launcher=joblib hydra.launcher.n_jobs=4``, ``hydra/launcher=submitit_slurm
hydra.launcher.partition=...``); see :mod:`worldssl.sweep.experiments` for what each experiment runs and
:mod:`worldssl.sweep.jobs` for how a re-run skips finished jobs and resumes the rest. The sweep directory gets
``sweep.json`` (every job's status and run directory) and, with ``report=true``, ``worldssl report``'s pages.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from worldssl.runtime.errors import ConfigError

#: sweep only launches jobs: the CLI does not claim a GPU for it (see worldssl.sweep.gpus)
ORCHESTRATOR = True
SIZES = ("smoke", "full")


def validate(cfg: Any) -> None:
    from worldssl.sweep.experiments import build

    if cfg.size not in cfg.experiment.sizes:
        raise ConfigError(f"experiment {cfg.experiment.name} has no size {cfg.size!r}; valid sizes: "
                          f"{', '.join(cfg.experiment.sizes)}")
    stages = build(cfg.experiment, cfg.size, Path(directory(cfg)))
    names = [s.name for s in stages]
    unknown = [s for s in (cfg.stages or []) if s not in names]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(unknown)} of {cfg.experiment.name}; its stages: "
                          f"{', '.join(names)}")


def directory(cfg: Any) -> str:
    return str(cfg.out) if cfg.out else f"runs/sweeps/{cfg.experiment.name}-{cfg.size}"


def run(cfg: Any) -> dict[str, Any]:
    from worldssl.runtime.io import write_json
    from worldssl.sweep.experiments import build
    from worldssl.sweep.jobs import job_overrides, launch, launcher_overrides

    validate(cfg)
    root = Path(directory(cfg)).resolve()
    stages = [s for s in build(cfg.experiment, cfg.size, root) if not cfg.stages or s.name in cfg.stages]
    launcher = launcher_overrides()
    print(f"sweep {cfg.experiment.name} ({cfg.size}) in {root}: " +
          ", ".join(f"{s.name} {len(s.jobs)} jobs" for s in stages) + (f"; {' '.join(launcher)}" if launcher else ""))
    if cfg.dry_run:
        for stage in stages:
            for job in stage.jobs:
                print(f"  {stage.name}/{job.name}: worldssl {job.verb} {' '.join(job_overrides(job)[:-1])}")
        return {"stages": {s.name: len(s.jobs) for s in stages}}
    root.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"experiment": cfg.experiment.name, "size": cfg.size, "launcher": launcher, "stages": {}}
    for stage in stages:
        start = time.perf_counter()
        results = launch(stage.jobs, root / stage.name, launcher, label=f"sweep {stage.name}", needs=stage.needs)
        record["stages"][stage.name] = {
            "seconds": round(time.perf_counter() - start, 1),
            "jobs": [{"name": r.job.name, "status": r.status, "dir": str(r.directory)} for r in results]}
        write_json(root / "sweep.json", record)
    counts: dict[str, int] = {}
    for stage in record["stages"].values():
        for job in stage["jobs"]:
            counts[job["status"]] = counts.get(job["status"], 0) + 1
    print(f"sweep {cfg.experiment.name} ({cfg.size}): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
          + f"; status of every job in {root / 'sweep.json'}")
    if cfg.report:
        record["report"] = _report(root, [root / s for s in cfg.experiment.report if (root / s).is_dir()],
                                   f"{cfg.experiment.name} ({cfg.size})")
        write_json(root / "sweep.json", record)
    return record


def _report(root: Path, dirs: list[Path], title: str) -> str | None:
    """``worldssl report`` of the stages with scores, into ``ROOT/report``, in a child process (its failure does
    not undo the sweep)."""
    from worldssl.cli import VERBS
    from worldssl.sweep.jobs import override

    if "report" not in VERBS or not dirs:
        return None
    out = root / "report"
    cmd = [sys.executable, "-m", "worldssl.cli", "report", override("dirs", [str(d) for d in dirs]),
           override("out", str(out)), override("title", title)]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        print(f"sweep: `worldssl report` of {root} failed (exit {proc.returncode}); the runs are intact")
        return None
    return str(out)

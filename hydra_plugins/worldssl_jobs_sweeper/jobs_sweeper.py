"""``hydra/sweeper=jobs``: a hydra sweeper over an explicit list of jobs.

Hydra's basic sweeper launches the cartesian product of the swept values. A benchmark sweep often is not one (the
frozen encoder of a task is the one pretrained on that task; scratch runs have no encoder), so this sweeper reads
the jobs from a YAML file, a list of override lists, and hands them to whatever launcher ``hydra/launcher=``
picked (basic, joblib, submitit_local, submitit_slurm). Overrides given on the command line apply to every job,
before its own. Unlike the basic sweeper, a failed job does not stop the sweep or hide the others' results: it is
logged, and the caller reads each job's run directory (:mod:`worldssl.sweep.jobs`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

log = logging.getLogger("worldssl.sweep")


class JobListSweeper(Sweeper):
    """Launch the jobs listed in ``jobs_file``, ``max_batch_size`` at a time (None: all in one batch)."""

    def __init__(self, jobs_file: str, max_batch_size: int | None = None) -> None:
        super().__init__()
        self.jobs_file = jobs_file
        self.max_batch_size = max_batch_size
        self.hydra_context = self.config = self.launcher = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context,
                                                                task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> list[Any]:
        jobs = [[*arguments, *map(str, job)] for job in OmegaConf.to_container(OmegaConf.load(self.jobs_file))]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size or max(len(jobs), 1)
        returns = []
        for start in range(0, len(jobs), size):
            batch = jobs[start:start + size]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=start)
            for i, r in enumerate(results):
                if r.status == JobStatus.FAILED:
                    log.error("job #%d failed (%s): %s", start + i, " ".join(batch[i]), _one_line(r._return_value))
            returns.append(results)
        return returns


def _one_line(e: Any) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__

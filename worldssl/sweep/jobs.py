"""Jobs with deterministic run directories, launched as one hydra multirun of any launcher.

A stage of a sweep is a list of :class:`Job` of one verb. :func:`launch` writes them as a job list for
``hydra/sweeper=jobs`` and runs ``worldssl VERB -m hydra/sweeper=jobs ...`` in a child process with the launcher
the user picked (hydra's basic launcher by default: one job after another, on the machine that runs the command). Each job runs in
``<stage dir>/<job name>/``, named after what varies, with ``resume=auto``: a finished job is not launched again,
and a job that was interrupted (Slurm preemption or time limit, a killed sweep) resumes from its own checkpoint,
whether hydra's submitit launcher requeues it or the user re-runs the same command. Results are read back from
each job's ``summary.json``; a job without one is reported as failed, never dropped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worldssl.runtime.io import atomic_open
from worldssl.verbs._run import finished_summary

#: verbs whose runs take ``resume=auto`` (the others, e.g. collect, resume by running again)
RESUMABLE = ("worldmodel", "pretrain", "train")
_BARE = re.compile(r"^[A-Za-z_/.][A-Za-z0-9_./:@+\-]*$")


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of ``verb``: its overrides, and its run directory's name under the stage directory."""

    verb: str
    name: str
    overrides: tuple[str, ...]


@dataclasses.dataclass
class JobResult:
    job: Job
    directory: Path
    status: str                      # finished | finished earlier | failed | blocked (an input is missing)
    summary: dict[str, Any] | None


def hydra_value(value: Any) -> str:
    """``value`` written in hydra's override grammar, so that it parses back to the same value and type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if math.isnan(value) else
                                                          ("inf" if value > 0 else "-inf"))
    if isinstance(value, str):
        if _BARE.match(value) and value.lower() not in ("true", "false", "null", "nan", "inf"):
            return value
        # hydra's quoted strings: a backslash escapes only before a quote or at the end
        return "'" + re.sub(r"(\\+)(?='|$)", r"\1\1", value).replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a hydra override")


def override(key: str, value: Any) -> str:
    return f"{key}={hydra_value(value)}"


def launcher_overrides() -> list[str]:
    """The ``hydra/launcher=`` choice and ``hydra.launcher.*`` keys the current run was started with: a verb that
    launches jobs (``sweep``, ``compare``) passes them on, so ``worldssl compare hydra/launcher=joblib`` runs its
    jobs through joblib. Empty outside hydra or without them (hydra's basic launcher)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        given = list(HydraConfig.get().overrides.hydra)
    except ValueError:
        return []
    return [o for o in given if o.lstrip("+~").startswith(("hydra/launcher=", "hydra.launcher."))]


def job_overrides(job: Job) -> list[str]:
    extra = ["resume=auto"] if job.verb in RESUMABLE else []
    return [*job.overrides, *extra, override("hydra.sweep.subdir", job.name)]


def launch(jobs: Sequence[Job], directory: Path, launcher: Sequence[str] = (), label: str = "",
           needs: Mapping[str, Sequence[Path]] | None = None) -> list[JobResult]:
    """Run the jobs (all of one verb) as one multirun in ``directory``; finished ones are not launched again, nor
    those missing a path of ``needs[job.name]`` (what an earlier stage should have made: they are blocked)."""
    if not jobs:
        return []
    verbs = {j.verb for j in jobs}
    if len(verbs) != 1:
        raise ValueError(f"one verb per launch, got {sorted(verbs)}")
    verb = jobs[0].verb
    directory = Path(directory).resolve()
    earlier = {j.name for j in jobs if finished_summary(directory / j.name) is not None}
    blocked = {j.name: missing for j in jobs if j.name not in earlier
               for missing in [[str(p) for p in (needs or {}).get(j.name, ()) if not Path(p).exists()]] if missing}
    pending = [j for j in jobs if j.name not in earlier and j.name not in blocked]
    changed = [j.name for j in jobs if j.name in earlier and _recorded(directory / j.name) not in (None, _task(j))]
    label = label or verb
    print(f"{label}: {len(jobs)} {verb} jobs in {directory}; {len(earlier)} done before, launching "
          f"{len(pending)}" + (f" ({' '.join(launcher)})" if launcher and pending else "")
          + (f"; {len(blocked)} blocked (an earlier stage did not make their input)" if blocked else ""), flush=True)
    if changed:
        print(f"{label}: {len(changed)} finished job(s) ran with other overrides than these (e.g. {changed[0]}); "
              f"they are kept as they are: give the sweep another directory to run the new settings", flush=True)
    seconds = 0.0
    if pending:
        directory.mkdir(parents=True, exist_ok=True)
        jobs_file = directory / "jobs.yaml"
        import yaml

        with atomic_open(jobs_file, "w") as f:
            yaml.safe_dump([job_overrides(j) for j in pending], f, width=1 << 16)
        cmd = [sys.executable, "-m", "worldssl.cli", verb, "-m", "hydra/sweeper=jobs",
               override("hydra.sweeper.jobs_file", str(jobs_file)), override("hydra.sweep.dir", str(directory)),
               *launcher]
        start = time.perf_counter()
        subprocess.run(cmd, env={**os.environ, "HYDRA_FULL_ERROR": os.environ.get("HYDRA_FULL_ERROR", "0")},
                       check=False)
        seconds = time.perf_counter() - start
    results = []
    for job in jobs:
        summary = finished_summary(directory / job.name)
        status = ("finished earlier" if job.name in earlier else "finished" if summary is not None else
                  "blocked" if job.name in blocked else "failed")
        results.append(JobResult(job, directory / job.name, status, summary))
    failed = [r.job.name for r in results if r.status in ("failed", "blocked")]
    print(f"{label}: {len(results) - len(failed)} of {len(results)} jobs finished"
          + (f" ({seconds:.0f} s)" if pending else "")
          + (f"; failed or unfinished: {', '.join(failed)} (re-run the same command to retry them)" if failed else ""),
          flush=True)
    return results


def _task(job: Job) -> list[str]:
    return [o for o in job_overrides(job) if not o.startswith("hydra.")]


def _recorded(directory: Path) -> list[str] | None:
    """The overrides a job ran with (hydra's ``.hydra/overrides.yaml``), or None without that file."""
    import yaml

    path = directory / ".hydra" / "overrides.yaml"
    try:
        return [str(o) for o in yaml.safe_load(path.read_text()) or []]
    except (OSError, yaml.YAMLError):
        return None

"""Finding the runs under some directories and reading what each reached.

A run is a directory with a ``config.yaml`` written by ``worldssl train``, ``worldmodel``, ``pretrain`` or
``eval plan`` (the verb comes from hydra's ``.hydra/hydra.yaml``, or from the config's keys). Its status:

- ``finished``: ``summary.json`` written and the budget (frames, epochs, steps) reached;
- ``stopped``: ``summary.json`` written before the budget (``max_minutes``, SIGTERM): what it reached is shown,
  but it is not scored at the budget;
- ``running``: no ``summary.json`` yet, and a file written in the last ``running_minutes``;
- ``incomplete``: no ``summary.json`` and nothing written lately (killed, failed, or never started); the last
  error line of its logs is quoted when there is one.

Directories that are not such runs (``compare``'s own directory, datasets, ``collect`` or ``bench`` runs) are
listed as skipped, and jobs a hydra sweep (``multirun.yaml``) launched but whose directories are absent as
missing: nothing is dropped without a line saying so.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import time
from pathlib import Path
from typing import Any

import yaml

#: the verbs whose runs a report scores
SCORED_VERBS = ("train", "worldmodel", "pretrain", "eval")
_SKIP_DIRS = {"checkpoints", "tb", "replay", "videos", "episodes", ".hydra", ".submitit", "__pycache__"}


@dataclasses.dataclass
class Run:
    path: Path
    verb: str
    config: dict[str, Any]
    summary: dict[str, Any] | None
    status: str = "finished"
    note: str = ""
    name: str = ""
    overrides: list[str] = dataclasses.field(default_factory=list)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def metric_rows(self) -> list[dict[str, str]]:
        """The rows of ``metrics.csv`` ([] without one)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return []
        try:
            with open(path, newline="") as f:
                return list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error):
            return []


@dataclasses.dataclass
class Found:
    runs: list[Run]
    skipped: list[tuple[Path, str]]   # (directory, why it is not a scored run)
    missing: list[tuple[Path, str]]   # (sweep directory, the overrides of a job without a directory)


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _verb(directory: Path, config: dict[str, Any]) -> str:
    hydra_cfg = _load_yaml(directory / ".hydra" / "hydra.yaml")
    try:
        name = hydra_cfg["hydra"]["job"]["name"]
        if isinstance(name, str) and name:
            return name
    except (TypeError, KeyError):
        pass
    if "objectives" in config and "seeds" in config:
        return "compare"
    if "agent" in config and "frames" in config:
        return "train"
    if "objective" in config and "transition" in config:
        return "worldmodel"
    if "ssl" in config and "backbone" in config:
        return "pretrain"
    if "what" in config:
        return "eval"
    return "unknown"


def _overrides(directory: Path) -> list[str]:
    data = _load_yaml(directory / ".hydra" / "overrides.yaml")
    return [str(o) for o in data] if isinstance(data, list) else []


def _budget_status(verb: str, config: dict[str, Any], summary: dict[str, Any]) -> tuple[str, str]:
    if verb == "train":
        if summary.get("finished", True):
            return "finished", ""
        why = f", stopped by {summary['stopped_by']}" if summary.get("stopped_by") else ""
        return "stopped", f"{summary.get('frames', 0):,} of {config.get('frames', 0):,} frames{why}"
    if verb == "worldmodel":
        epoch, epochs = summary.get("epoch"), config.get("epochs")
        if isinstance(epoch, (int, float)) and isinstance(epochs, int) and epoch < epochs:
            return "stopped", f"epoch {epoch} of {epochs}"
    if verb == "pretrain":
        step, steps = summary.get("step"), config.get("steps")
        if isinstance(step, (int, float)) and isinstance(steps, int) and step < steps:
            return "stopped", f"step {step:,} of {steps:,}"
    return "finished", ""


def _last_error(directory: Path) -> str:
    for log in sorted(directory.glob("*.log")):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        errors = [ln.strip() for ln in lines if "Error" in ln or "error:" in ln or "Traceback" in ln]
        if errors:
            return errors[-1][:200]
    return ""


def _newest_mtime(directory: Path) -> float:
    newest = directory.stat().st_mtime
    for path in itertools.chain(directory.iterdir(), (directory / "checkpoints").glob("*")):
        try:
            newest = max(newest, path.stat().st_mtime)
        except OSError:
            continue
    return newest


def read_run(directory: Path, running_minutes: float = 10.0, now: float | None = None) -> Run | tuple[Path, str]:
    """A :class:`Run`, or ``(directory, why it is skipped)``."""
    config = _load_yaml(directory / "config.yaml")
    if not isinstance(config, dict):
        return directory, "config.yaml is not a YAML mapping"
    verb = _verb(directory, config)
    if verb == "eval" and config.get("what") != "plan":
        verb = f"eval {config.get('what')}"
    if verb not in SCORED_VERBS:
        why = {"compare": "a `compare` directory (its runs are read one by one)"}.get(verb, f"a `{verb}` run")
        return directory, f"{why}, not a run the report scores"
    summary_path = directory / "summary.json"
    summary = None
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            return Run(directory, verb, config, None, "incomplete", f"unreadable summary.json ({type(e).__name__})",
                       overrides=_overrides(directory))
    run = Run(directory, verb, config, summary, overrides=_overrides(directory))
    if summary is not None:
        run.status, run.note = _budget_status(verb, config, summary)
        return run
    newest = _newest_mtime(directory)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(newest))
    if ((now or time.time()) - newest) / 60.0 <= running_minutes:
        run.status, run.note = "running", f"no summary.json yet; last write {when}"
    else:
        error = _last_error(directory)
        run.status = "incomplete"
        run.note = (f"no summary.json; last write {when}" + (f"; log: {error}" if error else
                    " (killed, failed or interrupted)"))
    return run


def find_runs(dirs: list[str | Path], running_minutes: float = 10.0) -> Found:
    """Every run under ``dirs`` (recursively; each directory once), the directories skipped and why, and the
    jobs of hydra sweeps under them that left no directory."""
    found = Found([], [], [])
    seen: set[Path] = set()
    now = time.time()
    for root in dirs:
        for directory in _walk(Path(root)):
            real = directory.resolve()
            if real in seen:
                continue
            seen.add(real)
            if (directory / "config.yaml").is_file():
                result = read_run(directory, running_minutes, now)
                if isinstance(result, Run):
                    found.runs.append(result)
                else:
                    found.skipped.append(result)
            elif (directory / ".hydra").is_dir():  # a hydra job that never saved its resolved config
                error = _last_error(directory)
                found.skipped.append((directory, "a hydra job without config.yaml: it stopped before its run "
                                      "began" + (f" ({error})" if error else "")))
            if (directory / "multirun.yaml").is_file():
                found.missing += missing_jobs(directory)
    for root in dirs:
        found.missing += blocked_jobs(Path(root))
    found.runs.sort(key=lambda r: str(r.path))
    names = display_names([r.path for r in found.runs])
    for run in found.runs:
        run.name = names[run.path]
    return found


def _walk(root: Path):
    if not root.is_dir():
        return
    yield root
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
    except OSError:
        return
    for child in children:
        yield from _walk(child)


def display_names(paths: list[Path]) -> dict[Path, str]:
    """Each path relative to the deepest directory all of them share (the directory's name when alone)."""
    if not paths:
        return {}
    parts = [p.resolve().parts for p in paths]
    common = 0
    while all(len(q) > common + 1 for q in parts) and len({q[common] for q in parts}) == 1:
        common += 1
    return {p: "/".join(q[common:]) or p.name for p, q in zip(paths, parts)}


def expected_jobs(multirun: dict[str, Any]) -> list[list[str]] | None:
    """The override lists of every job a hydra sweep launches, from its ``multirun.yaml``: the jobs file of
    ``hydra/sweeper=jobs``, or the cartesian product of the basic sweeper's swept values. None when unknown."""
    hydra_cfg = (multirun or {}).get("hydra") or {}
    task = [str(o) for o in ((hydra_cfg.get("overrides") or {}).get("task") or [])]
    sweeper = hydra_cfg.get("sweeper") or {}
    if sweeper.get("jobs_file"):
        jobs = _load_yaml(Path(str(sweeper["jobs_file"])))
        if not isinstance(jobs, list):
            return None
        return [[*task, *map(str, job)] for job in jobs]
    if "BasicSweeper" not in str(sweeper.get("_target_", "")):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(task)
    except Exception:  # noqa: BLE001 - hydra raises several kinds; the sweep is then simply not checked
        return None
    axes = []
    for text, o in zip(task, parsed):
        if o.is_sweep_override():
            if not o.is_discrete_sweep():
                return None
            key = o.get_key_element()
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([text])
    return [list(job) for job in itertools.product(*axes)]


def _normalised(overrides: list[str]) -> set[tuple[str, str]]:
    """Overrides as ``(key, value)`` pairs as hydra parses them (``progress=false`` == ``progress=False``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    out = set()
    for text in overrides:
        if text.lstrip("+~").startswith(("hydra.", "hydra/")):
            continue
        try:
            o = parser.parse_override(text)
            out.add((o.get_key_element(), repr(o.value())))
        except Exception:  # noqa: BLE001 - an override hydra cannot parse is compared as written
            out.add((text, ""))
    return out


def blocked_jobs(root: Path) -> list[tuple[Path, str]]:
    """Jobs a ``worldssl sweep`` recorded in its ``sweep.json`` as blocked or failed that left no run config: a
    blocked job was never launched (an earlier stage did not make its input), so no multirun lists it. ``root`` is
    the sweep's directory (every stage) or one stage's directory (that stage)."""
    if (root / "sweep.json").is_file():
        record, stages = root / "sweep.json", None
    elif (root.parent / "sweep.json").is_file():
        record, stages = root.parent / "sweep.json", {root.name}
    else:
        return []
    try:
        recorded = json.loads(record.read_text()).get("stages", {})
    except (OSError, ValueError, AttributeError):
        return []
    out = []
    for stage, entry in recorded.items() if isinstance(recorded, dict) else ():
        if stages is not None and stage not in stages:
            continue
        for job in entry.get("jobs", []) if isinstance(entry, dict) else ():
            status = job.get("status")
            if status in ("blocked", "failed") and not (Path(str(job.get("dir", ""))) / "config.yaml").is_file():
                why = "an earlier stage did not make its input" if status == "blocked" else "it failed before its run began"
                out.append((record.parent / stage, f"{job.get('name')} ({status}: {why})"))
    return out


def missing_jobs(sweep_dir: Path) -> list[tuple[Path, str]]:
    """``(sweep_dir, the job's swept overrides)`` of each job of the sweep with no run directory carrying its
    overrides."""
    jobs = expected_jobs(_load_yaml(sweep_dir / "multirun.yaml"))
    if not jobs:
        return []
    present = [_normalised(_overrides(d)) for d in _walk(sweep_dir) if (d / ".hydra" / "overrides.yaml").is_file()]
    swept = [o for o in dict.fromkeys(o for job in jobs for o in job) if sum(o in job for job in jobs) < len(jobs)]
    out = []
    for job in jobs:
        if not any(_normalised(job) <= have for have in present):
            out.append((sweep_dir, " ".join(o for o in job if o in swept) or " ".join(job)))
    return out

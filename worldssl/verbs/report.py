"""``worldssl report DIR ...``: a report of every run under the directories (:mod:`worldssl.report`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.runtime.errors import ConfigError
from worldssl.runtime.settings import Check, Settings, integer, list_of, non_negative, positive_int, setting

#: this verb only reads runs: it claims no GPU
ORCHESTRATOR = True

_string = Check("a string", lambda v: isinstance(v, str) and v != "")
_pair = Check("a pair [A,B] of group labels",
              lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, str) for x in v),
              lambda v: tuple(v))


@dataclasses.dataclass
class ReportSettings(Settings):
    dirs: tuple[str, ...] = setting((), list_of(_string), "run or sweep directories, searched recursively")
    reps: int = setting(2000, positive_int, "bootstrap resamples per interval")
    seed: int = setting(0, integer, "random state of every bootstrap")
    pairs: tuple[tuple[str, str], ...] = setting((), list_of(_pair, non_empty=False),
                                                 "group labels [[A,B],...] compared by P(A > B)")
    by: tuple[str, ...] | None = setting(None, Check("a list of config keys or null",
                                                     lambda v: v is None or (isinstance(v, (list, tuple)) and all(
                                                         isinstance(x, str) for x in v)),
                                                     lambda v: None if v is None else tuple(v)),
                                         "config keys that define the groups")
    ignore: tuple[str, ...] = setting((), list_of(_string, non_empty=False), "config keys that never define a group")
    running_minutes: float = setting(10.0, non_negative, "a run without summary.json that wrote a file this recently "
                                                         "counts as running")


def _settings(cfg: Any) -> ReportSettings:
    from worldssl.runtime.settings import settings_from

    if OmegaConf.is_missing(cfg, "dirs") or cfg.dirs in (None, []):
        raise ConfigError("give the run directories to report on, e.g. `worldssl report runs/train` "
                          "(or dirs=[runs/train,runs/worldmodel])")
    dirs = OmegaConf.to_container(cfg.dirs) if OmegaConf.is_list(cfg.dirs) else [cfg.dirs]
    return settings_from(ReportSettings, cfg, dirs=[str(d) for d in dirs])


def validate(cfg: Any) -> None:
    s = _settings(cfg)
    absent = [d for d in s.dirs if not Path(d).is_dir()]
    if absent:
        raise ConfigError(f"{', '.join(absent)} does not exist or is not a directory; give run or sweep directories")


def run(cfg: Any) -> dict[str, Any]:
    from worldssl.report.build import build_report
    from worldssl.report.render import write
    from worldssl.runtime.io import write_json
    from worldssl.verbs._run import run_dir, save_config

    validate(cfg)
    s = _settings(cfg)
    directory = run_dir()
    out = Path(cfg.out) if cfg.out else directory
    save_config(cfg, directory)
    report = build_report(list(s.dirs), out, reps=s.reps, seed=s.seed, pairs=[list(p) for p in s.pairs], by=s.by,
                          ignore=s.ignore, running_minutes=s.running_minutes, title=cfg.title)
    md, page = write(report, out)
    scored = sum(len(r.values) for sec in report.sections for t in sec.tables[:1] for r in t.rows)
    print(f"report: {scored} run(s) scored in {len(report.sections)} section(s); {len(report.not_scored)} not "
          f"scored, {len(report.missing)} sweep job(s) missing, {len(report.skipped)} director(y/ies) skipped")
    for status, name, why in ((st, n, w) for n, _, st, w in report.not_scored):
        print(f"  not scored ({status}): {name}: {why}")
    for sweep, job in report.missing:
        print(f"  missing sweep job: {sweep}: {job}")
    print(f"report: {md}\nreport: {page}")
    summary = {"report": str(md), "html": str(page), "scored": scored, "not_scored": len(report.not_scored),
               "missing": len(report.missing), "figures": [str(p) for sec in report.sections for _, p in sec.figures]}
    write_json(directory / "summary.json", summary)
    return summary

"""``worldssl report DIR ...``: every run under some directories, grouped by what differs in their configs,
summed up with rliable's interval estimates, as ``report.md``, a self-contained ``report.html`` and PNG figures.

- :mod:`~worldssl.report.runs`: finding runs, their status (finished, stopped, running, incomplete), sweep jobs
  that left no directory;
- :mod:`~worldssl.report.scores`: what each run scored, on which task, and the groups;
- :mod:`~worldssl.report.stats`: rliable's estimates with a fixed random state;
- :mod:`~worldssl.report.published`: published numbers for the same task and budget;
- :mod:`~worldssl.report.figures`, :mod:`~worldssl.report.render`: figures, markdown and HTML.

API: ``make_report(dirs, out, **options) -> (report.md, report.html)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_report(dirs: list[str | Path], out: str | Path, **options: Any) -> tuple[Path, Path]:
    """Build the report of every run under ``dirs`` into ``out`` (options: see :func:`build.build_report`)."""
    from worldssl.report.build import build_report
    from worldssl.report.render import write

    report = build_report(dirs, out, **options)
    return write(report, Path(out))

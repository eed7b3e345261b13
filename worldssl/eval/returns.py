"""Returns of ``worldssl train`` runs across seeds: a table with 95% intervals and the eval curves, per group.

Runs given the same label are seeds of one configuration. A run still training is read as far as it got
(its last evaluation, from ``metrics.csv`` when ``summary.json`` is not written yet).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from worldssl.eval.report import summarize
from worldssl.runtime.errors import ConfigError


def read_evals(run: str | Path) -> list[tuple[int, float]]:
    """``[(frame, mean eval return), ...]`` of a train run, from ``summary.json`` or its ``metrics.csv``."""
    run = Path(run)
    summary = run / "summary.json"
    if summary.is_file():
        history = json.loads(summary.read_text()).get("eval_history") or []
        return [(int(h["frame"]), float(h["return"])) for h in history]
    metrics = run / "metrics.csv"
    if not metrics.is_file():
        raise ConfigError(f"{run} has neither summary.json nor metrics.csv; give `worldssl train` run directories")
    out: dict[int, float] = {}
    with open(metrics, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("eval/return"):
                out[int(float(row["step"]))] = float(row["eval/return"])  # a replayed row (resume) wins
    return sorted(out.items())


def group_returns(runs: list[str], labels: list[str] | None = None) -> dict[str, list[list[tuple[int, float]]]]:
    """Label -> the eval histories of its runs (labels default to the run directories' names)."""
    if labels is not None and len(labels) != len(runs):
        raise ConfigError(f"labels has {len(labels)} entries for {len(runs)} runs; give one label per run")
    groups: dict[str, list[list[tuple[int, float]]]] = {}
    for i, run in enumerate(runs):
        groups.setdefault(labels[i] if labels else Path(run).name, []).append(read_evals(run))
    return groups


def returns_table(groups: dict[str, list[list[tuple[int, float]]]], at_frame: int | None = None) -> list[dict[str, Any]]:
    """One row per label: the final eval return (at ``at_frame``, or each run's last evaluation) over seeds, and
    the best eval return of each run, as mean / 95% CI."""
    rows = []
    for label, histories in groups.items():
        finals, bests, frames = [], [], []
        for h in histories:
            if not h:
                continue
            pick = [r for f, r in h if f == at_frame] if at_frame is not None else [h[-1][1]]
            if not pick:
                continue
            finals.append(pick[0])
            bests.append(max(r for _, r in h))
            frames.append(at_frame if at_frame is not None else h[-1][0])
        rows.append({"label": label, "seeds": len(finals), "frames": min(frames) if frames else None,
                     "final": summarize(finals), "best": summarize(bests)})
    return rows


def format_returns(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    head = ["encoder / run", "seeds", "frames", "final eval return", "best eval return", "per seed (final)"]
    body = [[r["label"], str(r["seeds"]), f"{r['frames']:,}" if r["frames"] is not None else "-",
             _cell(r["final"], _digits(r)), _cell(r["best"], _digits(r)),
             ", ".join(f"{v:.{max(_digits(r) - 1, 0)}f}" for v in r["final"]["values"])] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(lines + ["| " + " | ".join(b) + " |" for b in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)])


def _digits(row: dict[str, Any]) -> int:
    """Decimals of a row: 1 for returns, 3 where every value is a fraction (success rates, e.g. the maze's)."""
    values = [*row["final"]["values"], *row["best"]["values"]]
    return 3 if values and all(abs(v) <= 1 for v in values) else 1


def _cell(s: dict[str, Any], digits: int = 1) -> str:
    if not s["values"]:
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}" if len(s["values"]) > 1 else f"{s['mean']:.{digits}f}"


def returns_figure(groups: dict[str, list[list[tuple[int, float]]]], title: str = "") -> Any:
    """Mean eval return against frames per label, with a band of ± one standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, histories in groups.items():
        frames = sorted({f for h in histories for f, _ in h})
        mean, sd, xs = [], [], []
        for f in frames:
            vals = [r for h in histories for g, r in h if g == f]
            if vals:
                xs.append(f)
                mean.append(np.mean(vals))
                sd.append(np.std(vals))
        if not xs:
            continue
        line, = ax.plot(xs, mean, marker="o", ms=3, label=f"{label} ({len(histories)})")
        ax.fill_between(xs, np.array(mean) - sd, np.array(mean) + sd, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("env frames (action repeat included)")
    ax.set_ylabel("eval return")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

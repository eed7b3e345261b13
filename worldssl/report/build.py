"""From runs on disk to a report's content: tables of interval estimates per metric and task, the probability of
improvement of chosen pairs, the runs that were not scored and why, and the figures.

:func:`build_report` is the API behind ``worldssl report``; :mod:`worldssl.report.render` writes what it returns
as ``report.md`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worldssl.report import figures
from worldssl.report.published import CSWM_ENVS, Published, lookup
from worldssl.report.runs import Found, Run, find_runs
from worldssl.report.scores import (
    Grouping,
    Metric,
    budget_of,
    budget_text,
    env_id,
    group_runs,
    metric_order,
    run_metrics,
    task_of,
)
from worldssl.report.stats import AGGREGATES, Interval, aggregate_intervals, probability_of_improvement
from worldssl.runtime.errors import ConfigError

VERB_TITLES = {"train": "Agents (`worldssl train`)", "worldmodel": "World models (`worldssl worldmodel`)",
               "pretrain": "Pretrained encoders (`worldssl pretrain`)", "eval": "Planning (`worldssl eval plan`)"}


@dataclasses.dataclass
class Row:
    group: str
    task: str
    budget: str
    values: list[float]                # raw, one per seed
    seeds: list[Any]
    stats: dict[str, Interval]          # in raw units
    published: list[Published]


@dataclasses.dataclass
class Table:
    metric: Metric
    rows: list[Row]                     # one per (task, group)
    aggregate: list[Row]                # across tasks, normalised scores (when several tasks)
    aggregate_note: str = ""


@dataclasses.dataclass
class Improvement:
    metric: Metric
    x: str
    y: str
    tasks: list[str]
    p: Interval
    n_x: int
    n_y: int


@dataclasses.dataclass
class Section:
    verb: str
    title: str
    group_keys: list[str]
    tables: list[Table]
    improvements: list[Improvement]
    figures: list[tuple[str, Path]]     # (caption, png)
    scored: int = 0                     # runs with at least one scored metric (each counted once, whatever its tables)


@dataclasses.dataclass
class Report:
    title: str
    dirs: list[str]
    sections: list[Section]
    not_scored: list[tuple[str, str, str, str]]   # (run, group, status, why)
    skipped: list[tuple[str, str]]
    missing: list[tuple[str, str]]
    settings: dict[str, Any]
    published_sources: list[str]


def _matrix(runs_by_task: dict[str, dict[Any, float]], tasks: Sequence[str]) -> tuple[np.ndarray, list[Any]]:
    """``(seeds, tasks)`` scores of the seeds present on every task."""
    common = [s for s in runs_by_task[tasks[0]] if all(s in runs_by_task[t] for t in tasks)]
    return np.array([[runs_by_task[t][s] for t in tasks] for s in common], dtype=np.float64), common


def _published(run: Run, metric: Metric) -> list[Published]:
    budget = budget_of(run)
    if run.verb == "train" and metric.key == "return" and env_id(run).startswith("worldssl/DMC"):
        return lookup(task_of(run), "return", budget)
    if run.verb == "worldmodel" and env_id(run) in CSWM_ENVS:
        objective = run.config.get("objective")
        name = objective.get("name") if isinstance(objective, dict) else objective
        return lookup(f"{CSWM_ENVS[env_id(run)]}/{name}", metric.key, budget)
    return []


def _dedupe(runs: list[Run], labels: dict[str, str], not_scored: list) -> list[Run]:
    """One run per (group, task, seed): the newest summary wins; the others are listed, not counted."""
    newest: dict[tuple, Run] = {}
    for run in runs:
        key = (labels[str(run.path)], task_of(run), repr(run.seed))
        old = newest.get(key)
        if old is None:
            newest[key] = run
            continue
        keep, drop = sorted([old, run], key=lambda r: (r.path / "summary.json").stat().st_mtime)[::-1]
        newest[key] = keep
        not_scored.append((drop.name, labels[str(drop.path)], "duplicate",
                           f"same configuration and seed {drop.seed} as {keep.name}, which is newer and counted"))
    return [r for r in runs if newest[(labels[str(r.path)], task_of(r), repr(r.seed))] is r]


def _section(verb: str, runs: list[Run], unscored: list[Run], grouping: Grouping, options: dict[str, Any],
             out: Path, not_scored: list) -> Section | None:
    labels = grouping.labels
    runs = _dedupe(runs, labels, not_scored)
    scores: dict[Metric, dict[str, dict[str, dict[Any, float]]]] = {}   # metric -> group -> task -> seed -> raw
    first: dict[tuple[str, str], Run] = {}
    scored = 0
    for run in runs:
        group, task = labels[str(run.path)], task_of(run)
        first.setdefault((group, task), run)
        metrics = run_metrics(run)
        scored += bool(metrics)
        if not metrics:
            not_scored.append((run.name, group, run.status, "finished, but its summary has none of the metrics "
                               "a report scores"))
        for metric, value in metrics.items():
            scores.setdefault(metric, {}).setdefault(group, {}).setdefault(task, {})[run.seed] = value
    if not scores:
        return None
    reps, seed = options["reps"], options["seed"]
    tables = []
    for metric in sorted(scores, key=metric_order):
        by_group = scores[metric]
        rows = []
        tasks = sorted({t for g in by_group.values() for t in g})
        for task in tasks:
            for group, per_task in by_group.items():
                if task not in per_task:
                    continue
                seeds = list(per_task[task])
                values = np.array([per_task[task][s] for s in seeds])
                scale = metric.scale or 1.0
                stats = aggregate_intervals({group: values[:, None] / scale}, reps=reps, seed=seed,
                                            name=f"{verb}/{metric.key}/{task}",
                                            gap_threshold=1.0 if metric.scale else None)[group]
                run = first[(group, task)]
                budget = budget_text(verb, budget_of(run)) + _pool(metric, by_group, group, task, runs, labels)
                rows.append(Row(group, task, budget, values.tolist(), seeds,
                                {k: v.scaled(scale) for k, v in stats.items()}, _published(run, metric)))
        table = Table(metric, rows, [])
        if len(tasks) > 1:
            _aggregate(table, by_group, tasks, verb, options)
        tables.append(table)
    primary = _primary([t.metric for t in tables])
    improvements = _improvements(verb, scores, primary, options) if primary else []
    figs = figures.section_figures(verb, runs, unscored, labels, tables, primary,
                                   scores.get(primary) if primary else None, options, out)
    return Section(verb, VERB_TITLES.get(verb, verb), grouping.keys.get(verb, []), tables, improvements, figs,
                   scored)


def _pool(metric: Metric, by_group: dict, group: str, task: str, runs: list[Run], labels: dict[str, str]) -> str:
    """``, pool N``: the ranking's candidate pool (C-SWM's scores depend on it), for Hits@1 / MRR rows."""
    if not metric.key.startswith(("hits@1/", "mrr/")):
        return ""
    k = metric.key.split("/")[1]
    pools = sorted({int((r.summary or {}).get(f"eval/pool/{k}", -1)) for r in runs
                    if labels[str(r.path)] == group and task_of(r) == task} - {-1})
    return f", pool {'/'.join(map(str, pools))}" if pools else ""


def _aggregate(table: Table, by_group: dict[str, dict[str, dict[Any, float]]], tasks: list[str], verb: str,
               options: dict[str, Any]) -> None:
    metric = table.metric
    if metric.scale is None:
        table.aggregate_note = (f"no aggregate across tasks: {metric.label} has no normalisation to [0, 1], so "
                                "tasks are not on one scale")
        return
    notes = []
    for group, per_task in by_group.items():
        missing = [t for t in tasks if t not in per_task]
        if missing:
            notes.append(f"{group} lacks {', '.join(missing)}")
            continue
        x, seeds = _matrix(per_task, tasks)
        dropped = sum(len(per_task[t]) for t in tasks) - x.size
        if dropped:
            notes.append(f"{group}: {dropped} run(s) of seeds not run on every task left out of the aggregate")
        if not len(x):
            continue
        stats = aggregate_intervals({group: x / metric.scale}, reps=options["reps"], seed=options["seed"],
                                    name=f"{verb}/{metric.key}/aggregate")[group]
        table.aggregate.append(Row(group, f"{len(tasks)} tasks", "", (x / metric.scale).mean(axis=1).tolist(),
                                   seeds, stats, []))
    table.aggregate_note = "; ".join(notes)


def _primary(metrics: list[Metric]) -> Metric | None:
    """The metric of a section's profile and interval plots: the first normalised one in reading order, with
    ranking at its longest horizon."""
    normalised = [m for m in metrics if m.scale]
    hits = [m for m in normalised if m.key.startswith("hits@1/")]
    if hits:
        return max(hits, key=lambda m: int(m.key.split("/")[1]))
    return normalised[0] if normalised else None


def _improvements(verb: str, scores: dict, metric: Metric, options: dict[str, Any]) -> list[Improvement]:
    out = []
    by_group = scores[metric]
    for x, y in options["pairs"]:
        if x not in by_group or y not in by_group:
            continue
        tasks = sorted(set(by_group[x]) & set(by_group[y]))
        if not tasks:
            continue
        a = np.array([[by_group[x][t][s] for t in tasks] for s in _common(by_group[x], tasks)])
        b = np.array([[by_group[y][t][s] for t in tasks] for s in _common(by_group[y], tasks)])
        if not len(a) or not len(b):
            continue
        p = probability_of_improvement(a, b, reps=options["reps"], seed=options["seed"],
                                       name=f"{verb}/{metric.key}/{x}/{y}")
        out.append(Improvement(metric, x, y, tasks, p, len(a), len(b)))
    return out


def _common(per_task: dict[str, dict[Any, float]], tasks: list[str]) -> list[Any]:
    return [s for s in per_task[tasks[0]] if all(s in per_task[t] for t in tasks)]


def _resolve(name: str, labels: set[str], scored: set[str]) -> str:
    """A group label, or the one scored group whose label contains ``name`` (``wm-contrastive`` for
    ``checkpoint=wm-contrastive, batch_size=128``)."""
    if name in labels:
        return name
    hits = sorted(label for label in scored if name in label)
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ConfigError(f"pairs names {name!r}, which matches several groups: {'; '.join(hits)}; give more of "
                          "the label")
    raise ConfigError(f"pairs names {name!r}, not a group of these runs; groups: {'; '.join(sorted(labels)) or 'none'}")


def build_report(dirs: Sequence[str | Path], out: str | Path, *, reps: int = 2000, seed: int = 0,
                 pairs: Sequence[Sequence[str]] = (), by: Sequence[str] | None = None, ignore: Sequence[str] = (),
                 running_minutes: float = 10.0, title: str | None = None) -> Report:
    """Read every run under ``dirs`` and compute the report (figures are written into ``out``).

    Args:
        reps: bootstrap resamples per interval.
        seed: seeds every bootstrap (a report is reproducible).
        pairs: ``[[A, B], ...]`` group labels whose probability of improvement P(A > B) is reported.
        by: config keys that define the groups (default: every key that varies, see :func:`group_runs`).
        ignore: more config keys that never define a group.
        running_minutes: a run without summary.json counts as running if it wrote a file this recently.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found: Found = find_runs(list(dirs), running_minutes)
    found.skipped = [(d, why) for d, why in found.skipped if d.resolve() != out.resolve()]
    grouping = group_runs(found.runs, list(by) if by else None, ignore)
    labels = grouping.labels
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(f"pairs takes [A,B] pairs of group labels, got {list(pair)}")
    scored = {labels[str(r.path)] for r in found.runs if r.status == "finished"}
    resolved = [tuple(_resolve(str(p), set(labels.values()), scored) for p in pair) for pair in pairs]
    options = {"reps": int(reps), "seed": int(seed), "pairs": resolved}
    not_scored: list[tuple[str, str, str, str]] = []
    for run in found.runs:
        if run.status != "finished":
            not_scored.append((run.name, labels[str(run.path)], run.status, run.note))
    sections = []
    for verb in ("train", "worldmodel", "pretrain", "eval"):
        runs = [r for r in found.runs if r.verb == verb and r.status == "finished"]
        if not runs:
            continue
        unscored = [r for r in found.runs if r.verb == verb and r.status != "finished"]
        section = _section(verb, runs, unscored, grouping, options, out, not_scored)
        if section is not None:
            sections.append(section)
    sources = sorted({p.source for s in sections for t in s.tables for r in t.rows for p in r.published})
    return Report(title or "worldssl report", [str(d) for d in dirs], sections, not_scored,
                  [(str(d), why) for d, why in found.skipped], [(str(d), o) for d, o in found.missing],
                  {"reps": int(reps), "seed": int(seed), "pairs": [list(p) for p in pairs],
                   "by": list(by) if by else None, "ignore": list(ignore)}, sources)


__all__ = ["AGGREGATES", "Report", "build_report"]

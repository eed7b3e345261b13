"""A report's figures, as PNG files: learning curves (IQM and its 95% interval against env frames), Hits@1
against prediction steps and training steps, planning success against the true distance, the aggregate
interval plot and the performance profile. Every legend gives each group's seed count."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from worldssl.report.runs import Run
from worldssl.report.scores import Metric, eval_curve, is_dmc, ranking_curve, task_of
from worldssl.report.stats import AGGREGATES, curve_intervals, performance_profiles
from worldssl.runtime.io import save_figure

_FONT = {"axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 7.5}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(_FONT)
    return plt


def _seeds(n: int) -> str:
    return f"n={n} seed{'s' if n != 1 else ''}"


def _panels(count: int, width: float = 9.0, height: float = 3.8):
    """One panel per task, two a row, each wide enough for its legend at its right."""
    plt = _plt()
    cols = min(count, 2)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), dpi=110, squeeze=False,
                             layout="constrained")
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _by_group_task(runs: Sequence[Run], labels: dict[str, str]) -> dict[str, dict[str, list[Run]]]:
    out: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        out.setdefault(task_of(run), {}).setdefault(labels[str(run.path)], []).append(run)
    return out


def _band(ax: Any, xs: Sequence[float], curves: list[list[float]], label: str, colour: str, options: dict,
          name: str) -> None:
    matrix = np.array(curves, dtype=np.float64)
    iqm, ci = curve_intervals(matrix, reps=max(100, options["reps"] // 4), seed=options["seed"], name=name)
    ax.plot(xs, iqm, color=colour, marker="o", ms=3, lw=1.5, label=f"{label} ({_seeds(len(curves))})")
    if len(curves) > 1:
        ax.fill_between(xs, ci[0], ci[1], color=colour, alpha=0.18, lw=0)


def _common_curves(histories: list[list[tuple[float, float]]]) -> tuple[list[float], list[list[float]]]:
    """The points (x) every history has, and each history's values there."""
    common = sorted(set.intersection(*[{x for x, _ in h} for h in histories])) if histories else []
    return common, [[dict(h)[x] for x in common] for h in histories]


def learning_curves(runs: Sequence[Run], unscored: Sequence[Run], labels: dict[str, str], options: dict,
                    path: Path) -> Path:
    """Eval return against env frames, one panel per task: each group's IQM over seeds with its 95% interval
    (shaded); runs not scored (stopped, running, incomplete) as thin dashed lines, named."""
    grouped = _by_group_task(runs, labels)
    extra = _by_group_task(unscored, labels)
    tasks = sorted(set(grouped) | set(extra))
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        colours: dict[str, str] = {}
        for i, (label, members) in enumerate(sorted(grouped.get(task, {}).items())):
            colours[label] = f"C{i % 10}"
            xs, curves = _common_curves([eval_curve(r) for r in members])
            if xs:
                _band(ax, xs, curves, label, colours[label], options, f"return/{task}/{label}")
        for j, (label, members) in enumerate(sorted(extra.get(task, {}).items())):
            for run in members:
                h = eval_curve(run)
                if h:
                    colour = colours.get(label, f"C{(len(colours) + j) % 10}")
                    ax.plot(*zip(*h), color=colour, ls="--", lw=1, marker=".", ms=3,
                            label=f"{label}, seed {run.seed}: {run.status}, not scored")
        dmc = any(is_dmc(r) for r in [*runs, *unscored] if task_of(r) == task)
        ax.set(xlabel="env frames (action repeat included)", ylabel="eval return" + (" (max 1000)" if dmc else ""),
               title=f"{task}: eval return (IQM, 95% CI)")
        ax.xaxis.set_major_formatter(_thousands())
        ax.grid(alpha=0.3)
        _legend(ax)
    return save_figure(fig, path)


def _legend(ax: Any) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, frameon=False)


def _thousands():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: f"{v / 1000:g}k" if abs(v) >= 1000 else f"{v:g}")


def ranking_vs_horizon(tables: Sequence[Any], path: Path) -> Path | None:
    """Hits@1 (%) against prediction steps, one panel per task: each group's IQM with its 95% interval."""
    hits = [t for t in tables if t.metric.key.startswith("hits@1/")]
    if not hits:
        return None
    tasks = sorted({r.task for t in hits for r in t.rows})
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        groups = sorted({r.group for t in hits for r in t.rows if r.task == task})
        for i, group in enumerate(groups):
            pts = sorted((int(t.metric.key.split("/")[1]), r.stats["IQM"]) for t in hits for r in t.rows
                         if r.task == task and r.group == group)
            ks = [k for k, _ in pts]
            mid = np.array([s.value for _, s in pts])
            err = np.array([[s.value - s.low for _, s in pts], [s.high - s.value for _, s in pts]])
            n = min(s.n for _, s in pts)
            ax.errorbar(ks, mid, yerr=err, marker="o", ms=4, capsize=3, color=f"C{i % 10}",
                        label=f"{group} ({_seeds(n)})")
        ax.set(xlabel="prediction steps k", ylabel="Hits@1 (%)", title=f"{task}: Hits@1 (IQM, 95% CI)",
               ylim=(-3, 103))
        ax.set_xticks(sorted({int(t.metric.key.split('/')[1]) for t in hits}))
        ax.grid(alpha=0.3)
        _legend(ax)
    return save_figure(fig, path)


def ranking_vs_training(runs: Sequence[Run], labels: dict[str, str], options: dict, path: Path) -> Path | None:
    """Hits@1 at the longest horizon against training steps (evaluations logged while training)."""
    ks = sorted({int(m.group(1)) for r in runs for key in (r.summary or {})
                 if (m := re.fullmatch(r"eval/hits@1/(\d+)", key))})
    if not ks:
        return None
    k = ks[-1]
    grouped = _by_group_task(runs, labels)
    if not any(len(ranking_curve(r, k)) > 1 for r in runs):
        return None
    tasks = sorted(grouped)
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        for i, (label, members) in enumerate(sorted(grouped[task].items())):
            xs, curves = _common_curves([ranking_curve(r, k) for r in members])
            if len(xs) > 1:
                _band(ax, xs, curves, label, f"C{i % 10}", options, f"hits/{task}/{label}")
        ax.set(xlabel="training steps (updates)", ylabel=f"Hits@1 at {k} steps (%)",
               title=f"{task}: Hits@1 while training (IQM, 95% CI)", ylim=(-3, 103))
        ax.grid(alpha=0.3)
        _legend(ax)
    return save_figure(fig, path)


def planning_vs_distance(tables: Sequence[Any], path: Path) -> Path | None:
    """Planning success (%) against the true distance to the goal: each group's planner (solid, IQM and 95%
    interval) and, where the runs measured them, the random policy and the oracle (dashed)."""
    plan = [t for t in tables if re.fullmatch(r"plan/(?:\w+/)?success/\d+", t.metric.key)]
    if not plan:
        return None
    tasks = sorted({r.task for t in plan for r in t.rows})
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes, tasks):
        series: dict[tuple[str, str], list[tuple[int, Any]]] = {}
        for t in plan:
            parts = t.metric.key.split("/")
            who = parts[1] if len(parts) == 4 else "planner"
            for r in t.rows:
                if r.task == task:
                    series.setdefault((r.group, who), []).append((int(parts[-1]), r.stats["IQM"]))
        groups = sorted({g for g, _ in series})
        for (group, who), pts in sorted(series.items()):
            pts.sort(key=lambda p: p[0])
            colour = f"C{groups.index(group) % 10}"
            mid = np.array([s.value for _, s in pts])
            err = np.array([[s.value - s.low for _, s in pts], [s.high - s.value for _, s in pts]])
            ax.errorbar([d for d, _ in pts], mid, yerr=err, marker="o" if who == "planner" else "x", ms=4, capsize=3,
                        color=colour, ls="-" if who == "planner" else "--",
                        label=f"{group}{'' if who == 'planner' else f' ({who} policy)'} "
                              f"({_seeds(min(s.n for _, s in pts))})")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="true distance to the goal (actions)", ylabel="planning success (%)",
               title=f"{task}: planning success (IQM, 95% CI)", ylim=(-3, 103))
        ax.grid(alpha=0.3)
        _legend(ax)
    return save_figure(fig, path)


def interval_plot(rows_by_aggregate: list[Any], metric: Metric, scope: str, path: Path) -> Path:
    """Mean, median, IQM and optimality gap of each group on normalised scores, as 95% intervals."""
    plt = _plt()
    fig, axes = plt.subplots(1, 4, figsize=(14, 0.5 * len(rows_by_aggregate) + 1.5), dpi=110, sharey=True,
                             layout="constrained")
    names = [f"{r.group} ({_seeds(len(r.seeds))})" for r in rows_by_aggregate]
    ys = np.arange(len(rows_by_aggregate))[::-1]
    for ax, agg in zip(axes, AGGREGATES):
        for y, r, i in zip(ys, rows_by_aggregate, range(len(rows_by_aggregate))):
            s = r.stats[agg]
            ax.plot([s.low, s.high], [y, y], color=f"C{i % 10}", lw=6, alpha=0.45, solid_capstyle="butt")
            ax.plot([s.value], [y], "|", color="black", ms=14, mew=2)
        ax.set_title(agg + (" (lower is better)" if agg == "optimality gap" else ""))
        ax.set_xlabel(f"normalised {metric.label}")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels(names)
    axes[0].set_ylim(-0.7, len(ys) - 0.3)
    fig.suptitle(f"{metric.label}, {scope}: point estimate (|) and 95% stratified-bootstrap interval", fontsize=10)
    return save_figure(fig, path)


def profile_plot(matrices: dict[str, np.ndarray], metric: Metric, options: dict, path: Path) -> Path:
    """Performance profiles: the fraction of runs (seeds x tasks) whose normalised score exceeds tau, with
    95% bands."""
    plt = _plt()
    taus = np.linspace(0.0, 1.0, 41)
    profiles = performance_profiles(matrices, taus, reps=max(100, options["reps"] // 4), seed=options["seed"],
                                    name=metric.key)
    fig, ax = plt.subplots(figsize=(9.0, 4.2), dpi=110, layout="constrained")
    for i, (label, (profile, ci)) in enumerate(profiles.items()):
        ax.plot(taus, profile, color=f"C{i % 10}", lw=1.8, label=f"{label} ({_seeds(len(matrices[label]))})")
        ax.fill_between(taus, ci[0], ci[1], color=f"C{i % 10}", alpha=0.15, lw=0)
    ax.set(xlabel=f"normalised {metric.label} (τ)", ylabel="fraction of runs with score > τ",
           title=f"performance profile: {metric.label}", ylim=(-0.02, 1.02))
    ax.grid(alpha=0.3)
    _legend(ax)
    return save_figure(fig, path)


def section_figures(verb: str, runs: Sequence[Run], unscored: Sequence[Run], labels: dict[str, str],
                    tables: Sequence[Any], primary: Metric | None, primary_scores: dict | None, options: dict,
                    out: Path) -> list[tuple[str, Path]]:
    """Every figure of one verb's section, as ``(caption, path)``."""
    figs: list[tuple[str, Path | None]] = []
    if verb == "train":
        figs.append(("Learning curves: eval return against env frames (IQM over seeds, shaded 95% interval; "
                     "dashed: runs not scored)", learning_curves(runs, unscored, labels, options,
                                                                  out / "train_learning_curves.png")))
    if verb == "worldmodel":
        figs.append(("Hits@1 against prediction steps (IQM over seeds, 95% interval)",
                     ranking_vs_horizon(tables, out / "worldmodel_hits_vs_steps.png")))
        figs.append(("Hits@1 at the longest horizon while training (IQM over seeds, shaded 95% interval)",
                     ranking_vs_training(runs, labels, options, out / "worldmodel_hits_vs_training.png")))
    if verb in ("worldmodel", "eval"):
        figs.append(("Planning success against the true distance to the goal (IQM over seeds, 95% interval)",
                     planning_vs_distance(tables, out / f"{verb}_planning_vs_distance.png")))
    if primary is not None and primary_scores:
        table = next(t for t in tables if t.metric == primary)
        rows = table.aggregate or [r for r in table.rows]
        scope = f"{len({r.task for r in table.rows})} tasks" if table.aggregate else "per task"
        if not table.aggregate:
            rows = [_normalised(r, primary, len({x.task for x in table.rows}) > 1) for r in table.rows]
        if rows:
            slug = re.sub(r"[^a-z0-9]+", "_", primary.key.lower()).strip("_")
            figs.append((f"Aggregate intervals of the normalised {primary.label} ({scope})",
                         interval_plot(rows, primary, scope, out / f"{verb}_{slug}_intervals.png")))
            matrices = _matrices(primary_scores, primary)
            if matrices:
                figs.append((f"Performance profile of the normalised {primary.label}",
                             profile_plot(matrices, primary, options, out / f"{verb}_{slug}_profile.png")))
    return [(caption, path) for caption, path in figs if path is not None]


def _normalised(row: Any, metric: Metric, with_task: bool) -> Any:
    import dataclasses

    scale = metric.scale or 1.0
    return dataclasses.replace(row, group=f"{row.group} [{row.task}]" if with_task else row.group,
                               stats={k: v.scaled(1.0 / scale) for k, v in row.stats.items()})


def _matrices(scores: dict[str, dict[str, dict[Any, float]]], metric: Metric) -> dict[str, np.ndarray]:
    """Per group, ``(seeds, tasks)`` normalised scores over the seeds run on all of the group's tasks."""
    out = {}
    tasks = sorted({t for g in scores.values() for t in g})
    for group, per_task in scores.items():
        if any(t not in per_task for t in tasks):
            continue
        seeds = [s for s in per_task[tasks[0]] if all(s in per_task[t] for t in tasks)]
        if seeds:
            out[group] = np.array([[per_task[t][s] for t in tasks] for s in seeds]) / (metric.scale or 1.0)
    return out

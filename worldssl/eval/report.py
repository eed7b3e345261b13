"""Summing up a multi-seed comparison of transition objectives: mean, std and a 95% confidence interval per
metric, as a terminal table, a markdown table, a plot of Hits@1 / MRR against prediction steps and a report.

A run is ``{"objective": str, "seed": int, "metrics": {"eval/hits@1/1": ..., "eval/mrr/1": ...,
"eval/pool/1": N, ...}}``. The interval is Student's t: ``t(0.975, n-1) * std / sqrt(n)`` with ``std`` over
seeds (``ddof=1``); one seed gives ``std = ci95 = 0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from worldssl.runtime.io import save_figure


def t_quantile_975(df: int) -> float:
    """``t(0.975, df)``: the 95% interval's multiplier for ``df`` degrees of freedom (``df >= 1``), from
    ``scipy.stats.t`` (exact at every ``df``; it tends to the normal's 1.96 as ``df`` grows)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "ci95", "values"}`` of one metric over seeds."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "ci95": float("nan"), "values": []}
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    ci = t_quantile_975(n - 1) * std / math.sqrt(n) if n > 1 else 0.0
    return {"mean": float(x.mean()), "std": std, "ci95": float(ci), "values": [float(v) for v in x]}


def aggregate(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group runs by objective (first-seen order) and summarise every numeric metric over their seeds.

    Returns:
        ``[{"objective": name, "n": runs, "metrics": {key: {"mean", "std", "ci95", "values"}}}, ...]``. A
        metric some runs lack is summarised over the runs that have it.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(str(run["objective"]), []).append(run)
    rows = []
    for objective, members in groups.items():
        values: dict[str, list[float]] = {}
        for run in members:
            for key, value in (run.get("metrics") or {}).items():
                if isinstance(value, Real) and not isinstance(value, bool):
                    values.setdefault(key, []).append(float(value))
        rows.append({"objective": objective, "n": len(members),
                     "metrics": {key: summarize(v) for key, v in values.items()}})
    return rows


def _cell(row: dict[str, Any], key: str, digits: int = 1) -> str:
    m = row["metrics"].get(key)
    if m is None or not m["values"]:
        return "-"
    return f"{m['mean']:.{digits}f} ± {m['ci95']:.{digits}f}"


def _pool(row: dict[str, Any], steps: Sequence[int]) -> str:
    """Pool size(s): one number, or ``a/b/c`` per step where they differ."""
    pools = []
    for k in steps:
        m = row["metrics"].get(f"eval/pool/{k}")
        if m and m["values"]:
            lo, hi = min(m["values"]), max(m["values"])
            pools.append(f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}")
    if not pools:
        return "-"
    return pools[0] if len(set(pools)) == 1 else "/".join(pools)


def _columns(rows: list[dict[str, Any]], steps: Sequence[int]) -> tuple[list[str], list[list[str]]]:
    header = ["objective", "seeds"]
    for k in steps:
        header += [f"Hits@1 {k}", f"MRR {k}"]
    header.append("pool")
    body = []
    for row in rows:
        cells = [row["objective"], str(row["n"])]
        for k in steps:
            cells += [_cell(row, f"eval/hits@1/{k}"), _cell(row, f"eval/mrr/{k}")]
        cells.append(_pool(row, steps))
        body.append(cells)
    return header, body


def _text(header: list[str], body: list[list[str]]) -> str:
    """Aligned plain-text table: the first column left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, body)])


def _markdown(header: list[str], body: list[list[str]]) -> str:
    """GitHub markdown table: the first column left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in body])


def comparison_table(rows: list[dict[str, Any]], steps: Sequence[int] = (1, 5, 10)) -> str:
    """Plain-text table: one line per objective, Hits@1 and MRR (%) at each step as ``mean ± ci95``, pool size."""
    return _text(*_columns(rows, steps))


def markdown_table(rows: list[dict[str, Any]], steps: Sequence[int] = (1, 5, 10)) -> str:
    """The same table in GitHub markdown (step columns say "k steps")."""
    header, body = _columns(rows, steps)
    names = header[:2]
    for k in steps:
        unit = "step" if k == 1 else "steps"
        names += [f"Hits@1 ({k} {unit})", f"MRR ({k} {unit})"]
    names.append("pool")
    return _markdown(names, body)


#: probe columns of a comparison: (metric key, header); the random-init twin is the same architecture untrained
PROBE_COLUMNS = (("probe/encoder/ridge_r2", "ridge R2"), ("probe/random_init/ridge_r2", "twin ridge R2"),
                 ("probe/encoder/knn_r2", "kNN R2"), ("probe/random_init/knn_r2", "twin kNN R2"),
                 ("probe/slots/matched_r2", "slot R2"))


def probe_tables(rows: list[dict[str, Any]]) -> tuple[str, str] | None:
    """The state probes of a comparison's runs, mean ± 95% CI over seeds, as plain text and as markdown; ``None``
    when no run was probed. Columns no run has (``slot R2`` without slot encoders) are left out."""
    columns = [(key, name) for key, name in PROBE_COLUMNS if any(key in r["metrics"] for r in rows)]
    if not columns:
        return None
    header = ["objective", "seeds", *(name for _, name in columns)]
    body = [[str(r["objective"]), str(r["n"]), *(_cell(r, key, 3) for key, _ in columns)] for r in rows]
    return _text(header, body), _markdown(header, body)


def append_section(report: str | Path, title: str, body: str) -> None:
    """Add a ``## title`` section with ``body`` to the end of a markdown report (rewritten atomically)."""
    from worldssl.runtime.io import atomic_open

    text = Path(report).read_text().rstrip("\n")
    with atomic_open(Path(report), "w") as f:
        f.write(f"{text}\n\n## {title}\n\n{body.strip()}\n")


def comparison_plot(rows: list[dict[str, Any]], path: str | Path, steps: Sequence[int] = (1, 5, 10)) -> Path:
    """PNG with two panels, Hits@1 and MRR (%) against prediction steps, one line per objective with 95% CI
    error bars; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for ax, (metric, label) in zip(axes, (("hits@1", "Hits@1 (%)"), ("mrr", "MRR (%)"))):
        for row in rows:
            xs, ys, errs = [], [], []
            for k in steps:
                m = row["metrics"].get(f"eval/{metric}/{k}")
                if m and m["values"]:
                    xs.append(k)
                    ys.append(m["mean"])
                    errs.append(m["ci95"])
            if xs:
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, label=f"{row['objective']} (n={row['n']})")
        ax.set(xlabel="prediction steps", ylabel=label, title=f"{label.split(' ')[0]} vs prediction steps")
        ax.set_xticks(list(steps))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(path: str | Path, title: str, rows: list[dict[str, Any]], steps: Sequence[int],
                 images: dict[str, str], notes: list[str]) -> Path:
    """Markdown report: title, the table (mean ± 95% CI over seeds), ``images`` (caption -> path relative to
    the report) embedded in order, and ``notes`` as bullets; written atomically."""
    from worldssl.runtime.io import atomic_open

    seeds = sorted({int(r["n"]) for r in rows})
    over = (f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}") if seeds else "0"
    lines = [f"# {title}", "", markdown_table(rows, steps), "",
             f"Hits@1 and MRR in percent, mean ± 95% CI over {over} seed{'s' if over != '1' else ''} "
             f"(Student's t); pool = candidates per ranking.", ""]
    for caption, rel in images.items():
        target = f"<{rel}>" if any(ch.isspace() for ch in str(rel)) else str(rel)
        lines += [f"## {caption}", "", f"![{caption}]({target})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    path = Path(path)
    with atomic_open(path, "w") as f:
        f.write("\n".join(lines))
    return path

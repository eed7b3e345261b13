"""Training curves of world-model runs: one record per finished epoch, read back from a run's ``metrics.csv``,
as a markdown table and a PNG (mean training loss, and Hits@1 at each prediction horizon, per epoch).

A finished epoch is the row that carries ``train/epoch_loss``; its ``train/epoch`` column numbers it (runs
written before that column existed are numbered by the order of their epoch rows). An evaluation counts for an
epoch when it was logged at that epoch's last step. The final evaluation of the selected model is logged as
``final/...`` with the epoch whose weights it ranked (``final/epoch``, fractional for weights stopped
mid-epoch), and fills in that epoch's ranking when the loop did not evaluate it. A run resumed after a kill
replays steps and logs some rows twice: the last row for a step wins.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worldssl.runtime.errors import DataError
from worldssl.runtime.io import save_figure


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _prefixed(row: dict[str, str], prefix: str) -> dict[str, float]:
    """The row's numeric values under ``prefix``, keyed without it."""
    return {key[len(prefix):]: value for key in row if key.startswith(prefix)
            if (value := _number(row[key])) is not None}


def epoch_records(run: str | Path) -> list[dict[str, Any]]:
    """Per-epoch records of a ``worldssl worldmodel`` run directory, in epoch order.

    Returns:
        ``[{"epoch": n, "step": s, "loss": mean training loss, "hits@1/k": ..., "mrr/k": ..., "pool/k": ...}]``;
        the ranking keys are present only for evaluated epochs.

    Raises:
        DataError: ``run`` has no readable ``metrics.csv``.
    """
    path = Path(run) / "metrics.csv"
    if not path.is_file():
        raise DataError(f"{run} has no metrics.csv; point at a `worldssl worldmodel` run directory")
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {e}); is it a worldmodel run's metrics.csv?") from e
    epochs: dict[int, dict[str, Any]] = {}  # step -> epoch row (last wins)
    evals: dict[int, dict[str, float]] = {}  # step -> ranking metrics (last wins)
    final: dict[str, float] = {}  # the final evaluation, of the weights of epoch final["epoch"]
    for row in rows:
        step = _number(row.get("step"))
        if step is None:
            continue
        step = int(step)
        loss = _number(row.get("train/epoch_loss"))
        if loss is not None:
            epochs[step] = {"step": step, "loss": loss, "epoch": _number(row.get("train/epoch"))}
        metrics = _prefixed(row, "eval/")
        if metrics:
            evals[step] = metrics
        last = _prefixed(row, "final/")
        if "epoch" in last:
            final = last
    records = []
    for order, step in enumerate(sorted(epochs), start=1):
        record = epochs[step]
        record["epoch"] = int(record["epoch"]) if record["epoch"] is not None else order
        records.append({**record, **evals.get(step, {})})
    # an epoch not evaluated in the loop (the last one, or eval_every > 1) takes the final evaluation when that
    # ranked exactly its weights
    for record in records:
        if record["epoch"] == final.get("epoch") and not any(k.startswith("hits@1/") for k in record):
            record.update({k: v for k, v in final.items() if k != "epoch"})
    return records


def _lowest(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return min(records, key=lambda r: r["loss"])


def lowest_loss_epoch(records: Sequence[dict[str, Any]]) -> int | None:
    """The epoch with the lowest mean training loss: the one ``final_model=best_loss`` keeps (first on ties)."""
    return _lowest(records)["epoch"] if records else None


def horizons(records: Sequence[dict[str, Any]]) -> list[int]:
    """The prediction horizons ``k`` the records rank (from their ``hits@1/k`` keys), ascending."""
    return sorted({int(key.split("/")[1]) for r in records for key in r if key.startswith("hits@1/")})


def curves_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table: epoch, Hits@1 / MRR at each horizon, mean training loss; the lowest-loss epoch marked."""
    selected = lowest_loss_epoch(records)
    ks = horizons(records)
    head = ["epoch"] + [f"{k} step{'s' if k != 1 else ''}" for k in ks] + ["mean train loss"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for r in records:
        cells = [f"{r['epoch']} (lowest loss)" if r["epoch"] == selected else str(r["epoch"])]
        for k in ks:
            h, m = r.get(f"hits@1/{k}"), r.get(f"mrr/{k}")
            cells.append("" if h is None else f"{h:.1f}" if m is None else f"{h:.1f} / {m:.1f}")
        cells.append(f"{r['loss']:.4g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_plot(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: str | Path,
                steps: Sequence[int] | None = None) -> Path:
    """PNG with two panels: mean training loss per epoch (log scale) and Hits@1 per epoch, one colour per run
    and one line style per horizon (``steps``: which horizons; all by default); each run's lowest-loss epoch
    is starred. ``runs`` is ``[(label, records), ...]``; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = ("-", "--", ":", "-.")
    fig, (ax_loss, ax_hits) = plt.subplots(1, 2, figsize=(11, 4), dpi=110)
    for i, (label, records) in enumerate(runs):
        colour = f"C{i % 10}"
        xs = [r["epoch"] for r in records]
        losses = [r["loss"] for r in records]
        ax_loss.plot(xs, losses, color=colour, marker=".", label=label)
        for j, k in enumerate(k for k in horizons(records) if steps is None or k in steps):
            points = [(r["epoch"], r[f"hits@1/{k}"]) for r in records if f"hits@1/{k}" in r]
            ax_hits.plot(*zip(*points), color=colour, ls=styles[j % len(styles)], marker=".",
                         label=f"{label}, {k} step{'s' if k != 1 else ''}")
        best = _lowest(records)
        ax_loss.plot([best["epoch"]], [best["loss"]], marker="*", ms=14, color=colour, ls="none")
    if all(r["loss"] > 0 for _, records in runs for r in records):
        ax_loss.set_yscale("log")
    ax_loss.set(xlabel="epoch", ylabel="mean training loss", title="training loss (star: lowest)")
    ax_hits.set(xlabel="epoch", ylabel="Hits@1 (%)", title="Hits@1 on the eval set")
    for ax in (ax_loss, ax_hits):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def run_curves(runs: Sequence[str | Path], path: str | Path, labels: Sequence[str] | None = None,
               steps: Sequence[int] | None = None) -> tuple[str, Path]:
    """Read each run, plot them together into ``path`` (Hits@1 at the horizons ``steps``, all by default);
    returns (the markdown tables, one per run, and the PNG).

    Raises:
        DataError: a run has no metrics.csv or no finished epoch, ``labels`` does not match ``runs``, or no run
            ranks a horizon in ``steps``.
    """
    if labels is not None and len(labels) != len(runs):
        raise DataError(f"{len(labels)} labels for {len(runs)} runs; give one label per run or none")
    loaded, tables = [], []
    for i, run in enumerate(runs):
        records = epoch_records(run)
        if not records:
            raise DataError(f"{run} has not finished an epoch yet (no train/epoch_loss in its metrics.csv)")
        label = str(labels[i]) if labels is not None else Path(run).name
        loaded.append((label, records))
        tables.append(f"{label}\n\n{curves_table(records)}")
    if steps is not None:
        ranked = sorted({k for _, records in loaded for k in horizons(records)})
        if not set(steps) & set(ranked):
            raise DataError(f"steps={list(steps)} matches no horizon these runs rank ({ranked}); pick from those")
    return "\n\n".join(tables), curves_plot(loaded, path, steps)

"""Timing helpers and the table every benchmark prints."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def median_rate(fn: Callable[[], int], repeats: int) -> float:
    """Median over ``repeats`` of (units done by ``fn``) / (seconds it took)."""
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        units = fn()
        rates.append(units / (time.perf_counter() - t0))
    return statistics.median(rates)


@dataclass
class Row:
    name: str
    figure: str          # what is measured, with its unit
    ours: float
    baseline: float | None = None
    baseline_name: str = ""
    target: str = ""     # e.g. ">= 3x" or ">= 150"

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.ours / self.baseline


def format_table(rows: list[Row]) -> str:
    header = ["benchmark", "figure", "ours", "baseline", "baseline is", "ratio", "target"]
    body = [[r.name, r.figure, _num(r.ours), _num(r.baseline), r.baseline_name,
             "" if r.ratio is None else f"{r.ratio:.2f}x", r.target] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = [" | ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in [header, *body]]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    out = ["| benchmark | figure | ours | baseline | baseline is | ratio | target |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "" if r.ratio is None else f"{r.ratio:.2f}x"
        out.append(f"| {r.name} | {r.figure} | {_num(r.ours)} | {_num(r.baseline)} | {r.baseline_name} | {ratio} | {r.target} |")
    return "\n".join(out)


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def setting_reader(cfg: Any) -> Callable[[str, Any], Any]:
    """``get(key, default)`` over a config (mapping or attributes); a missing or null key gives ``default``."""
    def get(key: str, default: Any) -> Any:
        value = cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)
        return default if value is None else value

    return get

"""One logger per run: namespaced metrics to ``metrics.csv`` and tensorboard, headline numbers to ``summary.json``."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from worldssl.runtime.io import atomic_open, write_json


class Logger:
    """Write ``{"train/loss": 0.3, ...}`` rows keyed by step.

    ``metrics.csv`` is wide (one column per key); a key first seen mid-run widens the file, which is then
    rewritten atomically. A resumed run appends to the existing file.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.run_dir / "metrics.csv"
        self._columns: list[str] = ["step"]
        self._rows: list[dict[str, Any]] = []
        if self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                reader = csv.DictReader(f)
                self._columns = list(reader.fieldnames or ["step"])
                self._rows = list(reader)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._rows.append(row)
        new = [k for k in row if k not in self._columns]
        if new:
            self._columns += new
            self._rewrite()
        else:
            with open(self.csv_path, "a", newline="") as f:
                csv.DictWriter(f, fieldnames=self._columns).writerow(row)
        if self._tb is not None:
            for key, value in metrics.items():
                if math.isfinite(float(value)):
                    self._tb.add_scalar(key, float(value), int(step))

    def _rewrite(self) -> None:
        with atomic_open(self.csv_path, "w") as f:
            writer = csv.DictWriter(f, fieldnames=self._columns)
            writer.writeheader()
            writer.writerows(self._rows)

    def summary(self, values: dict[str, Any]) -> None:
        write_json(self.run_dir / "summary.json", values)

    def close(self) -> None:
        if not self.csv_path.exists():
            self._rewrite()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> Logger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

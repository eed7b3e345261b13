"""``worldssl bench all``: every benchmark, each in its own process, gathered into one table.

``all_size`` picks a slice of each benchmark from ``all_sizes`` in ``configs/bench.yaml`` (lists of that
benchmark's overrides): ``quick`` takes minutes on a 2-core CPU; ``gpu`` fits in 8 minutes on one GPU and
measures the figures that matter there (a C-SWM Shapes epoch, SAC updates/s and end-to-end frames/s, MAE
images/s, planning steps/s); ``full`` is each benchmark's defaults. Each benchmark runs as ``worldssl bench
WHAT`` in a child process (its own memory, threads and time limit, ``all_timeout_s``), writes its own run
directory under this one, and its rows come back from its ``summary.json``, named ``WHAT: row``; a benchmark that
fails or runs out of time is a row saying so, never left out. A last row per benchmark gives its wall time.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from worldssl.bench.common import Row
from worldssl.runtime.errors import ConfigError


def plan(cfg: Any) -> list[tuple[str, list[str]]]:
    """The benchmarks this size runs, each with its overrides, in the order of ``all_sizes``."""
    from worldssl.verbs.bench import BENCHES

    sizes = cfg.all_sizes
    if cfg.all_size not in sizes:
        raise ConfigError(f"unknown all_size {cfg.all_size!r}; valid: {', '.join(sizes)}")
    size = OmegaConf.to_container(sizes[cfg.all_size], resolve=True) or {}
    if "all" in size:
        raise ConfigError(f"all_sizes.{cfg.all_size} cannot run `bench all` inside itself")
    # a benchmark this version does not have (e.g. plan, before planning lands) is skipped, and said so
    return [(what, [str(o) for o in overrides or []]) for what, overrides in size.items() if what in BENCHES]


def check(cfg: Any) -> None:
    """Every benchmark of the size, composed with its overrides and validated (one line naming the first bad one)."""
    from worldssl.cli import compose_verb
    from worldssl.runtime.errors import WorldsslError
    from worldssl.verbs import bench

    for what, overrides in plan(cfg):
        try:
            bench.validate(compose_verb("bench", [f"what={what}", f"device={cfg.device}", *overrides]))
        except WorldsslError as e:
            raise ConfigError(f"all_sizes.{cfg.all_size}.{what}: {e}") from e


def device_line() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"CPU only, torch {torch.__version__}"


def run(cfg: Any) -> list[Row]:
    from worldssl.verbs._run import run_dir
    from worldssl.verbs.bench import BENCHES

    root = run_dir()
    print(f"bench all ({cfg.all_size}): {device_line()}", flush=True)
    rows: list[Row] = []
    size = OmegaConf.to_container(cfg.all_sizes[cfg.all_size], resolve=True) or {}
    for what in size:
        if what not in BENCHES:
            print(f"bench all: no `worldssl bench {what}` in this version; skipped")
    for what, overrides in plan(cfg):
        out = root / what
        cmd = [sys.executable, "-m", "worldssl.cli", "bench", what, f"hydra.run.dir={out}", f"device={cfg.device}",
               *overrides]
        print(f"\nbench all: worldssl bench {what} {' '.join(overrides)}", flush=True)
        start = time.perf_counter()
        try:
            code = subprocess.run(cmd, timeout=cfg.all_timeout_s, check=False).returncode
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.perf_counter() - start
        rows += _rows(what, out / "summary.json", code)
        rows.append(Row(f"{what}: wall time", "s (the whole benchmark, start-up included)", seconds))
    return rows


def _rows(what: str, summary: Path, code: int | None) -> list[Row]:
    if code is None or code != 0 or not summary.is_file():
        why = "timed out (all_timeout_s)" if code is None else f"failed (exit {code})"
        return [Row(f"{what}: {why}", f"see {summary.parent}", math.nan)]
    keep = ("name", "figure", "ours", "baseline", "baseline_name", "target")
    return [Row(**{**{k: r[k] for k in keep if k in r}, "name": f"{what}: {r['name']}"})
            for r in json.loads(summary.read_text())["rows"]]

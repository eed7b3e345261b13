"""``worldssl bench WHAT``: run a benchmark, print its table, save it as summary.json (and markdown)."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any

from worldssl.bench.common import format_table, markdown_table
from worldssl.runtime.errors import ConfigError
from worldssl.runtime.io import atomic_open
from worldssl.runtime.logger import Logger
from worldssl.verbs._run import run_dir, save_config

BENCHES = {"envs": "worldssl.bench.envs", "ssl": "worldssl.bench.ssl",
           "worldmodel": "worldssl.bench.worldmodel", "agents": "worldssl.bench.agents", "sb3": "worldssl.bench.sb3",
           "plan": "worldssl.bench.plan", "all": "worldssl.bench.all"}


def validate(cfg: Any) -> None:
    if cfg.what not in BENCHES:
        raise ConfigError(f"unknown benchmark {cfg.what!r}; valid: {', '.join(BENCHES)} (e.g. `worldssl bench envs`)")
    if cfg.what == "all":
        from worldssl.bench.all import check

        check(cfg)
    if cfg.steps < 1 or cfg.repeats < 1:
        raise ConfigError("steps and repeats must be positive integers")


def run(cfg: Any) -> None:
    validate(cfg)
    directory = run_dir()
    save_config(cfg, directory)
    rows = importlib.import_module(BENCHES[cfg.what]).run(cfg)
    print()
    print(format_table(rows))
    with Logger(directory, tensorboard=False) as logger:
        logger.summary({"bench": cfg.what, "rows": [{**dataclasses.asdict(r), "ratio": r.ratio} for r in rows]})
    if cfg.out:
        with atomic_open(Path(cfg.out), "w") as f:
            f.write(markdown_table(rows) + "\n")
    print(f"\nrun dir {directory}")

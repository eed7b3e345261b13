"""What each run scored, on which task and budget, and which group of runs it belongs to.

**Metrics** (raw values as the runs logged them; ``scale`` divides them into [0, 1] where a maximum exists):

- ``train``: ``return``, the eval return at the run's budget (``frames``); DMC returns are normalised by 1000,
  other envs' returns are left raw (no known maximum);
- ``worldmodel``: ``hits@1/<k>`` and ``mrr/<k>`` (%, / 100) at each ranked horizon ``k``, ``plan/...success/<d>``
  (%, / 100) where the run planned, and the state probe of its encoder (``probe/encoder/ridge_r2``, raw R^2);
- ``pretrain``: the state probe of its encoder;
- ``eval plan``: ``plan/...success/<d>``.

**Tasks** are the environment (DMC: the task name), so runs differing only in the env are one configuration on
several tasks. **Groups** are the configurations: the config keys whose values differ between runs of the same
verb, except the seed, the task and keys that describe how a run was run rather than what it is
(:data:`IGNORED`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable
from pathlib import PurePosixPath
from typing import Any

from worldssl.report.runs import Run

#: config keys that never define a group: the seed, bookkeeping, paths of data that follow the task
IGNORED = ("seed", "resume", "progress", "max_minutes", "threads", "device", "video", "log_every", "save_every_frames",
           "out", "data_root", "data", "eval_data", "workers", "figures", "eval_every", "eval_every_frames",
           "eval_batch_size", "probe_frames", "amp", "compile", "hydra")
#: config keys that name the task
TASK_KEYS = ("env.name", "env.id", "env.task")


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str              # "return", "hits@1/10", "plan/success/all", "probe/encoder/ridge_r2"
    label: str            # for tables and axes
    unit: str             # what the raw numbers are
    scale: float | None   # raw / scale is in [0, 1]; None: not normalised


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys; lists as tuples."""
    if isinstance(config, dict):
        out: dict[str, Any] = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(config, list):
        return {prefix[:-1]: tuple(str(v) if isinstance(v, (dict, list)) else v for v in config)}
    return {prefix[:-1]: config}


def task_of(run: Run) -> str:
    """The task a run is scored on: the DMC task, else the env's config name, else its id."""
    env = run.config.get("env") if isinstance(run.config.get("env"), dict) else {}
    if env.get("task"):
        return str(env["task"])
    if env.get("name"):
        return str(env["name"])
    summary = run.summary or {}
    return str(summary.get("env_id") or summary.get("env") or "?").split("/")[-1]


def env_id(run: Run) -> str:
    env = run.config.get("env") if isinstance(run.config.get("env"), dict) else {}
    return str(env.get("id") or (run.summary or {}).get("env_id") or "")


def is_dmc(run: Run) -> bool:
    return env_id(run).startswith("worldssl/DMC")


def budget_of(run: Run) -> int | None:
    """The run's budget: env frames (train), epochs (worldmodel), steps (pretrain)."""
    key = {"train": "frames", "worldmodel": "epochs", "pretrain": "steps"}.get(run.verb)
    value = run.config.get(key) if key else None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def budget_text(verb: str, budget: int | None) -> str:
    if budget is None:
        return ""
    return {"train": f"{budget:,} frames", "worldmodel": f"{budget} epochs", "pretrain": f"{budget:,} steps"}.get(
        verb, str(budget))


_PLAN = re.compile(r"^plan/(?:(\w+)/)?success/(\w+)$")


def run_metrics(run: Run) -> dict[Metric, float]:
    """The run's score on each of its metrics (raw units)."""
    s = run.summary or {}
    out: dict[Metric, float] = {}
    if run.verb == "train":
        budget = budget_of(run)
        history = [(int(h["frame"]), float(h["return"])) for h in s.get("eval_history") or []]
        at = [r for f, r in history if f == budget]
        if at and _number(at[-1]) is not None:
            dmc = is_dmc(run)
            out[Metric("return", "eval return", "return" + (" (max 1000)" if dmc else ""),
                       1000.0 if dmc else None)] = at[-1]
    for key, value in s.items():
        v = _number(value)
        if v is None:
            continue
        if m := re.fullmatch(r"eval/(hits@1|mrr)/(\d+)", key):
            name = "Hits@1" if m.group(1) == "hits@1" else "MRR"
            k = int(m.group(2))
            out[Metric(f"{m.group(1)}/{k}", f"{name}, {k} step{'s' if k != 1 else ''}", "%", 100.0)] = v
        elif m := _PLAN.match(key):
            who = f" ({m.group(1)} policy)" if m.group(1) else ""
            where = "all distances" if m.group(2) == "all" else f"distance {m.group(2)}"
            out[Metric(key, f"planning success{who}, {where}", "%", 100.0)] = v
        elif m := re.fullmatch(r"probe/encoder/(ridge|knn)_r2", key):
            out[Metric(key, f"state probe R² ({'ridge' if m.group(1) == 'ridge' else 'k-NN'})", "R²", None)] = v
    return out


def metric_order(metric: Metric) -> tuple:
    """Tables in a reading order: returns, then ranking by horizon, planning, probes."""
    kind = metric.key.split("/")[0]
    rank = {"return": 0, "hits@1": 1, "mrr": 2, "plan": 3, "probe": 4}.get(kind, 5)
    number = re.findall(r"\d+", metric.key)
    return rank, "random" in metric.key or "oracle" in metric.key, metric.key.endswith("/all"), \
        int(number[-1]) if number else 0, metric.key


def eval_curve(run: Run) -> list[tuple[float, float]]:
    """A train run's ``(frame, eval return)`` history (from summary.json, else metrics.csv)."""
    if run.summary and run.summary.get("eval_history"):
        return [(float(h["frame"]), float(h["return"])) for h in run.summary["eval_history"]]
    out: dict[float, float] = {}
    for row in run.metric_rows():
        value, step = _number(_float(row.get("eval/return"))), _number(_float(row.get("step")))
        if value is not None and step is not None:
            out[step] = value  # a row replayed after a resume wins
    return sorted(out.items())


def ranking_curve(run: Run, k: int) -> list[tuple[float, float]]:
    """A worldmodel run's ``(training step, Hits@1 at k)`` evaluations from metrics.csv."""
    out: dict[float, float] = {}
    for row in run.metric_rows():
        value, step = _number(_float(row.get(f"eval/hits@1/{k}"))), _number(_float(row.get("step")))
        if value is not None and step is not None:
            out[step] = value
    return sorted(out.items())


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


@dataclasses.dataclass
class Grouping:
    keys: dict[str, list[str]]     # verb -> the config keys that define its groups
    labels: dict[str, str]         # run path -> group label


def _short_key(key: str) -> str:
    """``encoder.mode`` -> ``mode``; ``objective.name`` -> ``objective`` (a bare ``name`` or ``kind`` says little)."""
    parts = key.split(".")
    return parts[-2] if len(parts) > 1 and parts[-1] in ("name", "kind") else parts[-1]


def _shorten(values: list[Any]) -> dict[Any, str]:
    """Readable, distinct text for each value: paths lose the directories all of them share."""
    texts = {v: ("none" if v is None else str(v)) for v in values}
    paths = [v for v in values if isinstance(v, str) and "/" in v]
    if len(paths) > 1:
        parts = [PurePosixPath(p).parts for p in paths]
        common = 0
        while all(len(q) > common + 1 for q in parts) and len({q[common] for q in parts}) == 1:
            common += 1
        heads = {p: q[common] for p, q in zip(paths, parts)}
        if len(set(heads.values())) == len(paths):
            texts.update(heads)
        else:
            texts.update({p: "/".join(q[common:]) for p, q in zip(paths, parts)})
    return texts


def _seedless(value: Any, seed: Any) -> Any:
    """A path naming the run's own seed (an encoder a sweep pretrained with that seed, ``.../cpc/seed1/...``) with
    that seed replaced by ``seed*``: such runs are seeds of one configuration, not one configuration each."""
    if isinstance(value, str) and isinstance(seed, int) and not isinstance(seed, bool):
        return re.sub(rf"(?<![0-9A-Za-z])seed[_=-]?{seed}(?![0-9])", "seed*", value)
    return value


def group_runs(runs: Iterable[Run], by: list[str] | None = None, ignore: Iterable[str] = ()) -> Grouping:
    """Label each run by the values of the keys that vary among runs of its verb (or of ``by``)."""
    runs = list(runs)
    flat = {r.path: {k: _seedless(v, r.seed) for k, v in flatten(r.config).items()} for r in runs}
    skip = tuple(IGNORED) + tuple(ignore)

    def ignored(key: str) -> bool:
        return key in TASK_KEYS or any(key == s or key.startswith(s + ".") for s in skip)

    def task_attribute(key: str, members: list[Run]) -> bool:
        """Across several tasks, a key with one value within each task (a per-task dataset, image size or
        action repeat) describes the task, not a group of runs."""
        tasks: dict[str, set[str]] = {}
        for r in members:
            tasks.setdefault(task_of(r), set()).add(repr(flat[r.path].get(key)))
        return len(tasks) > 1 and all(len(values) == 1 for values in tasks.values())

    keys: dict[str, list[str]] = {}
    for verb in dict.fromkeys(r.verb for r in runs):
        members = [r for r in runs if r.verb == verb]
        if by:
            keys[verb] = list(by)
            continue
        names = dict.fromkeys(k for r in members for k in flat[r.path])
        keys[verb] = [k for k in names if not ignored(k) and len({repr(flat[r.path].get(k)) for r in members}) > 1
                      and not task_attribute(k, members)]
    every = list(dict.fromkeys(k for ks in keys.values() for k in ks))
    shortened = {k: _shorten(list(dict.fromkeys(flat[r.path].get(k) for r in runs))) for k in every}
    labels = {}
    for r in runs:
        f, own = flat[r.path], keys[r.verb]
        if not own:
            labels[str(r.path)] = r.verb
        elif len(own) == 1:
            labels[str(r.path)] = shortened[own[0]][f.get(own[0])]
        else:
            labels[str(r.path)] = ", ".join(f"{_short_key(k)}={shortened[k][f.get(k)]}" for k in own)
    return Grouping(keys, labels)

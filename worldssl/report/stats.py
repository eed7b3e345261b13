"""Interval estimates across seeds and tasks, from rliable: mean, median, IQM and optimality gap with 95%
stratified-bootstrap intervals, performance profiles and the probability of improvement.

Scores are ``(runs, tasks)`` arrays. rliable draws its bootstrap indices from numpy's *global* generator
(``np.random.choice`` in ``StratifiedBootstrap.update_indices``; its ``random_state`` argument reaches only arch's
own generator, and ``create_performance_profile`` takes none), so every call here runs under :func:`seeded`:
the global state is set from a seed derived from the report's ``seed`` and the call's name (the same numbers
whatever else the report computes, and in whatever order), then restored. Tested: two reports are identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
import zlib
from collections.abc import Iterator, Sequence

import numpy as np

#: the four aggregates of the tables, in column order
AGGREGATES = ("mean", "median", "IQM", "optimality gap")


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval, over ``n`` runs (seeds)."""

    value: float
    low: float
    high: float
    n: int

    def scaled(self, factor: float) -> Interval:
        return Interval(self.value * factor, self.low * factor, self.high * factor, self.n)


@contextlib.contextmanager
def seeded(seed: int, name: str) -> Iterator[np.random.RandomState]:
    """Numpy's global generator seeded from ``(seed, name)`` for the duration (restored after); yields a
    ``RandomState`` of the same seed for the APIs that take one."""
    derived = (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 32)
    saved = np.random.get_state()
    np.random.seed(derived)
    absl = logging.getLogger("absl")  # rliable logs "Calculating estimates for ..." at INFO for every call
    level = absl.level
    absl.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # arch warns that a RandomState argument is deprecated; its draws here come from np.random anyway
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"arch\.")
            yield np.random.RandomState(derived)
    finally:
        np.random.set_state(saved)
        absl.setLevel(level)


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all scores: the mean after dropping the lowest and highest quarter (the same cut
    as ``scipy.stats.trim_mean(x, 0.25)``, which rliable's ``aggregate_iqm`` calls). Written out because the
    bootstrap calls it for every resample: scipy's wrapper costs about 2 ms a call, which made a report's
    statistics take 40 of its 90 s (profiled); this is the same arithmetic in microseconds, tested against
    rliable's function."""
    flat = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    cut = int(0.25 * flat.size)
    return float(flat[cut:flat.size - cut].mean())


def aggregates(scores: np.ndarray, gap_threshold: float | None = 1.0) -> np.ndarray:
    """``[mean, median, IQM, optimality gap]`` of ``(runs, tasks)`` scores, as rliable defines them: the mean
    of all scores, the median of the per-task means, the IQM of all scores, and the mean shortfall below
    ``gap_threshold`` (NaN when None). Tested equal to ``rliable.metrics``."""
    scores = np.asarray(scores, dtype=np.float64)
    gap = float(gap_threshold - np.mean(np.minimum(scores, gap_threshold))) if gap_threshold is not None else np.nan
    return np.array([scores.mean(), np.median(scores.mean(axis=0)), iqm(scores), gap])


def _aggregates(gap_threshold: float | None):
    return lambda scores: aggregates(scores, gap_threshold)


def aggregate_intervals(scores: dict[str, np.ndarray], *, reps: int, seed: int, name: str,
                        gap_threshold: float | None = 1.0) -> dict[str, dict[str, Interval]]:
    """Per group: mean, median, IQM and optimality gap (below ``gap_threshold``; None: not computed, NaN) of
    its ``(runs, tasks)`` scores, each with a 95% stratified-bootstrap interval (rliable, percentile method).

    A group of one run gets its point estimate as both ends of the interval (nothing to resample)."""
    from rliable import library

    fn = _aggregates(gap_threshold)
    out: dict[str, dict[str, Interval]] = {}
    for label, x in scores.items():
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"scores of {label!r} must be a non-empty (runs, tasks) array, got shape {x.shape}")
        n = x.shape[0]
        if n == 1:
            point = fn(x)
            lows = highs = point
        else:
            with seeded(seed, f"{name}/{label}") as rs:
                points, cis = library.get_interval_estimates({label: x}, fn, reps=reps, random_state=rs)
            point, (lows, highs) = points[label], cis[label]
        out[label] = {agg: Interval(float(point[i]), float(lows[i]), float(highs[i]), n)
                      for i, agg in enumerate(AGGREGATES)}
    return out


def curve_intervals(curves: np.ndarray, *, reps: int, seed: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """IQM at each point of ``(runs, points)`` curves and its 95% stratified-bootstrap interval:
    ``(iqm (points,), ci (2, points))``; one run: the curve itself, no band."""
    from rliable import library

    curves = np.asarray(curves, dtype=np.float64)
    x = curves[:, None, :]  # (runs, 1 task, points)

    def fn(s: np.ndarray) -> np.ndarray:
        return np.array([iqm(s[..., j]) for j in range(s.shape[-1])])

    if curves.shape[0] == 1:
        return curves[0], np.stack([curves[0], curves[0]])
    with seeded(seed, f"curve/{name}") as rs:
        points, cis = library.get_interval_estimates({"c": x}, fn, reps=reps, random_state=rs)
    return points["c"], cis["c"]


def performance_profiles(scores: dict[str, np.ndarray], taus: Sequence[float], *, reps: int, seed: int,
                         name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per group: the fraction of runs scoring above each ``tau`` and its 95% band, ``(profile, (2, taus))``."""
    from rliable import library

    out = {}
    for label, x in scores.items():
        with seeded(seed, f"profile/{name}/{label}"):
            profiles, cis = library.create_performance_profile({label: np.asarray(x, np.float64)},
                                                               np.asarray(taus, np.float64), reps=reps)
        out[label] = (profiles[label], cis[label])
    return out


def probability_of_improvement(x: np.ndarray, y: np.ndarray, *, reps: int, seed: int, name: str) -> Interval:
    """P(X > Y): the chance that a run of X beats a run of Y on a task (ties count a half), averaged over tasks,
    with a 95% interval from resampling the runs of X and Y independently. ``n`` is the smaller seed count."""
    from rliable import library, metrics

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)

    def fn(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.array([metrics.probability_of_improvement(a, b)])

    with seeded(seed, f"poi/{name}") as rs:
        points, cis = library.get_interval_estimates({"p": [x, y]}, fn, reps=reps, random_state=rs)
    return Interval(float(points["p"][0]), float(cis["p"][0, 0]), float(cis["p"][1, 0]), min(len(x), len(y)))

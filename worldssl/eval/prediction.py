"""Looking inside a trained world model: pixel prediction error, prediction and object-map figures, state probes.

Pixel error and prediction grids need a generative model (one with a decoder): ``obs[0]`` is encoded, rolled
out ``k`` steps with the logged actions and decoded, and the result is compared with the true ``obs[k]``.
Object maps need C-SWM's slot encoder. Probes regress the true state from ``encode(obs)`` (flattened) on
held-out episodes, next to a random-init twin and raw pixels, as :mod:`worldssl.eval.probe` does for encoders.
Slot alignment asks whether each slot of a slot model carries one object: the R^2 of each object's true
coordinates from each single slot, and the mean R^2 under the best one-to-one object-slot matching.
Figures are PNGs, written atomically.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from worldssl.eval.probe import (
    ProbeResult,
    dataset_frames,
    downsampled_pixels,
    encode_frames,
    probe_features,
    r2_per_dim,
    ridge_fit,
)
from worldssl.eval.ranking import pad_actions, rollouts
from worldssl.runtime.errors import DataError


@torch.no_grad()
def pixel_prediction_error(model: torch.nn.Module, dataset, steps: Sequence[int] = (1, 5, 10), batch_size: int = 256,
                           device: str | torch.device = "cpu", max_episodes: int | None = None) -> dict[str, float]:
    """Mean squared pixel error of ``k``-step predictions, ``decode(rollout(encode(obs[0]), actions[:k]))``
    against ``obs[k] / 255``, per pixel and averaged over the episodes at least ``k`` steps long.

    Episodes (the first ``max_episodes``, or all) are read ``batch_size`` at a time. ``model`` must already be
    on ``device``; it runs in eval mode (its mode is restored afterwards).

    Returns:
        ``{"pixel_mse/1": ..., "pixel_mse/5": ..., ...}``; a ``k`` no episode is long enough for is left out.

    Raises:
        ValueError: the model has no decoder, or bad ``steps`` / ``batch_size``.
    """
    _need_decoder(model, "pixel_prediction_error")
    _check_shape(model, dataset)
    steps = sorted({int(k) for k in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be integers >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sums = dict.fromkeys(steps, 0.0)
    counts = dict.fromkeys(steps, 0)
    was_training = model.training
    model.eval()
    try:
        for k, pred, frames in rollouts(model, dataset, steps, batch_size, device, max_episodes):
            diff = model.decode(pred).double() - frames.double() / 255.0
            sums[k] += float((diff ** 2).sum())
            counts[k] += int(diff.numel())
    finally:
        model.train(was_training)
    return {f"pixel_mse/{k}": sums[k] / counts[k] for k in steps if counts[k]}


def prediction_grid(model: torch.nn.Module, dataset, path: str | Path, steps: Sequence[int] = (1, 5, 10),
                    episodes: int = 6, device: str | torch.device = "cpu") -> Path:
    """PNG of decoded predictions: one row per episode (the first ``episodes``), columns ``obs[0]``, then for
    each ``k`` the true ``obs[k]`` and the ``k``-step prediction. Steps longer than every shown episode are
    left out; cells past an episode's end stay empty. Stacked frames show their newest frame.
    """
    _need_decoder(model, "prediction_grid")
    _check_shape(model, dataset)
    steps = sorted({int(k) for k in steps})
    if not steps or steps[0] < 1:
        raise ValueError(f"steps must be integers >= 1, got {steps}")
    n = min(int(episodes), int(dataset.num_episodes))
    if n < 1:
        raise DataError(f"prediction_grid needs at least one episode, dataset has {dataset.num_episodes}")
    eps = [dataset.episode(i) for i in range(n)]
    longest = max(len(ep.actions) for ep in eps)
    steps = [k for k in steps if k <= longest]
    horizon = steps[-1] if steps else 0
    preds: dict[int, np.ndarray] = {}
    if horizon:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                acts = np.stack([pad_actions(ep.actions[:horizon], horizon) for ep in eps])
                z = model.encode(torch.from_numpy(np.stack([ep.obs[0] for ep in eps])).to(device))
                rolled = model.rollout(z, torch.from_numpy(acts).to(device))
                for k in steps:
                    preds[k] = model.decode(rolled[:, k - 1]).float().clamp(0, 1).cpu().numpy()
        finally:
            model.train(was_training)
    channels = _frame_channels(dataset)
    titles = ["t = 0"] + [f"{what} t+{k}" for k in steps for what in ("true", "pred")]
    plt, fig, axes = _grid(n, len(titles))
    for r, ep in enumerate(eps):
        cells = [ep.obs[0].astype(np.float32) / 255.0]
        for k in steps:
            short = k > len(ep.actions)
            cells += [None if short else ep.obs[k].astype(np.float32) / 255.0, None if short else preds[k][r]]
        for c, frame in enumerate(cells):
            ax = axes[r, c]
            ax.set_axis_off()
            if r == 0:
                ax.set_title(titles[c], fontsize=8)
            if frame is not None:
                _show(ax, frame, channels)
    return _save(plt, fig, path)


def slot_maps(model: torch.nn.Module, dataset, path: str | Path, frames: int = 4,
              device: str | torch.device = "cpu") -> Path:
    """PNG of a slot encoder's object maps: one row per frame (``frames`` of them, spread evenly over the
    dataset), the frame and then its ``K`` maps (viridis, 0 to 1).

    Raises:
        ValueError: the model's encoder is not C-SWM's slot encoder.
    """
    encoder = getattr(model, "encoder", None)
    if getattr(encoder, "kind", None) != "slots" or not hasattr(encoder, "object_maps"):
        raise ValueError(f"slot_maps needs a world model with the slot encoder (encoder=slots); this one has "
                         f"{type(encoder).__name__}")
    _check_shape(model, dataset)
    total = int(sum(int(n) + 1 for n in dataset.lengths))
    if frames < 1 or total < 1:
        raise ValueError(f"slot_maps needs frames >= 1 and a non-empty dataset, got frames={frames}, "
                         f"{total} frames")
    ep = np.concatenate([np.full(int(n) + 1, i) for i, n in enumerate(dataset.lengths)])
    t = np.concatenate([np.arange(int(n) + 1) for n in dataset.lengths])
    pick = np.unique(np.linspace(0, total - 1, min(int(frames), total)).round().astype(int))
    obs = dataset.frames(ep[pick], t[pick])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            maps = encoder.object_maps(torch.from_numpy(obs).to(device)).float().cpu().numpy()  # [n, K, h, w]
    finally:
        model.train(was_training)
    channels = _frame_channels(dataset)
    k = maps.shape[1]
    plt, fig, axes = _grid(len(pick), 1 + k)
    for r in range(len(pick)):
        for c in range(1 + k):
            ax = axes[r, c]
            ax.set_axis_off()
            if r == 0:
                ax.set_title("frame" if c == 0 else f"slot {c - 1}", fontsize=8)
            if c == 0:
                _show(ax, obs[r].astype(np.float32) / 255.0, channels)
            else:
                ax.imshow(maps[r, c - 1], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
    return _save(plt, fig, path)


def probe_latents(model: torch.nn.Module, dataset, max_frames: int | None = 2000, device: str | torch.device = "cpu",
                  seed: int = 0, baseline: torch.nn.Module | None = None) -> list[ProbeResult]:
    """Ridge and k-NN R^2 of the true state from ``model.encode(obs)`` (flattened), on held-out episodes.

    Results, on the same frames: ``"encoder"`` (the model), ``"random init"`` (``baseline``, another world
    model such as an untrained twin, if given) and ``"pixels 16x16"``. Models must already be on ``device``;
    they run in eval mode (their modes are restored afterwards).

    Raises:
        DataError: the dataset has no true states, too few episodes for held-out probing, or observations
            of another shape than the model takes.
    """
    if not dataset.has_state:
        raise DataError(f"dataset {dataset.root} has no true states (info['state']); probes need them")
    _check_shape(model, dataset)
    ep, t, states = dataset_frames(dataset, max_frames, seed)
    named = [("encoder", model)] + ([("random init", baseline)] if baseline is not None else [])
    results = []
    for name, m in named:
        was_training = m.training
        m.eval()
        try:
            feats = encode_frames(m.encode, dataset, ep, t, device=device)
        finally:
            m.train(was_training)
        results.append(probe_features(name, feats, states, ep))
    results.append(probe_features("pixels 16x16", downsampled_pixels(dataset, ep, t), states, ep))
    return results


def object_state_groups(names: Sequence[str]) -> list[list[int]]:
    """State dimensions grouped per object, from names ``obj<i>_<coordinate>`` (empty when there are none)."""
    groups: dict[int, list[int]] = {}
    for j, name in enumerate(names):
        match = re.fullmatch(r"obj(\d+)_\w+", str(name))
        if match:
            groups.setdefault(int(match.group(1)), []).append(j)
    return [groups[i] for i in sorted(groups)]


def _held_out_r2(x: np.ndarray, y: np.ndarray, test: np.ndarray) -> float:
    """Mean over ``y``'s columns of the held-out R^2 of a least-squares fit ``y ~ x + 1`` (fit on ``~test``;
    a vanishing ridge keeps a constant slot coordinate from making it singular). Columns constant over the
    held-out frames have no R^2; 0 when none varies."""
    w, b = ridge_fit(x[~test], y[~test], 1e-6)
    r2 = r2_per_dim(y[test].astype(np.float64), x[test] @ w + b)
    return float(np.nanmean(r2)) if np.isfinite(r2).any() else 0.0


def best_matching(matrix: np.ndarray) -> tuple[list[int], float]:
    """The one-to-one assignment of rows (objects) to columns (slots) with the largest summed score, and the
    mean matched score (the Hungarian method, ``scipy.optimize.linear_sum_assignment``: exact at any size)."""
    from scipy.optimize import linear_sum_assignment

    matrix = np.asarray(matrix, dtype=np.float64)
    rows, cols = matrix.shape
    if rows > cols:
        raise ValueError(f"cannot match {rows} objects to {cols} slots one-to-one")
    row_ind, col_ind = linear_sum_assignment(matrix, maximize=True)
    assign = [int(k) for _, k in sorted(zip(row_ind, col_ind))]
    return assign, float(np.mean(matrix[np.arange(rows), assign]))


@torch.no_grad()
def slot_alignment(model: torch.nn.Module, dataset, max_frames: int | None = 2000, device: str | torch.device = "cpu",
                   seed: int = 0, test_fraction: float = 0.2) -> dict[str, object]:
    """Does each slot carry one object? For slot latents ``(B, K, D)`` and states named ``obj<i>_*``.

    Returns ``r2`` (objects x slots: held-out R^2 of object ``i``'s coordinates from slot ``k`` alone, by
    least squares on the first episodes, scored on the last ``test_fraction``), ``assignment`` (the slot
    matched to each object) and ``matched_r2`` (mean R^2 under that matching: 1 when every object has a
    slot of its own, low when objects are spread over slots).

    Raises:
        DataError: no true states, no ``obj<i>_*`` state names, fewer than 3 episodes, or latents that are
            not ``(B, K, D)`` with at least as many slots as objects.
    """
    names = list(dataset.manifest.get("state_names") or [])
    groups = object_state_groups(names)
    if not groups:
        raise DataError(f"dataset {dataset.root} names no per-object state (obj<i>_<coordinate>); "
                        f"slot alignment needs it")
    _check_shape(model, dataset)
    shape = tuple(getattr(model.encoder, "out_shape", ()))
    if len(shape) != 2 or shape[0] < len(groups):
        raise DataError(f"slot alignment needs slot latents (B, K, D) with K >= {len(groups)} objects, "
                        f"got latents {shape}")
    ep, t, states = dataset_frames(dataset, max_frames, seed)
    episodes = np.unique(ep)
    if len(episodes) < 3:
        raise DataError(f"slot alignment needs at least 3 episodes, got {len(episodes)}")
    test = np.isin(ep, episodes[-max(1, int(round(len(episodes) * test_fraction))):])
    was_training = model.training
    model.eval()
    try:
        z = encode_frames(model.encode, dataset, ep, t, device=device).reshape(len(ep), *shape)
    finally:
        model.train(was_training)
    r2 = np.array([[_held_out_r2(z[:, k], states[:, g], test) for k in range(z.shape[1])] for g in groups])
    assignment, matched = best_matching(r2)
    return {"r2": r2.round(4).tolist(), "assignment": assignment, "matched_r2": matched}


# ---------------------------------------------------------------------------------------------- helpers
def _need_decoder(model: torch.nn.Module, what: str) -> None:
    if getattr(model, "decoder", None) is None:
        raise ValueError(f"{what} needs a generative world model (one with a pixel decoder: "
                         f"objective=generative_ae|generative_vae); this one has none")


def _check_shape(model: torch.nn.Module, dataset) -> None:
    """The model's encoder must take the dataset's observations (frame stack included)."""
    enc = getattr(model, "encoder", None)
    shape = getattr(enc, "obs_shape", None) or getattr(getattr(enc, "encoder", None), "obs_shape", None)
    if shape is not None and tuple(shape) != tuple(dataset.obs_shape):
        raise DataError(f"the model takes observations {tuple(shape)} but dataset {dataset.root} gives "
                        f"{tuple(dataset.obs_shape)}; use a dataset of the same env / frame stack")


def _frame_channels(dataset) -> int | None:
    """Channels of one (unstacked) frame, where the dataset says."""
    shape = getattr(dataset, "frame_shape", None)
    return int(shape[0]) if shape else None


def _show(ax, frame: np.ndarray, channels: int | None) -> None:
    """Float ``(C, H, W)`` in [0, 1] -> ``imshow``: the newest RGB frame of a stack, or greyscale."""
    c = channels or (3 if frame.shape[0] % 3 == 0 else 1)
    newest = frame[-c:]
    if c == 3:
        ax.imshow(np.clip(newest.transpose(1, 2, 0), 0.0, 1.0), interpolation="nearest")
    else:
        ax.imshow(newest[-1], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")


_CELL_INCHES = 1.4
_DPI = 100


def _grid(rows: int, cols: int):
    """A ``rows x cols`` figure of square cells (the PNG is ``cols : rows`` wide : high)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(_CELL_INCHES * cols, _CELL_INCHES * rows), dpi=_DPI,
                             squeeze=False)
    return plt, fig, axes


def _save(plt, fig, path: str | Path) -> Path:
    """Lay ``fig`` out tightly and write it as a PNG, atomically."""
    from worldssl.runtime.io import save_figure

    fig.tight_layout(pad=0.3)
    return save_figure(fig, path)

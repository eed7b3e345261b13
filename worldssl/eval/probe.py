"""How much of the true state do frozen features carry? Ridge and k-NN regression of ``info["state"]``.

Fits on the features of some episodes and reports R^2 on held-out episodes (never frames of the same
episode on both sides: neighbouring frames are near-duplicates), per state dimension and on average.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from worldssl.data.episodes import EpisodeDataset
from worldssl.runtime.errors import DataError
from worldssl.runtime.io import save_figure

RIDGE_ALPHAS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


@dataclass
class ProbeResult:
    name: str
    r2_ridge: float
    r2_knn: float
    r2_ridge_per_dim: list[float] = field(default_factory=list)
    r2_knn_per_dim: list[float] = field(default_factory=list)
    alpha: float = float("nan")
    feature_dim: int = 0


def r2_per_dim(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Coefficient of determination per column; NaN where the target is constant on the test set."""
    ss_res = ((y_true - y_pred) ** 2).sum(0)
    ss_tot = ((y_true - y_true.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 1e-12, 1.0 - ss_res / ss_tot, np.nan)


def _standardize(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = train.mean(0), train.std(0) + 1e-6
    return [(a - mean) / std for a in (train, *others)]


def ridge_fit(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge with an unpenalised intercept: returns (weights (D, S), bias (S,))."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = (x - x_mean).astype(np.float64), (y - y_mean).astype(np.float64)
    n, d = xc.shape
    if d <= n:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
    else:  # dual form: cheaper when features outnumber samples (raw pixels)
        w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(n), yc)
    return w, y_mean - x_mean @ w


def ridge_probe(x_tr, y_tr, x_te, y_te, groups_tr: np.ndarray) -> tuple[np.ndarray, float]:
    """Pick alpha by held-out-episode validation inside the train split, refit, score on test."""
    x_tr, x_te = _standardize(x_tr, x_te)
    val = np.isin(groups_tr, np.unique(groups_tr)[:: 5])  # every 5th train episode validates
    if val.all() or not val.any():
        val = np.arange(len(x_tr)) % 5 == 0
    best, best_alpha = -np.inf, RIDGE_ALPHAS[0]
    for alpha in RIDGE_ALPHAS:
        w, b = ridge_fit(x_tr[~val], y_tr[~val], alpha)
        score = np.nanmean(r2_per_dim(y_tr[val], x_tr[val] @ w + b))
        if score > best:
            best, best_alpha = score, alpha
    w, b = ridge_fit(x_tr, y_tr, best_alpha)
    return r2_per_dim(y_te, x_te @ w + b), best_alpha


def knn_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, k: int = 5, chunk: int = 2048) -> np.ndarray:
    """Mean target of the ``k`` nearest train features (Euclidean, standardised)."""
    x_tr, x_te = _standardize(x_tr, x_te)
    xt, yt = torch.from_numpy(x_tr).float(), torch.from_numpy(y_tr).float()
    out = []
    for i in range(0, len(x_te), chunk):
        d = torch.cdist(torch.from_numpy(x_te[i:i + chunk]).float(), xt)
        idx = d.topk(min(k, len(xt)), largest=False).indices
        out.append(yt[idx].mean(1))
    return torch.cat(out).numpy()


def probe_features(name: str, feats: np.ndarray, states: np.ndarray, groups: np.ndarray,
                   test_fraction: float = 0.2, k: int = 5) -> ProbeResult:
    """Ridge and k-NN R^2 on held-out episodes (the last ``test_fraction`` of episodes)."""
    episodes = np.unique(groups)
    if len(episodes) < 3:
        raise DataError(f"a probe needs at least 3 episodes (train / validate / test), got {len(episodes)}")
    n_test = max(1, int(round(len(episodes) * test_fraction)))
    test = np.isin(groups, episodes[-n_test:])
    feats = feats.reshape(len(feats), -1).astype(np.float32)
    r2_ridge, alpha = ridge_probe(feats[~test], states[~test], feats[test], states[test], groups[~test])
    r2_knn = r2_per_dim(states[test], knn_predict(feats[~test], states[~test], feats[test], k))
    return ProbeResult(name, float(np.nanmean(r2_ridge)), float(np.nanmean(r2_knn)),
                       [float(v) for v in r2_ridge], [float(v) for v in r2_knn], alpha, feats.shape[1])


def resolve_dims(ds: EpisodeDataset, dims: list[int | str] | None) -> list[int] | None:
    """State dimensions by index or by name (``state_names`` in the manifest); None keeps all."""
    if dims is None:
        return None
    names = list(ds.manifest.get("state_names") or [])
    width = int(ds.manifest.get("state_dim") or len(names))
    out = []
    for d in dims:
        if isinstance(d, str) and d in names:
            out.append(names.index(d))
        elif isinstance(d, int) and 0 <= d < width:
            out.append(d)
        else:
            raise DataError(f"unknown state dimension {d!r}; valid: indices 0..{width - 1} or names {names}")
    return out


def probed_names(ds: EpisodeDataset, dims: list[int | str] | None) -> list[str]:
    """Names of the state variables a probe with ``dims`` looks at (``state[i]`` where unnamed)."""
    width = int(ds.manifest.get("state_dim") or 0)
    names = list(ds.manifest.get("state_names") or []) or [f"state[{i}]" for i in range(width)]
    return [names[i] for i in (resolve_dims(ds, dims) or range(len(names)))]


def dataset_frames(ds: EpisodeDataset, max_frames: int | None = None, seed: int = 0):
    """(episode, t) of every frame (or an even subsample of ``max_frames``), and their true states."""
    if not ds.has_state:
        raise DataError(f"dataset {ds.root} has no true states (info['state']); probes need them")
    ep = np.concatenate([np.full(n + 1, i) for i, n in enumerate(ds.lengths)])
    t = np.concatenate([np.arange(n + 1) for n in ds.lengths])
    if max_frames is not None and len(ep) > max_frames:
        keep = np.sort(np.random.default_rng(seed).choice(len(ep), max_frames, replace=False))
        ep, t = ep[keep], t[keep]
    states = np.stack([ds._small[e]["state"][s] for e, s in zip(ep, t)]).astype(np.float32)
    return ep, t, states


@torch.no_grad()
def encode_frames(encoder: Callable[[torch.Tensor], torch.Tensor], ds: EpisodeDataset, ep: np.ndarray,
                  t: np.ndarray, batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    out = []
    for i in range(0, len(ep), batch_size):
        obs = torch.from_numpy(ds.frames(ep[i:i + batch_size], t[i:i + batch_size])).to(device)
        out.append(encoder(obs).float().flatten(1).cpu())
    return torch.cat(out).numpy()


def downsampled_pixels(ds: EpisodeDataset, ep: np.ndarray, t: np.ndarray, size: int = 16) -> np.ndarray:
    """The raw-pixel baseline: the newest frame, area-downsampled to ``size`` x ``size``, flattened."""
    out = []
    for i in range(0, len(ep), 512):
        frames = torch.from_numpy(ds.frames(ep[i:i + 512], t[i:i + 512])).float() / 255.0
        c = ds.frame_shape[0]
        newest = frames[:, -c:]
        out.append(torch.nn.functional.adaptive_avg_pool2d(newest, size).flatten(1))
    return torch.cat(out).numpy()


def probe_encoder(encoder: torch.nn.Module, ds: EpisodeDataset, max_frames: int | None = 4000,
                  test_fraction: float = 0.2, k: int = 5, baselines: bool = True, device: str | torch.device = "cpu",
                  seed: int = 0, batch_size: int = 256,
                  dims: list[int | str] | None = None) -> tuple[list[ProbeResult], np.ndarray, np.ndarray]:
    """Probe ``encoder`` and (optionally) a random-init twin and raw pixels on the same frames.

    ``dims`` restricts the probed state variables (indices or names). Returns the results (encoder
    first) and the encoder's features and the probed states (for plots).
    """
    from worldssl.encoders import build

    obs_shape = tuple(getattr(encoder, "obs_shape", ds.obs_shape))
    if obs_shape != tuple(ds.obs_shape):
        raise DataError(f"encoder takes {obs_shape} but dataset {ds.root} gives {ds.obs_shape}; "
                        f"use a dataset of the same env/frame stack or an encoder trained on it")
    ep, t, states = dataset_frames(ds, max_frames, seed)
    keep = resolve_dims(ds, dims)
    if keep is not None:
        states = states[:, keep]
    encoder = encoder.to(device).eval()
    feats = encode_frames(encoder, ds, ep, t, batch_size, device)
    results = [probe_features("encoder", feats, states, ep, test_fraction, k)]
    if baselines:
        torch.manual_seed(seed)
        twin = build(encoder.kind, obs_shape, **encoder.arch_config()).to(device).eval()
        results.append(probe_features("random init", encode_frames(twin, ds, ep, t, batch_size, device), states, ep,
                                      test_fraction, k))
        results.append(probe_features("pixels 16x16", downsampled_pixels(ds, ep, t), states, ep, test_fraction, k))
    return results, feats, states


def pca_plot(feats: np.ndarray, color: np.ndarray, path: str | Path, title: str) -> Path:
    """2-D PCA of features, coloured by one state variable, saved as PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    x = feats - feats.mean(0)
    _, _, vt = np.linalg.svd(x[:5000], full_matrices=False)
    xy = x @ vt[:2].T
    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=120)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=color, s=4, cmap="viridis")
    fig.colorbar(sc, ax=ax)
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    fig.tight_layout()
    return save_figure(fig, path)


def format_results(results: list[ProbeResult]) -> str:
    lines = [f"{'features':<14} {'dim':>6} {'ridge R2':>9} {'kNN R2':>8}"]
    lines += [f"{r.name:<14} {r.feature_dim:>6} {r.r2_ridge:>9.3f} {r.r2_knn:>8.3f}" for r in results]
    return "\n".join(lines)

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
    return _ridge_fits(x, y, [alpha])[0]


# Ridge and k-NN stay hand-written; scikit-learn is only the tests' reference (tests/test_probe_sklearn.py).
# Measured on 1 thread, 3,200 frames x 768 features (the 16x16 pixel baseline's size), 10 targets: the grouped
# 5-fold x 7-alpha search takes 2.6 s here (one Gram matrix per fold, shared by the alphas) against 5.3 s for
# GridSearchCV(Ridge) over the same folds (same scores to 2e-7); k-NN (k=5, 800 queries) 0.28 s against 0.38 s
# for KNeighborsRegressor(algorithm="brute"). scikit-learn is 51 MB installed and took ~5 s to import cold.
def _ridge_fits(x: np.ndarray, y: np.ndarray, alphas) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`ridge_fit` for each of ``alphas``, sharing the centring and the Gram matrix."""
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = (x - x_mean).astype(np.float64), (y - y_mean).astype(np.float64)
    n, d = xc.shape
    out = []
    if d <= n:
        gram, xty = xc.T @ xc, xc.T @ yc
        for alpha in alphas:
            w = np.linalg.solve(gram + alpha * np.eye(d), xty)
            out.append((w, y_mean - x_mean @ w))
    else:  # dual form: cheaper when features outnumber samples (raw pixels)
        gram = xc @ xc.T
        for alpha in alphas:
            w = xc.T @ np.linalg.solve(gram + alpha * np.eye(n), yc)
            out.append((w, y_mean - x_mean @ w))
    return out


def episode_folds(groups: np.ndarray, k: int = 5) -> np.ndarray:
    """Fold index per sample, ``k`` folds grouped by episode (episode ``j`` in sorted order goes to fold
    ``j % k``), so no episode has frames on both sides of a split. With fewer than 2 episodes the rows are
    dealt out instead (``row % k``)."""
    episodes, inverse = np.unique(groups, return_inverse=True)
    if len(episodes) >= 2:
        return inverse.reshape(-1) % min(k, len(episodes))
    return np.arange(len(groups)) % k


def ridge_cv_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray, alphas=RIDGE_ALPHAS,
                    folds: int = 5) -> np.ndarray:
    """Mean over :func:`episode_folds` of the held-out R^2 (averaged over state dimensions), per alpha."""
    fold = episode_folds(groups, folds)
    scores = np.full((fold.max() + 1, len(alphas)), np.nan)
    for f in range(fold.max() + 1):
        val = fold == f
        for a, (w, b) in enumerate(_ridge_fits(x[~val], y[~val], alphas)):
            r2 = r2_per_dim(y[val], x[val] @ w + b)
            if np.isfinite(r2).any():
                scores[f, a] = np.nanmean(r2)
    if np.isnan(scores).all():  # every held-out target constant: nothing to choose by, all alphas tie
        return np.zeros(len(alphas))
    return np.nanmean(scores, axis=0)  # a fold without a score (constant targets) is left out for every alpha


def ridge_probe(x_tr, y_tr, x_te, y_te, groups_tr: np.ndarray, folds: int = 5) -> tuple[np.ndarray, float]:
    """Pick alpha by ``folds``-fold cross-validation grouped by episode inside the train split (the first of
    the best-scoring alphas), refit on the whole train split, score on test."""
    x_tr, x_te = _standardize(x_tr, x_te)
    best_alpha = RIDGE_ALPHAS[int(np.argmax(ridge_cv_scores(x_tr, y_tr, groups_tr, RIDGE_ALPHAS, folds)))]
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

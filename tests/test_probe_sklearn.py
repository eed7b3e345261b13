"""The hand-written ridge and k-NN probes against scikit-learn (a test-only reference), and the ridge alpha
chosen by cross-validation grouped by episode."""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import Ridge  # noqa: E402
from sklearn.model_selection import GridSearchCV, GroupKFold  # noqa: E402
from sklearn.neighbors import KNeighborsRegressor  # noqa: E402

from worldssl.eval.probe import (  # noqa: E402
    RIDGE_ALPHAS,
    episode_folds,
    knn_predict,
    probe_features,
    ridge_cv_scores,
    ridge_fit,
    ridge_probe,
)


@pytest.mark.parametrize("n, d", [(60, 8), (12, 40)])  # primal and dual branches
@pytest.mark.parametrize("alpha", [1e-3, 1.0, 100.0])
def test_ridge_fit_matches_sklearn(n, d, alpha):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
    w, b = ridge_fit(x, y, alpha)
    ref = Ridge(alpha=alpha, fit_intercept=True, solver="cholesky").fit(x, y)
    np.testing.assert_allclose(w, ref.coef_.T, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(b, ref.intercept_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_matches_sklearn(k):
    rng = np.random.default_rng(1)
    scale = np.array([1.0, 10.0, 0.1, 3.0])  # standardisation matters
    xtr, ytr, xte = rng.normal(size=(200, 4)) * scale, rng.normal(size=(200, 2)), rng.normal(size=(50, 4)) * scale
    got = knn_predict(xtr, ytr, xte, k=k)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6  # the probe's standardisation, fitted on the train features
    ref = KNeighborsRegressor(n_neighbors=k, algorithm="brute").fit((xtr - mean) / std, ytr)
    np.testing.assert_allclose(got, ref.predict((xte - mean) / std), rtol=1e-5, atol=1e-6)


def test_folds_are_grouped_by_episode():
    groups = np.repeat([7, 3, 11, 5, 9, 2, 8], 4)
    fold = episode_folds(groups, 3)
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1  # never frames of one episode on both sides
    assert sorted(set(fold)) == [0, 1, 2]
    assert len(set(episode_folds(np.repeat([0, 1], 5), 5))) == 2  # no more folds than episodes
    assert set(episode_folds(np.zeros(10), 5)) == set(range(5))  # one episode: rows dealt out


def test_cv_scores_match_sklearn_grid_search_over_the_same_folds():
    rng = np.random.default_rng(2)
    groups = np.repeat(np.arange(12), 15)
    states = rng.normal(size=(180, 3))
    x = states @ rng.normal(size=(3, 20)) + 0.8 * rng.normal(size=(180, 20))
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    fold = episode_folds(groups, 5)
    splits = [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(5)]
    ours = ridge_cv_scores(x, states, groups, RIDGE_ALPHAS, 5)
    search = GridSearchCV(Ridge(solver="cholesky"), {"alpha": list(RIDGE_ALPHAS)}, cv=splits, scoring="r2").fit(x, states)
    np.testing.assert_allclose(ours, search.cv_results_["mean_test_score"], rtol=1e-8, atol=1e-10)
    _, alpha = ridge_probe(x, states, x[:5], states[:5], groups)
    assert alpha == search.best_params_["alpha"]
    # sklearn's own grouped k-fold assigns episodes to folds differently, but picks the same alpha here
    grouped = GridSearchCV(Ridge(solver="cholesky"), {"alpha": list(RIDGE_ALPHAS)}, cv=GroupKFold(5),
                           scoring="r2").fit(x, states, groups=groups)
    assert grouped.best_params_["alpha"] == alpha


def test_cv_prefers_strong_regularisation_for_noise_and_weak_for_signal():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(10), 20)
    y = rng.normal(size=(200, 2))
    signal = np.hstack([y, rng.normal(size=(200, 30))]) + 0.01 * rng.normal(size=(200, 32))
    noise = rng.normal(size=(200, 32))
    _, a_signal = ridge_probe(signal, y, signal[:10], y[:10], groups)
    _, a_noise = ridge_probe(noise, y, noise[:10], y[:10], groups)
    assert a_signal <= 1.0 and a_noise >= 100.0


def test_probe_outputs_are_unchanged_in_form():
    rng = np.random.default_rng(4)
    states = rng.normal(size=(300, 2)).astype(np.float32)
    groups = np.repeat(np.arange(10), 30)
    feats = states @ rng.normal(size=(2, 6)) + 0.05 * rng.normal(size=(300, 6))
    r = probe_features("enc", feats, states, groups)
    assert r.name == "enc" and r.feature_dim == 6 and r.alpha in RIDGE_ALPHAS
    assert len(r.r2_ridge_per_dim) == len(r.r2_knn_per_dim) == 2 and r.r2_ridge > 0.95

"""State probes against naive references, and on features whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from worldssl.eval.probe import knn_predict, probe_features, r2_per_dim, ridge_fit


def test_r2_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    for j in range(3):
        want = 1 - sum((y[i, j] - p[i, j]) ** 2 for i in range(50)) / sum((y[i, j] - y[:, j].mean()) ** 2 for i in range(50))
        assert r2_per_dim(y, p)[j] == pytest.approx(want)
    assert np.isnan(r2_per_dim(np.ones((5, 1)), np.zeros((5, 1))))[0]  # constant target: undefined, not 1


@pytest.mark.parametrize("n, d", [(40, 5), (10, 30)])  # primal and dual branches
def test_ridge_matches_the_normal_equations(n, d):
    rng = np.random.default_rng(1)
    x, y, alpha = rng.normal(size=(n, d)), rng.normal(size=(n, 2)), 0.7
    w, b = ridge_fit(x, y, alpha)
    xa = np.hstack([x, np.ones((n, 1))])  # intercept column, unpenalised
    reg = alpha * np.eye(d + 1)
    reg[-1, -1] = 0
    want = np.linalg.solve(xa.T @ xa + reg, xa.T @ y)
    np.testing.assert_allclose(w, want[:-1], atol=1e-8)
    np.testing.assert_allclose(b, want[-1], atol=1e-8)


def test_knn_matches_brute_force():
    rng = np.random.default_rng(2)
    xtr, ytr, xte = rng.normal(size=(30, 4)), rng.normal(size=(30, 2)), rng.normal(size=(7, 4))
    got = knn_predict(xtr, ytr, xte, k=3)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    a, q = (xtr - mean) / std, (xte - mean) / std
    for i in range(7):
        nearest = sorted(range(30), key=lambda j: float(((a[j] - q[i]) ** 2).sum()))[:3]
        np.testing.assert_allclose(got[i], ytr[nearest].mean(0), rtol=1e-5)


def test_probe_tells_informative_from_useless_features():
    rng = np.random.default_rng(3)
    states = rng.normal(size=(600, 3)).astype(np.float32)
    groups = np.repeat(np.arange(20), 30)
    informative = states @ rng.normal(size=(3, 16)) + 0.01 * rng.normal(size=(600, 16))
    useless = rng.normal(size=(600, 16))
    good = probe_features("good", informative, states, groups)
    bad = probe_features("bad", useless, states, groups)
    assert good.r2_ridge > 0.99 and good.r2_knn > 0.5
    assert bad.r2_ridge < 0.1 and bad.r2_knn < 0.1
    assert len(good.r2_ridge_per_dim) == 3

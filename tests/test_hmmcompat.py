"""hmmlearn's internals and the public-API fallbacks give the same answers."""

from __future__ import annotations

import numpy as np
import pytest
from hmmlearn import hmm

from streamer import hmmcompat


def _chain(rng: np.random.Generator, k: int = 4, n: int = 60) -> tuple[np.ndarray, ...]:
    start = rng.dirichlet(np.ones(k))
    trans = rng.dirichlet(np.ones(k), size=k)
    trans[0, 1] = 0.0  # a forbidden transition (log 0) must not break either path
    trans[0] /= trans[0].sum()
    frames = rng.normal(-5.0, 3.0, size=(n, k))
    return start, np.ascontiguousarray(trans), np.ascontiguousarray(frames)


def test_compiled_forward_equals_the_numpy_fallback(rng: np.random.Generator) -> None:
    assert hmmcompat._COMPILED is not None, "hmmlearn's compiled forward pass has moved"
    for _ in range(5):
        start, trans, frames = _chain(rng)
        ll, alpha = hmmcompat.forward_log(start, trans, frames)
        ll_np, alpha_np = hmmcompat.forward_log_numpy(start, trans, frames)
        assert ll == pytest.approx(ll_np, rel=1e-10)
        np.testing.assert_allclose(alpha, alpha_np, rtol=1e-9)


def test_forward_matches_hmmlearns_public_score(rng: np.random.Generator) -> None:
    m = hmm.GaussianHMM(n_components=3, covariance_type="diag", random_state=0, n_iter=5)
    x = rng.normal(size=(200, 2))
    m.fit(x)
    frames = np.ascontiguousarray(m._compute_log_likelihood(x))
    start, trans = m.startprob_, np.ascontiguousarray(m.transmat_)
    assert hmmcompat.forward_log_numpy(start, trans, frames)[0] == pytest.approx(m.score(x))
    assert hmmcompat.forward_log(start, trans, frames)[0] == pytest.approx(m.score(x))


@pytest.mark.parametrize("ct", ["diag", "spherical", "tied", "full"])
def test_stored_covariances_equal_the_public_derivation(ct: str, rng: np.random.Generator) -> None:
    m = hmm.GaussianHMM(n_components=3, covariance_type=ct, random_state=1, n_iter=3)
    m.fit(rng.normal(size=(150, 2)))
    stored = hmmcompat.stored_covars(m)
    public = hmmcompat.stored_covars_public(m)
    assert stored.shape == public.shape == {
        "diag": (3, 2), "spherical": (3,), "tied": (2, 2), "full": (3, 2, 2)
    }[ct]  # fmt: skip
    np.testing.assert_allclose(stored, public)


def test_set_iterations_bounds_the_next_fit(rng: np.random.Generator) -> None:
    x = rng.normal(size=(300, 1))
    m = hmm.GaussianHMM(n_components=2, n_iter=100, tol=1e-12, random_state=0)
    hmmcompat.set_iterations(m, 3, 1e-12)
    m.fit(x)
    assert m.monitor_.iter == 3 and (m.n_iter, m.tol) == (3, 1e-12)
    m.init_params = ""
    hmmcompat.set_iterations(m, 7, 1e-12)
    m.fit(x)
    assert m.monitor_.iter == 7

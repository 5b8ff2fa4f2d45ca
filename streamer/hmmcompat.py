"""The few hmmlearn internals the package relies on, in one place, each with a public fallback.

Why: the word bank scores with hmmlearn's compiled forward pass (`_hmmc`, about
ten times faster than numpy for short utterances) and reads the covariances in
their stored shape (`_covars_`); the regime model changes the EM iteration
budget of a model it already built. None of that is public API, so a new
hmmlearn may move it. Each function here uses the internal when it is there
and behaves the same on public API alone when it is not; the tests run both
paths on the same input. pyproject caps hmmlearn below the next minor version.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np
from hmmlearn.base import ConvergenceMonitor
from scipy.special import logsumexp

ForwardLog = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[float, np.ndarray]]


def forward_log_numpy(
    startprob: np.ndarray, transmat: np.ndarray, framelogprob: np.ndarray
) -> tuple[float, np.ndarray]:
    """Log-likelihood and forward log-lattice of one sequence (public API: numpy and scipy)."""
    n, _ = framelogprob.shape
    with np.errstate(divide="ignore"):
        log_start = np.log(startprob)
        log_trans = np.log(transmat)
    alpha = np.empty_like(framelogprob)
    alpha[0] = log_start + framelogprob[0]
    for t in range(1, n):
        alpha[t] = logsumexp(alpha[t - 1][:, None] + log_trans, axis=0) + framelogprob[t]
    return float(logsumexp(alpha[-1])), alpha


def _compiled_forward_log() -> ForwardLog | None:
    try:
        hmmc = importlib.import_module("hmmlearn._hmmc")
    except ImportError:
        return None
    fn = getattr(hmmc, "forward_log", None)
    return fn if callable(fn) else None


_COMPILED = _compiled_forward_log()


def forward_log(
    startprob: np.ndarray, transmat: np.ndarray, framelogprob: np.ndarray
) -> tuple[float, np.ndarray]:
    """Log-likelihood and forward lattice: hmmlearn's compiled pass, or numpy without it.

    Arrays must be float64 and C-contiguous (what the compiled pass takes).
    """
    if _COMPILED is not None:
        ll, alpha = _COMPILED(startprob, transmat, framelogprob)
        return float(ll), np.asarray(alpha)
    return forward_log_numpy(startprob, transmat, framelogprob)


def stored_covars_public(model: Any) -> np.ndarray:
    """`stored_covars` from the public `covars_` (always full matrices) alone."""
    full: np.ndarray = np.asarray(model.covars_)
    ct = model.covariance_type
    if ct == "diag":
        return np.diagonal(full, axis1=-2, axis2=-1).copy()
    if ct == "spherical":
        # hmmlearn 0.3 can hold a spherical model's variances as (n, d) after `fit`, and its
        # `covars_` then repeats each state d times: the first of each state's block is right
        d = full.shape[-1]
        n = int(model.n_components)
        per_state: np.ndarray = full.reshape(n, -1, d, d)[:, 0, 0, 0].copy()
        return per_state
    if ct == "tied":
        shared: np.ndarray = full[0].copy()
        return shared
    return full.copy()


def stored_covars(model: Any) -> np.ndarray:
    """A Gaussian HMM's covariances in their stored shape for its covariance type.

    diag: (n, d); spherical: (n,); tied: (d, d); full: (n, d, d). hmmlearn's
    public `covars_` always expands to full matrices, so its private stored
    form is read when it exists.
    """
    raw = getattr(model, "_covars_", None)
    if raw is None:
        return stored_covars_public(model)
    raw = np.asarray(raw)
    if model.covariance_type == "spherical" and raw.ndim == 2:
        return raw[:, 0].copy()  # one variance per state, however hmmlearn holds it
    return raw


def set_iterations(model: Any, n_iter: int, tol: float) -> None:
    """Change the EM budget of a built model (its next `fit` runs at most `n_iter` steps).

    hmmlearn's `fit` loop counts on a convergence monitor made in the
    constructor with the constructor's `n_iter` and `tol`; a fresh public
    `ConvergenceMonitor` with the new ones is what the constructor would have made.
    """
    model.n_iter = n_iter
    model.tol = tol
    model.monitor_ = ConvergenceMonitor(tol, n_iter, getattr(model, "verbose", False))


__all__ = [
    "forward_log",
    "forward_log_numpy",
    "set_iterations",
    "stored_covars",
    "stored_covars_public",
]

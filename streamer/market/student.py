"""An HMM with Student-t emissions on 1-D returns, as a hmmlearn `BaseHMM` subclass.

Why Student-t: returns have fat tails. A Gaussian HMM explains a run of large
returns by a regime, so on fat-tailed noise it invents regimes (a random walk with
t noise comes out as "calm" and "turbulent") and its filter jumps on single
outliers. A t emission gives an outlier a moderate likelihood in every regime, so
only a sustained change of scale moves the filter.

Why a hmmlearn subclass: hmmlearn's documented extension point (emission
log-likelihoods, sufficient statistics, M-step) reuses its compiled
forward-backward, its Dirichlet prior on transitions and its convergence monitor;
only the emission part is written here.

The M-step is the ECM one for the t distribution (Peel and McLachlan 2000): each
observation gets a weight u = (df + 1) / (df + d^2), d the standardised distance
to the regime's mean; means are u-weighted means, scales u-weighted mean squares,
and the degrees of freedom (one value shared by all regimes: a property of the
market's noise, and far better determined than one per regime) solve a 1-D
equation by Brent's method, bounded to [DF_MIN, DF_MAX].
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hmmlearn.base import BaseHMM
from scipy.optimize import brentq
from scipy.special import digamma, gammaln

DF_MIN = 2.2  # a finite variance (df > 2) that is not dominated by one outlier
DF_MAX = 200.0  # beyond this a t is a Gaussian for any sample this model sees
_SCALE_FLOOR = 1e-4  # in units of the window's variance


def t_logpdf(x: np.ndarray, mean: np.ndarray, scale2: np.ndarray, df: float) -> np.ndarray:
    """log density of Student-t(df, mean, scale^2) at x[:, None] for each regime: (n, K)."""
    c = gammaln((df + 1) / 2) - gammaln(df / 2) - 0.5 * np.log(df * math.pi * scale2)
    d2 = (np.asarray(x).reshape(-1, 1) - mean) ** 2 / scale2
    out: np.ndarray = c - (df + 1) / 2 * np.log1p(d2 / df)
    return out


def _df_equation(df: float, mean_lu: float, df_old: float) -> float:
    return float(
        -digamma(df / 2)
        + math.log(df / 2)
        + 1.0
        + mean_lu
        + digamma((df_old + 1) / 2)
        - math.log((df_old + 1) / 2)
    )


class StudentHMM(BaseHMM):  # type: ignore[misc]  # hmmlearn ships no types
    """K regimes, each a Student-t on 1-D observations with its own mean and scale.

    Parameters as for hmmlearn's models; learned values: ``means_`` (K,),
    ``scales_`` (K,) = the squared scale (variance x (df - 2) / df), ``df_``.
    ``params`` letters: s, t (start, transitions), m (means), c (scales), d (df).
    """

    means_: np.ndarray
    scales_: np.ndarray
    df_: float

    def __init__(
        self,
        n_components: int = 1,
        df: float = 6.0,
        startprob_prior: Any = 1.0,
        transmat_prior: Any = 1.0,
        algorithm: str = "viterbi",
        random_state: Any = None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmcd",
        init_params: str = "",
        implementation: str = "scaling",
    ) -> None:
        super().__init__(
            n_components,
            startprob_prior=startprob_prior,
            transmat_prior=transmat_prior,
            algorithm=algorithm,
            random_state=random_state,
            n_iter=n_iter,
            tol=tol,
            verbose=verbose,
            params=params,
            init_params=init_params,
            implementation=implementation,
        )
        self.df = df

    def _init(self, X: np.ndarray, lengths: Any = None) -> None:
        super()._init(X, lengths)
        if not hasattr(self, "df_"):
            self.df_ = float(self.df)

    def _check(self) -> None:
        super()._check()
        self.means_ = np.asarray(self.means_, dtype=np.float64).reshape(-1)
        self.scales_ = np.asarray(self.scales_, dtype=np.float64).reshape(-1)
        k = self.n_components
        if self.means_.shape != (k,) or self.scales_.shape != (k,):
            raise ValueError(f"means_ and scales_ must have shape ({k},)")
        if not (self.scales_ > 0).all():
            raise ValueError("scales_ must be positive")
        if not DF_MIN <= getattr(self, "df_", self.df) <= DF_MAX:
            raise ValueError(f"df must be between {DF_MIN} and {DF_MAX}")
        self.n_features = 1

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        k = self.n_components
        return {"s": k - 1, "t": k * (k - 1), "m": k, "c": k, "d": 1}

    def _compute_log_likelihood(self, X: np.ndarray) -> np.ndarray:
        return t_logpdf(X[:, 0], self.means_, self.scales_, self.df_)

    def _generate_sample_from_state(self, state: int, random_state: Any = None) -> np.ndarray:
        rng = np.random.default_rng(random_state)
        z = rng.standard_t(self.df_)
        return np.array([self.means_[state] + math.sqrt(self.scales_[state]) * z])

    def _initialize_sufficient_statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = super()._initialize_sufficient_statistics()
        k = self.n_components
        for name in ("post", "pu", "pux", "pux2"):
            stats[name] = np.zeros(k)
        stats["lu"] = 0.0
        stats["n"] = 0
        return stats

    def _accumulate_sufficient_statistics(
        self,
        stats: dict[str, Any],
        X: np.ndarray,
        lattice: np.ndarray,
        posteriors: np.ndarray,
        fwdlattice: np.ndarray,
        bwdlattice: np.ndarray,
    ) -> None:
        super()._accumulate_sufficient_statistics(
            stats, X, lattice, posteriors, fwdlattice, bwdlattice
        )
        x = X[:, 0:1]
        df = self.df_
        d2 = (x - self.means_) ** 2 / self.scales_
        u = (df + 1) / (df + d2)
        gu = posteriors * u
        stats["post"] += posteriors.sum(0)
        stats["pu"] += gu.sum(0)
        stats["pux"] += (gu * x).sum(0)
        stats["pux2"] += (gu * x * x).sum(0)
        stats["lu"] += float((posteriors * (np.log(u) - u)).sum())
        stats["n"] += len(x)

    def _do_mstep(self, stats: dict[str, Any]) -> None:
        super()._do_mstep(stats)
        pu = np.maximum(stats["pu"], 1e-300)
        post = np.maximum(stats["post"], 1e-300)
        if "m" in self.params:
            self.means_ = stats["pux"] / pu
        if "c" in self.params:
            mu = self.means_
            ss = stats["pux2"] - 2 * mu * stats["pux"] + mu * mu * stats["pu"]
            self.scales_ = np.maximum(ss / post, _SCALE_FLOOR)
        if "d" in self.params and stats["n"]:
            mean_lu = stats["lu"] / stats["n"]
            old = self.df_
            lo = _df_equation(DF_MIN, mean_lu, old)
            hi = _df_equation(DF_MAX, mean_lu, old)
            if lo <= 0:
                self.df_ = DF_MIN
            elif hi >= 0:
                self.df_ = DF_MAX
            else:
                self.df_ = float(brentq(_df_equation, DF_MIN, DF_MAX, args=(mean_lu, old)))


__all__ = ["DF_MAX", "DF_MIN", "StudentHMM", "t_logpdf"]

"""Regime-switching price series with known ground truth.

The only way to know whether a decoder finds regimes, rather than slicing the price
range, is to score it on a series whose regimes are known. Tick i >= 1 carries the
return from price i-1 to price i, drawn in regime ``states[i]``; ``states[0]`` is
the starting regime (it has no return).

Heavy tails come from Student-t noise scaled to unit variance, so `vols` stays the
true standard deviation whatever the noise. With irregular spacing the gaps are
Gamma-distributed with mean `dt`, and each return's drift and variance scale with
its own gap, as a diffusion's would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from streamer.errors import ConfigError

Noise = Literal["gaussian", "student"]


@dataclass(frozen=True, eq=False)
class RegimeSpec:
    """A K-regime Markov-switching model of log-returns per `dt` of time."""

    transmat: np.ndarray  # (K, K), rows sum to 1
    means: np.ndarray  # (K,) drift per step
    vols: np.ndarray  # (K,) standard deviation per step

    def __post_init__(self) -> None:
        a = np.asarray(self.transmat, dtype=float)
        k = a.shape[0]
        if a.shape != (k, k) or k < 1 or not np.allclose(a.sum(1), 1.0) or (a < 0).any():
            raise ConfigError("transmat must be square, of probabilities, rows summing to 1")
        for name in ("means", "vols"):
            v = np.asarray(getattr(self, name), dtype=float)
            if v.shape != (k,):
                raise ConfigError(f"{name} must have one value per regime ({k})")
            object.__setattr__(self, name, v)
        if (self.vols <= 0).any():
            raise ConfigError("vols must be positive")
        object.__setattr__(self, "transmat", a)

    @property
    def k(self) -> int:
        return len(self.vols)

    def stationary(self) -> np.ndarray:
        """The long-run share of time in each regime."""
        k = self.k
        m = np.vstack([self.transmat.T - np.eye(k), np.ones(k)])
        b = np.zeros(k + 1)
        b[-1] = 1.0
        pi = np.linalg.lstsq(m, b, rcond=None)[0]
        pi = np.clip(pi, 0.0, None)
        out: np.ndarray = pi / pi.sum()
        return out

    @classmethod
    def preset(cls, k: int) -> RegimeSpec:
        """The benchmark's regimes: daily-like returns, calm to turbulent, persistent."""
        if k == 2:
            return cls(
                np.array([[0.99, 0.01], [0.03, 0.97]]),
                np.array([0.0005, -0.001]),
                np.array([0.008, 0.020]),
            )
        if k == 3:
            return cls(
                np.array([[0.98, 0.015, 0.005], [0.02, 0.96, 0.02], [0.01, 0.04, 0.95]]),
                np.array([0.0005, 0.0, -0.001]),
                np.array([0.006, 0.012, 0.025]),
            )
        raise ConfigError(f"no preset for {k} regimes (have 2 and 3)")


@dataclass(frozen=True, eq=False)
class SyntheticSeries:
    """Prices with their true regimes; `returns[i]` is log(prices[i] / prices[i-1]), 0 at i=0."""

    times: np.ndarray
    prices: np.ndarray
    states: np.ndarray
    returns: np.ndarray
    spec: RegimeSpec
    dt: float

    def __len__(self) -> int:
        return len(self.prices)


def sample_states(
    transmat: np.ndarray, n: int, rng: np.random.Generator, start: int | None = None
) -> np.ndarray:
    """A Markov chain path of length n (starting from the stationary law unless `start`)."""
    spec = RegimeSpec(transmat, np.zeros(len(transmat)), np.ones(len(transmat)))
    cum = np.cumsum(spec.transmat, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(n)
    states = np.empty(n, dtype=np.int64)
    s = int(np.searchsorted(np.cumsum(spec.stationary()), u[0])) if start is None else start
    states[0] = min(s, spec.k - 1)
    rows = cum.tolist()
    for i in range(1, n):
        row = rows[s]
        s = 0
        x = u[i]
        while row[s] < x:
            s += 1
        states[i] = s
    return states


def simulate(
    spec: RegimeSpec,
    n: int,
    *,
    noise: Noise = "gaussian",
    df: float = 4.0,
    seed: int = 0,
    dt: float = 86400.0,
    irregular: float = 0.0,
    start_price: float = 100.0,
    t0: float = 1.6e9,
) -> SyntheticSeries:
    """Sample n ticks. `irregular` is the coefficient of variation of the gaps (0 = regular)."""
    if n < 2:
        raise ConfigError("a series needs at least 2 ticks")
    if noise not in ("gaussian", "student"):
        raise ConfigError(f"noise must be 'gaussian' or 'student', not {noise!r}")
    if noise == "student" and df <= 2:
        raise ConfigError("Student-t noise needs df > 2 for a finite variance")
    if dt <= 0 or irregular < 0:
        raise ConfigError("dt must be > 0 and irregular >= 0")
    rng = np.random.default_rng(seed)
    states = sample_states(spec.transmat, n, rng)
    if noise == "gaussian":
        eps = rng.standard_normal(n)
    else:
        eps = rng.standard_t(df, n) * np.sqrt((df - 2.0) / df)
    if irregular > 0:
        shape = 1.0 / irregular**2
        gaps = rng.gamma(shape, dt / shape, n)
        gaps = np.maximum(gaps, dt * 1e-3)
    else:
        gaps = np.full(n, dt)
    gaps[0] = 0.0
    frac = gaps / dt
    r = spec.means[states] * frac + spec.vols[states] * np.sqrt(frac) * eps
    r[0] = 0.0
    prices = start_price * np.exp(np.cumsum(r))
    times = t0 + np.cumsum(gaps)
    return SyntheticSeries(times, prices, states, r, spec, dt)


__all__ = ["Noise", "RegimeSpec", "SyntheticSeries", "sample_states", "simulate"]

"""Offline look at a price series: how many regimes, by HMM, KMeans and DBSCAN, and a plot.

The notebook clustered prices; clustering helps only on features of how prices
move. So KMeans and DBSCAN run on (normalised return, trailing volatility), both
standardised, next to the HMM on the returns themselves. The HMM has what the
clusterings lack: time (persistence) and likelihoods comparable across K (BIC).

DBSCAN and the silhouette score are quadratic in the worst case, so they run on an
evenly spaced subsample of at most `max_points` points (said in the report).
The plot shows the price coloured by the filtered (online, no look-ahead) regime of
the BIC-best model fitted on the whole series, with the probabilities underneath.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from sklearn.cluster import DBSCAN, KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits

from streamer.errors import TickError
from streamer.market.decoder import DecodeBatch, RegimeDecoder
from streamer.market.model import (
    DEFAULT_KS,
    FitReport,
    RegimeModel,
    fit_returns,
    normalised_returns,
)


@dataclass(frozen=True)
class KRow:
    """The scores for one K."""

    k: int
    hmm_loglik: float
    hmm_bic: float
    kmeans_inertia: float
    silhouette: float


@dataclass(frozen=True, eq=False)
class Analysis:
    name: str
    times: np.ndarray
    prices: np.ndarray
    dt_ref: float
    rows: tuple[KRow, ...]
    dbscan_clusters: int
    dbscan_noise: float  # share of points DBSCAN calls noise
    dbscan_points: int
    dbscan_eps: float
    dbscan_min_samples: int
    n_features: int
    fits: dict[int, FitReport]
    best_k: int
    decode: DecodeBatch  # filtered decode of the whole series with the best model

    @property
    def model(self) -> RegimeModel:
        return self.fits[self.best_k].model


def volatility_features(x: np.ndarray, window: int = 20) -> np.ndarray:
    """(return, log trailing RMS of `window` returns), standardised; from row `window`-1 on."""
    if len(x) < window + 2:
        raise TickError(f"{len(x)} returns are too few for a {window}-tick volatility")
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    vol = np.sqrt((c[window:] - c[:-window]) / window)
    f = np.column_stack([x[window - 1 :], np.log(vol + 1e-12)])
    sd = f.std(0)
    sd[sd == 0] = 1.0
    out: np.ndarray = (f - f.mean(0)) / sd
    return out


def _subsample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.linspace(0, n - 1, max_points).round().astype(np.int64)


def _cluster_scores(
    feats: np.ndarray,
    sub: np.ndarray,
    ks: tuple[int, ...],
    fits: dict[int, FitReport],
    seed: int,
    eps: float,
    min_samples: int,
) -> tuple[list[KRow], DBSCAN]:
    rows = []
    for k in ks:
        km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(feats)
        labels = km.labels_[sub]
        sil = (
            float(silhouette_score(feats[sub], labels)) if len(np.unique(labels)) > 1 else math.nan
        )
        m = fits[k].model
        rows.append(KRow(k, m.loglik, m.bic, float(km.inertia_), sil))
    return rows, DBSCAN(eps=eps, min_samples=min_samples).fit(feats[sub])


def analyze(
    times: np.ndarray,
    prices: np.ndarray,
    *,
    name: str = "prices",
    ks: tuple[int, ...] = DEFAULT_KS,
    window: int = 20,
    restarts: int = 3,
    seed: int = 0,
    max_points: int = 5000,
    dbscan_eps: float = 0.3,
    dbscan_min_samples: int = 10,
) -> Analysis:
    """Score K regimes for every K in `ks` (HMM, KMeans), run DBSCAN, decode with the best HMM."""
    x, dt_ref = normalised_returns(times, prices)
    fits = {k: fit_returns(x, dt_ref=dt_ref, states=k, restarts=restarts, seed=seed) for k in ks}
    feats = volatility_features(x, window)
    sub = _subsample(len(feats), max_points)
    with threadpool_limits(
        1
    ):  # tiny 2-D problems: OpenMP threads only fight (50x slower when busy)
        rows, db = _cluster_scores(feats, sub, ks, fits, seed, dbscan_eps, dbscan_min_samples)
    clusters = len(set(db.labels_.tolist()) - {-1})
    noise = float((db.labels_ == -1).mean())
    best_k = min(fits, key=lambda k: fits[k].model.bic)
    decode = RegimeDecoder(fits[best_k].model, name).step_many(times, prices)
    return Analysis(
        name,
        np.asarray(times, dtype=float),
        np.asarray(prices, dtype=float),
        dt_ref,
        tuple(rows),
        clusters,
        noise,
        len(sub),
        dbscan_eps,
        dbscan_min_samples,
        len(feats),
        fits,
        best_k,
        decode,
    )


def human_duration(seconds: float) -> str:
    """'3.2 days', '45 min'... for a number of seconds."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            value = f"{seconds / size:.3g}"
            return f"{value} {'day' if value == '1' and unit == 'days' else unit}"
    return f"{seconds:.3g} s"


def _date(t: float) -> str:
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%Y-%m-%d") if d.hour == d.minute == d.second == 0 else d.isoformat(" ")


def regime_lines(model: RegimeModel, *, indent: str = "  ") -> list[str]:
    """A table of the regimes: mean and vol per step, expected duration, long-run share."""
    lines = [
        f"{indent}{'state':>5}  {'regime':<10} {'mean/step':>10} {'vol/step':>9} "
        f"{'duration':>24} {'share':>6}"
    ]
    for r in model.summary():
        dur = f"{r['duration_ticks']:.1f} ticks ({human_duration(r['duration_seconds'])})"
        lines.append(
            f"{indent}{r['state']:>5}  {r['regime']:<10} {r['mean']:>+10.5f} {r['vol']:>9.5f} "
            f"{dur:>24} {r['share']:>6.1%}"
        )
    return lines


def report_lines(a: Analysis) -> list[str]:
    """The text report printed by `streamer regimes analyze`."""
    n = len(a.times)
    lines = [
        f"{a.name}: {n} ticks, {_date(a.times[0])} .. {_date(a.times[-1])}, "
        f"median step {human_duration(a.dt_ref)}",
        "",
        "HMM on normalised log-returns; KMeans on (return, trailing volatility), standardised",
        f"  {'K':>2} {'HMM loglik':>12} {'BIC':>12} {'KMeans inertia':>15} {'silhouette':>11}",
    ]
    for r in a.rows:
        best = "  <- best BIC" if r.k == a.best_k else ""
        lines.append(
            f"  {r.k:>2} {r.hmm_loglik:>12.1f} {r.hmm_bic:>12.1f} {r.kmeans_inertia:>15.1f} "
            f"{r.silhouette:>11.3f}{best}"
        )
    sample = (
        f"{a.dbscan_points} of {a.n_features} points"
        if a.dbscan_points < a.n_features
        else f"{a.n_features} points"
    )
    lines += [
        "",
        f"DBSCAN (eps {a.dbscan_eps}, min_samples {a.dbscan_min_samples}, {sample}): "
        f"{a.dbscan_clusters} cluster{'s' if a.dbscan_clusters != 1 else ''}, "
        f"{a.dbscan_noise:.1%} noise",
        "",
        f"Regimes (HMM, K = {a.best_k} by BIC; per step of {human_duration(a.dt_ref)}):",
        *regime_lines(a.model),
    ]
    return lines


def plot(a: Analysis, path: str | Path) -> Path:
    """Write a PNG: price coloured by filtered regime, stacked probabilities underneath."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    d = a.decode
    k = a.model.k
    colors = colormaps["RdYlGn_r"](np.linspace(0.05, 0.95, k))
    when = (a.times * 1000).astype("datetime64[ms]")
    dwhen = (d.t * 1000).astype("datetime64[ms]")
    fig = Figure(figsize=(12, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.3])
    top.plot(when, a.prices, color="0.75", lw=0.6, zorder=1)
    for j in range(k):
        sel = d.state == j
        top.scatter(
            dwhen[sel], d.price[sel], s=2, color=colors[j], label=a.model.names[j], zorder=2
        )
    if a.prices.max() / a.prices.min() > 10:
        top.set_yscale("log")
    top.set_ylabel("price")
    top.set_title(
        f"{a.name}: filtered regime (forward filter; K = {k} HMM fitted on the whole series)"
    )
    top.legend(loc="upper left", markerscale=5, frameon=False)
    bottom.stackplot(dwhen, d.probs.T, colors=colors, linewidth=0)
    bottom.set_ylim(0, 1)
    bottom.set_ylabel("P(regime)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


__all__ = [
    "Analysis",
    "KRow",
    "analyze",
    "human_duration",
    "plot",
    "regime_lines",
    "report_lines",
    "volatility_features",
]

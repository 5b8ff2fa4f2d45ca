"""Benchmark: regime decoding accuracy and speed, side by side (issue 4). Figures, not a test.

    .venv/bin/python scripts/bench_regimes.py [--out /tmp/streamer-bench] [--seeds 3]

On synthetic series with known regimes (K = 2 and 3, Gaussian and Student-t noise,
5000 ticks), accuracy on the ticks after the 1500-tick warm-up, under the best
matching of labels to true regimes, for:

  notebook     GaussianHMM(K) fitted to price levels, predicted offline (look-ahead)
  viterbi      our HMM fitted on the whole series' returns, Viterbi path (look-ahead)
  true-filter  the forward filter with the true parameters (the ceiling, though a
               Gaussian filter on Student-t noise is not a hard one)
  statsmodels  MarkovRegression (switching mean and variance) fitted on the whole
               series, filtered probabilities
  online       this decoder: fitted on the warm-up, refits every 500 ticks, K fixed
  online-bic   the same, K chosen by BIC at the first fit (K shown)
  smoothed     the online decoder's fixed-lag (10) smoothed state

then the decoder's speed alone (median of several runs), the first fit's time, and
for the real series in the shared prices folder the regimes found, with plots.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from hmmlearn.hmm import GaussianHMM
from scipy.optimize import linear_sum_assignment

from streamer.market.analyze import analyze, plot, regime_lines
from streamer.market.decoder import RegimeDecoder, RegimeTracker, TrackerConfig
from streamer.market.model import RegimeModel, fit_regimes, fit_returns, normalised_returns
from streamer.market.synthetic import RegimeSpec, SyntheticSeries, simulate
from streamer.market.ticks import read_csv
from streamer.paths import data_dir

N_TICKS = 5000
WARMUP = 1500
METHODS = ("notebook", "viterbi", "true-filter", "statsmodels", "online", "online-bic", "smoothed")


def accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """Share of ticks right under the best one-to-one matching of labels (extra labels: wrong)."""
    k = int(max(truth.max(), pred.max())) + 1
    c = np.zeros((k, k))
    np.add.at(c, (truth, pred), 1)
    r, q = linear_sum_assignment(-c)
    return float(c[r, q].sum() / len(truth))


def notebook(s: SyntheticSeries, k: int, seed: int) -> np.ndarray:
    m = GaussianHMM(n_components=k, covariance_type="diag", n_iter=100, random_state=seed)
    m.fit(s.prices.reshape(-1, 1))
    return m.predict(s.prices.reshape(-1, 1))


def viterbi(s: SyntheticSeries, k: int, seed: int) -> np.ndarray:
    model = fit_regimes(s.times, s.prices, states=k, seed=seed).model
    x, _ = normalised_returns(s.times, s.prices, model.dt_ref)
    h = GaussianHMM(k, covariance_type="diag")
    h.startprob_, h.transmat_ = model.startprob, model.transmat
    h.means_, h.covars_ = model.means.reshape(-1, 1), model.variances.reshape(-1, 1)
    return np.concatenate([[0], h.predict(x.reshape(-1, 1))])


def true_filter(s: SyntheticSeries) -> np.ndarray:
    model = RegimeModel.from_params(s.spec.means, s.spec.vols, s.spec.transmat, s.dt)
    return np.concatenate([[0], RegimeDecoder(model).step_many(s.times, s.prices).state])


def statsmodels_filter(s: SyntheticSeries, k: int) -> np.ndarray:
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    x = np.diff(np.log(s.prices)) * 100  # percent: statsmodels' optimiser prefers O(1) data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MarkovRegression(x, k_regimes=k, trend="c", switching_variance=True).fit(disp=False)
    probs = np.asarray(res.filtered_marginal_probabilities)
    return np.concatenate([[0], probs.argmax(1)])


def online(s: SyntheticSeries, states: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    config = TrackerConfig(warmup=WARMUP, states=states, refit_every=500, lag=10, seed=seed)
    tr = RegimeTracker("SYN", config)
    decodes = tr.push_many(s.times, s.prices)
    state = np.concatenate([[0], [d.state for d in decodes]])
    smoothed = np.full(len(s), -1)
    for d in decodes:
        if d.smoothed_state is not None:
            smoothed[int(np.searchsorted(s.times, d.smoothed_t))] = d.smoothed_state
    assert tr.model is not None
    return state, smoothed, tr.model.k


def series_list() -> list[tuple[str, RegimeSpec, str]]:
    """The presets, plus a wider-spread K=3 set whose ceiling is near the issue's 86%."""
    wide = RegimeSpec(
        RegimeSpec.preset(3).transmat, RegimeSpec.preset(3).means, np.array([0.005, 0.015, 0.04])
    )
    return [
        ("K=2 gaussian", RegimeSpec.preset(2), "gaussian"),
        ("K=2 student", RegimeSpec.preset(2), "student"),
        ("K=3 gaussian", RegimeSpec.preset(3), "gaussian"),
        ("K=3 student", RegimeSpec.preset(3), "student"),
        ("K=3 student*", wide, "student"),
    ]


def bench_synthetic(seeds: int) -> None:
    print(
        f"Accuracy after the warm-up ({N_TICKS} ticks, warm-up {WARMUP}, best label matching, "
        f"mean of {seeds} seed{'s' if seeds > 1 else ''})\n"
    )
    head = f"  {'series':<14}" + "".join(f"{m:>13}" for m in METHODS) + f"{'K by BIC':>10}"
    print(head)
    print("  " + "-" * (len(head) - 2))
    gaps = []
    for name, spec, noise in series_list():
        k = spec.k
        scores: dict[str, list[float]] = {m: [] for m in METHODS}
        ks_bic = []
        for seed in range(seeds):
            s = simulate(spec, N_TICKS, noise=noise, seed=1000 * k + seed)  # type: ignore[arg-type]
            after = slice(WARMUP, None)
            truth = s.states[after]
            preds = {
                "notebook": notebook(s, k, seed),
                "viterbi": viterbi(s, k, seed),
                "true-filter": true_filter(s),
                "statsmodels": statsmodels_filter(s, k),
            }
            preds["online"], smoothed, _ = online(s, k, seed)
            preds["online-bic"], _, kb = online(s, None, seed)
            ks_bic.append(kb)
            for m, p in preds.items():
                scores[m].append(accuracy(truth, p[after]))
            ok = smoothed[after] >= 0
            scores["smoothed"].append(accuracy(truth[ok], smoothed[after][ok]))
        mean = {m: 100 * statistics.fmean(v) for m, v in scores.items()}
        gaps.append(mean["true-filter"] - mean["online"])
        ks = "/".join(str(x) for x in ks_bic)
        print(f"  {name:<14}" + "".join(f"{mean[m]:>12.1f}%" for m in METHODS) + f"{ks:>10}")
    print(
        "\n  * vols 0.005/0.015/0.04 instead of 0.006/0.012/0.025: regimes further apart, "
        "closer to the issue's series (ceiling 86.3% there)"
    )
    print(
        f"\n  online vs true-parameter filter: {max(gaps):+.1f} points at worst "
        f"(target: within 2)\n"
    )


def bench_speed(runs: int = 7) -> None:
    spec = RegimeSpec.preset(3)
    s = simulate(spec, 200_000, seed=5)
    model = RegimeModel.from_params(spec.means, spec.vols, spec.transmat, s.dt)
    print(f"Decoder speed, one core, K=3, {len(s)} ticks, median of {runs} runs")
    for lag in (0, 10):
        rates = []
        for _ in range(runs):
            dec = RegimeDecoder(model, "X", lag=lag)
            t0 = time.perf_counter()
            dec.step_many(s.times, s.prices)
            rates.append(len(s) / (time.perf_counter() - t0))
        print(f"  step_many (arrays), lag {lag:>2}: {statistics.median(rates):>10,.0f} ticks/s")
    n = 50_000
    tt, pp = s.times[:n].tolist(), s.prices[:n].tolist()
    for lag in (0, 10):
        rates = []
        for _ in range(max(runs // 2, 3)):
            dec = RegimeDecoder(model, "X", lag=lag)
            step = dec.step
            t0 = time.perf_counter()
            for t, p in zip(tt, pp, strict=True):
                step(t, p)
            rates.append(n / (time.perf_counter() - t0))
        print(
            f"  step (one RegimeDecode per tick), lag {lag:>2}: "
            f"{statistics.median(rates):>10,.0f} ticks/s"
        )
    rates = []
    for _ in range(3):
        tr = RegimeTracker("X", TrackerConfig(warmup=WARMUP, states=3, refit_every=0))
        t0 = time.perf_counter()
        tr.push_many(s.times[:n], s.prices[:n])
        rates.append(n / (time.perf_counter() - t0))
    print(
        f"  tracker push_many (first fit + RegimeDecode objects), lag 10: "
        f"{statistics.median(rates):>10,.0f} ticks/s"
    )
    print()


def bench_first_fit(runs: int = 5) -> None:
    print(f"First fit: {WARMUP} ticks, K by BIC over 2..5, 4 starts per K, median of {runs} runs")
    for k in (2, 3):
        for noise in ("gaussian", "student"):
            s = simulate(RegimeSpec.preset(k), WARMUP, noise=noise, seed=k)
            secs = [fit_regimes(s.times, s.prices).seconds for _ in range(runs)]
            x, dt = normalised_returns(s.times, s.prices)
            fixed = [fit_returns(x, dt_ref=dt, states=k).seconds for _ in range(runs)]
            print(
                f"  K={k} {noise:<9} BIC search {statistics.median(secs):.3f} s, "
                f"K fixed {statistics.median(fixed):.3f} s"
            )
    print()


def bench_real(out: Path) -> None:
    folder = data_dir() / "prices"
    files = sorted(folder.glob("*.csv"))
    if not files:
        print(f"Real series: none found in {folder} (set STREAMER_DATA)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        series = read_csv(path)
        t0 = time.perf_counter()
        tr = RegimeTracker(path.stem, TrackerConfig(warmup=WARMUP))
        tr.push_many(series.times, series.prices)
        secs = time.perf_counter() - t0
        st = tr.stats()
        a = analyze(series.times, series.prices, name=path.name)
        png = plot(a, out / f"{path.stem}.png")
        print(f"{path.name}: {len(series)} ticks")
        print(
            f"  online: K={st['states']} at the first fit ({st['first_fit_seconds']} s), "
            f"{st['refits']} refits, {st['decoded']} decodes in {secs:.1f} s; final model:"
        )
        print("\n".join(regime_lines(tr.model, indent="    ")))  # type: ignore[arg-type]
        print(f"  whole series, K={a.best_k} by BIC:")
        print("\n".join(regime_lines(a.model, indent="    ")))
        print(f"  plot: {png}\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/streamer-bench"), help="plot folder")
    p.add_argument("--seeds", type=int, default=3, help="synthetic series per setting")
    p.add_argument("--skip-real", action="store_true", help="skip the real price series")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    bench_synthetic(args.seeds)
    bench_speed()
    bench_first_fit()
    if not args.skip_real:
        bench_real(args.out)
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

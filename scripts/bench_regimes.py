"""Benchmark: regime decoding accuracy, stability and speed, side by side (issues 4, 12).

    .venv/bin/python scripts/bench_regimes.py [--seeds 3] [--walk-ticks 100000] [--skip-real]

Figures, not a test. On synthetic series with known regimes (5000 ticks unless said),
scored on the ticks after the 1500-tick warm-up under the best one-to-one matching of
labels to true regimes (extra labels count as wrong):

  true-filter  a Gaussian forward filter that knows the true parameters (the yardstick)
  statsmodels  MarkovRegression (switching mean and variance, K given) fitted on the
               whole series, filtered probabilities
  hmmlearn     GaussianHMM (K given, 10 random starts) fitted on the whole series, then
               filtered (forward only) with those parameters
  filter       this decoder online: argmax of the published `probs` (K and the
               emissions chosen at every fit; refits every 500 ticks)
  decision     the published `state` (level and dwell as configured)

then switches after the warm-up (truth / true-filter / filter / decision), the
decision's delay after a true switch (median ticks, and the share of true regimes it
ever reports), K at the first fit -> at the end, and the emission family. The series:
the K=2 and K=3 presets with Gaussian and Student-t (df 4) noise, K=3 with wider
vols, two series whose K differs from what the first 1500 ticks show (a third regime
that only appears after tick 2500, and a calm single regime that becomes two), and
one-regime random walks (Gaussian and Student-t). Then the decoder's speed, the first
fit's time, and the real price files in the shared folder.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
from hmmlearn.hmm import GaussianHMM
from scipy.optimize import linear_sum_assignment

from streamer.market.analyze import analyze, plot, regime_lines
from streamer.market.decoder import RegimeDecoder, RegimeTracker, TrackerConfig
from streamer.market.model import RegimeModel, fit_regimes, fit_returns, normalised_returns
from streamer.market.synthetic import RegimeSpec, SyntheticSeries, sample_states, simulate
from streamer.market.ticks import read_csv
from streamer.paths import data_dir

N_TICKS = 5000
WARMUP = 1500
ACC = ("true-filter", "statsmodels", "hmmlearn", "filter", "decision")


def matching(truth: np.ndarray, pred: np.ndarray) -> tuple[float, dict[int, int]]:
    """Accuracy under the best one-to-one matching of labels, and the matching true -> pred."""
    k = int(max(truth.max(), pred.max())) + 1
    c = np.zeros((k, k))
    np.add.at(c, (truth, pred), 1)
    r, q = linear_sum_assignment(-c)
    return float(c[r, q].sum() / len(truth)), dict(zip(r.tolist(), q.tolist(), strict=True))


def switches(x: np.ndarray) -> int:
    return int((x[1:] != x[:-1]).sum())


def delays(truth: np.ndarray, pred: np.ndarray, match: dict[int, int]) -> tuple[list[int], int]:
    """Ticks from each true switch until `pred` shows the new regime (before the next switch)."""
    cuts = np.flatnonzero(truth[1:] != truth[:-1]) + 1
    ends = [*cuts[1:].tolist(), len(truth)] if len(cuts) else []
    out = []
    for i, end in zip(cuts.tolist(), ends, strict=True):
        want = match.get(int(truth[i]), -1)
        hit = np.flatnonzero(pred[i:end] == want)
        if len(hit):
            out.append(int(hit[0]))
    return out, len(cuts)


def true_filter(s: SyntheticSeries) -> np.ndarray:
    model = RegimeModel.from_params(s.spec.means, s.spec.vols, s.spec.transmat, s.dt)
    return np.concatenate([[0], RegimeDecoder(model).step_many(s.times, s.prices).filtered])


def statsmodels_filter(s: SyntheticSeries, k: int) -> np.ndarray:
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    x = np.diff(np.log(s.prices)) * 100  # percent: statsmodels' optimiser prefers O(1) data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = MarkovRegression(x, k_regimes=k, trend="c", switching_variance=True).fit(disp=False)
    probs = np.asarray(res.filtered_marginal_probabilities)
    return np.concatenate([[0], probs.argmax(1)])


def hmmlearn_filter(s: SyntheticSeries, k: int, starts: int = 10) -> np.ndarray:
    x, dt_ref = normalised_returns(s.times, s.prices)
    scale = x.std()
    best = None
    for seed in range(starts):
        h = GaussianHMM(k, covariance_type="diag", n_iter=200, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            h.fit(x.reshape(-1, 1) / scale)
        ll = h.score(x.reshape(-1, 1) / scale)
        if best is None or ll > best[0]:
            best = (ll, h)
    assert best is not None
    h = best[1]
    a = np.maximum(h.transmat_, 1e-9)
    model = RegimeModel.from_params(
        h.means_[:, 0] * scale, np.sqrt(h.covars_[:, 0, 0]) * scale, a / a.sum(1, keepdims=True)
    )
    model = RegimeModel(model.means, model.variances, model.transmat, h.startprob_, dt_ref)
    return np.concatenate([[0], RegimeDecoder(model).step_many(s.times, s.prices).filtered])


@dataclass
class Online:
    filtered: np.ndarray
    decision: np.ndarray
    k_first: int
    k_last: int
    family: str


def run_tracker(
    times: np.ndarray, prices: np.ndarray, config: TrackerConfig, symbol: str = "SYN"
) -> tuple[RegimeTracker, list[str], list[str]]:
    """Decode as the service does; per tick the decision's and the filter's regime names.

    Names, not indices, so that a regime keeps its label across refits and changes of
    K. Pushed in steps that end where a refit is installed, so every decode's model
    (for the name of its argmax) is known.
    """
    tr = RegimeTracker(symbol, config)
    dec: list[str] = []
    fil: list[str] = []
    i, n = 0, len(times)
    while i < n:
        j = min(n, i + max(tr.room(), 1))
        before = tr.model
        out = tr.push_many(times[i:j], prices[i:j])
        model = before or tr.model  # a step ends at a refit: its decodes are the old model's
        for d in out:
            dec.append(d.regime)
            fil.append(model.names[int(np.argmax(d.probs))])  # type: ignore[union-attr]
        i = j
    return tr, dec, fil


def online(s: SyntheticSeries, config: TrackerConfig) -> Online:
    tr, dec, fil = run_tracker(s.times, s.prices, config)
    assert tr.model is not None and tr.first_fit is not None
    ids: dict[str, int] = {}
    return Online(
        np.array([0] + [ids.setdefault(x, len(ids)) for x in fil]),
        np.array([0] + [ids.setdefault(x, len(ids)) for x in dec]),
        tr.first_fit.model.k,
        tr.model.k,
        tr.model.family,
    )


def phased(
    spec: RegimeSpec, n: int, first: int, allowed: list[int], noise: str, seed: int
) -> SyntheticSeries:
    """Like `simulate`, but for the first `first` ticks only the `allowed` regimes occur."""
    rng = np.random.default_rng(seed)
    sub = spec.transmat[np.ix_(allowed, allowed)]
    early = np.asarray(allowed)[sample_states(sub / sub.sum(1, keepdims=True), first, rng)]
    late = sample_states(spec.transmat, n - first + 1, rng, start=int(early[-1]))[1:]
    states = np.concatenate([early, late])
    df = 4.0
    eps = (
        rng.standard_t(df, n) * np.sqrt((df - 2) / df)
        if noise == "student"
        else rng.standard_normal(n)
    )
    r = spec.means[states] + spec.vols[states] * eps
    r[0] = 0.0
    dt = 86400.0
    return SyntheticSeries(
        1.6e9 + dt * np.arange(n), 100.0 * np.exp(np.cumsum(r)), states, r, spec, dt
    )


def series_list(walk_ticks: int) -> list[tuple[str, Callable[[int], SyntheticSeries]]]:
    p2, p3 = RegimeSpec.preset(2), RegimeSpec.preset(3)
    wide = RegimeSpec(p3.transmat, p3.means, np.array([0.005, 0.015, 0.04]))
    walk = RegimeSpec(np.array([[1.0]]), np.array([0.0]), np.array([0.01]))
    calm_then_two = RegimeSpec(
        np.array([[0.995, 0.005], [0.02, 0.98]]), np.array([0.0, 0.0]), np.array([0.008, 0.02])
    )
    return [
        ("K=2 gaussian", lambda seed: simulate(p2, N_TICKS, seed=2000 + seed)),
        ("K=2 student", lambda seed: simulate(p2, N_TICKS, noise="student", seed=2000 + seed)),
        ("K=3 gaussian", lambda seed: simulate(p3, N_TICKS, seed=3000 + seed)),
        ("K=3 student", lambda seed: simulate(p3, N_TICKS, noise="student", seed=3000 + seed)),
        ("K=3 student*", lambda seed: simulate(wide, N_TICKS, noise="student", seed=3000 + seed)),
        ("K=3, 3rd late", lambda seed: phased(p3, N_TICKS, 2500, [0, 1], "student", 3100 + seed)),
        (
            "K=1 then 2",
            lambda seed: phased(calm_then_two, N_TICKS, 2500, [0], "student", 2100 + seed),
        ),
        ("walk gaussian", lambda seed: simulate(walk, walk_ticks, seed=100 + seed)),
        ("walk student", lambda seed: simulate(walk, walk_ticks, noise="student", seed=100 + seed)),
    ]


def bench_synthetic(
    seeds: int,
    walk_ticks: int,
    config: TrackerConfig,
    only: str | None = None,
    walk_seeds: int = 1,
) -> None:
    print(
        f"Synthetic series ({N_TICKS} ticks, random walks {walk_ticks:,}; warm-up {WARMUP}; "
        f"best label matching; mean of {seeds} seeds, {walk_seeds} for walks); decision: "
        f"level {config.level}, dwell {config.dwell}\n"
    )
    head = (
        f"  {'series':<14}"
        + "".join(f"{m:>12}" for m in ACC)
        + f"{'switches true/tf/filt/dec':>27}{'delay tf/dec':>14}{'found':>7}{'K':>13}  emissions"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    worst = {"filter": -99.0, "decision": -99.0, "ratio": 0.0}
    walks: list[str] = []
    for name, make in series_list(walk_ticks):
        if only and only not in name:
            continue
        acc: dict[str, list[float]] = {m: [] for m in ACC}
        sw: dict[str, list[int]] = {m: [] for m in ("truth", "true-filter", "filter", "decision")}
        dl: dict[str, list[int]] = {"true-filter": [], "decision": []}
        found: list[float] = []
        ks: list[str] = []
        fams: list[str] = []
        for seed in range(walk_seeds if name.startswith("walk") else seeds):
            s = make(seed)
            k = int(s.states.max()) + 1
            after = slice(WARMUP, None)
            truth = s.states[after]
            on = online(s, config)
            preds = {"true-filter": true_filter(s), "filter": on.filtered, "decision": on.decision}
            if k > 1 and len(s) <= 20_000:
                preds["statsmodels"] = statsmodels_filter(s, k)
                preds["hmmlearn"] = hmmlearn_filter(s, k)
            matches = {}
            for m, p in preds.items():
                acc[m].append(matching(truth, p[after])[0])
                matches[m] = matching(truth, p[after])[1]
            sw["truth"].append(switches(truth))
            for m in ("true-filter", "filter", "decision"):
                sw[m].append(switches(preds[m][after]))
            for m in ("true-filter", "decision"):
                got, n_true = delays(truth, preds[m][after], matches[m])
                dl[m].extend(got)
                if m == "decision" and n_true:
                    found.append(len(got) / n_true)
            ks.append(f"{on.k_first}>{on.k_last}")
            fams.append(on.family[0])
        mean = {m: 100 * statistics.fmean(v) if v else float("nan") for m, v in acc.items()}
        swm = {m: statistics.fmean(v) for m, v in sw.items()}
        med = {m: statistics.median(v) if v else float("nan") for m, v in dl.items()}
        worst["filter"] = max(worst["filter"], mean["true-filter"] - mean["filter"])
        worst["decision"] = max(worst["decision"], mean["true-filter"] - mean["decision"])
        if swm["truth"]:
            worst["ratio"] = max(worst["ratio"], swm["decision"] / swm["truth"])
        else:
            walks.append(
                f"{name}: K {' '.join(ks)}, {swm['decision']:.0f} decision switches, "
                f"{swm['filter']:.0f} filter switches after the warm-up"
            )
        swt = "/".join(f"{swm[m]:.0f}" for m in ("truth", "true-filter", "filter", "decision"))
        dls = f"{med['true-filter']:.0f}/{med['decision']:.0f}"
        fnd = f"{100 * statistics.fmean(found):.0f}%" if found else "-"
        print(
            f"  {name:<14}"
            + "".join(f"{mean[m]:>11.1f}%" if mean[m] == mean[m] else f"{'-':>12}" for m in ACC)
            + f"{swt:>27}{dls:>14}{fnd:>7}{' '.join(ks):>13}  {''.join(fams)}"
        )
    print(
        "\n  * vols 0.005/0.015/0.04 instead of 0.006/0.012/0.025: regimes further apart\n"
        "  K: at the first fit > at the end, per seed; emissions: g(aussian) or s(tudent-t)\n"
        "  delay: median ticks from a true switch to the first tick showing the new regime\n"
        "  found: share of true regime spells the decision reports before they end"
    )
    print(
        f"\n  worst gap to the true-parameter filter: filter {worst['filter']:+.1f} points "
        f"(target within 2), decision {worst['decision']:+.1f} (target within 4); "
        f"decision switches / true switches at worst {worst['ratio']:.2f} (target <= 1.5)"
    )
    for w in walks:
        print(f"  one-regime {w} (target: K 1, 0 switches)")
    print()


def bench_speed(config: TrackerConfig, runs: int = 7) -> None:
    """Issue 4's figures were 189k ticks/s per tick (lag 0), 88k with lag 10 (K=3 Gaussian)."""
    spec = RegimeSpec.preset(3)
    s = simulate(spec, 200_000, seed=5)
    n = 50_000
    tt, pp = s.times[:n].tolist(), s.prices[:n].tolist()
    print(
        f"Decoder speed, one core, K=3, median of {runs} runs (decision level {config.level}, "
        f"dwell {config.dwell}); issue 4 per tick: 189k (lag 0), 88k (lag 10)"
    )
    for df in (math.inf, 4.0):
        model = RegimeModel.from_params(spec.means, spec.vols, spec.transmat, s.dt, df=df)
        kind = "Gaussian " if df == math.inf else "Student-t"
        for lag in (0, 10):
            rates = []
            for _ in range(runs):
                dec = RegimeDecoder(model, "X", lag=lag, level=config.level, dwell=config.dwell)
                t0 = time.perf_counter()
                dec.step_many(s.times, s.prices)
                rates.append(len(s) / (time.perf_counter() - t0))
            print(
                f"  {kind} step_many (arrays), lag {lag:>2}:            "
                f"{statistics.median(rates):>10,.0f} ticks/s"
            )
        for lag in (0, 10):
            rates = []
            for _ in range(runs):
                dec = RegimeDecoder(model, "X", lag=lag, level=config.level, dwell=config.dwell)
                step = dec.step
                t0 = time.perf_counter()
                for t, p in zip(tt, pp, strict=True):
                    step(t, p)
                rates.append(n / (time.perf_counter() - t0))
            target = 250_000 if lag == 0 else 150_000
            print(
                f"  {kind} step (one RegimeDecode per tick), lag {lag:>2}: "
                f"{statistics.median(rates):>10,.0f} ticks/s (target {target:,})"
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


def bench_first_fit(runs: int = 3) -> None:
    print(f"Fit time: K (1..5) by BIC, emissions by held-out likelihood, median of {runs} runs")
    for k in (2, 3):
        for noise in ("gaussian", "student"):
            s = simulate(RegimeSpec.preset(k), 5000, noise=noise, seed=k)  # type: ignore[arg-type]
            first = [fit_regimes(s.times[:WARMUP], s.prices[:WARMUP]) for _ in range(runs)]
            x, dt = normalised_returns(s.times, s.prices)
            refit = [fit_returns(x, dt_ref=dt, restarts=2).seconds for _ in range(runs)]
            fixed = [fit_returns(x[:WARMUP], dt_ref=dt, states=k, family="gaussian").seconds]
            m = first[0].model
            print(
                f"  K={k} {noise:<9} first fit ({WARMUP} ticks) "
                f"{statistics.median(f.seconds for f in first):.2f} s -> K={m.k} {m.family}; "
                f"refit (5000 ticks) {statistics.median(refit):.2f} s; "
                f"one Gaussian K fixed {fixed[0]:.2f} s"
            )
    print()


def bench_real(out: Path, config: TrackerConfig) -> None:
    folder = data_dir() / "prices"
    files = sorted(folder.glob("*.csv"))
    if not files:
        print(f"Real series: none found in {folder} (set STREAMER_DATA)")
        return
    out.mkdir(parents=True, exist_ok=True)
    for path in files:
        series = read_csv(path)
        t0 = time.perf_counter()
        tr, dec, filt = run_tracker(series.times, series.prices, config, path.stem)
        secs = time.perf_counter() - t0
        st = tr.stats()
        a = analyze(series.times, series.prices, name=path.name)
        png = plot(a, out / f"{path.stem}.png")
        dec, filt = dec[WARMUP:], filt[WARMUP:]
        ks = [f.model.k for f in tr.fits]
        first = tr.first_fit
        assert first is not None
        print(f"{path.name}: {len(series)} ticks")
        print(
            f"  online: K={first.model.k} ({first.model.family}) at the first fit "
            f"({st['first_fit_seconds']} s), K over the last {len(ks)} fits {sorted(set(ks))}, "
            f"{st['k_changes']} changes of K, {st['refits']} refits; "
            f"{st['decoded']} decodes in {secs:.1f} s"
        )
        print(
            f"  switches after the warm-up: filter {sum(a != b for a, b in pairwise(filt))}, "
            f"decision {sum(a != b for a, b in pairwise(dec))}; final model:"
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
    p.add_argument("--walk-ticks", type=int, default=100_000, help="random walks' length")
    p.add_argument("--walk-seeds", type=int, default=1, help="random walks per kind")
    p.add_argument("--level", type=float, default=TrackerConfig.level, help="decision level")
    p.add_argument("--dwell", type=int, default=TrackerConfig.dwell, help="decision dwell")
    p.add_argument("--only", help="only the series whose name contains this")
    p.add_argument("--synthetic-only", action="store_true", help="accuracy table only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    config = TrackerConfig(warmup=WARMUP, level=args.level, dwell=args.dwell)
    bench_synthetic(args.seeds, args.walk_ticks, config, args.only, args.walk_seeds)
    if args.synthetic_only:
        return 0
    bench_speed(config)
    bench_first_fit()
    if not args.skip_real:
        bench_real(args.out, config)
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

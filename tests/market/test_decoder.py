"""The online decoder: exact filtering, no look-ahead, warm-up, refits, sync/async agreement."""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hmmlearn.hmm import GaussianHMM
from scipy.optimize import linear_sum_assignment

from streamer.errors import ConfigError, TickError
from streamer.market.decoder import (
    RegimeDecoder,
    RegimeTracker,
    TrackerConfig,
    decode_arrays,
    decode_stream,
)
from streamer.market.model import RegimeModel, fit_regimes, normalised_returns
from streamer.market.synthetic import RegimeSpec, SyntheticSeries, simulate
from streamer.market.ticks import pace
from streamer.messages import RegimeDecode, Tick


def accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """Share right under the best matching of predicted to true labels."""
    k = int(max(truth.max(), pred.max())) + 1
    c = np.zeros((k, k))
    np.add.at(c, (truth, pred), 1)
    r, q = linear_sum_assignment(-c)
    return float(c[r, q].sum() / len(truth))


def as_hmmlearn(m: RegimeModel) -> GaussianHMM:
    h = GaussianHMM(m.k, covariance_type="diag")
    h.startprob_ = np.asarray(m.startprob)
    h.transmat_ = np.asarray(m.transmat)
    h.means_ = np.asarray(m.means).reshape(-1, 1)
    h.covars_ = np.asarray(m.variances).reshape(-1, 1)
    return h


def test_filtered_probs_equal_hmmlearn_predict_proba_last_row() -> None:
    s = simulate(RegimeSpec.preset(3), 400, noise="student", seed=11, irregular=0.6)
    fitted = fit_regimes(s.times[:300], s.prices[:300], states=3).model
    odd_start = RegimeModel(
        fitted.means, fitted.variances, fitted.transmat, np.array([0.7, 0.2, 0.1]), fitted.dt_ref
    )
    for model in (fitted, odd_start):
        hmm = as_hmmlearn(model)
        x, _ = normalised_returns(s.times, s.prices, model.dt_ref)
        dec = RegimeDecoder(model, "X")
        out = [dec.step(t, p) for t, p in zip(s.times.tolist(), s.prices.tolist(), strict=True)]
        assert out[0] is None  # the first tick has no return
        for i in range(1, 161):
            want = hmm.predict_proba(x[:i].reshape(-1, 1))[-1]
            assert np.allclose(out[i].probs, want, rtol=0, atol=1e-10), i
            assert sum(out[i].probs) == pytest.approx(1.0, abs=1e-12)
        assert dec.loglik == pytest.approx(hmm.score(x.reshape(-1, 1)), rel=1e-9)


def test_log_space_step_when_the_scaled_one_underflows() -> None:
    # regimes that can never switch, and a return that is impossible in the current one
    model = RegimeModel(
        np.zeros(2), np.array([1e-8, 1.0]), np.eye(2), np.array([0.999, 0.001]), 1.0
    )
    x = np.array([0.0, 0.0, 30.0, 0.0, 5.0])
    prices = np.exp(np.concatenate([[0.0], np.cumsum(x)]))
    times = np.arange(len(prices), dtype=float)
    hmm = as_hmmlearn(model)
    dec = RegimeDecoder(model)
    out = [dec.step(t, p) for t, p in zip(times, prices, strict=True)]
    batch = RegimeDecoder(model).step_many(times, prices)
    for i in range(1, len(prices)):
        want = hmm.predict_proba(x[:i].reshape(-1, 1))[-1]
        assert np.allclose(out[i].probs, want, atol=1e-12)
        assert np.allclose(batch.probs[i - 1], want, atol=1e-12)


@pytest.mark.parametrize(("level", "dwell"), [(0.0, 1), (0.6, 1), (0.9, 1), (0.6, 3)])
def test_step_many_gives_the_same_decodes_as_step(
    series3: SyntheticSeries, level: float, dwell: int
) -> None:
    s = series3
    model = fit_regimes(s.times[:1000], s.prices[:1000], states=3).model
    one = RegimeDecoder(model, "X", lag=7, level=level, dwell=dwell)
    singles = [one.step(t, p) for t, p in zip(s.times.tolist(), s.prices.tolist(), strict=True)]
    singles = [d for d in singles if d is not None]
    many = RegimeDecoder(model, "X", lag=7, level=level, dwell=dwell)
    rng = np.random.default_rng(0)
    cuts = np.cumsum(rng.integers(1, 400, 40))
    cuts = [0, *cuts[cuts < len(s)].tolist(), len(s)]
    batched: list[RegimeDecode] = []
    for a, b in itertools.pairwise(cuts):
        batch = many.step_many(s.times[a:b], s.prices[a:b])
        decodes = batch.decodes()
        # a batch is a sequence of its decodes, each made when asked for
        assert list(batch) == decodes and len(batch) == len(decodes)
        if decodes:
            assert batch[-1] == decodes[-1] and batch[1:3] == decodes[1:3]
        batched += decodes
    assert len(batched) == len(singles) == len(s) - 1
    for d1, d2 in zip(singles, batched, strict=True):
        assert (d1.t, d1.price, d1.state, d1.regime, d1.changed) == (
            d2.t,
            d2.price,
            d2.state,
            d2.regime,
            d2.changed,
        )
        assert (d1.smoothed_state, d1.smoothed_t) == (d2.smoothed_state, d2.smoothed_t)
        assert np.allclose(d1.probs, d2.probs, atol=1e-12)
    assert one.loglik == pytest.approx(many.loglik, rel=1e-12)
    assert one.switches == many.switches and (one.state, one._cand, one._run) == (
        many.state,
        many._cand,
        many._run,
    )
    if level:  # the decision holds where the filter wavers: not simply the argmax
        assert any(d.state != int(np.argmax(d.probs)) for d in singles)


def test_decoding_recovers_the_true_regimes(series3: SyntheticSeries) -> None:
    s = series3
    truth = RegimeModel.from_params(s.spec.means, s.spec.vols, s.spec.transmat, s.dt)
    fitted = fit_regimes(s.times[:1500], s.prices[:1500], states=3).model
    for model, floor in ((truth, 0.8), (fitted, 0.78)):
        dec = RegimeDecoder(model, lag=10)
        b = dec.step_many(s.times, s.prices)
        acc = accuracy(s.states[1:], b.state)
        assert acc > floor  # chance is about 0.45 (the largest regime's share)
        # the smoothed state is the decode of the tick `lag` back, and better informed
        ok = b.smoothed_state >= 0
        assert np.array_equal(b.smoothed_t[ok], s.times[1:][:-10])
        assert accuracy(s.states[1:][:-10], b.smoothed_state[ok]) >= acc


def test_changed_marks_every_state_switch(series3: SyntheticSeries) -> None:
    model = fit_regimes(series3.times[:800], series3.prices[:800], states=3).model
    b = RegimeDecoder(model).step_many(series3.times, series3.prices)
    assert not b.changed[0]
    assert np.array_equal(b.changed[1:], b.state[1:] != b.state[:-1])
    assert b.changed.sum() > 5


def test_bad_ticks_are_skipped_and_counted() -> None:
    a = np.array([[0.9, 0.1], [0.1, 0.9]])
    dec = RegimeDecoder(RegimeModel.from_params([0, 0], [0.01, 0.03], a))
    assert dec.step(0.0, 100.0) is None
    assert dec.step(1.0, float("nan")) is None
    assert dec.step(1.0, -3.0) is None
    assert dec.step(0.0, 101.0) is None  # duplicate time
    assert dec.step(-1.0, 101.0) is None  # out of order
    d = dec.step(2.0, 101.0)
    assert d is not None and d.t == 2.0
    assert dec.skipped == {"bad_price": 2, "duplicate": 1, "out_of_order": 1}
    b = dec.step_many(np.array([3.0, 3.0, 2.5, 4.0, 5.0]), np.array([1.0, 1.0, 1.0, 0.0, 1.0]))
    assert b.t.tolist() == [3.0, 5.0]
    assert dec.skipped == {"bad_price": 3, "duplicate": 2, "out_of_order": 2}


def _decode_all(s: SyntheticSeries, config: TrackerConfig, n: int | None = None):
    tr = RegimeTracker("X", config)
    n = len(s) if n is None else n
    return tr, tr.push_many(s.times[:n], s.prices[:n])


def test_no_look_ahead(series3: SyntheticSeries) -> None:
    config = TrackerConfig(
        warmup=300, states=3, emissions="gaussian", refit_every=250, swap_delay=20, lag=5
    )
    _, base = _decode_all(series3, config)
    cut = 1400
    changed = simulate(RegimeSpec.preset(3), len(series3), seed=99)
    prices = series3.prices.copy()
    prices[cut:] = prices[cut - 1] * changed.prices[cut:] / changed.prices[cut - 1]
    other = SyntheticSeries(series3.times, prices, series3.states, series3.returns, series3.spec, 1)
    _, alt = _decode_all(other, config)
    n_same = cut - 1  # decodes of ticks 1 .. cut-1
    assert [d.to_wire() for d in base[:n_same]] == [d.to_wire() for d in alt[:n_same]]
    assert [d.probs for d in base[n_same:]] != [d.probs for d in alt[n_same:]]


def test_warmup_is_buffered_then_decoded(series3: SyntheticSeries) -> None:
    tr = RegimeTracker("X", TrackerConfig(warmup=200, refit_every=0, lag=0))
    outs = [tr.push(t, p) for t, p in zip(series3.times[:260], series3.prices[:260], strict=True)]
    assert all(o == [] for o in outs[:199])
    assert len(outs[199]) == 199  # the backlog: ticks 2..200
    assert all(len(o) == 1 for o in outs[200:])
    decodes = [d for o in outs for d in o]
    assert [d.t for d in decodes] == series3.times[1:260].tolist()
    assert tr.stats()["first_fit_seconds"] is not None


def test_a_long_run_keeps_a_bounded_number_of_fit_reports(
    series3: SyntheticSeries, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service refits for ever; the reports it keeps must not grow with it."""
    monkeypatch.setattr(RegimeTracker, "KEEP_FITS", 2)
    config = TrackerConfig(warmup=500, states=3, refit_every=500, swap_delay=30)
    tr, _ = _decode_all(series3, config)
    assert tr.fit_count == 5 and len(tr.fits) == 2
    assert tr.first_fit is not None and tr.first_fit not in tr.fits


def test_refits_swap_at_a_fixed_tick_and_keep_names(series3: SyntheticSeries) -> None:
    config = TrackerConfig(warmup=500, states=3, refit_every=500, swap_delay=30)
    tr, decodes = _decode_all(series3, config)
    # refits start at ticks 1000, 1500, 2000, 2500 (and 3000, too late to install)
    assert tr.refits == 4 and tr.relabels == 0
    assert len(tr.fits) == 5 and tr.job is not None
    assert tr.first_fit is tr.fits[0]
    assert {d.regime for d in decodes} == {"calm", "normal", "turbulent"}
    # the same decodes whatever the chunking, per tick or in arrays
    tr2 = RegimeTracker("X", config)
    per_tick = [
        d
        for t, p in zip(series3.times.tolist(), series3.prices.tolist(), strict=True)
        for d in tr2.push(t, p)
    ]
    assert len(per_tick) == len(decodes) == len(series3) - 1
    for a, b in zip(per_tick, decodes, strict=True):
        assert (a.t, a.state, a.smoothed_state) == (b.t, b.state, b.smoothed_state)
        assert np.allclose(a.probs, b.probs, atol=1e-12)


async def test_background_fits_give_the_inline_decodes(series3: SyntheticSeries) -> None:
    config = TrackerConfig(warmup=400, states=None, refit_every=400, swap_delay=40, lag=3)
    n = 1800
    inline, want = _decode_all(series3, config, n)
    with ThreadPoolExecutor(1) as pool:
        tr = RegimeTracker("X", config, inline=False)
        pairs = zip(series3.times[:n].tolist(), series3.prices[:n].tolist(), strict=True)
        ticks = pace((Tick("X", t, p) for t, p in pairs), 0.0)
        got = [d async for d in decode_stream(ticks, tr, executor=pool)]
        tr2 = RegimeTracker("X", config, inline=False)
        got2 = [
            d
            async for batch in decode_arrays(
                series3.times[:n], series3.prices[:n], tr2, executor=pool, chunk=333
            )
            for d in batch
        ]
    assert tr.refits == tr2.refits == inline.refits == 3  # started at 800, 1200, 1600
    for other in (got, got2):
        assert len(other) == len(want) == n - 1
        assert [d.state for d in other] == [d.state for d in want]
        assert [d.regime for d in other] == [d.regime for d in want]
        for a, b in zip(other, want, strict=True):
            assert np.allclose(a.probs, b.probs, atol=1e-12)


async def test_stream_shorter_than_warmup_is_a_tick_error(series3: SyntheticSeries) -> None:
    tr = RegimeTracker("BTC", TrackerConfig(warmup=500), inline=False)
    with pytest.raises(TickError, match="BTC: 100 usable ticks, fewer than the warm-up of 500"):
        async for _ in decode_arrays(series3.times[:100], series3.prices[:100], tr):
            pass


def test_a_failing_fit_reaches_the_caller() -> None:
    tr = RegimeTracker("FLAT", TrackerConfig(warmup=60))
    with pytest.raises(TickError, match="do not move"):
        tr.push_many(np.arange(100.0), np.full(100, 3.0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"warmup": 1501},
        {"warmup": 10},
        {"states": 0},
        {"states": 6},
        {"emissions": "cauchy"},
        {"level": 1.0},
        {"dwell": 0},
        {"k_margin": -1.0},
        {"refit_every": -1},
        {"lag": -1},
        {"warmup": 1000, "window": 500},
    ],
)
def test_config_is_checked(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        TrackerConfig(**kwargs)

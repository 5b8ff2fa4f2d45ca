"""The live tick feed: bad input dropped, counted and survived; batching; drain on stop."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import numpy as np
import pytest
import zmq

from streamer.errors import ConfigError
from streamer.market.decoder import FitJob, RegimeTracker, TrackerConfig
from streamer.market.feed import TickDecoder
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.messages import RegimeDecode
from streamer.net import protocol as P
from streamer.net.feed import RATE_WINDOW, RateMeter, TickFeed
from tests.sinks import Collector

CFG = TrackerConfig(warmup=60, refit_every=0, restarts=1)


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, np.ndarray]:
    s = simulate(RegimeSpec.preset(2), 400, seed=11)
    return 1.7e9 + np.arange(400.0), s.prices


def bodies(symbol: str, times: np.ndarray, prices: np.ndarray) -> list[bytes]:
    return [P.encode_tick(symbol, t, p)[1] for t, p in zip(times.tolist(), prices.tolist(),
                                                           strict=True)]  # fmt: skip


def _sync_core(**kw: Any) -> tuple[TickDecoder, list[RegimeDecode]]:
    """A core whose fits run at once (as if the executor were instant)."""
    out: list[RegimeDecode] = []
    jobs: list[tuple[str, RegimeTracker, FitJob]] = []
    core = TickDecoder(
        CFG, parse=P.parse_tick, submit=lambda s, tr, job: jobs.append((s, tr, job)), **kw
    )

    def feed(b: list[bytes]) -> list[RegimeDecode]:
        got = core.feed(b)
        while jobs:
            s, tr, job = jobs.pop()
            got += core.fitted(s, tr, job, job.run(), None)
        out.extend(got)
        return got

    core.feed_sync = feed  # type: ignore[attr-defined]
    return core, out


@pytest.mark.parametrize("batch", [1, 7, 15, 16, 100, 400])
def test_decodes_do_not_depend_on_the_batching(series: Any, batch: int) -> None:
    """Small batches take the per-tick path, big ones `push_many`: same messages either way."""
    times, prices = series
    ref, ref_out = _sync_core()
    ref.feed_sync(bodies("A", times[:60], prices[:60]))  # type: ignore[attr-defined]
    ref.feed_sync(bodies("A", times[60:], prices[60:]))  # type: ignore[attr-defined]
    core, out = _sync_core()
    core.feed_sync(bodies("A", times[:60], prices[:60]))  # type: ignore[attr-defined]
    b = bodies("A", times[60:], prices[60:])
    for i in range(0, len(b), batch):
        core.feed_sync(b[i : i + batch])  # type: ignore[attr-defined]
    assert len(out) == len(ref_out) == 399
    assert [d.to_wire() for d in out] == [d.to_wire() for d in ref_out]


@pytest.mark.parametrize("symbols", [1, 3, 12])
def test_interleaved_symbols_decode_as_if_fed_apart(series: Any, symbols: int) -> None:
    """A batch is split per symbol (numpy masks for a few, a dictionary for many)."""
    times, prices = series
    names = [f"S{i}" for i in range(symbols)]
    mixed, mixed_out = _sync_core()
    apart, apart_out = _sync_core()
    for name in names:
        mixed.feed_sync(bodies(name, times[:60], prices[:60]))  # type: ignore[attr-defined]
        apart.feed_sync(bodies(name, times[:60], prices[:60]))  # type: ignore[attr-defined]
    rest = {name: bodies(name, times[60:], prices[60:]) for name in names}
    k = len(names)
    interleaved = [rest[name][i] for i in range(340) for name in names[i % k :] + names[: i % k]]
    for i in range(0, len(interleaved), 500):
        mixed.feed_sync(interleaved[i : i + 500])  # type: ignore[attr-defined]
    for name in names:
        apart.feed_sync(rest[name])  # type: ignore[attr-defined]
    for name in names:
        got = [d.to_wire() for d in mixed_out if d.symbol == name]
        want = [d.to_wire() for d in apart_out if d.symbol == name]
        assert got == want and len(got) > 100
    assert mixed.stats()["accepted"] == len(interleaved) + 60 * symbols


def test_the_rate_that_turns_coalescing_on_is_not_fooled_by_bursts() -> None:
    """A 10k/s feed whose producer stalls 100 ms now and then (and catches up at once) stays
    under the 20k/s that makes the loop wait for ticks to gather; a steady 50k/s does not."""
    feed = TickFeed(Collector(), bind_to=["inproc://rate"])
    meter, short = RateMeter(0.0), RateMeter(0.0, window=0.05)
    top = top_short = 0.0
    for i in range(4000):  # wake-ups every 2.5 ms: 25 ticks each, or a stall's backlog
        stalled = i % 80 < 40  # 100 ms with nothing, every 200 ms
        n = 0 if stalled else 25 + (1000 if i % 80 == 40 else 0)
        top = max(top, meter.add(n, 0.0025 * (i + 1)))
        top_short = max(top_short, short.add(n, 0.0025 * (i + 1)))
    assert 8_000 < meter.rate < 12_500 and top < feed.coalesce_rate
    assert top_short > feed.coalesce_rate  # what a 50 ms window made of the same feed
    fast = RateMeter(0.0)
    rates = [fast.add(125, 0.0025 * (i + 1)) for i in range(400)]  # 50k/s
    assert rates[-1] == pytest.approx(50_000, rel=0.02)
    assert min(i for i, r in enumerate(rates) if r >= feed.coalesce_rate) * 0.0025 <= RATE_WINDOW


def test_bad_ticks_are_dropped_counted_and_logged_once(
    series: Any, caplog: pytest.LogCaptureFixture
) -> None:
    times, prices = series
    core, out = _sync_core(symbols=["A", "B"], max_bytes=200)
    bad = [
        b"{not json",
        b'{"symbol": "A", "t": NaN, "price": 1}',
        b"[1]",
        b'{"symbol": "A", "price": 1}',
        b'{"symbol": "A", "t": "x", "price": 1}',
        b'{"symbol": "A", "t": 1, "price": -1}',
        b'{"symbol": "Z", "t": 1, "price": 1}',
        json.dumps({"symbol": "A", "t": 1, "price": 1, "pad": "x" * 300}).encode(),
    ]
    good = bodies("A", times, prices)
    with caplog.at_level(logging.WARNING, logger="streamer.net.feed"):
        core.feed_sync(good[:100] + bad + bad + good[100:])  # type: ignore[attr-defined]
    st = core.stats()
    assert st["dropped"] == {
        "json": 4, "not_object": 2, "missing_field": 2, "wrong_type": 2, "bad_value": 2,
        "unknown_symbol": 2, "oversized": 2,
    }  # fmt: skip
    assert st["received"] == 400 + 2 * len(bad) and st["accepted"] == 400
    assert len(out) == 399  # the good ticks around the bad ones all decoded
    warnings = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(warnings) == 7  # once per kind


def test_too_many_symbols_and_tracker_skips(series: Any) -> None:
    times, prices = series
    core, _ = _sync_core(max_symbols=1)
    core.feed_sync(bodies("A", times[:5], prices[:5]) + bodies("B", times[:5], prices[:5]))  # type: ignore[attr-defined]
    core.feed_sync(bodies("A", times[2:5], prices[2:5]))  # type: ignore[attr-defined]
    st = core.stats()
    assert st["dropped"] == {"too_many_symbols": 5} and st["symbols"] == 1
    assert st["skipped"]["out_of_order"] == 2 and st["skipped"]["duplicate"] == 1


def test_a_failed_fit_starts_the_warm_up_again(series: Any) -> None:
    times, prices = series
    jobs: list[Any] = []
    core = TickDecoder(CFG, parse=P.parse_tick, submit=lambda *a: jobs.append(a))
    core.feed(bodies("A", times[:60], prices[:60]))
    (sym, tr, job), = jobs  # fmt: skip
    assert core.pending_first_fits() == ["A"]
    assert core.fitted(sym, tr, job, None, RuntimeError("boom")) == []
    assert core.stats()["fit_errors"] == 1 and core.trackers["A"] is not tr
    assert core.trackers["A"].n == 0


def test_a_failed_refit_keeps_the_regimes_in_use(series: Any) -> None:
    times, prices = series
    jobs: list[Any] = []
    cfg = TrackerConfig(warmup=60, refit_every=50, restarts=1)
    core = TickDecoder(cfg, parse=P.parse_tick, submit=lambda *a: jobs.append(a))
    out = core.feed(bodies("A", times[:60], prices[:60]))
    sym, tr, job = jobs.pop()
    out += core.fitted(sym, tr, job, job.run(), None)
    out += core.feed(bodies("A", times[60:115], prices[60:115]))
    (sym, tr2, refit), = jobs  # fmt: skip
    assert tr2 is tr and not refit.first and core.pending_first_fits() == []
    regimes = tr.model
    assert core.fitted(sym, tr, refit, None, RuntimeError("boom")) == []
    assert core.stats()["fit_errors"] == 1 and core.trackers["A"] is tr and tr.model is regimes
    jobs.clear()
    out += core.feed(bodies("A", times[115:200], prices[115:200]))
    # every tick after the first (a return needs two prices) decoded once, the failure or not
    assert [round(d.t) for d in out] == [round(t) for t in times[1:200]]
    (_, _, again), = jobs  # fmt: skip
    assert again.created_at == refit.created_at + 50  # the next refit when it was due


def test_settings() -> None:
    with pytest.raises(ConfigError):
        TickDecoder(CFG, parse=P.parse_tick, max_bytes=10)
    with pytest.raises(ConfigError, match="needs an endpoint"):
        TickFeed(Collector())


async def producer(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    """An outside producer: XPUB connected to the feed, returned once the feed subscribed."""
    p = ctx.socket(zmq.XPUB)
    p.setsockopt(zmq.XPUB_NODROP, 1)  # wait at the mark rather than lose ticks
    p.connect(endpoint)
    for _ in range(500):
        if p.poll(0):
            p.recv()
            return p
        await asyncio.sleep(0.01)
    p.close()
    raise AssertionError("the feed never subscribed")


async def test_feed_on_a_socket_survives_bad_input_and_drains_on_stop(
    zctx: zmq.Context[Any], series: Any
) -> None:
    times, prices = series
    sink = Collector()
    feed = TickFeed(sink, bind_to=["tcp://127.0.0.1:*"], context=zctx, config=CFG)
    async with feed:
        run = asyncio.create_task(feed.run(drain_quiet=0.2))
        p = await producer(zctx, feed.endpoints[0])
        try:
            for b in bodies("A", times[:200], prices[:200]):
                p.send_multipart([b"tick", b])
            p.send_multipart([b"tick"])  # one frame
            p.send_multipart([b"tick", b"{}", b"extra"])  # three frames
            p.send_multipart([b"ticker", b"{}"])  # passes the prefix filter, wrong topic
            p.send_multipart([b"tick", b"\xff\xfe"])
            for b in bodies("A", times[200:], prices[200:]):
                p.send_multipart([b"tick", b])
            feed.stop()  # at once: what is queued or on its way still gets decoded
            stats = await asyncio.wait_for(run, 10)
        finally:
            p.close()
    got = sink.decodes
    assert stats["accepted"] == 400 and len(got) == 399
    # the three-frame message: its body ({} has no fields), then its third frame on its own
    assert stats["dropped"] == {"frames": 2, "topic": 1, "json": 1, "missing_field": 1}
    assert [d.t for d in got] == times[1:].tolist()

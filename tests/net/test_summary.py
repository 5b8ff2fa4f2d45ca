"""Per-symbol summaries of the regime decodes: the core's arithmetic, then a real publisher."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import zmq

from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.messages import RegimeDecode
from streamer.net import protocol as P
from streamer.net.publisher import Publisher
from streamer.net.subscriber import Subscriber
from streamer.net.summary import Summaries

from .conftest import validate_message


def walk(symbol: str, n: int, seed: int, t0: float = 1.7e9) -> list[RegimeDecode]:
    """n decodes of a random walk whose regime flips now and then."""
    rng = random.Random(seed)
    price, state, out = 100.0, 0, []
    for i in range(n):
        price *= 1 + rng.gauss(0, 0.01)
        changed = rng.random() < 0.05
        state ^= changed
        probs = (0.8, 0.2) if state == 0 else (0.3, 0.7)
        name = ("calm", "turbulent")[state]
        out.append(RegimeDecode(symbol, t0 + i, price, state, name, probs, changed))
    return out


def test_a_summary_holds_first_low_high_last_and_the_latest_decode() -> None:
    s = Summaries()
    a, b = walk("A", 300, seed=1), walk("B", 5, seed=2)
    s.add(a[:100] + b, ts=10.0)
    s.add(a[100:], ts=11.0)
    got = {m.symbol: m for m in s.take(lambda sym: {"A": 299, "B": 4}[sym])}
    m = got["A"]
    prices = [d.price for d in a]
    assert (m.first, m.low, m.high, m.last) == (prices[0], min(prices), max(prices), prices[-1])
    assert (m.ticks, m.t0, m.t) == (300, a[0].t, a[-1].t)
    assert (m.state, m.regime, m.probs) == (a[-1].state, a[-1].regime, list(a[-1].probs))
    assert m.changes == sum(d.changed for d in a)
    assert (m.regime_ts, m.regime_seq) == (11.0, 299)
    assert got["B"].ticks == 5 and got["B"].regime_ts == 10.0
    assert s.take(lambda sym: 0) == []  # taken: the next interval starts empty


async def test_the_publisher_sends_one_summary_per_symbol_and_interval(
    zctx: zmq.Context[Any], validators: dict[str, Any]
) -> None:
    a, b = walk("A", 2000, seed=3), walk("B", 700, seed=4)
    got: list[P.Message] = []
    async with (
        Publisher(
            "tcp://127.0.0.1:*", context=zctx, metrics_interval=0, summary_interval=0.05
        ) as pub,
        Subscriber(pub.endpoint, [P.SUMMARY], context=zctx) as sub,
    ):

        async def collect() -> None:
            while sum(m.data.ticks for m in got if isinstance(m.data, P.Summary)) < 2700:
                got.append(await sub.recv())

        collector = asyncio.create_task(collect())
        await pub.wait_subscribers(1, timeout=5)
        for i in range(0, 2000, 100):  # batches over several intervals
            pub.publish_many(a[i : i + 100] + b[i // 100 * 35 : (i // 100 + 1) * 35])
            await asyncio.sleep(0.01)
        await asyncio.wait_for(collector, 5)
    summaries = [m.data for m in got if isinstance(m.data, P.Summary)]
    by = {sym: [m for m in summaries if m.symbol == sym] for sym in ("A", "B")}
    assert {m.topic for m in got} == {"summary.A", "summary.B"}
    assert 2 <= len(by["A"]) <= 20  # a few intervals, far fewer messages than decodes
    for sym, decodes in (("A", a), ("B", b)):
        ms = by[sym]
        assert sum(m.ticks for m in ms) == len(decodes)
        assert min(m.low for m in ms) == min(d.price for d in decodes)
        assert max(m.high for m in ms) == max(d.price for d in decodes)
        assert ms[0].first == decodes[0].price and ms[-1].last == decodes[-1].price
        assert ms[-1].regime_seq == len(decodes) - 1  # the regime topic's last seq
        assert [m.seq for m in ms] == list(range(len(ms)))
    assert sub.stats.missed == 0
    for m in got:
        validate_message(validators, m.topic, m.body)


def test_a_batch_as_arrays_folds_in_as_its_decodes_do() -> None:
    """The tick path hands the publisher `DecodeBatch`es: same summaries, no message per tick."""
    s = simulate(RegimeSpec.preset(3), 900, seed=4)
    tr = RegimeTracker("X", TrackerConfig(warmup=200, refit_every=0, states=3, level=0.0))
    tr.push_many(s.times[:300], s.prices[:300])
    assert tr.decoder is not None
    batches = [tr.decoder.step_many(s.times[a:b], s.prices[a:b]) for a, b in
               ((300, 301), (301, 600), (600, 600), (600, 900))]  # fmt: skip
    arrays, objects = Summaries(), Summaries()
    for i, b in enumerate(batches):
        arrays.add(b, 1.0 + i)
        objects.add(list(b), 1.0 + i)
    (a,), (o,) = arrays.take(lambda _: 7), objects.take(lambda _: 7)
    assert a == o and a.ticks == 600 and a.changes > 0

"""The publisher on real sockets: every message against its schema, seq, heartbeats, drops."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
from typing import Any

import pytest
import zmq

from streamer.errors import ConfigError
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.messages import RegimeDecode
from streamer.net import protocol as P
from streamer.net.publisher import Publisher
from streamer.net.subscriber import Subscriber

from .conftest import recv_all, regime, sub_socket, validate_message, word


async def test_every_message_follows_its_schema_and_seq_is_consecutive(
    zctx: zmq.Context[Any], validators: dict[str, Any]
) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0.2) as pub:
        sock = sub_socket(zctx, pub.endpoint)
        try:
            await pub.wait_subscribers(0)
            await asyncio.sleep(0.2)  # the raw SUB is not counted: give its subscription time
            pub.status("running")
            for i in range(5):
                pub.publish(word(index=i, label=None if i == 3 else "apple"), delay=0.01)
            pub.publish_many([regime("BTC-USD", 1.7e9 + i, smoothed=i % 2 == 0) for i in range(50)])
            pub.publish_many([regime("ETH-USD", 1.7e9 + i) for i in range(7)])
            pub.publish(regime("ETH-USD", 1.8e9))
            pub.publish(regime("SOL", 1.8e9))
            got = await recv_all(sock, timeout=0.6)
        finally:
            sock.close()
    kinds = {P.kind_of(t) for t, _ in got}
    assert kinds == {"speech", "regime", "summary", "heartbeat", "status", "metrics"}
    last: dict[str, int] = {}
    for topic, body in got:
        validate_message(validators, topic, body)
        if topic in last:
            assert body["seq"] == last[topic] + 1, topic
        last[topic] = body["seq"]
    assert last["regime.BTC-USD"] == 49 and last["regime.ETH-USD"] == 7 and last["speech"] == 4
    assert {t for t, _ in got if t.startswith("regime")} == {
        "regime.BTC-USD",
        "regime.ETH-USD",
        "regime.SOL",
    }
    assert pub.sent["regime"] == 59 and not pub.dropped


async def test_topic_prefixes(zctx: zmq.Context[Any]) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        every = sub_socket(zctx, pub.endpoint, "regime")
        btc = sub_socket(zctx, pub.endpoint, "regime.BTC")
        try:
            await asyncio.sleep(0.2)
            pub.publish_many([regime("BTC"), regime("ETH"), regime("BTC")])
            pub.publish(word())
            a = await recv_all(every, 0.3)
            b = await recv_all(btc, 0.3)
        finally:
            every.close()
            btc.close()
    assert [t for t, _ in a] == ["regime.BTC", "regime.ETH", "regime.BTC"]
    assert [(t, m["seq"]) for t, m in b] == [("regime.BTC", 0), ("regime.BTC", 1)]


async def test_heartbeats_keep_coming_numbered_and_describing_the_session(
    zctx: zmq.Context[Any],
) -> None:
    """Heartbeats repeat on their own, in seq order, saying their interval (the at-most-1 s
    spacing is a timing figure: checked by the schedule's arithmetic, not the wall clock)."""
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        sock = sub_socket(zctx, pub.endpoint, "heartbeat")
        try:
            loop = asyncio.get_running_loop()
            bodies = []
            end = loop.time() + 30.0  # a generous bound: only a publisher that stopped hits it
            while len(bodies) < 3 and loop.time() < end:
                try:
                    _t, b = sock.recv_multipart(zmq.NOBLOCK)
                    bodies.append(P.loads(b))
                except zmq.Again:
                    await asyncio.sleep(0.01)
        finally:
            sock.close()
    assert len(bodies) == 3
    assert all(b["session"] == pub.session for b in bodies)
    assert all(b["interval"] == pub.heartbeat_interval <= 1.0 for b in bodies)
    seqs = [b["seq"] for b in bodies]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    # the heartbeat sent at once for a new subscriber can share its millisecond with a
    # scheduled one: uptime never goes back, and it moves on over the three
    assert all(a["uptime"] <= b["uptime"] for a, b in itertools.pairwise(bodies))
    assert bodies[-1]["uptime"] > bodies[0]["uptime"]


async def test_drops_are_counted_reported_and_seen_as_gaps(zctx: zmq.Context[Any]) -> None:
    """A subscriber that does not read: sends fail at the mark at once, never block."""
    pub = Publisher(
        "inproc://drops",
        context=zctx,
        hwm=10,
        policy="lossless",
        metrics_interval=0,
        snapshot=False,
    )
    async with pub:
        sock = zctx.socket(zmq.SUB)
        sock.rcvhwm = 10
        sock.subscribe(b"")
        sock.connect(pub.endpoint)
        try:
            await asyncio.sleep(0.1)
            sent = pub.publish_many([regime("X", 1.7e9 + i) for i in range(5000)])  # returns
            assert sent < 100 and pub.dropped["regime"] == 5000 - sent
            assert pub.metrics()["dropped"]["regime"] == 5000 - sent
            got = await recv_all(sock, 0.3)  # drains the queue
            pub.publish_many([regime("X", 1.8e9)])
            pub.publish_metrics()
            got += await recv_all(sock, 0.3)
        finally:
            sock.close()
    seqs = [b["seq"] for t, b in got if t == "regime.X"]
    assert seqs[-1] == 5000 and seqs[-2] < 4999  # the subscriber sees the jump
    metrics = [b for t, b in got if t == "metrics"][-1]
    assert metrics["dropped"]["regime"] == 5000 - sent and metrics["policy"] == "nodrop"


async def test_lossy_policy_does_not_fail_sends(zctx: zmq.Context[Any]) -> None:
    pub = Publisher(
        "inproc://lossy", context=zctx, hwm=10, lossy=True, snapshot=False, metrics_interval=0
    )
    async with pub:
        sock = sub_socket(zctx, pub.endpoint)
        try:
            await asyncio.sleep(0.05)
            assert pub.publish_many([regime("X", 1.7e9 + i) for i in range(1000)]) == 1000
            assert not pub.dropped and pub.metrics()["policy"] == "lossy"
        finally:
            sock.close()


async def test_counts_subscribers_and_waits_for_them(zctx: zmq.Context[Any]) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        with pytest.raises(TimeoutError):
            await pub.wait_subscribers(1, timeout=0.2)
        raw = sub_socket(zctx, pub.endpoint, "regime")  # no heartbeats: not counted
        async with (
            Subscriber(pub.endpoint, ["regime"], context=zctx),
            Subscriber(pub.endpoint, ["speech"], context=zctx),
        ):
            await pub.wait_subscribers(2, timeout=3)
            assert pub.subscribers == 2
        raw.close()
        for _ in range(100):
            if pub.subscribers == 0:
                break
            await asyncio.sleep(0.02)
        assert pub.subscribers == 0


async def test_snapshot_socket_refuses_a_bad_request(zctx: zmq.Context[Any]) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        d = zctx.socket(zmq.DEALER)
        d.connect(pub.snapshot_endpoint)
        try:
            d.send_multipart([b"snapshot", b"{broken"])
            assert await asyncio.wait_for(asyncio.to_thread(d.poll, 2000), 3)
            frames = d.recv_multipart()
        finally:
            d.close()
    assert frames[0] == b"error" and b"JSON" in frames[1]


async def test_unencodable_messages_are_counted_not_raised(zctx: zmq.Context[Any]) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        bad = RegimeDecode("X", 1.0, 1.0, 0, "calm", (math.nan,), False)
        assert pub.publish(bad) is False
        # NaN where the Struct leaves the type open is null (strict JSON), as in metrics
        odd = RegimeDecode("X", 1.0, 1.0, 0, "calm", (1.0,), False, extra={"note": math.nan})
        assert pub.publish(odd) is True and pub._seq[b"regime.X"] == 1
        assert pub.publish_many([regime("X"), bad, regime("X")]) == 2
        assert pub.publish_body("metrics", {"x": math.nan}) is False
        assert pub.invalid == 3 and pub._seq[b"regime.X"] == 3  # no seq spent on them


async def test_a_batch_of_decodes_goes_out_from_its_arrays(zctx: zmq.Context[Any]) -> None:
    """A `DecodeBatch` is published without message objects: same bodies, seqs and snapshot."""
    s = simulate(RegimeSpec.preset(2), 600, seed=2)
    tr = RegimeTracker("BTC", TrackerConfig(warmup=200, refit_every=0, lag=3))
    tr.push_many(s.times[:300], s.prices[:300])
    assert tr.decoder is not None
    batch = tr.decoder.step_many(s.times[300:], s.prices[300:])
    bad = batch.probs.copy()
    bad[5] = math.nan
    odd = dataclasses.replace(batch, probs=bad)  # the careful path: only the bad one dropped
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        sock = sub_socket(zctx, pub.endpoint, "regime")
        try:
            await asyncio.sleep(0.2)
            pub.publish_many([regime("BTC", 1.0)])
            assert pub.publish_many(batch) == len(batch) == 300
            assert pub.publish_many(odd) == 299 and pub.invalid == 1
            got = await recv_all(sock, timeout=0.5)
            snap = P.parse_snapshot_reply(pub.snapshot(["regime"]))[1]
        finally:
            sock.close()
    bodies = [b for _, b in got]
    assert [b["seq"] for b in bodies] == list(range(600))
    for b, d in zip(bodies[1:301], batch, strict=True):
        assert {k: v for k, v in b.items() if k not in ("v", "seq", "ts")} == d.to_wire()
    assert [m.seq for m in snap] == [599] and snap[0].body == bodies[-1]
    assert pub.sent["regime"] == 600


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="expected tcp"):
        Publisher("http://x")
    with pytest.raises(ConfigError, match="heartbeat"):
        Publisher(heartbeat=2.0)
    with pytest.raises(ConfigError, match="snapshot"):
        Publisher("inproc://x", snapshot="udp://y")


async def test_bind_conflict_is_one_clear_error(zctx: zmq.Context[Any]) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        with pytest.raises(ConfigError, match="cannot bind"):
            async with Publisher(pub.endpoint, context=zctx, snapshot=False):
                pass


async def test_publisher_settings_and_waiting_for_subscribers(zctx: zmq.Context[Any]) -> None:
    from streamer.config import Config, PublisherConfig, ServiceConfig
    from streamer.service import publisher_for

    c = Config(
        publisher=PublisherConfig(
            endpoint="tcp://127.0.0.1:*", hwm=50, lossy=True, heartbeat=0.2, snapshots=False
        ),
        service=ServiceConfig(latency=True),
    )
    pub = publisher_for(c, curve=None, context=zctx)
    assert (pub.hwm, pub.policy, pub.heartbeat_interval, pub.latency) == (50, "lossy", 0.2, True)
    assert pub.snapshot_endpoint is None and pub.closed
    c = Config(publisher=PublisherConfig(endpoint="inproc://publishing", snapshot="inproc://s"))
    async with publisher_for(c, curve=None, context=zctx) as pub:
        assert not pub.closed and pub.snapshot_endpoint == "inproc://s"
        with pytest.raises(ConfigError, match=r"only 0 subscribed within 0\.1 s"):
            await pub.wait_for(1, 0.1)
        assert pub.state == "waiting"
    assert pub.closed

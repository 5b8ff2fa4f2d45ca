"""The subscriber client: late-joiner snapshot, gaps, liveness, reconnects, schema checks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import zmq

from streamer.errors import ProtocolError
from streamer.net import protocol as P
from streamer.net.publisher import Publisher
from streamer.net.subscriber import PublisherGone, Subscriber

from .conftest import regime, validate_message, word


async def take(sub: Subscriber, n: int, timeout: float = 5.0) -> list[P.Message]:
    async def go() -> list[P.Message]:
        return [await sub.recv() for _ in range(n)]

    return await asyncio.wait_for(go(), timeout)


async def test_late_joiner_gets_the_current_state_then_live_updates(
    zctx: zmq.Context[Any], validators: dict[str, Any]
) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        pub.status("running")
        pub.publish_many([regime("BTC", 1.7e9 + i, state=i % 3) for i in range(5)])
        pub.publish_many([regime("ETH", 1.7e9 + i) for i in range(3)])
        for i in range(3):
            pub.publish(word("a.wav", i))
        pub.publish(word("b.wav", 0))
        async with Subscriber(pub.endpoint, ["regime", "speech", "status"], context=zctx) as sub:
            snap = await take(sub, 5)
            assert all(m.snapshot for m in snap)
            got = {(m.topic, m.body.get("stream")): m.seq for m in snap}
            assert got == {
                ("regime.BTC", None): 4,
                ("regime.ETH", None): 2,
                ("speech", "a.wav"): 2,
                ("speech", "b.wav"): 3,
                ("status", None): 0,
            }
            btc = next(m for m in snap if m.topic == "regime.BTC")
            assert btc.body["state"] == 4 % 3  # the latest one, not the first
            pub.publish_many([regime("BTC", 1.8e9)])
            pub.publish(word("a.wav", 3))
            live = await take(sub, 2)
            assert [(m.topic, m.seq, m.snapshot, m.gap) for m in live] == [
                ("regime.BTC", 5, False, 0),
                ("speech", 4, False, 0),
            ]
            for m in snap + live:
                validate_message(validators, m.topic, m.body)
            assert sub.stats.missed == 0 and sub.stats.snapshots == 1


async def test_joining_during_a_busy_stream_loses_and_repeats_nothing(
    zctx: zmq.Context[Any],
) -> None:
    """Updates race the snapshot: the clone pattern keeps the sequence exact."""
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        stop = asyncio.Event()

        async def produce() -> None:
            i = 0
            while not stop.is_set():
                pub.publish_many([regime("BTC", 1.7e9 + i + k) for k in range(20)])
                i += 20
                await asyncio.sleep(0.001)

        task = asyncio.create_task(produce())
        try:
            await asyncio.sleep(0.05)
            async with Subscriber(pub.endpoint, ["regime"], context=zctx) as sub:
                msgs = await take(sub, 400)
        finally:
            stop.set()
            await task
    assert msgs[0].snapshot and not any(m.snapshot for m in msgs[1:])
    seqs = [m.seq for m in msgs]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert sub.stats.missed == 0


async def test_gaps_are_detected_mid_stream_and_at_the_tail(zctx: zmq.Context[Any]) -> None:
    async with (
        Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub,
        Subscriber(pub.endpoint, ["regime"], context=zctx, snapshot=False) as sub,
    ):
        recv = asyncio.create_task(take(sub, 1))
        await pub.wait_subscribers(1, timeout=3)
        pub.publish_many([regime("X")])
        await recv
        pub._seq[b"regime.X"] += 3  # as if three sends had failed
        pub.publish_many([regime("X")])
        (m,) = await take(sub, 1)
        assert (m.seq, m.gap) == (4, 3) and sub.stats.missed == 3
        pub._seq[b"regime.X"] += 2  # lost at the end: only the heartbeat can tell
        pub.heartbeat()
        for _ in range(100):
            if sub.stats.missed == 5:
                break
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sub.recv(), 0.02)
        assert sub.stats.missed == 5 and sub.stats.gaps == 2


async def test_silence_means_the_publisher_is_gone(zctx: zmq.Context[Any]) -> None:
    pub = Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0)
    await pub.start()
    sub = Subscriber(pub.endpoint, ["regime"], context=zctx, heartbeat_timeout=0.5,
                     reconnect=False)  # fmt: skip
    async with sub:
        pub.publish_many([regime("X")])
        await take(sub, 1)
        await pub.aclose()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(PublisherGone):
            await asyncio.wait_for(sub.recv(), 5)
        assert loop.time() - t0 < 1.5


async def test_reconnects_to_a_restarted_publisher(zctx: zmq.Context[Any]) -> None:
    first = Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0, heartbeat=0.2)
    await first.start()
    endpoint, snap = first.endpoint, first.snapshot_endpoint
    sub = Subscriber(endpoint, ["regime"], context=zctx, heartbeat_timeout=0.6)
    try:
        async with sub:
            first.publish_many([regime("X", 1.0 + i) for i in range(10)])
            assert (await take(sub, 1))[0].seq == 9  # from the snapshot
            await first.aclose()
            await asyncio.sleep(0.3)
            async with Publisher(endpoint, snapshot=snap, context=zctx, metrics_interval=0,
                                 heartbeat=0.2) as second:  # fmt: skip
                second.publish_many([regime("X", 2.0)])
                (m,) = await take(sub, 1, timeout=10)
                assert (m.seq, m.snapshot) == (0, True)  # a new session, a new snapshot
                second.publish_many([regime("X", 3.0)])
                (m,) = await take(sub, 1)
                assert (m.seq, m.snapshot, m.gap) == (1, False, 0)
                assert sub.session == second.session
                assert sub.stats.reconnects + sub.stats.restarts >= 1
    finally:
        await first.aclose()


async def test_invalid_messages_are_skipped_or_raised(zctx: zmq.Context[Any]) -> None:
    rogue = zctx.socket(zmq.XPUB)
    rogue.setsockopt(zmq.XPUB_VERBOSE, 1)
    port = rogue.bind_to_random_port("tcp://127.0.0.1")
    endpoint = f"tcp://127.0.0.1:{port}"
    bad = [b"regime.X", P._encode({"v": 1, "seq": 0, "ts": 1.0, "symbol": "X", "price": -1})]
    good = [b"regime.X", P.encode_body("regime", 1, 1.0, regime("X").to_wire())]
    try:
        for strict in (False, True):
            async with Subscriber(endpoint, ["regime"], context=zctx, snapshot=False,
                                  strict=strict) as sub:  # fmt: skip
                task = asyncio.create_task(sub.recv())
                # the client subscribes to heartbeats last: then its subscriptions are live
                while True:
                    if rogue.poll(0) and rogue.recv() == b"\x01heartbeat":
                        break
                    await asyncio.sleep(0.005)
                rogue.send_multipart(bad)
                rogue.send_multipart(good)
                if strict:
                    with pytest.raises(ProtocolError, match="price"):
                        await asyncio.wait_for(task, 3)
                else:
                    m = await asyncio.wait_for(task, 3)
                    assert m.seq == 1 and sub.stats.invalid == 1
    finally:
        rogue.close()


async def test_topic_filter_and_heartbeats_on_request(zctx: zmq.Context[Any]) -> None:
    async with (
        Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub,
        Subscriber(pub.endpoint, ["regime.BTC", "heartbeat"], context=zctx) as sub,
    ):
        pub.publish_many([regime("ETH"), regime("BTC")])
        msgs = await take(sub, 3)
    topics = {m.topic for m in msgs}
    assert "regime.ETH" not in topics and "heartbeat" in topics and "regime.BTC" in topics

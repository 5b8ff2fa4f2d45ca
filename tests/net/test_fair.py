"""Fair publishing on real loopback sockets: a stalled subscriber costs only itself.

Small high-water marks and kernel buffers make a subscriber that stops reading
fill its queue within a few thousand messages, so every test takes seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import zmq

from streamer.net import protocol as P
from streamer.net.publisher import Publisher
from streamer.net.subscriber import Subscriber

from .conftest import regime

HWM = 100
BATCH = 500


def stalled_sub(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    """A plain SUB that never reads, with small queues so it is full quickly."""
    s: zmq.Socket[Any] = ctx.socket(zmq.SUB)
    s.rcvhwm = HWM
    s.rcvbuf = 4096
    s.subscribe(b"")
    s.connect(endpoint)
    return s


def reading_sub(ctx: zmq.Context[Any], endpoint: str) -> zmq.Socket[Any]:
    """A plain SUB that reads everything: ZeroMQ's thread takes it all off the wire."""
    s: zmq.Socket[Any] = ctx.socket(zmq.SUB)
    s.rcvhwm = 0
    s.subscribe(b"")
    s.connect(endpoint)
    return s


async def read_plain(sock: zmq.Socket[Any], topic: str, last: int) -> list[int]:
    """Every seq of `topic` a plain SUB receives, until `last` (or 10 s without one)."""
    seqs: list[int] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            t, body = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            await asyncio.sleep(0.0005)
            continue
        if t.decode() == topic:
            deadline = time.monotonic() + 10
            seqs.append(P.loads(body)["seq"])
            if seqs[-1] >= last:
                break
    return seqs


async def read_client(sub: Subscriber, topic: str, last: int) -> list[int]:
    """Every live seq of `topic` a streamer Subscriber delivers, until `last`."""
    seqs: list[int] = []
    async with asyncio.timeout(20):
        while not seqs or seqs[-1] < last:
            m = await sub.recv()
            if m.topic == topic and not m.snapshot:
                seqs.append(m.seq)
    return seqs


async def replay(pub: Publisher, symbol: str, batches: int) -> float:
    """A replay at --speed 0: batches of decodes, `ready` awaited between them; seconds taken."""
    t0 = time.perf_counter()
    with pub.pacing():
        for b in range(batches):
            pub.publish_many([regime(symbol, 1.7e9 + b * BATCH + i) for i in range(BATCH)])
            await pub.ready()
    return time.perf_counter() - t0


async def test_a_stalled_subscriber_costs_only_itself_and_recovers_by_snapshot(
    zctx: zmq.Context[Any], ipc: Callable[[str], str]
) -> None:
    """The issue's scenario: a flat-out replay, one reader stalled, the others read everything.

    Over ipc:// (small kernel buffers) a reader that stops is full within a few
    thousand messages; over TCP on loopback it takes megabytes.
    """
    pub = Publisher(ipc("pub"), context=zctx, hwm=HWM, stall_timeout=0.5, metrics_interval=0)
    async with pub:
        frozen = stalled_sub(zctx, pub.endpoint)
        healthy = reading_sub(zctx, pub.endpoint)
        client = Subscriber(pub.endpoint, ["regime"], context=zctx)
        lagging = Subscriber(pub.endpoint, ["regime"], context=zctx, rcvhwm=HWM)
        try:
            client.open()
            lagging.open()
            await pub.wait_subscribers(4, timeout=5)
            pub.publish_many([regime("X", 1.0)])  # seq 0, so the clients join on something
            await client.recv()
            await lagging.recv()  # joined (snapshot taken), then it stops reading
            n = 40
            last = n * BATCH
            plain_task = asyncio.create_task(read_plain(healthy, "regime.X", last))
            client_task = asyncio.create_task(read_client(client, "regime.X", last))
            await replay(pub, "X", n)
            plain, seen = await plain_task, await client_task
            metrics = pub.metrics()
            assert pub.stalls >= 1 and metrics["policy"] == "lossy" and metrics["stalls"] >= 1
            assert metrics["readers"]["reporting"] == 2 and metrics["readers"]["stalled"] == 1
            # the healthy readers got every message, in order, no gap
            assert plain == list(range(plain[0], last + 1)) and plain[0] <= 1
            assert seen == list(range(1, last + 1)) and client.stats.missed == 0
            assert not pub.dropped
            # the stalled client reads again: it sees the loss and takes the state again
            latest = None
            async with asyncio.timeout(10):
                while latest is None or latest.seq < last:
                    m = await lagging.recv()
                    if m.topic == "regime.X" and (m.snapshot or latest is not None):
                        latest = m
            assert lagging.stats.missed > 0 and lagging.stats.resyncs >= 1
            assert latest.data.t == regime("X", 1.7e9 + last - 1).t  # the current state
        finally:
            for s in (frozen, healthy):
                s.close()
            await client.aclose()
            await lagging.aclose()


async def test_a_slow_reader_gets_everything_the_replay_waits(
    zctx: zmq.Context[Any], ipc: Callable[[str], str]
) -> None:
    pub = Publisher(ipc("pub"), context=zctx, hwm=HWM, stall_timeout=1.0, metrics_interval=0)
    async with pub:
        slow = Subscriber(pub.endpoint, ["regime"], context=zctx, rcvhwm=HWM)
        try:
            slow.open()
            await pub.wait_subscribers(1, timeout=5)
            pub.publish_many([regime("S", 1.0)])
            await slow.recv()
            n = 6
            last = n * BATCH

            async def read_slowly() -> list[int]:
                seqs: list[int] = []
                async with asyncio.timeout(20):
                    while not seqs or seqs[-1] < last:
                        m = await slow.recv()
                        if m.topic == "regime.S":
                            seqs.append(m.seq)
                            if len(seqs) % 50 == 0:
                                await asyncio.sleep(0.005)  # ~10k msgs/s at most
                return seqs

            reader = asyncio.create_task(read_slowly())
            took = await replay(pub, "S", n)
            seqs = await reader
        finally:
            await slow.aclose()
    assert seqs == list(range(1, last + 1)) and slow.stats.missed == 0
    assert pub.stalls == 0 and not pub.dropped
    assert took > 0.1, took  # it went at the reader's pace (flat out it takes a few ms)


async def test_lossless_policy_holds_the_producer_for_a_stalled_reader(
    zctx: zmq.Context[Any],
) -> None:
    """The documented cost of `lossless`: one reader that stops stops the replay."""
    pub = Publisher(
        "tcp://127.0.0.1:*",
        context=zctx,
        hwm=HWM,
        policy="lossless",
        stall_timeout=0.1,
        metrics_interval=0,
    )
    async with pub:
        frozen = stalled_sub(zctx, pub.endpoint)
        try:
            await asyncio.sleep(0.2)
            n = 30
            task = asyncio.create_task(replay(pub, "L", n))
            await asyncio.sleep(1.0)  # ten stall timeouts: it still waits
            assert not task.done() and pub.held > 0 and pub.lossless and not pub.stalls
            seqs = await read_plain(frozen, "regime.L", n * BATCH - 1)  # reads: it goes on
            await task
        finally:
            frozen.close()
    assert seqs == list(range(n * BATCH)) and not pub.dropped


async def test_live_sends_never_wait_and_only_the_stalled_reader_loses(
    zctx: zmq.Context[Any], ipc: Callable[[str], str]
) -> None:
    """A live service cannot wait: a full queue drops for its reader alone, at once."""
    pub = Publisher(ipc("pub"), context=zctx, hwm=1000, metrics_interval=0)
    async with pub:
        frozen = stalled_sub(zctx, pub.endpoint)
        healthy = reading_sub(zctx, pub.endpoint)
        try:
            await asyncio.sleep(0.2)
            n, size = 100, 100
            reader = asyncio.create_task(read_plain(healthy, "regime.V", n * size - 1))
            slowest = 0.0
            for b in range(n):
                t0 = time.perf_counter()
                went = pub.publish_many([regime("V", 1.7e9 + b * size + i) for i in range(size)])
                slowest = max(slowest, time.perf_counter() - t0)
                assert went == size
                await asyncio.sleep(0.005)  # a live pace (20k msgs/s), not a flat-out replay
            seqs = await reader
        finally:
            frozen.close()
            healthy.close()
    assert seqs == list(range(n * size)) and not pub.dropped and pub.held == 0
    assert pub.stalls >= 1 and slowest < 0.5


async def test_a_malformed_progress_report_is_counted_and_ignored(zctx: zmq.Context[Any]) -> None:
    async with Publisher("tcp://127.0.0.1:*", context=zctx, metrics_interval=0) as pub:
        assert pub.snapshot_endpoint is not None
        dealer = zctx.socket(zmq.DEALER)
        dealer.connect(pub.snapshot_endpoint)
        try:
            dealer.send_multipart([P.PROGRESS, b'{"v": 1, "client": ""}'])
            dealer.send_multipart([P.PROGRESS, b"\xff"])
            dealer.send_multipart(P.progress_report("c1", ["regime"], 0, 3, 1))
            dealer.send_multipart(P.snapshot_request(["regime"]))
            async with asyncio.timeout(5):
                while not dealer.poll(0):
                    await asyncio.sleep(0.01)
            meta, _ = P.parse_snapshot_reply(dealer.recv_multipart())  # still answering
        finally:
            dealer.close()
        readers = pub.metrics()["readers"]
    assert pub.bad_reports == 2 and meta.session == pub.session
    assert readers["reporting"] == 1 and readers["missed"] == 3 and readers["resyncs"] == 1

"""The live ZeroMQ tick feed on the cluster: checked at the head, decoded in the shards.

The head keeps the feed's socket and its checks (`TickFeed`, the same parsing,
rejects and counters as the single process); each symbol's good ticks go to its
shard (`shard_of`, as in a replay) instead of a local tracker. Per shard the head
gathers ticks for `batch_ms` (or until `batch_ticks`) and sends them as one call,
each symbol's ticks in order, at most `in_flight` calls outstanding
(`ShardLink`, which also recovers a lost shard from its checkpoint and the calls
since). While a shard has `batch_ticks` ticks waiting the feed stops reading its
socket: the ticks stay queued in ZeroMQ (up to the socket's high-water mark,
then the producer's socket blocks or drops by its own policy, as when the single
process falls behind), never dropped here. Decodes come back in call order and
leave through the head's sink (the publisher).

The shards run the replay's tracker code, fits inline: the decodes are the ones
the single process gives when its fits are ready in time (a first fit's buffered
ticks come out when it is installed, either way; a live single process installs
a refit when its executor has it, the shard at its due tick). A shard's fit
holds up that shard's calls, and so, once its `batch_ticks` are waiting, the
feed: the refit cores of docs/scaling.md's capacity model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import zmq

from streamer.cluster.cores import ShardReply, TickChunk, shard_of, unpack_decodes
from streamer.cluster.runtime import ClusterRuntime
from streamer.cluster.ticks import ShardLink, plan_calls
from streamer.config import ClusterConfig
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.feed import TickDecoder
from streamer.messages import RegimeDecode, Sink
from streamer.net.feed import TickFeed

log = logging.getLogger("streamer.net.feed")


class _Pending:
    """A shard's ticks not sent yet, per symbol in arrival order."""

    def __init__(self) -> None:
        self.ticks: dict[str, tuple[list[float], list[float]]] = {}
        self.count = 0
        self.since = 0.0  # loop time of the oldest tick waiting
        self.wake = asyncio.Event()  # something waits (or the feed is closing)
        self.full = asyncio.Event()  # `batch_ticks` wait

    def take(self) -> list[TickChunk]:
        out = [(s, np.asarray(t), np.asarray(p)) for s, (t, p) in self.ticks.items()]
        self.ticks, self.count = {}, 0
        self.full.clear()
        return out


class RoutingDecoder(TickDecoder):
    """The feed's checks and counters, with each symbol's good ticks handed to `route`."""

    def __init__(self, base: TickDecoder, shards: FeedShards) -> None:
        super().__init__(
            base.config,
            parse=base.parse,
            parse_many=base.parse_many,
            symbols=base.symbols,
            max_bytes=base.max_bytes,
            max_symbols=base.max_symbols,
            on_event=base.on_event,
        )
        self.shards = shards
        self.seen: set[str] = set()

    @property
    def known(self) -> Collection[str]:
        return self.seen

    def push_chunks(
        self, symbol: str, ts: Sequence[float], ps: Sequence[float]
    ) -> list[Sequence[RegimeDecode]]:
        self.seen.add(symbol)
        self.shards.put(symbol, list(ts), list(ps))
        return []  # they come back from the shard

    def restore(self, trackers: Mapping[str, RegimeTracker]) -> None:
        if trackers:
            log.warning(
                "tick feed: saved trackers of %d symbol(s) are not taken up by the cluster's "
                "shards; those symbols warm up again",
                len(trackers),
            )

    def stats(self) -> dict[str, Any]:
        st = super().stats()
        shards = self.shards
        st["decoded"] = sum(shards.decoded.values())
        st["symbols"] = len(self.seen)
        st["warming_up"] = shards.warming
        st["skipped"] = dict(shards.skipped)
        return st


class FeedShards:
    """The shard links of a live feed: `put` ticks, `room` for back-pressure, `finish`."""

    def __init__(
        self,
        runtime: ClusterRuntime,
        config: TrackerConfig,
        cc: ClusterConfig,
        sink: Sink,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.cc = cc
        self.sink = sink
        self.decoded: Counter[str] = Counter()  # decodes delivered, per symbol
        self.on_event = on_event
        self.n = cc.shards or runtime.cpus()
        self.links = [
            ShardLink(i, runtime, config, cc.in_flight, self._deliver, cc.checkpoint_every)
            for i in range(self.n)
        ]
        self.pending = [_Pending() for _ in range(self.n)]
        self.shard_of: dict[str, int] = {}
        self.warming = 0  # symbols still warming up at the end (from the shards' counters)
        self.skipped: Counter[str] = Counter()  # ticks the shards' trackers refused
        self._space = asyncio.Event()
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._step = cc.batch_ms / 1000.0

    def start(self) -> None:
        self.runtime.stats.shards = max(self.runtime.stats.shards, self.n)
        for link in self.links:
            link.start()
        self._tasks = [
            asyncio.create_task(link.collect(), name=f"feed-shard-{link.index}")
            for link in self.links
        ] + [asyncio.create_task(self._sender(i), name=f"feed-send-{i}") for i in range(self.n)]

    def _deliver(self, reply: ShardReply) -> None:
        stats = self.runtime.stats
        stats.did(reply.node, reply.actor, reply.busy, reply.started, reply.ended)
        stats.ticks += reply.ticks
        if reply.decodes:
            decodes = unpack_decodes(reply.decodes)
            for symbol, rows in reply.decodes:
                self.decoded[symbol] += len(rows)
            self.sink.publish_many(decodes)
        if self.on_event is not None:
            for text in reply.events:
                self.on_event(text)

    def put(self, symbol: str, ts: list[float], ps: list[float]) -> None:
        """Good ticks of one symbol, in order, for its shard (sent within `batch_ms`)."""
        i = self.shard_of.get(symbol)
        if i is None:
            i = self.shard_of[symbol] = shard_of(symbol, self.n)
        p = self.pending[i]
        if not p.count:
            p.since = asyncio.get_running_loop().time()
            p.wake.set()
        g = p.ticks.get(symbol)
        if g is None:
            p.ticks[symbol] = (ts, ps)
        else:
            g[0].extend(ts)
            g[1].extend(ps)
        p.count += len(ts)
        if p.count >= self.cc.batch_ticks:
            p.full.set()

    def _full(self) -> bool:
        limit = self.cc.batch_ticks
        return any(p.count >= limit for p in self.pending)

    async def room(self) -> None:
        """Return once no shard has a full batch waiting (a shard's failure is raised)."""
        while self._full():
            self._check()
            self._space.clear()
            space = asyncio.ensure_future(self._space.wait())
            waits: list[asyncio.Future[Any]] = [space, *(t for t in self._tasks if not t.done())]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            space.cancel()
        self._check()

    def _check(self) -> None:
        for t in self._tasks:
            if t.done() and not t.cancelled():
                e = t.exception()
                if e is not None:
                    raise e

    async def _sender(self, i: int) -> None:
        """Shard i's calls: what has waited `batch_ms` (or fills a batch), in order."""
        link, p = self.links[i], self.pending[i]
        loop = asyncio.get_running_loop()
        batch = self.cc.batch_ticks
        while True:
            if not p.count:
                if self._closing:
                    link.close()
                    return
                p.wake.clear()
                await p.wake.wait()
                continue
            left = p.since + self._step - loop.time()
            if p.count < batch and left > 0 and not self._closing:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(p.full.wait(), left)
                continue
            chunks = p.take()
            self._space.set()
            for c in plan_calls(chunks, batch):
                await link.send(c)

    async def finish(self) -> None:
        """Send what waits, deliver every reply, take the shards' final counters."""
        self._closing = True
        for p in self.pending:
            p.wake.set()
            p.full.set()
        await asyncio.gather(*self._tasks)
        finals = await asyncio.gather(*(link.finish() for link in self.links))
        for f in finals:
            for st in f.values():
                self.skipped.update(st.get("skipped", {}))
                self.warming += st.get("states") is None
        self._account()

    def waiting(self) -> int:
        """Ticks taken in and not delivered yet (waiting here or in calls outstanding)."""
        queued = sum(p.count for p in self.pending)
        sent = 0
        for link in self.links:
            for seq, chunks, _ in link.log:
                if seq >= link.delivered:
                    sent += sum(len(t) for _, t, _ in chunks)
        return queued + sent

    def _account(self) -> None:
        stats = self.runtime.stats
        for link in self.links:
            stats.restarts += link.lost
            stats.replayed += link.replayed
            stats.duplicates += link.duplicates
            stats.checkpoints += link.checkpoints
            link.lost = link.replayed = link.duplicates = link.checkpoints = 0

    async def aclose(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        self._account()
        for link in self.links:
            if link.actor is not None:
                self.runtime.kill(link.actor)
                link.actor = None


class ClusterTickFeed(TickFeed):
    """`TickFeed` whose ticks are decoded by the cluster's shard actors (``--cluster``)."""

    def __init__(
        self,
        sink: Sink,
        runtime: ClusterRuntime,
        cluster: ClusterConfig,
        *,
        context: zmq.Context[Any] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(sink, context=context, **kw)
        self.shards = FeedShards(runtime, self.core.config, cluster, sink, self.core.on_event)
        self.core = RoutingDecoder(self.core, self.shards)
        self._room = self.shards.room

    async def run(self, *, drain_quiet: float = 0.1, drain_timeout: float = 5.0) -> dict[str, Any]:
        self.shards.start()
        return await super().run(drain_quiet=drain_quiet, drain_timeout=drain_timeout)

    async def _settle(self, deadline: float) -> None:
        """Every tick taken in decoded by its shard and published (until `deadline`)."""
        try:
            await asyncio.wait_for(self.shards.finish(), max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            log.warning(
                "tick feed: stopped before the shards decoded %d ticks taken in; "
                "they are not published",
                self.shards.waiting(),
            )

    async def aclose(self) -> None:
        await self.shards.aclose()
        await super().aclose()


__all__ = ["ClusterTickFeed", "FeedShards", "RoutingDecoder"]

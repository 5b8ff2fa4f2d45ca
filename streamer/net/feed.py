"""The live tick feed: outside producers publish ``[b"tick", {"symbol", "t", "price"}]``.

A SUB socket (bound, so producers can come and go; or connected to a producer's
PUB) takes the ticks in; `TickDecoder` (streamer.market.feed), a pure synchronous
core, checks them and runs one `RegimeTracker` per symbol; decodes go to the sink's
`publish_many` (the publisher's, in the service). The async shell (`TickFeed.run`)
only waits on the socket, drains what is queued in one go and hands fits to an executor.

Why batches: everything arrives as many small messages, and per-call costs
dominate in Python (the decoder's array path costs ~140 us a call however few
ticks it gets, ~3 us a tick with a thousand). So each wake-up drains up to
`batch` messages, groups them by symbol and decodes each group in one call:
`RegimeTracker.push` for a handful, `push_many` (the decoder's `step_many`) for
more. A busy feed thus gets big batches and the best rate; a quiet one gets
small batches and the lowest latency. Above `coalesce_rate` messages a second
(20k) the loop waits between drains for about `coalesce_batch` (200) messages to
gather, at most `coalesce` seconds (4 ms), so that a steady high rate, which would
otherwise be read in dribbles of a few dozen, is decoded in real batches (about
4 us a tick instead of 6 at 50k/s, for 4 ms more latency); below it (a 10k/s
feed, or a burst after a pause) every wake-up is served at once. The rate is
measured over `RATE_WINDOW` (a quarter of a second), so the burst a producer
sends after a stall of a few tens of milliseconds does not make a 10k/s feed
wait on the timer.

Bad input never stops the service: every tick that fails a check (see
`protocol.TICK_PROBLEMS`) is dropped, counted by reason, and each reason is
logged once (with its first example). Ticks the tracker refuses (duplicate or
out-of-order times) are counted by the tracker and reported the same way.

A live feed never waits for a fit: while a symbol's first fit runs its ticks
are buffered by the tracker (and decoded when the model arrives); a refit's
model is installed when it is ready, at whatever tick that is. A failed refit is
logged and the regimes in use stay; a failed first fit is logged and the symbol
starts its warm-up again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from concurrent.futures import Executor
from typing import Any

import zmq

from streamer.errors import ConfigError
from streamer.market.decoder import FitJob, RegimeTracker, TrackerConfig
from streamer.market.feed import TickDecoder
from streamer.messages import Sink
from streamer.net import protocol as P
from streamer.net.security import CurveServer, acquire_auth, release_auth
from streamer.net.sockets import SocketWaiter, bind, connect, sync_socket

log = logging.getLogger(__name__)

_NB = zmq.NOBLOCK
_raw_recv = zmq.backend.Socket.recv  # under pyzmq's wrapper: see publisher._raw_send
RATE_WINDOW = 0.25  # seconds: the feed's rate is measured over windows this long


class RateMeter:
    """Messages per second over the last complete window of `window` seconds."""

    def __init__(self, now: float, window: float = RATE_WINDOW) -> None:
        self.window = window
        self.rate = 0.0
        self._since = now
        self._count = 0

    def add(self, n: int, now: float) -> float:
        """Count `n` messages taken at `now`; the current rate."""
        self._count += n
        if now - self._since >= self.window:
            self.rate = self._count / (now - self._since)
            self._since, self._count = now, 0
        return self.rate


class TickFeed:
    """The feed's socket and loop: ``async with TickFeed(...) as feed: await feed.run()``."""

    def __init__(
        self,
        sink: Sink,
        *,
        bind_to: Sequence[str] = (),
        connect_to: Sequence[str] = (),
        config: TrackerConfig | None = None,
        symbols: Collection[str] | None = None,
        max_bytes: int = P.MAX_TICK_BYTES,
        max_symbols: int = 10_000,
        context: zmq.Context[Any] | None = None,
        curve: CurveServer | None = None,
        executor: Executor | None = None,
        batch: int = 4096,
        rcvhwm: int = P.DEFAULT_HWM,
        coalesce: float = 0.004,
        coalesce_rate: float = 20_000.0,
        coalesce_batch: int = 200,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if not bind_to and not connect_to:
            raise ConfigError("a tick feed needs an endpoint (--tick-feed or --tick-feed-connect)")
        self.sink = sink
        self.bind_to = list(bind_to)
        self.connect_to = list(connect_to)
        self.endpoints: list[str] = []
        self.core = TickDecoder(
            config or TrackerConfig(),
            symbols=symbols,
            max_bytes=max_bytes,
            max_symbols=max_symbols,
            submit=self._submit,
            parse=P.parse_tick,
            parse_many=P.parse_ticks,
            on_event=on_event,
        )
        self.curve = curve
        self.executor = executor
        self.batch = batch
        self.rcvhwm = rcvhwm
        self.coalesce = coalesce  # at most this long, let ticks gather when they come in fast
        self.coalesce_rate = coalesce_rate  # messages/s from which that pays
        self.coalesce_batch = coalesce_batch  # as many as make a good batch
        self._own_ctx = context is None
        self._ctx = context
        self._sock: zmq.Socket[Any] | None = None
        self._waiter: SocketWaiter | None = None
        self._stopping = False
        self._fits: set[asyncio.Future[Any]] = set()
        self._auth = False
        self._error: BaseException | None = None
        # awaited before each read when the ticks go on to another stage that can be full
        # (the cluster's shards: `streamer.cluster.feed`); None: decoded here, never full
        self._room: Callable[[], Awaitable[None]] | None = None

    async def __aenter__(self) -> TickFeed:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def open(self) -> None:
        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = sync_socket(self._ctx, zmq.SUB)
        try:
            sock.rcvhwm = self.rcvhwm
            # a hard guard far above the checked limit: ZeroMQ drops a connection that sends more
            sock.maxmsgsize = max(1 << 20, 16 * self.core.max_bytes)
            if self.curve is not None:
                acquire_auth(self._ctx, self.curve)
                self._auth = True
                self.curve.apply(sock)
            sock.setsockopt(zmq.SUBSCRIBE, P.TICK_TOPIC)
            for ep in self.bind_to:
                self.endpoints.append(bind(sock, ep, "--tick-feed"))
            for ep in self.connect_to:
                connect(sock, ep, "--tick-feed-connect")
                self.endpoints.append(ep)
        except BaseException:
            sock.close(linger=0)
            self._release()
            raise
        self._sock = sock
        self._waiter = SocketWaiter(sock)

    def _release(self) -> None:
        if self._auth and self._ctx is not None:
            release_auth(self._ctx)
            self._auth = False

    async def aclose(self) -> None:
        for f in list(self._fits):
            f.cancel()
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None
        self._release()
        if self._own_ctx and self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            ctx.term()

    def stop(self) -> None:
        """Stop taking ticks in: `run` drains what is queued, decodes it and returns."""
        self._stopping = True
        if self._waiter is not None:
            self._waiter.poke()

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    # -- fits -----------------------------------------------------------------------------------

    def _submit(self, symbol: str, tr: RegimeTracker, job: FitJob) -> None:
        fut = asyncio.get_running_loop().run_in_executor(self.executor, job.run)
        self._fits.add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            self._fits.discard(f)
            if f.cancelled():
                return
            err = f.exception()
            try:
                out = self.core.fitted(symbol, tr, job, None if err else f.result(), err)
                if out:
                    self.sink.publish_many(out)
            except Exception as e:  # reaches `run`, which re-raises it
                self._error = e
                if self._waiter is not None:
                    self._waiter.poke()

        fut.add_done_callback(done)

    # -- the loop -------------------------------------------------------------------------------

    def _drain(self) -> int:
        """Receive up to `batch` queued messages without waiting, decode and emit them."""
        sock = self._sock
        if sock is None:
            return 0
        recv = _raw_recv.__get__(sock)
        core = self.core
        bodies: list[bytes] = []
        n = 0
        while n < self.batch:
            # the topic as a Frame, for its `more` flag; the body as plain bytes (cheaper). A
            # message with extra frames is seen when they come up as the next "topic".
            try:
                f1 = recv(_NB, False)
            except zmq.Again:
                break
            n += 1
            if not f1.more:
                core.reject("frames", f"a single-frame message {f1.bytes[:40]!r}")
                continue
            if f1.bytes != P.TICK_TOPIC:
                more = True
                while more:  # skip the rest of it
                    more = recv(_NB, False).more
                core.reject("topic", f"frame {f1.bytes[:40]!r}: a bad topic, or a third frame")
                continue
            bodies.append(recv(_NB))
        if bodies:
            publish = self.sink.publish_many
            for chunk in core.feed_chunks(bodies):
                publish(chunk)
        return n

    async def run(self, *, drain_quiet: float = 0.1, drain_timeout: float = 5.0) -> dict[str, Any]:
        """Take ticks in until `stop()`; then drain, wait for first fits (bounded); the stats.

        After the stop it keeps reading until the socket has been quiet for
        `drain_quiet` seconds (ticks already on their way are taken, not lost),
        and waits for pending first fits so buffered warm-up ticks are decoded
        and published, all within `drain_timeout` seconds.
        """
        waiter = self._waiter
        if waiter is None:
            raise ConfigError("the tick feed is not open")
        loop = asyncio.get_running_loop()
        meter = RateMeter(loop.time())
        room = self._room
        while not self._stopping:
            if self._error is not None:
                raise self._error
            if room is not None:
                await room()  # the next stage is full: leave the ticks queued on the socket
            n = self._drain()
            rate = meter.add(n, loop.time())
            if n >= self.batch:
                await asyncio.sleep(0)  # busy: let heartbeats and snapshots run
                continue
            if n and rate >= self.coalesce_rate:
                # a fast feed: let a few milliseconds' worth gather, so the decoder's array
                # path gets a real batch (its cost per call, not per tick, dominates small ones)
                await asyncio.sleep(min(self.coalesce, self.coalesce_batch / rate))
                continue
            await waiter.wait(None)  # `stop()` pokes it
        waiter.unpoke()
        deadline = time.monotonic() + drain_timeout
        while time.monotonic() < deadline:
            if room is not None:
                await room()
            if self._drain():
                await asyncio.sleep(0)  # a feed that keeps coming must not starve the loop
                continue
            if not await waiter.wait(min(drain_quiet, deadline - time.monotonic())):
                break
        await self._settle(deadline)
        if self._error is not None:
            raise self._error
        return self.stats()

    async def _settle(self, deadline: float) -> None:
        """After the last tick is taken: wait (until `deadline`) for pending first fits, so
        their buffered warm-up ticks are decoded and published."""
        pending = [f for f in self._fits if not f.done()]
        if pending and self.core.pending_first_fits():
            left = deadline - time.monotonic()
            if left > 0:
                await asyncio.wait(pending, timeout=left)
            await asyncio.sleep(0)  # let the done-callbacks install and publish
        if self._error is not None:
            return
        waiting = self.core.pending_first_fits()
        if waiting:
            log.warning(
                "tick feed: stopped before the first fit of %s finished; their "
                "buffered ticks are not decoded",
                ", ".join(waiting),
            )


__all__ = ["RATE_WINDOW", "RateMeter", "TickFeed"]

"""Price CSVs replayed into regime shard actors; the decodes come back to the head's sink.

Symbols are hashed to shards (`shard_of`); each shard is one actor that runs
the single process's tracker code, so the decodes are the same message for
message. The driver sends a shard its ticks in calls of a few ms of stream
time (`batch_ms`, at most `batch_ticks`), each symbol's ticks in order, with at
most `in_flight` calls outstanding: a slow shard holds up the sender (and, at
speed > 0, the pacer catches up afterwards, as `streamer.market.ticks.pace`
does), nothing is dropped.

Replies are taken in call order and published through the head's sink (the
publisher, so subscribers keep one endpoint, their snapshots and heartbeats;
docs/scaling.md has the measurement behind this choice). Each call has a
sequence number per shard: a reply whose number was delivered already is
dropped, so a reply never reaches the application twice.

A lost shard (its actor, or its whole node): a new actor is started wherever
Ray finds room, it takes up the shard's last checkpoint (every
`checkpoint_every` calls a reply carries the shard's trackers as plain data,
`streamer.market.checkpoint`; the driver keeps the latest, on the head, where
every shard's replies arrive anyway) and the calls since (kept here too, and
dropped once a checkpoint covers them); the replies of calls already delivered
are dropped by their sequence number. With ``checkpoint_every = 0`` the
shard's calls are replayed from its start: the tracker is deterministic, so
the new actor reaches the same state and goes on with the same decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.cluster.cores import ShardReply, ShardState, TickChunk, shard_of, unpack_decodes
from streamer.cluster.runtime import ClusterRuntime, call, lost_errors
from streamer.config import ClusterConfig
from streamer.errors import ConfigError, TickError
from streamer.market.decoder import TrackerConfig
from streamer.market.settings import symbols_of
from streamer.market.stream import TicksConfig, load_tick_files
from streamer.messages import Sink

log = logging.getLogger(__name__)

OnReply = Callable[[ShardReply], None]


@dataclass
class ShardLink:
    """One shard seen from the driver: ordered calls, a bounded window, the log for recovery."""

    index: int
    runtime: ClusterRuntime
    tracker: TrackerConfig
    in_flight: int
    deliver: OnReply
    checkpoint_every: int = 0  # ask for the shard's state every N calls (0: never)
    actor: Any = None
    sent: int = 0  # calls made (the next call's seq)
    delivered: int = 0  # calls whose replies reached the sink
    # the calls after the last checkpoint: (seq, chunks, whether it asks for a checkpoint)
    log: deque[tuple[int, Sequence[TickChunk], bool]] = field(default_factory=deque)
    window: deque[tuple[int, asyncio.Future[Any]]] = field(default_factory=deque)
    saved: tuple[int, ShardState] | None = None  # the last checkpoint: after call seq
    checkpoints: int = 0
    lost: int = 0
    replayed: int = 0
    duplicates: int = 0
    _room: asyncio.Semaphore | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _closing: bool = False

    def start(self) -> None:
        self.actor = self.runtime.shard(self.tracker)
        self._room = asyncio.Semaphore(self.in_flight)

    async def send(self, chunks: Sequence[TickChunk]) -> None:
        """One call (waits while `in_flight` calls are outstanding)."""
        assert self._room is not None
        await self._room.acquire()
        seq = self.sent
        self.sent += 1
        every = self.checkpoint_every
        want = every > 0 and (seq + 1) % every == 0
        self.log.append((seq, chunks, want))
        self.window.append((seq, call(self.actor.push, seq, chunks, want)))
        self._wake.set()

    def close(self) -> None:
        """No more calls: `collect` returns once the outstanding ones are delivered."""
        self._closing = True
        self._wake.set()

    async def collect(self) -> None:
        """Deliver replies in call order until closed and empty; recover a lost shard."""
        lost = lost_errors()
        while True:
            if not self.window:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            seq, fut = self.window[0]
            try:
                reply: ShardReply = await fut
            except lost as e:
                await self._recover(e)
                continue
            self.window.popleft()
            if seq < self.delivered:
                self.duplicates += 1
                continue
            self.delivered = seq + 1
            if reply.state is not None:  # a checkpoint: the calls up to it are no longer needed
                self.saved = (seq, reply.state)
                self.checkpoints += 1
                while self.log and self.log[0][0] <= seq:
                    self.log.popleft()
                reply.state = None
            self.deliver(reply)
            assert self._room is not None
            self._room.release()

    async def _recover(self, why: BaseException) -> None:
        """A new actor from the last checkpoint; the calls since then that were delivered
        already are replayed (their replies dropped), then the outstanding ones sent again."""
        self.lost += 1
        log.warning(
            "shard %d lost (%s); restarting it from %s and replaying %d calls",
            self.index,
            type(why).__name__,
            "its start" if self.saved is None else f"its checkpoint after call {self.saved[0]}",
            len(self.log),
        )
        for _, fut in self.window:
            fut.cancel()
        waiting = [seq for seq, _ in self.window]
        self.runtime.kill(self.actor)
        self.actor = self.runtime.shard(self.tracker)
        lost = lost_errors()
        try:
            if self.saved is not None:
                await call(self.actor.restore, self.saved[1])
            pending: deque[asyncio.Future[Any]] = deque()
            for seq, chunks, _ in self.log:
                if seq >= self.delivered:
                    break
                pending.append(call(self.actor.push, seq, chunks, False))
                self.replayed += 1
                if len(pending) >= self.in_flight:
                    await pending.popleft()
                    self.duplicates += 1
            while pending:
                await pending.popleft()
                self.duplicates += 1
        except lost as e:  # the new one is gone too: start over
            await self._recover(e)
            return
        calls = {seq: (chunks, want) for seq, chunks, want in self.log}
        self.window = deque((seq, call(self.actor.push, seq, *calls[seq])) for seq in waiting)

    async def finish(self) -> dict[str, dict[str, Any]]:
        lost = lost_errors()
        while True:
            try:
                out: dict[str, dict[str, Any]] = await call(self.actor.finish)
                return out
            except lost as e:
                await self._recover(e)


def plan_calls(chunks: Sequence[TickChunk], batch_ticks: int) -> list[list[TickChunk]]:
    """Chunks packed into calls of at most `batch_ticks` ticks (a chunk split where needed)."""
    calls: list[list[TickChunk]] = []
    cur: list[TickChunk] = []
    room = batch_ticks
    for symbol, t, p in chunks:
        i = 0
        while i < len(t):
            take = min(room, len(t) - i)
            cur.append((symbol, t[i : i + take], p[i : i + take]))
            i += take
            room -= take
            if room == 0:
                calls.append(cur)
                cur, room = [], batch_ticks
    if cur:
        calls.append(cur)
    return calls


async def run_ticks_cluster(
    ticks: TicksConfig,
    config: TrackerConfig,
    speed: float,
    sink: Sink,
    runtime: ClusterRuntime,
    *,
    on_event: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """`streamer.market.stream.run_ticks` on shard actors: same decodes, same counters."""
    files = list(ticks.files)
    if not files:
        return {"ticks": 0, "decoded": 0, "skipped": {}, "refits": 0, "symbols": {}}
    symbols = symbols_of(files, list(ticks.symbols))
    if not speed >= 0:
        raise ConfigError(f"--speed must be >= 0, not {speed}")
    series = await asyncio.to_thread(load_tick_files, ticks, config.warmup)
    arrays = {
        sym: (s.times.astype(float), s.prices.astype(float))
        for sym, s in zip(symbols, series, strict=True)
    }
    result = await drive_shards(
        arrays, config, speed, sink, runtime, runtime.config, on_event=on_event
    )
    per = result["symbols"]
    for sym, s in zip(symbols, series, strict=True):
        st = per[sym]
        skipped = Counter(s.skipped)
        skipped.update(st.get("skipped", {}))
        st["skipped"] = dict(skipped)
        st["file"] = str(s.path)
        st["columns"] = list(s.columns)
    skipped_all: Counter[str] = Counter()
    for st in per.values():
        skipped_all.update(st["skipped"])
    result["skipped"] = dict(skipped_all)
    return result


async def drive_shards(
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    config: TrackerConfig,
    speed: float,
    sink: Sink | None,
    runtime: ClusterRuntime,
    cc: ClusterConfig,
    *,
    on_event: Callable[[str], None] | None = None,
    on_reply: OnReply | None = None,
) -> dict[str, Any]:
    """Ticks held in memory, per symbol, through shard actors into `sink`; the counters.

    `on_reply` sees every delivered reply (the benchmark times the actors with it);
    without a sink the decodes are counted, not rebuilt (stage throughput, measured apart).
    """
    stats = runtime.stats
    n_shards = min(cc.shards or runtime.cpus(), max(1, len(arrays)))
    stats.shards = max(stats.shards, n_shards)

    def deliver(reply: ShardReply) -> None:
        stats.did(reply.node, reply.actor, reply.busy, reply.started, reply.ended)
        stats.ticks += reply.ticks
        if reply.decodes and sink is not None:
            sink.publish_many(unpack_decodes(reply.decodes))
        if on_event is not None:
            for text in reply.events:
                on_event(text)
        if on_reply is not None:
            on_reply(reply)

    links = [
        ShardLink(i, runtime, config, cc.in_flight, deliver, cc.checkpoint_every)
        for i in range(n_shards)
    ]
    for link in links:
        link.start()
    by_shard: dict[int, list[str]] = {}
    for sym in arrays:
        by_shard.setdefault(shard_of(sym, n_shards), []).append(sym)
    collectors = [asyncio.create_task(link.collect(), name=f"shard-{link.index}") for link in links]
    try:
        if speed == 0:
            await asyncio.gather(
                *(
                    _send_all(links[i], [(s, *arrays[s]) for s in syms], cc.batch_ticks)
                    for i, syms in by_shard.items()
                )
            )
        else:
            await _send_paced(links, arrays, n_shards, speed, cc)
        for link in links:
            link.close()
        await asyncio.gather(*collectors)
        finals = await asyncio.gather(*(link.finish() for link in links))
    finally:
        for t in collectors:
            t.cancel()
        for t in collectors:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for link in links:
            if link.actor is not None:
                runtime.kill(link.actor)
    for link in links:
        stats.restarts += link.lost
        stats.replayed += link.replayed
        stats.duplicates += link.duplicates
        stats.checkpoints += link.checkpoints
    per: dict[str, dict[str, Any]] = {}
    for f in finals:
        per.update(f)
    errors = [st["error"] for st in per.values() if "error" in st]
    if errors:
        raise TickError(errors[0])
    return {
        "ticks": sum(int(st["ticks"]) for st in per.values()),
        "decoded": sum(int(st["decoded"]) for st in per.values()),
        "skipped": {},
        "refits": sum(int(st["refits"]) for st in per.values()),
        "symbols": per,
    }


async def _send_all(link: ShardLink, chunks: list[TickChunk], batch_ticks: int) -> None:
    """Speed 0: every symbol's ticks, interleaved symbol by symbol, in full calls."""
    rounds: list[TickChunk] = []
    pos = {sym: 0 for sym, _, _ in chunks}
    left = True
    while left:
        left = False
        for sym, t, p in chunks:
            i = pos[sym]
            if i < len(t):
                j = min(len(t), i + batch_ticks)
                rounds.append((sym, t[i:j], p[i:j]))
                pos[sym] = j
                left = True
    for c in plan_calls(rounds, batch_ticks):
        await link.send(c)


async def _send_paced(
    links: list[ShardLink],
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    n_shards: int,
    speed: float,
    cc: ClusterConfig,
) -> None:
    """Speed > 0: every `batch_ms`, the ticks that have come due, one call per shard."""
    due = {sym: (t - t[0]) / speed for sym, (t, _) in arrays.items()}
    pos = dict.fromkeys(arrays, 0)
    shard = {sym: shard_of(sym, n_shards) for sym in arrays}
    start = time.monotonic()
    step = cc.batch_ms / 1000.0
    while True:
        now = time.monotonic() - start
        out: dict[int, list[TickChunk]] = {}
        nxt = float("inf")
        for sym, (t, p) in arrays.items():
            i = pos[sym]
            if i >= len(t):
                continue
            j = int(np.searchsorted(due[sym], now, side="right"))
            if j > i:
                out.setdefault(shard[sym], []).append((sym, t[i:j], p[i:j]))
                pos[sym] = j
            if j < len(t):
                nxt = min(nxt, float(due[sym][j]))
        for s, chunks in out.items():
            for c in plan_calls(chunks, cc.batch_ticks):
                await links[s].send(c)
        if nxt == float("inf"):
            return
        wait = max(nxt, now + step) - (time.monotonic() - start)
        if wait > 0:
            await asyncio.sleep(wait)


__all__ = ["ShardLink", "drive_shards", "plan_calls", "run_ticks_cluster"]

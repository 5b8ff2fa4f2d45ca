"""What the actors run, as plain synchronous classes (tested without Ray).

`ShardCore` holds the regime trackers of the symbols hashed to one shard and
runs exactly the tracker code of the single process (`RegimeTracker`, fits
inline: the decodes are the same as with fits in a thread, see
`RegimeTracker`). Decodes travel back as plain rows, grouped by symbol
(`pack_decodes` / `unpack_decodes`): a row of floats and ints pickles in a
fraction of the time a `RegimeDecode` object does.

`RecognizerCore` holds one bank per generation: a call names the generation
its utterances were submitted under and how to load that bank, so a swap
needs no separate message and an actor restarted by Ray (which loses its
state) loads the bank again on its first call.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.errors import StreamerError
from streamer.market.checkpoint import tracker_from_plain, tracker_to_plain
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.feed import PUSH_MANY_MIN
from streamer.messages import Recognition, RegimeDecode
from streamer.speech.recognizer import Recognizer, recognize_samples

TickChunk = tuple[str, np.ndarray, np.ndarray]
"""(symbol, times, prices): consecutive ticks of one symbol, in order."""

DecodeRow = tuple[Any, ...]
"""(t, price, state, regime, probs, changed, smoothed_state, smoothed_t, extra or None)."""

Packed = list[tuple[str, list[DecodeRow]]]
"""Decodes grouped by symbol, in the order they were produced."""

ShardState = dict[str, tuple[dict[str, Any], dict[str, np.ndarray]]]
"""A shard's checkpoint: each tracker as plain data (`streamer.market.checkpoint`), no pickle."""


def shard_of(symbol: str, shards: int) -> int:
    """The shard a symbol belongs to: a stable hash (the same on every node and run)."""
    return zlib.crc32(symbol.encode()) % shards


def pack_decodes(decodes: Sequence[RegimeDecode]) -> Packed:
    """Decodes as rows grouped by runs of one symbol (the order is kept)."""
    out: Packed = []
    rows: list[DecodeRow] = []
    symbol: str | None = None
    for d in decodes:
        if d.symbol != symbol:
            symbol = d.symbol
            rows = []
            out.append((symbol, rows))
        rows.append(
            (
                d.t,
                d.price,
                d.state,
                d.regime,
                d.probs,
                d.changed,
                d.smoothed_state,
                d.smoothed_t,
                d.extra or None,
            )
        )
    return out


def unpack_decodes(packed: Packed) -> list[RegimeDecode]:
    """The `RegimeDecode` messages `pack_decodes` packed, equal field for field."""
    out: list[RegimeDecode] = []
    append = out.append
    for symbol, rows in packed:
        for t, price, state, regime, probs, changed, ss, st, extra in rows:
            append(
                RegimeDecode(symbol, t, price, state, regime, probs, changed, ss, st, extra or {})
            )
    return out


@dataclass
class ShardReply:
    """What one tick call gives back: its decodes, regime events, and the time it took inside."""

    seq: int
    decodes: Packed
    ticks: int
    events: list[str] = field(default_factory=list)
    busy: float = 0.0  # seconds spent decoding in the actor
    started: float = 0.0  # wall clock (time.time) at the call's start and end, for throughput
    ended: float = 0.0
    cpu_start: float = 0.0  # the actor process's CPU seconds at the call's start and end: the
    cpu_end: float = 0.0  # CPU it spends between calls is Ray's (arguments in, replies out)
    node: str = ""
    actor: str = ""
    state: ShardState | None = None  # the shard's checkpoint after this call, when asked for


class ShardCore:
    """The trackers of one shard's symbols; `push` takes chunks of ticks, returns their decodes."""

    def __init__(self, config: TrackerConfig) -> None:
        self.config = config
        self.trackers: dict[str, RegimeTracker] = {}
        self.ticks = 0
        self.calls = 0
        self.busy = 0.0
        self._events: list[str] = []

    def tracker(self, symbol: str) -> RegimeTracker:
        tr = self.trackers.get(symbol)
        if tr is None:
            tr = self.trackers[symbol] = RegimeTracker(
                symbol, self.config, inline=True, on_event=self._events.append
            )
        return tr

    def push(self, seq: int, chunks: Sequence[TickChunk], checkpoint: bool = False) -> ShardReply:
        """Decode the chunks in order (each symbol's ticks in order): one call's reply, with
        the shard's checkpoint after it if asked for."""
        started = time.time()
        c0 = time.process_time()
        t0 = time.perf_counter()
        out: list[RegimeDecode] = []
        n = 0
        for symbol, times, prices in chunks:
            tr = self.tracker(symbol)
            n += len(times)
            if len(times) >= PUSH_MANY_MIN:
                out.extend(tr.push_many(times, prices))
            else:
                for t, p in zip(times.tolist(), prices.tolist(), strict=True):
                    r = tr.push(t, p)
                    if r:
                        out.extend(r)
        packed = pack_decodes(out)
        state = self.checkpoint() if checkpoint else None
        busy = time.perf_counter() - t0
        self.ticks += n
        self.calls += 1
        self.busy += busy
        events, self._events = self._events, []
        return ShardReply(
            seq, packed, n, events, busy, started, time.time(), c0, time.process_time(), state=state
        )

    def checkpoint(self) -> ShardState:
        """Every tracker of the shard as plain data (copies: safe to send and keep)."""
        return {symbol: tracker_to_plain(tr) for symbol, tr in self.trackers.items()}

    def restore(self, state: ShardState) -> None:
        """Take up a checkpoint: the trackers decode the next ticks as the saved ones would."""
        self.trackers = {
            symbol: tracker_from_plain(
                meta, arrays, self.config, inline=True, on_event=self._events.append
            )
            for symbol, (meta, arrays) in state.items()
        }

    def finish(self) -> dict[str, dict[str, Any]]:
        """Each symbol's tracker counters, with ``error`` set when its stream was too short."""
        out: dict[str, dict[str, Any]] = {}
        for symbol, tr in self.trackers.items():
            st: dict[str, Any] = dict(tr.stats())
            try:
                tr.finish()
            except StreamerError as e:
                st["error"] = str(e)
            out[symbol] = st
        return out


class RecognizerCore:
    """A bank per generation; `recognize` scores a batch of utterances with the one named."""

    def __init__(self) -> None:
        self.generation = -1
        self.rec: Recognizer | None = None
        self.utterances = 0
        self.calls = 0
        self.busy = 0.0
        self.loads = 0

    def recognize(
        self,
        generation: int,
        load: Callable[[], Recognizer],
        items: Sequence[tuple[np.ndarray, int, str]],
    ) -> tuple[list[tuple[Recognition, str | None]], float]:
        """(recognition, error) per (samples, rate, where), and the seconds it took here."""
        t0 = time.perf_counter()
        if self.rec is None or generation != self.generation:
            self.rec = load()
            self.generation = generation
            self.loads += 1
        rec = self.rec
        out = [recognize_samples(rec, samples, rate, where) for samples, rate, where in items]
        busy = time.perf_counter() - t0
        self.utterances += len(items)
        self.calls += 1
        self.busy += busy
        return out, busy


__all__ = [
    "DecodeRow",
    "Packed",
    "RecognizerCore",
    "ShardCore",
    "ShardReply",
    "ShardState",
    "TickChunk",
    "pack_decodes",
    "shard_of",
    "unpack_decodes",
]

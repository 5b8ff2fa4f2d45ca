"""Price CSVs replayed as live tick streams and decoded: the service's CSV tick source.

``await run_ticks(ticks, tracker_config, speed, sink)`` sends each decode to the
sink (`streamer.messages.Sink`: the publisher, or replay's JSON lines).

Every file is read and checked before the first tick goes out, so a file without a
price column, or with fewer usable rows than the warm-up, is a one-line `TickError`
up front rather than a failure in the middle of a stream. Files then replay side by
side, each paced from the same start (as live feeds would be), each with its own
tracker; fits run in the loop's thread pool so audio in the same process keeps
flowing. At ``--speed 0`` the decoder's batch path is used (same decodes, faster).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from streamer.errors import ConfigError, StreamerError, TickError
from streamer.market.decoder import (
    RegimeTracker,
    TrackerConfig,
    decode_arrays,
    decode_stream,
)
from streamer.market.settings import TicksConfig, symbols_of
from streamer.market.ticks import Clock, TickSeries, pace, read_csv
from streamer.messages import Sink


def load_tick_files(ticks: TicksConfig, warmup: int) -> list[TickSeries]:
    """Read and check every --ticks file before anything streams."""
    out = []
    for path in ticks.files:
        series = read_csv(path, time_column=ticks.time_column, price_column=ticks.price_column)
        if len(series) < warmup:
            skipped = ", ".join(f"{n} {r}" for r, n in sorted(series.skipped.items()))
            raise TickError(
                f"{path}: {len(series)} usable rows"
                + (f" ({skipped} skipped)" if skipped else "")
                + f", fewer than the warm-up of {warmup}; lower --warmup"
            )
        out.append(series)
    return out


def _first_error(e: BaseException) -> BaseException:
    while isinstance(e, BaseExceptionGroup):
        inner: list[BaseException] = [x for x in e.exceptions if isinstance(x, StreamerError)]
        e = (inner or list(e.exceptions))[0]
    return e


async def run_ticks(
    ticks: TicksConfig,
    config: TrackerConfig,
    speed: float,
    sink: Sink,
    *,
    clock: Clock | None = None,
    executor: Executor | None = None,
    on_event: Callable[[str], None] | None = None,
    trackers: dict[str, RegimeTracker] | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Replay and decode every file, sending each decode to `sink`; returns the counters.

    Counters: ``ticks`` (usable ticks), ``decoded``, ``skipped`` (rows dropped, by
    reason), ``refits``, and ``symbols`` with each symbol's own counters. A change of
    a symbol's regimes at a refit (K, names) is passed to `on_event` as one line.

    `trackers` (by symbol) is where the trackers live, for a checkpoint to read: a
    tracker already in it (restored from a checkpoint) goes on from its state, and
    the file's ticks at or before its last tick are skipped (counted as ``resumed``),
    so a replay killed and started again continues where its state stopped.

    At ``speed`` 0, `ready` (the publisher's) is awaited after each batch: the
    replay goes at the pace of the subscribers that keep reading.
    """
    files = list(ticks.files)
    if not files:
        return {"ticks": 0, "decoded": 0, "skipped": {}, "refits": 0, "symbols": {}}
    symbols = symbols_of(files, list(ticks.symbols))
    if not speed >= 0:
        raise ConfigError(f"--speed must be >= 0, not {speed}")
    series = load_tick_files(ticks, config.warmup)
    send, send_many = sink.publish, sink.publish_many
    live = trackers if trackers is not None else {}

    async def one(symbol: str, s: TickSeries) -> dict[str, Any]:
        tracker = live.get(symbol)
        resumed = 0
        if tracker is None:
            tracker = live[symbol] = RegimeTracker(symbol, config, inline=False, on_event=on_event)
        else:
            tracker.inline, tracker.on_event = False, on_event
            if tracker.last_t is not None:
                resumed = int(np.searchsorted(s.times, tracker.last_t, side="right"))
                s = dataclasses.replace(s, times=s.times[resumed:], prices=s.prices[resumed:])
        if speed == 0:
            async for batch in decode_arrays(s.times, s.prices, tracker, executor=executor):
                send_many(batch)
                if ready is not None:
                    await ready()
        else:
            paced = pace(s.ticks(symbol), speed, clock=clock)
            async for d in decode_stream(paced, tracker, executor=executor):
                send(d)
        st = tracker.stats()
        skipped = Counter(s.skipped)
        skipped.update(tracker.skipped)
        st["skipped"] = dict(skipped)
        st["file"] = str(s.path)
        st["columns"] = list(s.columns)
        st["resumed"] = resumed
        return st

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(sym, s)) for sym, s in zip(symbols, series, strict=True)]
    except BaseExceptionGroup as eg:
        raise _first_error(eg) from None
    per = {sym: t.result() for sym, t in zip(symbols, tasks, strict=True)}
    skipped: Counter[str] = Counter()
    for st in per.values():
        skipped.update(st["skipped"])
    return {
        "ticks": sum(st["ticks"] for st in per.values()),
        "decoded": sum(st["decoded"] for st in per.values()),
        "skipped": dict(skipped),
        "refits": sum(st["refits"] for st in per.values()),
        "symbols": per,
    }


__all__ = ["TicksConfig", "load_tick_files", "run_ticks"]

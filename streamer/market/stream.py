"""The `streamer replay --ticks` hook: flags, and a coroutine that decodes CSV replays.

`streamer/commands/replay.py` owns the command, `--speed` and the output; it calls
`add_tick_arguments(parser)` and then ``await run_ticks(args, speed, emit)``, which
calls ``emit(decode)`` once per decoded tick (replay prints
``{"topic": "regime", "seq": n, **decode.to_wire()}``).

Every file is read and checked before the first tick goes out, so a file without a
price column, or with fewer usable rows than the warm-up, is a one-line `TickError`
up front rather than a failure in the middle of a stream. Files then replay side by
side, each paced from the same start (as live feeds would be), each with its own
tracker; fits run in the loop's thread pool so audio in the same process keeps
flowing. At ``--speed 0`` the decoder's batch path is used (same decodes, faster).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from streamer.errors import ConfigError, StreamerError, TickError
from streamer.market.decoder import (
    MAX_WARMUP,
    RegimeTracker,
    TrackerConfig,
    decode_arrays,
    decode_stream,
)
from streamer.market.ticks import Clock, TickSeries, pace, read_csv
from streamer.messages import RegimeDecode

Emit = Callable[[RegimeDecode], Awaitable[None] | None]

_DEFAULTS = TrackerConfig()


def add_tick_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the price-tick flags (everything but --speed, which the replay command owns)."""
    g = parser.add_argument_group("price ticks (regime decoding)")
    g.add_argument(
        "--ticks",
        action="append",
        type=Path,
        metavar="CSV",
        help="price CSV to replay and decode (repeatable)",
    )
    g.add_argument(
        "--symbol",
        action="append",
        metavar="S",
        help="symbol for the --ticks file in the same position (default: the file's name)",
    )
    g.add_argument(
        "--warmup",
        type=int,
        default=_DEFAULTS.warmup,
        metavar="N",
        help=f"ticks buffered before the first fit, at most {MAX_WARMUP} "
        f"(default {_DEFAULTS.warmup}); they are then decoded too",
    )
    g.add_argument(
        "--states",
        type=int,
        default=None,
        metavar="K",
        help="number of regimes, 2..5 (default: chosen by BIC at the first fit)",
    )
    g.add_argument(
        "--refit-every",
        type=int,
        default=_DEFAULTS.refit_every,
        metavar="N",
        help=f"refit on the last {_DEFAULTS.window} ticks every N ticks, in the background "
        f"(0 = never; default {_DEFAULTS.refit_every})",
    )
    g.add_argument(
        "--lag",
        type=int,
        default=_DEFAULTS.lag,
        metavar="L",
        help="fixed-lag smoothing: also give the smoothed state of the tick L ticks back "
        f"(0 = off; default {_DEFAULTS.lag})",
    )
    g.add_argument("--time-column", metavar="NAME", help="time column (default: detected)")
    g.add_argument("--price-column", metavar="NAME", help="price column (default: detected)")


def tick_config(args: argparse.Namespace) -> TrackerConfig:
    """The tracker settings from the flags (`ConfigError` for nonsense)."""
    return TrackerConfig(
        warmup=args.warmup,
        states=args.states,
        refit_every=args.refit_every,
        lag=args.lag,
    )


def _symbols(files: list[Path], given: list[str] | None) -> list[str]:
    given = list(given or [])
    if len(given) > len(files):
        raise ConfigError(f"{len(given)} --symbol for {len(files)} --ticks files")
    names = given + [f.stem for f in files[len(given) :]]
    dup = [s for s, n in Counter(names).items() if n > 1]
    if dup:
        raise ConfigError(
            f"symbol {dup[0]!r} is used for two --ticks files; name them with --symbol"
        )
    return names


def load_tick_files(args: argparse.Namespace, warmup: int) -> list[TickSeries]:
    """Read and check every --ticks file before anything streams."""
    out = []
    for path in args.ticks or []:
        series = read_csv(path, time_column=args.time_column, price_column=args.price_column)
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
        inner = [x for x in e.exceptions if isinstance(x, StreamerError)] or list(e.exceptions)
        e = inner[0]
    return e


async def run_ticks(
    args: argparse.Namespace,
    speed: float,
    emit: Emit,
    *,
    clock: Clock | None = None,
    executor: Executor | None = None,
) -> dict[str, Any]:
    """Replay and decode every --ticks file, calling `emit` per decode; returns the counters.

    Counters: ``ticks`` (usable ticks), ``decoded``, ``skipped`` (rows dropped, by
    reason), ``refits``, and ``symbols`` with each symbol's own counters.
    """
    files: list[Path] = list(args.ticks or [])
    if not files:
        return {"ticks": 0, "decoded": 0, "skipped": {}, "refits": 0, "symbols": {}}
    config = tick_config(args)
    symbols = _symbols(files, args.symbol)
    if not speed >= 0:
        raise ConfigError(f"--speed must be >= 0, not {speed}")
    series = load_tick_files(args, config.warmup)

    async def send(d: RegimeDecode) -> None:
        r = emit(d)
        if inspect.isawaitable(r):
            await r

    async def one(symbol: str, s: TickSeries) -> dict[str, Any]:
        tracker = RegimeTracker(symbol, config, inline=False)
        if speed == 0:
            async for batch in decode_arrays(s.times, s.prices, tracker, executor=executor):
                for d in batch:
                    await send(d)
        else:
            ticks = pace(s.ticks(symbol), speed, clock=clock)
            async for d in decode_stream(ticks, tracker, executor=executor):
                await send(d)
        st = tracker.stats()
        skipped = Counter(s.skipped)
        skipped.update(tracker.skipped)
        st["skipped"] = dict(skipped)
        st["file"] = str(s.path)
        st["columns"] = list(s.columns)
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


__all__ = ["add_tick_arguments", "load_tick_files", "run_ticks", "tick_config"]

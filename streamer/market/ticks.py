"""Price ticks from CSV files: column detection, row checks, and paced replay.

The reader is a plain generator so that a bad row deep in a file can never stop a
stream already running: each bad row is either skipped and counted under one of
`SKIP_REASONS`, or (``strict=True``) reported as a one-line `TickError` naming the
file and line. Problems with the file as a whole (missing, empty, no price or time
column) are always a `TickError`, raised before the first tick.

Skip reasons:

- ``unparseable``   too few fields, or a time or price that is not a number/date
- ``bad_price``     NaN, infinite, zero or negative price
- ``duplicate``     same timestamp as the previous accepted tick (the first one is kept)
- ``out_of_order``  earlier than the previous accepted tick

Gaps are not an error: the model normalises each return by the time it spans.

Timestamps become UNIX seconds (float, UTC). Dates and ISO 8601 strings without a
zone are taken as UTC. Numeric timestamps are UNIX seconds, except that a file
whose first timestamp is above 1e11 is read in milliseconds (Binance klines), above
1e14 in microseconds and above 1e17 in nanoseconds.

Replay pacing aims every tick at an absolute target on an injected clock,
``start + (t - t0) / speed``, instead of sleeping the gap after each tick: sleeps
overshoot, and accumulated overshoot would make a long replay drift late.
"""

from __future__ import annotations

import asyncio
import csv
import math
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from streamer.clock import Clock, MonotonicClock, VirtualClock
from streamer.errors import ConfigError, TickError
from streamer.messages import Tick

# Exact header names, in order of preference.
TIME_HEADERS = ("Date", "date", "open_time", "timestamp", "time")
# "Adj Close" first: an unadjusted close turns splits and dividends into fake returns.
PRICE_HEADERS = ("Adj Close", "close", "Close", "price")
# Case- and punctuation-insensitive fallbacks, tried after the exact names.
_TIME_LOOSE = ("date", "opentime", "timestamp", "time", "datetime")
_PRICE_LOOSE = ("adjclose", "close", "price", "last")

SKIP_REASONS = ("unparseable", "bad_price", "duplicate", "out_of_order")

_DATE_FORMATS = ("%Y/%m/%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M", "%Y%m%d")


def _loose(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


def _find(
    header: list[str], name: str | None, exact: tuple[str, ...], loose: tuple[str, ...]
) -> int | None:
    """Index of the column called `name` (or a 0-based index as text), else the best known one."""
    if name is not None:
        if name in header:
            return header.index(name)
        if name.isdigit() and int(name) < len(header):
            return int(name)
        return None
    for cand in exact:
        if cand in header:
            return header.index(cand)
    squashed = [_loose(h) for h in header]
    for cand in loose:
        if cand in squashed:
            return squashed.index(cand)
    return None


def detect_columns(
    header: list[str],
    time_column: str | None = None,
    price_column: str | None = None,
    *,
    source: str = "<csv>",
) -> tuple[int, int]:
    """(time index, price index) for a CSV header; a `TickError` naming the columns if not found."""
    header = [h.strip().lstrip("\ufeff") for h in header]
    shown = ", ".join(repr(h) for h in header)
    p = _find(header, price_column, PRICE_HEADERS, _PRICE_LOOSE)
    if p is None:
        what = f"no column {price_column!r}" if price_column else "no price column"
        raise TickError(f"{source}: {what} (columns: {shown}); name one with --price-column")
    ti = _find(header, time_column, TIME_HEADERS, _TIME_LOOSE)
    if ti is None and time_column is None and header and header[0] == "" and p != 0:
        ti = 0  # pandas' to_csv writes the index (the dates) under an empty header
    if ti is None:
        what = f"no column {time_column!r}" if time_column else "no time column"
        raise TickError(f"{source}: {what} (columns: {shown}); name one with --time-column")
    if ti == p:
        raise TickError(f"{source}: the time and price columns are the same column ({shown})")
    return ti, p


def parse_time(text: str) -> float:
    """UNIX seconds from a number, a date or an ISO 8601 string (naive = UTC); else ValueError."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(s)
    except ValueError:
        for fmt in _DATE_FORMATS:
            try:
                d = datetime.strptime(s, fmt)
                break
            except ValueError:
                continue
        else:
            raise ValueError(f"not a date or time: {s!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d.timestamp()


def _numeric_scale(value: float) -> float:
    """Divisor turning a numeric timestamp into seconds, guessed from its size."""
    a = abs(value)
    if a >= 1e17:
        return 1e9
    if a >= 1e14:
        return 1e6
    if a >= 1e11:
        return 1e3
    return 1.0


@dataclass
class TickReader:
    """Iterate (line number, t, price) over the good rows of one CSV file, counting the bad ones.

    `skipped` counts rows dropped per reason (see the module docstring); `rows` counts
    the data rows seen, good or bad. With ``strict=True`` the first bad row raises.
    """

    path: Path
    time_column: str | None = None
    price_column: str | None = None
    strict: bool = False
    skipped: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    columns: tuple[str, str] = ("", "")

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    def _bad(self, line: int, reason: str, detail: str) -> None:
        if self.strict:
            raise TickError(f"{self.path}: line {line}: {reason}: {detail}")
        self.skipped[reason] += 1

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        try:
            fh = open(self.path, newline="", encoding="utf-8-sig")  # noqa: SIM115
        except OSError as e:
            raise TickError(f"{self.path}: cannot read: {e.strerror or e}") from None
        with fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                raise TickError(f"{self.path}: empty file, no header") from None
            except (csv.Error, UnicodeDecodeError) as e:
                raise TickError(f"{self.path}: not a CSV file: {e}") from None
            ti, pi = detect_columns(
                header, self.time_column, self.price_column, source=str(self.path)
            )
            self.columns = (header[ti].strip() or "(unnamed first column)", header[pi].strip())
            need = max(ti, pi)
            scale: float | None = None
            last = -math.inf
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except (csv.Error, UnicodeDecodeError) as e:
                    self.rows += 1
                    self._bad(reader.line_num, "unparseable", str(e))
                    continue
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                self.rows += 1
                line = reader.line_num
                if len(row) <= need:
                    self._bad(line, "unparseable", f"{len(row)} fields, need {need + 1}")
                    continue
                try:
                    price = float(row[pi])
                except ValueError:
                    self._bad(line, "unparseable", f"price {row[pi]!r}")
                    continue
                try:
                    raw_t = row[ti]
                    t = parse_time(raw_t)
                except ValueError:
                    self._bad(line, "unparseable", f"time {row[ti]!r}")
                    continue
                if not math.isfinite(t):
                    self._bad(line, "unparseable", f"time {raw_t!r}")
                    continue
                if not (price > 0.0 and math.isfinite(price)):
                    self._bad(line, "bad_price", f"price {row[pi]!r}")
                    continue
                if scale is None:
                    numeric = raw_t.strip().lstrip("+-").replace(".", "", 1).isdigit()
                    scale = _numeric_scale(t) if numeric else 1.0
                t /= scale
                if t == last:
                    self._bad(line, "duplicate", f"time {raw_t!r} repeats the previous row's")
                    continue
                if t < last:
                    self._bad(line, "out_of_order", f"time {raw_t!r} is before the previous row's")
                    continue
                last = t
                yield line, t, price


@dataclass(frozen=True, eq=False)
class TickSeries:
    """A whole CSV file read into arrays: strictly increasing times, positive finite prices."""

    path: Path
    times: np.ndarray  # UNIX seconds
    prices: np.ndarray
    skipped: dict[str, int]
    rows: int
    columns: tuple[str, str]  # (time column, price column) as found

    def __len__(self) -> int:
        return len(self.times)

    def ticks(self, symbol: str) -> Iterator[Tick]:
        for t, p in zip(self.times.tolist(), self.prices.tolist(), strict=True):
            yield Tick(symbol, t, p)


def read_csv(
    path: str | Path,
    *,
    time_column: str | None = None,
    price_column: str | None = None,
    strict: bool = False,
) -> TickSeries:
    """Read a whole price CSV (see the module docstring for the rules); `TickError` if unusable."""
    reader = TickReader(Path(path), time_column, price_column, strict)
    times: list[float] = []
    prices: list[float] = []
    for _, t, p in reader:
        times.append(t)
        prices.append(p)
    return TickSeries(
        reader.path,
        np.asarray(times, dtype=float),
        np.asarray(prices, dtype=float),
        dict(reader.skipped),
        reader.rows,
        reader.columns,
    )


def iter_csv(
    path: str | Path,
    symbol: str,
    *,
    time_column: str | None = None,
    price_column: str | None = None,
    strict: bool = False,
    skipped: Counter[str] | None = None,
) -> Iterator[Tick]:
    """Ticks from a CSV file, read lazily; bad rows are added to `skipped` (if given)."""
    reader = TickReader(Path(path), time_column, price_column, strict)
    if skipped is not None:
        reader.skipped = skipped
    for _, t, p in reader:
        yield Tick(symbol, t, p)


LATE_YIELD_EVERY = 64  # a paced stream catching up gives the loop a turn this often


async def pace(
    ticks: Iterable[Tick] | AsyncIterable[Tick],
    speed: float,
    *,
    clock: Clock | None = None,
    yield_every: int = 512,
) -> AsyncIterator[Tick]:
    """Yield ticks at their own pace divided by `speed` (0 = as fast as possible).

    Tick i is due at ``clock start + (t_i - t_0) / speed``; a late tick goes out at once
    and later ones catch up, so lateness never accumulates. At speed 0 the loop is
    still given a turn every `yield_every` ticks so other streams keep running, and
    while catching up every `LATE_YIELD_EVERY` ticks.
    """
    if not (speed >= 0.0 and math.isfinite(speed)):
        raise ConfigError(f"speed must be a finite number >= 0, not {speed}")
    clock = clock or MonotonicClock()
    t0: float | None = None
    c0 = 0.0
    i = 0

    async def _one(tick: Tick) -> None:
        nonlocal t0, c0, i
        i += 1
        if speed == 0.0:
            if i % yield_every == 0:
                await asyncio.sleep(0)
            return
        if t0 is None:
            t0, c0 = tick.t, clock.now()
            return
        delay = c0 + (tick.t - t0) / speed - clock.now()
        if delay > 0.0:
            await clock.sleep(delay)
        elif i % LATE_YIELD_EVERY == 0:
            await asyncio.sleep(0)  # catching up (after a wait for a fit): others get turns

    if isinstance(ticks, AsyncIterable):
        async for tick in ticks:
            await _one(tick)
            yield tick
    else:
        for tick in ticks:
            await _one(tick)
            yield tick


async def replay_csv(
    path: str | Path,
    symbol: str,
    speed: float,
    *,
    time_column: str | None = None,
    price_column: str | None = None,
    strict: bool = False,
    clock: Clock | None = None,
    skipped: Counter[str] | None = None,
) -> AsyncIterator[Tick]:
    """Replay a price CSV as ticks paced by their timestamps (see `pace`).

    Bad rows are skipped and counted in `skipped` (pass a Counter to read the counts),
    or raise a one-line `TickError` with ``strict=True``.
    """
    ticks = iter_csv(
        path,
        symbol,
        time_column=time_column,
        price_column=price_column,
        strict=strict,
        skipped=skipped,
    )
    async for tick in pace(ticks, speed, clock=clock):
        yield tick


__all__ = [
    "PRICE_HEADERS",
    "SKIP_REASONS",
    "TIME_HEADERS",
    "Clock",
    "MonotonicClock",
    "TickReader",
    "TickSeries",
    "VirtualClock",
    "detect_columns",
    "iter_csv",
    "pace",
    "parse_time",
    "read_csv",
    "replay_csv",
]

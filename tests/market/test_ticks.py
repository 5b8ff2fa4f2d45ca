"""CSV tick reading: column detection, timestamps, bad rows, and paced replay."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from streamer.errors import ConfigError, TickError
from streamer.market.ticks import (
    VirtualClock,
    detect_columns,
    pace,
    parse_time,
    read_csv,
    replay_csv,
)
from streamer.messages import Tick

DAY = 86400.0
T0 = 1672531200.0  # 2023-01-01 00:00 UTC


@pytest.mark.parametrize(
    ("header", "want"),
    [
        (["Date", "open", "close", "volume"], (0, 2)),
        (["date", "price"], (0, 1)),
        (["open_time", "open", "high", "low", "close", "volume"], (0, 4)),
        (["timestamp", "Close"], (0, 1)),
        (["time", "x", "price"], (0, 2)),
        (["", "open", "close", "Log_Return"], (0, 2)),  # pandas index column
        (["Date", "Close", "Adj Close"], (0, 2)),  # adjusted close preferred
        (["DateTime", "LAST"], (0, 1)),  # loose matches
    ],
)
def test_detect_columns_for_each_header_style(header: list[str], want: tuple[int, int]) -> None:
    assert detect_columns(header) == want


def test_named_columns_win_and_missing_ones_are_one_line_errors() -> None:
    assert detect_columns(["when", "bid", "ask"], "when", "ask") == (0, 2)
    assert detect_columns(["a", "b", "c"], "0", "2") == (0, 2)
    with pytest.raises(TickError, match=r"x\.csv: no price column .*--price-column"):
        detect_columns(["Date", "open", "volume"], source="x.csv")
    with pytest.raises(TickError, match="no column 'mid'"):
        detect_columns(["Date", "close"], price_column="mid")
    with pytest.raises(TickError, match="no time column"):
        detect_columns(["open", "close"])


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2023-01-01", T0),
        ("2023-01-01 00:01:00", T0 + 60),
        ("2023-01-01T00:01:00Z", T0 + 60),
        ("2023-01-01 01:01:00+01:00", T0 + 60),
        ("2023/01/02", T0 + DAY),
        (str(T0), T0),
    ],
)
def test_parse_time_naive_is_utc(text: str, want: float) -> None:
    assert parse_time(text) == want


def test_numeric_millisecond_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "ms.csv"
    p.write_text(f"open_time,close\n{int(T0 * 1000)},10\n{int((T0 + 60) * 1000)},11\n")
    s = read_csv(p)
    assert s.times.tolist() == [T0, T0 + 60]


def test_bad_rows_are_counted_skips(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(
        "Date,close\n"
        "2023-01-01,100\n"
        "2023-01-02,nan\n"  # bad_price
        "2023-01-03,-5\n"  # bad_price
        "2023-01-04,0\n"  # bad_price
        "2023-01-05,101\n"
        "2023-01-05,102\n"  # duplicate
        "2023-01-04,103\n"  # out_of_order
        "not a date,104\n"  # unparseable
        "2023-01-08,abc\n"  # unparseable
        "2023-01-09\n"  # unparseable (too few fields)
        "\n"  # blank: ignored
        "2023-01-12,105\n"
    )
    s = read_csv(p)
    assert s.prices.tolist() == [100.0, 101.0, 105.0]
    assert s.skipped == {"bad_price": 3, "duplicate": 1, "out_of_order": 1, "unparseable": 3}
    assert s.rows == 11
    assert np.all(np.diff(s.times) > 0)


def test_strict_mode_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("Date,close\n2023-01-01,100\n2023-01-02,-1\n")
    with pytest.raises(TickError, match=r"bad\.csv: line 3: bad_price"):
        read_csv(p, strict=True)


def test_unusable_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(TickError, match="cannot read"):
        read_csv(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(TickError, match="empty file"):
        read_csv(empty)
    noprice = tmp_path / "noprice.csv"
    noprice.write_text("Date,volume\n2023-01-01,5\n")
    with pytest.raises(TickError, match="no price column") as info:
        read_csv(noprice)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "rows", "columns", "step"),
    [
        ("btc_usd_daily.csv", 4091, ("Date", "close"), DAY),
        ("spy_daily.csv", 6543, ("(unnamed first column)", "close"), DAY),
        ("btc_usd_1min_binanceus_2023-03-01_2023-03-21.csv", 30240, ("open_time", "close"), 60.0),
    ],
)
def test_real_price_files(
    prices_dir: Path, name: str, rows: int, columns: tuple[str, str], step: float
) -> None:
    s = read_csv(prices_dir / name)
    assert len(s) == rows and s.skipped == {}
    assert s.columns == columns
    assert float(np.median(np.diff(s.times))) == step
    assert s.times[0] % 60 == 0  # whole minutes: dates parsed as UTC midnights


async def test_pacing_does_not_accumulate_lateness() -> None:
    ticks = [Tick("X", T0 + dt, 1.0) for dt in (0.0, 10.0, 30.0, 30.5, 100.0)]
    clock = VirtualClock(start=5.0, overshoot=0.25)  # every sleep overshoots by 0.25 s
    when = [clock.now() async for _ in pace(ticks, 10.0, clock=clock)]
    # due at 5 + dt/10; each tick is at most one overshoot late, never more
    due = [5.0, 6.0, 8.0, 8.05, 15.0]
    for w, d in zip(when, due, strict=True):
        assert d <= w <= d + 0.25 + 1e-9
    # the 4th tick was already due when the 3rd went out late: no sleep for it
    assert len(clock.sleeps) == 3
    assert clock.sleeps[0] == pytest.approx(1.0)
    assert clock.sleeps[1] == pytest.approx(2.0 - 0.25)


async def test_speed_zero_never_sleeps_and_bad_speed_is_config_error() -> None:
    ticks = [Tick("X", T0 + i, 1.0) for i in range(2000)]
    clock = VirtualClock()
    out = [t async for t in pace(ticks, 0.0, clock=clock)]
    assert len(out) == 2000 and clock.sleeps == [] and clock.now() == 0.0
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError):
            async for _ in pace(ticks, bad):
                pass


async def test_replay_csv_paces_and_counts_skips(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text(
        f"timestamp,price\n{T0},100\n{T0 + 60},0\n{T0 + 120},101\n{T0 + 120},102\n{T0 + 240},103\n"
    )
    clock = VirtualClock()
    skipped: Counter[str] = Counter()
    ticks = [t async for t in replay_csv(p, "BTC", 60.0, clock=clock, skipped=skipped)]
    assert [t.price for t in ticks] == [100.0, 101.0, 103.0]
    assert all(t.symbol == "BTC" for t in ticks)
    assert clock.sleeps == pytest.approx([2.0, 2.0])
    assert skipped == {"bad_price": 1, "duplicate": 1}

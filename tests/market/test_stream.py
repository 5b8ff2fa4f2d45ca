"""The replay hook (`run_ticks`) and the `streamer regimes analyze` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamer.cli import main
from streamer.commands.options import add_config_arguments, config_from_args
from streamer.config import Config
from streamer.errors import ConfigError, TickError
from streamer.market.stream import run_ticks
from streamer.market.synthetic import RegimeSpec, SyntheticSeries, simulate
from streamer.market.ticks import VirtualClock
from tests.sinks import Collector

from .conftest import write_csv


def tick_args(*argv: str) -> Config:
    """The configuration `streamer replay` would run with these price-tick flags."""
    import argparse

    p = argparse.ArgumentParser()
    add_config_arguments(p, ["price ticks"])
    return config_from_args(p.parse_args(list(argv)))


async def ticks(cfg: Config, speed: float, sink: Collector, **kw: object) -> dict[str, object]:
    return await run_ticks(cfg.ticks, cfg.tracker, speed, sink, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticSeries]:
    s = simulate(RegimeSpec.preset(2), 900, seed=4)
    return write_csv(tmp_path_factory.mktemp("ticks") / "syn.csv", s), s


def test_tick_flags_set_the_ticks_and_tracker_settings() -> None:
    cfg = tick_args("--ticks", "a.csv", "--ticks", "b.csv", "--symbol", "A", "--lag", "3")
    assert [str(x) for x in cfg.ticks.files] == ["a.csv", "b.csv"] and cfg.ticks.symbols == ("A",)
    t = cfg.tracker
    assert (t.warmup, t.states, t.refit_every, t.lag) == (1000, None, 500, 3)


async def test_run_ticks_emits_one_decode_per_tick(small: tuple[Path, SyntheticSeries]) -> None:
    path, s = small
    sink = Collector()
    args = tick_args("--ticks", str(path), "--warmup", "300", "--refit-every", "200")
    stats = await ticks(args, 0.0, sink)
    got = sink.decodes
    assert len(got) == len(s) - 1
    assert [d.t for d in got] == s.times[1:].tolist()
    assert {d.symbol for d in got} == {"syn"}
    assert stats["ticks"] == len(s) and stats["decoded"] == len(s) - 1
    assert stats["refits"] == 2 and stats["skipped"] == {}
    body = {"topic": "regime", "seq": 1, **got[-1].to_wire()}
    wire = json.loads(json.dumps(body))
    for key in ("topic", "seq", "symbol", "t", "price", "state", "regime", "probs", "changed"):
        assert key in wire
    assert isinstance(wire["t"], float) and sum(wire["probs"]) == pytest.approx(1.0, abs=1e-5)
    assert wire["smoothed_t"] == s.times[-11]


async def test_paced_replay_gives_the_same_decodes(small: tuple[Path, SyntheticSeries]) -> None:
    path, s = small
    argv = ("--ticks", str(path), "--symbol", "SYN", "--warmup", "300", "--refit-every", "200")
    fast = Collector()
    await ticks(tick_args(*argv), 0.0, fast)
    clock = VirtualClock()
    paced = Collector()
    speed = 86400.0 * 100  # 100 days a second
    await ticks(tick_args(*argv), speed, paced, clock=clock)
    assert [d.to_wire() for d in paced.decodes] == [d.to_wire() for d in fast.decodes]
    assert clock.now() == pytest.approx((s.times[-1] - s.times[0]) / speed)


async def test_two_files_side_by_side(small: tuple[Path, SyntheticSeries], tmp_path: Path) -> None:
    path, _ = small
    other = write_csv(tmp_path / "other.csv", simulate(RegimeSpec.preset(3), 700, seed=8))
    sink = Collector()
    args = tick_args("--ticks", str(path), "--ticks", str(other), "--warmup", "300", "--lag", "0")
    stats = await ticks(args, 0.0, sink)
    got = sink.decodes
    assert set(stats["symbols"]) == {"syn", "other"}
    assert sum(d.symbol == "other" for d in got) == 699
    assert all(d.smoothed_state is None for d in got)


async def test_bad_files_fail_before_anything_streams(
    small: tuple[Path, SyntheticSeries], tmp_path: Path
) -> None:
    path, _ = small
    got = Collector()
    short = tmp_path / "short.csv"
    short.write_text("Date,close\n2023-01-01,1\n2023-01-02,-1\n2023-01-03,2\n")
    with pytest.raises(TickError, match=r"short\.csv: 2 usable rows \(1 bad_price skipped\)"):
        args = tick_args("--ticks", str(path), "--ticks", str(short), "--warmup", "300")
        await ticks(args, 0.0, got)
    assert got.messages == []
    with pytest.raises(ConfigError, match="--warmup must be between"):
        tick_args("--ticks", str(path), "--warmup", "2000")
    with pytest.raises(ConfigError, match="--symbol"):
        tick_args("--ticks", str(path), "--ticks", str(path))


async def test_real_series_decodes_end_to_end(prices_dir: Path) -> None:
    sink = Collector()
    args = tick_args("--ticks", str(prices_dir / "spy_daily.csv"), "--symbol", "SPY")
    stats = await ticks(args, 0.0, sink)
    got = sink.decodes
    assert stats["decoded"] == 6542 and stats["skipped"] == {}
    st = stats["symbols"]["SPY"]
    assert 2 <= st["states"] <= 5 and st["refits"] >= 10 and st["relabels"] <= 2
    assert got[0].t == pytest.approx(941500800.0)  # 1999-11-02 00:00 UTC


def test_regimes_analyze_writes_a_png(
    small: tuple[Path, SyntheticSeries], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = small
    out = tmp_path / "plots" / "syn.png"
    assert main(["regimes", "analyze", str(path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    for word in ("BIC", "KMeans", "silhouette", "DBSCAN", "calm", "turbulent", "duration"):
        assert word in text
    rows = [
        ln.split() for ln in text.splitlines() if ln.split()[:1] in (["2"], ["3"], ["4"], ["5"])
    ]
    assert [r[0] for r in rows][:4] == ["2", "3", "4", "5"]


def test_regimes_analyze_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("Date,volume\n2023-01-01,3\n")
    assert main(["regimes", "analyze", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("streamer regimes: error:") and "no price column" in err
    assert len(err.splitlines()) == 1


async def test_a_change_of_regimes_is_announced(tmp_path: Path) -> None:
    from .test_regimes12 import _calm_then_two

    s = _calm_then_two(4000, 1800, seed=3)
    path = write_csv(tmp_path / "grow.csv", (s.times, s.prices))
    cfg = tick_args(
        "--ticks", str(path), "--warmup", "1500", "--refit-every", "500",
        "--emissions", "gaussian", "--decision-level", "0.7", "--decision-dwell", "2",
    )  # fmt: skip
    assert (cfg.tracker.emissions, cfg.tracker.level, cfg.tracker.dwell) == ("gaussian", 0.7, 2)
    events: list[str] = []
    stats = await ticks(cfg, 0.0, Collector(), on_event=events.append)
    assert stats["symbols"]["grow"]["k_changes"] == 1  # type: ignore[index]
    assert len(events) == 1 and events[0].startswith("grow: regimes now 2 (normal, ")

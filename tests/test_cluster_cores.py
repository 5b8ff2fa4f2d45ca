"""The cluster's pieces that need no Ray: addresses, shards, packing, the actors' cores, and
the promise that without --cluster Ray is never imported (and its absence is one line)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.cluster.address import parse_address
from streamer.cluster.cores import (
    RecognizerCore,
    ShardCore,
    pack_decodes,
    shard_of,
    unpack_decodes,
)
from streamer.cluster.feed import RoutingDecoder
from streamer.cluster.ticks import plan_calls
from streamer.config import ClusterConfig
from streamer.errors import ConfigError
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.feed import TickDecoder
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.net import protocol as P
from streamer.speech.recognizer import FakeRecognizer

from .market.conftest import write_csv

ROOT = Path(__file__).resolve().parents[1]
TRACKER = TrackerConfig(warmup=200, refit_every=300, window=800, restarts=2)


@pytest.mark.parametrize(
    ("text", "local", "workers"),
    [
        ("auto", False, None),
        ("10.0.0.5:6379", False, None),
        ("ray://head.example:10001", False, None),
        ("local", True, None),
        ("local:3", True, 3),
    ],
)
def test_addresses(text: str, local: bool, workers: int | None) -> None:
    a = parse_address(text)
    assert (a.local, a.workers) == (local, workers)
    assert a.ray_address == (None if local else text)


@pytest.mark.parametrize("text", ["", "local:0", "host", "http://h:1", "h:99999", "local:x"])
def test_bad_addresses_are_one_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match="--cluster"):
        ClusterConfig(address=text)


def test_symbols_hash_to_the_same_shard_everywhere() -> None:
    symbols = [f"S{i}" for i in range(200)]
    shards = [shard_of(s, 4) for s in symbols]
    assert shards == [shard_of(s, 4) for s in symbols]
    assert set(shards) == {0, 1, 2, 3}  # all used
    assert shard_of("AAA", 2) == 1 and shard_of("DDD", 2) == 0  # crc32: not salted per process


def test_calls_hold_at_most_batch_ticks_in_order() -> None:
    t = np.arange(10.0)
    chunks = [("A", t, t + 1), ("B", t[:3], t[:3])]
    calls = plan_calls(chunks, 4)
    assert [sum(len(c[1]) for c in call) for call in calls] == [4, 4, 4, 1]
    a = np.concatenate([c[1] for call in calls for c in call if c[0] == "A"])
    assert a.tolist() == t.tolist()


def test_a_shard_decodes_as_the_tracker_does_and_packs_losslessly() -> None:
    s = simulate(RegimeSpec.preset(3), 1500, seed=5, dt=60.0)
    expected = RegimeTracker("X", TRACKER, inline=True).push_many(s.times, s.prices)
    core = ShardCore(TRACKER)
    got = []
    for i in range(0, 1500, 97):  # odd call sizes, some below the per-tick threshold
        j = min(1500, i + (97 if i % 2 else 9))
        reply = core.push(i, [("X", s.times[i:j], s.prices[i:j])])
        assert reply.ticks == j - i and reply.busy >= 0
        got.extend(unpack_decodes(reply.decodes))
        if j < i + 97:
            reply = core.push(i, [("X", s.times[j : i + 97], s.prices[j : i + 97])])
            got.extend(unpack_decodes(reply.decodes))
    # the published messages are equal (per-tick and batch paths may differ in the last bit
    # of a probability, which the wire's six decimals do not carry: so does the single process)
    assert [d.to_wire() for d in got] == [d.to_wire() for d in expected]
    assert unpack_decodes(pack_decodes(expected)) == expected
    assert core.finish()["X"]["ticks"] == 1500


def test_a_shard_taken_up_from_its_checkpoint_goes_on_with_the_same_decodes() -> None:
    s = simulate(RegimeSpec.preset(2), 1400, seed=8, dt=60.0)
    whole = ShardCore(TRACKER)
    expected = unpack_decodes(whole.push(0, [("X", s.times, s.prices)]).decodes)
    first = ShardCore(TRACKER)
    reply = first.push(0, [("X", s.times[:700], s.prices[:700])], checkpoint=True)
    assert reply.state is not None and set(reply.state) == {"X"}
    again = ShardCore(TRACKER)
    again.restore(reply.state)
    rest = unpack_decodes(again.push(1, [("X", s.times[700:], s.prices[700:])]).decodes)
    got = unpack_decodes(reply.decodes) + rest
    assert [d.to_wire() for d in got] == [d.to_wire() for d in expected]


class _Shards:
    """Stands in for the feed's shard links: keeps what is routed."""

    def __init__(self) -> None:
        self.got: list[tuple[str, list[float], list[float]]] = []
        self.decoded: dict[str, int] = {}
        self.warming = 0
        self.skipped: dict[str, int] = {}

    def put(self, symbol: str, ts: list[float], ps: list[float]) -> None:
        self.got.append((symbol, ts, ps))


def test_the_live_feed_on_the_cluster_checks_at_the_head_and_routes_in_order() -> None:
    """The head keeps the single process's checks and counters (bad ticks dropped and counted,
    the symbol limit) and hands each symbol's good ticks on, in order, decoding nothing."""
    base = TickDecoder(TRACKER, parse=P.parse_tick, parse_many=P.parse_ticks, max_symbols=2)
    shards = _Shards()
    core = RoutingDecoder(base, shards)  # type: ignore[arg-type]
    bodies = [P.encode_tick(s, 100.0 + i, 10.0 + i)[1] for i in range(3) for s in ("A", "B", "C")]
    bodies.insert(4, b"{not json")
    assert core.feed(bodies) == []
    assert core.feed([P.encode_tick("A", 200.0, 1.0)[1]]) == []
    assert [(s, ts) for s, ts, _ in shards.got] == [
        ("A", [100.0, 101.0, 102.0]),
        ("B", [100.0, 101.0, 102.0]),
        ("A", [200.0]),
    ]
    st = core.stats()
    assert st["accepted"] == 7 and st["symbols"] == 2 and st["decoded"] == 0
    assert st["dropped"]["too_many_symbols"] == 3 and sum(st["dropped"].values()) == 4


def test_a_recognizer_core_loads_a_bank_per_generation() -> None:
    loads: list[int] = []

    def load(labels: tuple[str, ...]) -> FakeRecognizer:
        loads.append(1)
        return FakeRecognizer(labels=labels)

    core = RecognizerCore()
    loud = (np.full(800, 0.2, dtype=np.float32), 8000, "s#0")
    out, _ = core.recognize(0, lambda: load(("q", "l")), [loud, loud])
    assert [r.label for r, _ in out] == ["l", "l"]
    out, _ = core.recognize(0, lambda: load(("x", "y")), [loud])  # same generation: kept
    assert out[0][0].label == "l" and len(loads) == 1
    out, _ = core.recognize(1, lambda: load(("x", "y")), [loud])
    assert out[0][0].label == "y" and len(loads) == 2


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_without_cluster_ray_is_never_imported(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "P.csv", simulate(RegimeSpec.preset(2), 300, seed=1))
    r = _run(
        "import sys, io, contextlib\n"
        "from streamer.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    code = main(['replay', '--ticks', {str(csv)!r}, '--speed', '0', '--warmup', '100'])\n"
        "print(code, 'ray' in sys.modules)\n"
    )
    assert r.stdout.split() == ["0", "False"], r.stderr[-2000:]


def test_without_ray_installed_cluster_is_one_line(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "P.csv", simulate(RegimeSpec.preset(2), 300, seed=1))
    r = _run(
        "import sys\n"
        "sys.modules['ray'] = None  # as if the cluster extra were not installed\n"
        "from streamer.cli import main\n"
        f"sys.exit(main(['replay', '--ticks', {str(csv)!r}, '--cluster', 'local:1']))\n"
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'streamer[cluster]'" in lines[0], r.stderr

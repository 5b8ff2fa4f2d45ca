"""The wire protocol: Structs against their schema files and jsonschema, encoders, tick parsing."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from streamer.errors import ProtocolError
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.net import protocol as P

from .conftest import regime, word

ROOT = Path(__file__).resolve().parents[2]


def test_schema_files_are_current(tmp_path: Path) -> None:
    """docs/schemas/*.json are exactly what the Structs say (regenerate: write_schemas)."""
    P.write_schemas(tmp_path)
    for name in P.all_schemas():
        have = (ROOT / "docs" / "schemas" / f"{name}.json").read_text()
        assert have == (tmp_path / f"{name}.json").read_text(), (
            f"docs/schemas/{name}.json is stale: run "
            "python -c 'from streamer.net.protocol import write_schemas; "
            'write_schemas("docs/schemas")\''
        )


def _good() -> dict[str, dict[str, Any]]:
    ts = 1.7e9
    return {
        "speech": {"v": 1, "seq": 0, "ts": ts, **word().to_wire()},
        "regime": {"v": 1, "seq": 3, "ts": ts, **regime(smoothed=True).to_wire()},
        "heartbeat": {"v": 1, "seq": 0, "ts": ts, "session": "ab", "interval": 0.5,
                      "uptime": 1.0, "subscribers": 1, "snapshot": None, "last": {"regime.X": 4},
                      "levels": {"mic": {"rms_dbfs": -30.5, "peak_dbfs": -6.0}}},
        "status": {"v": 1, "seq": 0, "ts": ts, "state": "running", "session": "ab"},
        "metrics": {"v": 1, "seq": 0, "ts": ts, "session": "ab", "uptime": 1.0,
                    "subscribers": 0, "hwm": 10, "policy": "nodrop", "sent": {"regime": 3},
                    "dropped": {}},
        "summary": {"v": 1, "seq": 2, "ts": ts, "symbol": "X", "ticks": 40, "t0": ts - 0.1,
                    "t": ts, "first": 10.0, "low": 9.5, "high": 10.5, "last": 10.2, "state": 1,
                    "regime": "normal", "probs": [0.1, 0.9], "changes": 1, "regime_ts": ts,
                    "regime_seq": 119},
        "tick": {"symbol": "BTC-USD", "t": ts, "price": 1.5},
        "snapshot": {"v": 1, "ts": ts, "session": "ab", "seq": {"status": 0}, "count": 0},
        "progress": {"v": 1, "client": "c1", "topics": ["regime"], "read": 7, "missed": 0,
                     "resyncs": 0},
    }  # fmt: skip


def _mutations(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Broken copies: each required field removed, each field given a wrong type."""
    out = []
    for k in body:
        b = copy.deepcopy(body)
        del b[k]
        out.append(b)
        for bad in ("x", None, [1], {"a": 1}, True, -1):
            b = copy.deepcopy(body)
            b[k] = bad
            out.append(b)
    return out


@pytest.mark.parametrize("kind", sorted(P.all_schemas()))
def test_structs_agree_with_their_schemas(kind: str, validators: dict[str, Any]) -> None:
    body = _good()[kind]
    validators[kind].validate(body)
    assert P.problem(kind, body) is None
    for b in _mutations(body):
        js_ok = validators[kind].is_valid(b)
        fast_ok = P.problem(kind, b) is None
        assert js_ok == fast_ok, (b, P.problem(kind, b))


def test_regime_encoder_matches_the_dict_path() -> None:
    s = simulate(RegimeSpec.preset(3), 1500, seed=5)
    tr = RegimeTracker("BTC-USD", TrackerConfig(warmup=200, refit_every=0, lag=5))
    decodes = tr.push_many(s.times, s.prices)
    decodes.append(regime("ETH"))  # no smoothed state
    decodes.append(regime('X"\\é', smoothed=True))  # a symbol that needs JSON escaping
    ts = 1.7e9 + 0.123456
    for i, d in enumerate(decodes):
        body = P.encode_regime(d, i, ts)
        assert P.encode(P.parse_body(body, "regime")) == body  # the very bytes of the Struct
        fast = json.loads(body)
        slow = json.loads(P.encode_body("regime", i, ts, d.to_wire()))
        assert fast == slow
        assert list(fast)[:3] == ["v", "seq", "ts"]  # the envelope first
        assert P.problem("regime", fast) is None
    # extra fields go through the dict path, and are kept
    d = regime()
    d.extra["note"] = "x"
    assert json.loads(P.encode_regime(d, 0, ts))["note"] == "x"


@pytest.mark.parametrize("lag", [0, 5])
def test_batch_encoder_gives_the_bodies_of_the_per_message_one(lag: int) -> None:
    """`encode_regimes` (arrays, the tick path) writes what `encode_regime` writes per decode."""
    s = simulate(RegimeSpec.preset(3), 1500, seed=5)
    tr = RegimeTracker('X"\\é', TrackerConfig(warmup=200, refit_every=0, lag=lag))
    tr.push_many(s.times[:300], s.prices[:300])
    assert tr.decoder is not None
    ts = 1.7e9 + 0.123456
    for a, b in ((300, 301), (301, 303), (303, 1500)):  # a batch whose smoothed state starts
        batch = tr.decoder.step_many(s.times[a:b], s.prices[a:b])
        bodies = P.encode_regimes(batch, 40, ts)
        assert bodies is not None and len(bodies) == len(batch) == b - a
        for i, (body, d) in enumerate(zip(bodies, batch, strict=True)):
            assert body == P.encode_regime(d, 40 + i, ts)
            assert P.problem("regime", json.loads(body)) is None
    assert P.encode_regimes(tr.decoder.step_many(s.times[:0], s.prices[:0]), 0, ts) == []


def test_batch_encoder_leaves_unusual_batches_to_the_careful_path() -> None:
    s = simulate(RegimeSpec.preset(2), 400, seed=3)
    tr = RegimeTracker("X", TrackerConfig(warmup=200, refit_every=0))
    tr.push_many(s.times[:300], s.prices[:300])
    assert tr.decoder is not None
    good = tr.decoder.step_many(s.times[300:], s.prices[300:])
    assert P.encode_regimes(good, 0, 1.0) is not None
    for field, value in (("probs", math.nan), ("probs", 1.5), ("price", math.inf)):
        arr = getattr(good, field).copy()
        arr[3] = value
        bad = dataclasses.replace(good, **{field: arr})
        assert P.encode_regimes(bad, 0, 1.0) is None, field
    assert P.encode_regimes(dataclasses.replace(good, symbol=""), 0, 1.0) is None


def test_encode_refuses_nan_and_wrong_types() -> None:
    with pytest.raises(ProtocolError, match="float"):
        P.encode_body("regime", 0, 1.0, {**regime().to_wire(), "price": math.nan})
    with pytest.raises(ProtocolError, match="probs"):
        P.encode_body("regime", 0, 1.0, {**regime().to_wire(), "probs": [1.5]})
    with pytest.raises(ProtocolError, match="state"):
        P.encode(P.Status(v=1, seq=0, ts=1.0, state="asleep", session="s"))  # type: ignore[arg-type]


def test_strict_loads() -> None:
    assert P.loads(b' {"a": 1} \n') == {"a": 1}
    for bad in (b'{"a": NaN}', b"[Infinity]", b'{"a": 1} x', b"\xff\xfe", b""):
        with pytest.raises(ValueError):
            P.loads(bad)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"x" * 5000, "oversized"),
        (b'{"symbol": "' + b"A" * 65 + b'", "t": 1, "price": 1}', "bad_value"),
        (b'{"symbol": "A", "t": 1, "price": 0}', "bad_value"),
        (b"{not json", "json"),
        (b'{"symbol": "A", "t": NaN, "price": 1}', "json"),
        (b"\xff", "json"),
        (b"[1, 2]", "not_object"),
        (b'{"symbol": "A", "t": 1}', "missing_field"),
        (b'{"symbol": 5, "t": 1, "price": 1}', "wrong_type"),
        (b'{"symbol": "A", "t": "1", "price": 1}', "wrong_type"),
        (b'{"symbol": "A", "t": 1, "price": true}', "wrong_type"),
        (b'{"symbol": "", "t": 1, "price": 1}', "bad_value"),
        (b'{"symbol": "A", "t": 1, "price": -2}', "bad_value"),
        (b'{"symbol": "A", "t": 1e400, "price": 2}', "bad_value"),
    ],
)
def test_parse_tick_names_the_problem(body: bytes, kind: str) -> None:
    with pytest.raises(P.BadTick) as e:
        P.parse_tick(body)
    assert e.value.kind == kind
    assert kind in P.TICK_PROBLEMS


def test_parse_tick_good() -> None:
    assert P.parse_tick(P.encode_tick("BTC", 1.5, 2)[1]) == P.Tick("BTC", 1.5, 2.0)
    assert P.parse_tick(b' {"symbol":"A","t":3,"price":4.5,"extra":1}\n') == P.Tick("A", 3.0, 4.5)


def test_parse_ticks_whole_batch_or_none() -> None:
    good = [P.encode_tick(f"S{i % 3}", float(i), 1.0 + i)[1] for i in range(50)]
    assert P.parse_ticks(good) == [P.parse_tick(b) for b in good]
    one = b'{"symbol":"A","t":1,"price":2}'
    for bodies in (
        [*good, b"{not json"],  # any bad body: the caller looks at each
        [*good, b"x" * 5000],
        [one, b'{"symbol":"A","t":1,\n"price":2}'],  # a line break inside a body
        # one body that is two ticks beside an empty one: never two ticks for one message
        [one + b"\n" + one, b""],
        [one + b"," + one, one],
        [b""],
        [],
    ):
        assert P.parse_ticks(bodies) is None


def test_decode() -> None:
    body = P.encode_body("regime", 2, 1.0, regime().to_wire())
    m = P.decode([b"regime.BTC-USD", body])
    assert (m.topic, m.kind, m.seq, m.ts) == ("regime.BTC-USD", "regime", 2, 1.0)
    assert isinstance(m.data, P.Regime) and m.data.regime == "normal"
    assert m.body == json.loads(body)
    for frames, what in (
        ([b"regime.X"], "2 frames"),
        ([b"regime.X", b"nope"], "not JSON"),
        ([b"regime.X", b"[1]"], "Expected `object`"),
        ([b"regime.X", b'{"v": 1, "seq": 0, "ts": 1, "symbol": "X"}'], "missing"),
        ([b"other", b'{"v": 2, "seq": 0, "ts": 1}'], "v"),
    ):
        with pytest.raises(ProtocolError, match=what):
            P.decode(frames)


def test_topics() -> None:
    assert P.topic("regime", "BTC-USD") == "regime.BTC-USD"
    assert P.kind_of("regime.BTC-USD") == P.kind_of("regime") == "regime"
    assert P.matches("regime.BTC-USD", ["regime"])
    assert P.matches("heartbeat", [""])
    assert not P.matches("speech", ["regime", "status"])


def test_snapshot_messages() -> None:
    req = P.snapshot_request(["regime", "status"])
    assert P.parse_snapshot_request(req) == ["regime", "status"]
    with pytest.raises(ProtocolError):
        P.parse_snapshot_request([b"snapshot", b'{"v": 1, "topics": "regime"}'])
    body = P.encode_body("regime", 4, 1.0, regime().to_wire())
    reply = P.snapshot_reply("s1", 2.0, {"regime.BTC-USD": 4}, [(b"regime.BTC-USD", body)])
    meta, msgs = P.parse_snapshot_reply(reply)
    assert meta.seq == {"regime.BTC-USD": 4} and meta.count == 1
    assert [(m.topic, m.seq, m.snapshot) for m in msgs] == [("regime.BTC-USD", 4, True)]
    with pytest.raises(ProtocolError, match="refused"):
        P.parse_snapshot_reply(P.error_reply("bad request"))


def test_listen_line_markers_do_not_clash_with_bodies() -> None:
    fields = set()
    for cls in P.TYPES.values():
        fields |= set(cls.__struct_fields__)
    assert not fields & {"topic", "from_snapshot", "lost_before"}
    data = P.Status(v=1, seq=0, ts=1.0, state="running", session="s", snapshot="tcp://x:1")
    m = P.Message("status", data, snapshot=True, gap=2)
    line = m.to_json()
    assert line["from_snapshot"] is True and line["lost_before"] == 2
    assert line["snapshot"] == "tcp://x:1"

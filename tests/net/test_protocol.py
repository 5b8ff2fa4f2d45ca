"""The wire protocol: schema files, the fast checker against jsonschema, encoders, tick parsing."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.errors import ProtocolError
from streamer.market.decoder import RegimeTracker, TrackerConfig
from streamer.market.synthetic import RegimeSpec, simulate
from streamer.net import protocol as P

from .conftest import regime, word

ROOT = Path(__file__).resolve().parents[2]


def test_schema_files_are_current(tmp_path: Path) -> None:
    """docs/schemas/*.json are exactly what protocol.SCHEMAS says (regenerate: write_schemas)."""
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
                      "uptime": 1.0, "subscribers": 1, "snapshot": None, "last": {"regime.X": 4}},
        "status": {"v": 1, "seq": 0, "ts": ts, "state": "running", "session": "ab"},
        "metrics": {"v": 1, "seq": 0, "ts": ts, "session": "ab", "uptime": 1.0,
                    "subscribers": 0, "hwm": 10, "policy": "nodrop", "sent": {"regime": 3},
                    "dropped": {}},
        "tick": {"symbol": "BTC-USD", "t": ts, "price": 1.5},
        "snapshot": {"v": 1, "ts": ts, "session": "ab", "seq": {"status": 0}, "count": 0},
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
def test_fast_check_agrees_with_jsonschema(kind: str, validators: dict[str, Any]) -> None:
    body = _good()[kind]
    validators[kind].validate(body)
    assert P.problem(kind, body) is None
    for b in _mutations(body):
        js_ok = validators[kind].is_valid(b)
        fast_ok = P.problem(kind, b) is None
        assert js_ok == fast_ok, (b, P.problem(kind, b))


def test_schemas_use_only_what_the_fast_check_enforces() -> None:
    with pytest.raises(ValueError, match="not supported"):
        P._compile({"type": "string", "pattern": "^a"})


def test_regime_fast_encoder_matches_the_dict_path() -> None:
    s = simulate(RegimeSpec.preset(3), 1500, seed=5)
    tr = RegimeTracker("BTC-USD", TrackerConfig(warmup=200, refit_every=0, lag=5))
    decodes = tr.push_many(s.times, s.prices)
    decodes.append(regime("ETH"))  # no smoothed state
    decodes.append(regime('X"\\é', smoothed=True))  # a symbol that needs JSON escaping
    enc = P.RegimeEncoder()
    ts = 1.7e9 + 0.123456
    for i, d in enumerate(decodes):
        fast = json.loads(enc.encode(d, i, repr(ts)))
        slow = json.loads(P.encode_body(i, ts, d.to_wire()))
        assert fast == slow
        assert P.problem("regime", fast) is None
    # extra fields go through the dict path
    d = regime()
    d.extra["note"] = "x"
    assert json.loads(enc.encode(d, 0, repr(ts)))["note"] == "x"


def test_probability_rounding_is_that_of_round() -> None:
    rng = np.random.default_rng(0)
    for p in [*rng.random(20000).tolist(), 0.0, 1.0, 0.5, 1e-09, 0.9999995]:
        assert float(f"{p:.6f}") == round(p, 6)


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        P.encode_body(0, 1.0, {"x": math.nan})


def test_strict_loads() -> None:
    assert P.loads(b' {"a": 1} \n') == {"a": 1}
    for bad in (b'{"a": NaN}', b"[Infinity]", b'{"a": 1} x', b"\xff\xfe", b""):
        with pytest.raises(ValueError):
            P.loads(bad)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"x" * 5000, "oversized"),
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
    assert P.parse_tick(P.encode_tick("BTC", 1.5, 2)[1]) == ("BTC", 1.5, 2.0)
    assert P.parse_tick(b'{"symbol":"A","t":3,"price":4.5,"extra":1}') == ("A", 3.0, 4.5)


def test_decode() -> None:
    body = P.encode_body(2, 1.0, regime().to_wire())
    m = P.decode([b"regime.BTC-USD", body])
    assert (m.topic, m.kind, m.seq, m.ts) == ("regime.BTC-USD", "regime", 2, 1.0)
    for frames, what in (
        ([b"regime.X"], "2 frames"),
        ([b"regime.X", b"nope"], "not JSON"),
        ([b"regime.X", b"[1]"], "not a JSON object"),
        ([b"regime.X", P.encode_body(0, 1.0, {"symbol": "X"})], "missing"),
        ([b"other", b'{"v": 2, "seq": 0, "ts": 1}'], "envelope"),
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
    body = P.encode_body(4, 1.0, regime().to_wire())
    reply = P.snapshot_reply("s1", 2.0, {"regime.BTC-USD": 4}, [(b"regime.BTC-USD", body)])
    meta, msgs = P.parse_snapshot_reply(reply)
    assert meta["seq"] == {"regime.BTC-USD": 4} and meta["count"] == 1
    assert [(m.topic, m.seq, m.snapshot) for m in msgs] == [("regime.BTC-USD", 4, True)]
    with pytest.raises(ProtocolError, match="refused"):
        P.parse_snapshot_reply(P.error_reply("bad request"))


def test_listen_line_markers_do_not_clash_with_bodies() -> None:
    fields = set()
    for s in P.SCHEMAS.values():
        fields |= set(s["properties"])
    assert not fields & {"topic", "from_snapshot", "lost_before"}
    m = P.Message("status", {"v": 1, "seq": 0, "ts": 1.0, "snapshot": "tcp://x:1"}, True, 2)
    line = m.to_json()
    assert line["from_snapshot"] is True and line["lost_before"] == 2
    assert line["snapshot"] == "tcp://x:1"

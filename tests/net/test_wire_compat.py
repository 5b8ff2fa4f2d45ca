"""Version 1 of the wire, unchanged by its move to typed Structs.

`data/wire_v1.json` holds bodies recorded from a real `streamer replay --pub` run (and
a few made by the encoders) before the move, with its snapshot reply and tick inputs;
`data/schemas_v1/` the schema files of then. Old bodies must decode into the Structs,
new bodies must read back as the same JSON with a plain `json.loads`, and the schemas
written from the Structs must mean what the old ones said.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamer.errors import ProtocolError
from streamer.net import protocol as P

DATA = Path(__file__).parent / "data"
RECORDED = json.loads((DATA / "wire_v1.json").read_text())
MESSAGES = RECORDED["messages"] + RECORDED["made_by_encoder"]


def test_the_recording_covers_every_kind() -> None:
    kinds = {P.kind_of(m["topic"]) for m in MESSAGES}
    assert kinds == set(P.KINDS) - {P.SUMMARY}  # a kind added since (which keeps `v`)
    regimes = [json.loads(m["body"]) for m in MESSAGES if m["topic"].startswith("regime")]
    assert {len(r["probs"]) for r in regimes} >= {1, 2, 3}
    assert {"smoothed_state" in r for r in regimes} == {True, False}
    speech = [json.loads(m["body"]) for m in MESSAGES if m["topic"] == "speech"]
    assert None in {s["label"] for s in speech} and any("error" in s for s in speech)


@pytest.mark.parametrize("m", MESSAGES, ids=lambda m: m["topic"])
def test_recorded_bodies_decode_into_structs_and_encode_back(m: dict[str, str]) -> None:
    msg = P.decode([m["topic"].encode(), m["body"].encode()])
    assert isinstance(msg.data, P.TYPES[msg.kind])
    old = json.loads(m["body"])
    assert msg.body == old and (msg.seq, msg.ts) == (old["seq"], old["ts"])
    new = P.encode(msg.data)  # the new encoder, read by a plain stdlib consumer
    assert json.loads(new) == old
    assert list(json.loads(new))[:3] == ["v", "seq", "ts"]


def test_recorded_snapshot_and_requests() -> None:
    frames = [f.encode() for f in RECORDED["snapshot_reply"]]
    meta, items = P.parse_snapshot_reply(frames)
    old = json.loads(frames[1])
    assert (meta.session, meta.seq, meta.count) == (old["session"], old["seq"], old["count"])
    assert len(items) == old["count"] and all(m.snapshot for m in items)
    assert [m.body for m in items] == [json.loads(b) for b in frames[3::2]]
    new = P.snapshot_reply(meta.session, meta.ts, meta.seq, [(m.topic.encode(), m.raw or b"")
                                                           for m in items])  # fmt: skip
    assert json.loads(new[1]) == old and new[2:] == frames[2:]
    req = RECORDED["snapshot_request"].encode()
    assert P.parse_snapshot_request([b"snapshot", req]) == json.loads(req)["topics"]
    assert json.loads(P.snapshot_request(["regime", "status"])[1]) == json.loads(req)
    with pytest.raises(ProtocolError, match="refused"):
        P.parse_snapshot_reply([f.encode() for f in RECORDED["snapshot_error"]])


def test_recorded_ticks() -> None:
    bodies = [t.encode() for t in RECORDED["ticks"]]
    for b in bodies:
        tick, old = P.parse_tick(b), json.loads(b)
        assert (tick.symbol, tick.t, tick.price) == (old["symbol"], old["t"], old["price"])
    assert P.encode_tick("BTC-USD", 1700000000.25, 42123.5)[1] == bodies[0]


def _types(s: dict[str, Any]) -> frozenset[str]:
    """The JSON types a (sub)schema admits, however it spells them."""
    if "anyOf" in s:
        return frozenset().union(*(_types(x) for x in s["anyOf"]))
    t = s.get("type")
    if t is None:
        return frozenset()
    return frozenset(t if isinstance(t, list) else [t])


def _meaning(s: dict[str, Any], defs: dict[str, Any]) -> Any:
    """What a schema requires of a value: types, enums, bounds, lengths, items, fields."""
    if "$ref" in s:
        return _meaning(defs[s["$ref"].rsplit("/", 1)[1]], defs)
    out: dict[str, Any] = {"types": _types(s)}
    enum = s.get("enum", [s["const"]] if "const" in s else None)
    if enum is not None:
        out["enum"] = sorted(enum, key=repr)
    for k in ("minimum", "maximum", "exclusiveMinimum", "minLength", "maxLength", "minItems"):
        if k in s:
            out[k] = s[k]
    if "items" in s:
        out["items"] = _meaning(s["items"], defs)
    if isinstance(s.get("additionalProperties"), dict):
        out["values"] = _meaning(s["additionalProperties"], defs)
    if "properties" in s:
        out["required"] = sorted(s.get("required", []))
        out["properties"] = {k: _meaning(v, defs) for k, v in s["properties"].items()}
    return out


@pytest.mark.parametrize(
    "name", sorted(set(P.all_schemas()) - {P.SUMMARY, "progress"})
)  # new since
def test_schemas_mean_what_version_1_said(name: str) -> None:
    old = json.loads((DATA / "schemas_v1" / f"{name}.json").read_text())
    new = json.loads((Path(__file__).parents[2] / "docs" / "schemas" / f"{name}.json").read_text())
    was, now = _meaning(old, {}), _meaning(new, new.get("$defs", {}))
    assert now["required"] == was["required"]
    for field, meaning in was["properties"].items():
        assert now["properties"][field] == meaning, field
    # fields added since are optional (a new field keeps `v`)
    assert not set(now["properties"]) - set(was["properties"]) & set(now["required"])

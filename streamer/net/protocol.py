"""The wire protocol (docs/protocol.md): the one module that knows what goes on the wire.

Every message is two frames, ``[topic, body]``. The topic is a kind (``speech``,
``regime``, ``heartbeat``, ``status``, ``metrics``), optionally followed by
``.KEY`` for finer prefix filtering (``regime.BTC-USD``); ZeroMQ filters by
prefix, so subscribing to the bare kind gets every key. The body is UTF-8 JSON
with the envelope ``v`` (schema version), ``seq`` (consecutive per topic frame,
from 0) and ``ts`` (publish time, UNIX seconds), then the kind's own fields.

The JSON Schemas below are the source of truth: ``docs/schemas/*.json`` are
written from them (`write_schemas`; a test checks the files are current), and
`validate` runs a compiled subset of the same schemas, fast enough for every
message (the `jsonschema` package is a dev extra and takes ~90 us a message
here; this takes ~6). Consumers must ignore fields they do not know: adding a
field does not change `v`, renaming or removing one does.

Outside producers send ticks in as ``[b"tick", {"symbol", "t", "price"}]``
(`parse_tick`); late joiners ask for a snapshot with ``[b"snapshot", {"v",
"topics"}]`` and get ``[b"snapshot", meta, topic, body, topic, body, ...]``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.errors import ProtocolError

VERSION = 1

SPEECH = "speech"
REGIME = "regime"
HEARTBEAT = "heartbeat"
STATUS = "status"
METRICS = "metrics"
KINDS = (SPEECH, REGIME, HEARTBEAT, STATUS, METRICS)

TICK = "tick"  # input: outside producers -> the service's tick feed
TICK_TOPIC = b"tick"
SNAPSHOT = b"snapshot"  # request and reply, on the snapshot (ROUTER) socket
SNAPSHOT_ERROR = b"error"

DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_HWM = 200_000  # messages queued per subscriber before sends fail (see docs/protocol.md)
DEFAULT_HEARTBEAT = 0.5  # seconds between heartbeats: "at least once a second" with margin
MAX_TICK_BYTES = 4096
MAX_SYMBOL = 64

STATES = ("starting", "waiting", "running", "draining", "stopped")
POLICIES = ("nodrop", "lossy")

# -- schemas ------------------------------------------------------------------------------------

_ENVELOPE: dict[str, Any] = {
    "v": {"const": VERSION, "description": "schema version; a consumer rejects other values"},
    "seq": {
        "type": "integer",
        "minimum": 0,
        "description": "per topic frame, consecutive from 0: a jump is a lost message",
    },
    "ts": {"type": "number", "description": "publish time, UNIX seconds"},
}
_COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}


def _schema(
    kind: str, title: str, props: dict[str, Any], required: Sequence[str]
) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://streamer.invalid/schemas/{kind}.json",
        "title": title,
        "type": "object",
        "required": ["v", "seq", "ts", *required],
        "properties": {**_ENVELOPE, **props},
        "additionalProperties": True,
    }


SCHEMAS: dict[str, dict[str, Any]] = {
    SPEECH: _schema(
        SPEECH,
        "A recognised (or rejected) utterance; topic `speech`",
        {
            "stream": {"type": "string", "description": "the audio stream (file or device)"},
            "utterance": {"type": "integer", "minimum": 0, "description": "index in the stream"},
            "label": {
                "type": ["string", "null"],
                "description": "the word, or null when the utterance fits no word well",
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "start": {"type": "number", "minimum": 0, "description": "stream seconds"},
            "end": {"type": "number", "minimum": 0, "description": "stream seconds"},
            "nbest": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["label", "loglik"],
                    "properties": {"label": {"type": "string"}, "loglik": {"type": "number"}},
                },
            },
            "closed_at": {"type": "number", "description": "stream time the utterance closed"},
            "error": {"type": "string", "description": "why recognition failed, if it did"},
            "delay_ms": {"type": "number", "description": "close-to-publish wall time"},
        },
        ["stream", "utterance", "label", "confidence", "start", "end", "nbest"],
    ),
    REGIME: _schema(
        REGIME,
        "The online regime decode after one tick; topic `regime.SYMBOL`",
        {
            "symbol": {"type": "string", "minLength": 1},
            "t": {"type": "number", "description": "tick time, UNIX seconds"},
            "price": {"type": "number", "exclusiveMinimum": 0},
            "state": {
                "type": "integer",
                "minimum": 0,
                "description": "the decided regime (held until the filter is sure of another); "
                "0 = calmest",
            },
            "regime": {"type": "string", "description": "its name"},
            "probs": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "number", "minimum": 0, "maximum": 1},
                "description": "filtered P(state | ticks so far), rounded to 6 decimals; "
                "the argmax is the filter's own answer",
            },
            "changed": {"type": "boolean", "description": "the decided regime changed"},
            "smoothed_state": {"type": "integer", "minimum": 0},
            "smoothed_t": {"type": "number"},
        },
        ["symbol", "t", "price", "state", "regime", "probs", "changed"],
    ),
    HEARTBEAT: _schema(
        HEARTBEAT,
        "Publisher liveness, at least once a second; topic `heartbeat`",
        {
            "session": {"type": "string", "description": "new each time the publisher starts"},
            "interval": {"type": "number", "exclusiveMinimum": 0},
            "uptime": {"type": "number", "minimum": 0},
            "subscribers": {"type": "integer", "minimum": 0},
            "snapshot": {"type": ["string", "null"], "description": "snapshot endpoint"},
            "last": {
                **_COUNTS,
                "description": "last seq published per topic frame: a subscriber behind it lost "
                "messages",
            },
        },
        ["session", "interval", "last"],
    ),
    STATUS: _schema(
        STATUS,
        "Service life cycle, published on every change; topic `status`",
        {
            "state": {"enum": list(STATES)},
            "session": {"type": "string"},
            "pid": {"type": "integer"},
            "version": {"type": "string"},
            "pub": {"type": "string"},
            "snapshot": {"type": ["string", "null"]},
            "subscribers": {"type": "integer", "minimum": 0},
            "sources": {"type": "array", "items": {"type": "string"}},
            "detail": {"type": "string"},
        },
        ["state", "session"],
    ),
    METRICS: _schema(
        METRICS,
        "Counters, every few seconds and at shutdown; topic `metrics`",
        {
            "session": {"type": "string"},
            "uptime": {"type": "number", "minimum": 0},
            "subscribers": {"type": "integer", "minimum": 0},
            "hwm": {"type": "integer", "minimum": 0},
            "policy": {"enum": list(POLICIES)},
            "sent": {**_COUNTS, "description": "messages sent, per kind"},
            "dropped": {**_COUNTS, "description": "messages dropped at the high-water mark"},
            "feed": {"type": "object"},
            "speech": {"type": "object"},
            "ticks": {"type": "object"},
        },
        ["session", "uptime", "subscribers", "hwm", "policy", "sent", "dropped"],
    ),
}

TICK_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://streamer.invalid/schemas/tick.json",
    "title": "A price tick from an outside producer; topic `tick` (input)",
    "type": "object",
    "required": ["symbol", "t", "price"],
    "properties": {
        "symbol": {"type": "string", "minLength": 1, "maxLength": MAX_SYMBOL},
        "t": {"type": "number", "description": "UNIX seconds; strictly increasing per symbol"},
        "price": {"type": "number", "exclusiveMinimum": 0},
    },
    "additionalProperties": True,
}

SNAPSHOT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://streamer.invalid/schemas/snapshot.json",
    "title": "Snapshot reply metadata (second frame of the reply)",
    "type": "object",
    "required": ["v", "ts", "session", "seq", "count"],
    "properties": {
        "v": {"const": VERSION},
        "ts": {"type": "number"},
        "session": {"type": "string"},
        "seq": {
            **_COUNTS,
            "description": "last seq per topic frame when the snapshot was taken: drop updates "
            "at or below it",
        },
        "count": {"type": "integer", "minimum": 0, "description": "(topic, body) pairs after it"},
    },
    "additionalProperties": True,
}


def all_schemas() -> dict[str, dict[str, Any]]:
    """Every schema by file stem: the published kinds, the tick input, the snapshot reply."""
    return {**SCHEMAS, TICK: TICK_SCHEMA, "snapshot": SNAPSHOT_SCHEMA}


def write_schemas(folder: str | Path) -> list[Path]:
    """Write docs/schemas/*.json (what the docs link to) from `all_schemas`."""
    out = []
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    for name, schema in all_schemas().items():
        p = d / f"{name}.json"
        p.write_text(json.dumps(schema, indent=2) + "\n")
        out.append(p)
    return out


# -- a compiled subset of JSON Schema -----------------------------------------------------------

Check = Callable[[Any, str], str | None]  # (value, path) -> the first problem, or None


def _is_number(x: Any) -> bool:
    return (type(x) is float and math.isfinite(x)) or type(x) is int


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda x: type(x) is str,
    "integer": lambda x: type(x) is int,
    "number": _is_number,
    "boolean": lambda x: type(x) is bool,
    "null": lambda x: x is None,
    "array": lambda x: type(x) is list,
    "object": lambda x: type(x) is dict,
}


def _compile(schema: dict[str, Any]) -> Check:
    """A checker for the keywords these schemas use (type, const, enum, bounds, lengths,
    required, properties, additionalProperties, items, minItems); anything else is refused
    here so a schema can never say more than the fast check enforces."""
    known = {
        "$schema", "$id", "title", "description", "type", "const", "enum", "minimum",
        "maximum", "exclusiveMinimum", "minLength", "maxLength", "required", "properties",
        "additionalProperties", "items", "minItems",
    }  # fmt: skip
    extra = set(schema) - known
    if extra:
        raise ValueError(f"schema keywords not supported by the fast check: {sorted(extra)}")
    checks: list[Check] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        tests = [_TYPES[n] for n in names]
        shown = " or ".join(names)

        def c_type(
            x: Any, path: str, tests: list[Callable[[Any], bool]] = tests, shown: str = shown
        ) -> str | None:
            for t in tests:
                if t(x):
                    return None
            return f"{path}: expected {shown}, got {type(x).__name__}"

        checks.append(c_type)
    if "const" in schema:
        want = schema["const"]

        def c_const(x: Any, p: str, w: Any = want) -> str | None:
            return None if x == w and type(x) is type(w) else f"{p}: must be {w!r}"

        checks.append(c_const)
    if "enum" in schema:
        allowed = tuple(schema["enum"])

        def c_enum(x: Any, p: str, a: tuple[Any, ...] = allowed) -> str | None:
            return None if x in a else f"{p}: not one of {list(a)}"

        checks.append(c_enum)
    bounds: tuple[tuple[str, Callable[[Any, Any], bool], str], ...] = (
        ("minimum", lambda x, b: bool(x >= b), ">="),
        ("maximum", lambda x, b: bool(x <= b), "<="),
        ("exclusiveMinimum", lambda x, b: bool(x > b), ">"),
    )
    for key, op, text in bounds:
        if key in schema:

            def c_bound(
                x: Any,
                p: str,
                b: Any = schema[key],
                op: Callable[[Any, Any], bool] = op,
                text: str = text,
            ) -> str | None:
                return None if not _is_number(x) or op(x, b) else f"{p}: must be {text} {b}"

            checks.append(c_bound)
    if "minLength" in schema or "maxLength" in schema:
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", sys.maxsize)

        def c_length(x: Any, p: str, lo: int = lo, hi: int = hi) -> str | None:
            if type(x) is not str or lo <= len(x) <= hi:
                return None
            return f"{p}: length must be in [{lo}, {hi}]"

        checks.append(c_length)
    if "minItems" in schema:
        n = schema["minItems"]

        def c_min_items(x: Any, p: str, n: int = n) -> str | None:
            return None if type(x) is not list or len(x) >= n else f"{p}: < {n} items"

        checks.append(c_min_items)
    if "items" in schema:
        item = _compile(schema["items"])

        def c_items(x: Any, path: str, item: Check = item) -> str | None:
            if type(x) is list:
                for i, v in enumerate(x):
                    err = item(v, f"{path}[{i}]")
                    if err:
                        return err
            return None

        checks.append(c_items)
    if "required" in schema or "properties" in schema or "additionalProperties" in schema:
        required = tuple(schema.get("required", ()))
        props = {k: _compile(v) for k, v in schema.get("properties", {}).items()}
        addl = schema.get("additionalProperties", True)
        addl_check = _compile(addl) if isinstance(addl, dict) else None

        def c_obj(x: Any, path: str) -> str | None:
            if type(x) is not dict:
                return None
            for k in required:
                if k not in x:
                    return f"{path}: missing {k!r}"
            for k, v in x.items():
                c = props.get(k)
                if c is not None:
                    err = c(v, f"{path}.{k}")
                elif addl is False:
                    err = f"{path}: unexpected {k!r}"
                elif addl_check is not None:
                    err = addl_check(v, f"{path}.{k}")
                else:
                    continue
                if err:
                    return err
            return None

        checks.append(c_obj)

    if len(checks) == 1:
        return checks[0]

    def c_all(x: Any, path: str) -> str | None:
        for c in checks:
            err = c(x, path)
            if err:
                return err
        return None

    return c_all


_CHECKS: dict[str, Check] = {k: _compile(s) for k, s in all_schemas().items()}


def problem(kind: str, body: Any) -> str | None:
    """The first way `body` breaks the schema of `kind`, or None if it conforms."""
    check = _CHECKS.get(kind)
    if check is None:
        return f"unknown kind {kind!r}"
    return check(body, kind)


def validate(kind: str, body: Any) -> None:
    """Raise ProtocolError if `body` breaks the schema of `kind` (unknown kinds too)."""
    err = problem(kind, body)
    if err:
        raise ProtocolError(err)


# -- topics and envelopes -----------------------------------------------------------------------


def topic(kind: str, key: str | None = None) -> str:
    """The topic frame text: the kind, or ``KIND.KEY``."""
    return kind if key is None else f"{kind}.{key}"


def kind_of(topic_text: str) -> str:
    """The kind of a topic frame: ``regime.BTC-USD`` -> ``regime``."""
    return topic_text.partition(".")[0]


def matches(topic_text: str, prefixes: Iterable[str]) -> bool:
    """Would a SUB socket subscribed to `prefixes` receive `topic_text`? (ZeroMQ: byte prefix.)"""
    return any(topic_text.startswith(p) for p in prefixes)


_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(obj: Any) -> str:
    """Compact, strict JSON (NaN and infinities refused), as every body on the wire."""
    return _encoder.encode(obj)


def jsonable(x: Any) -> Any:
    """Counters, paths, tuples and non-finite floats made fit for strict JSON (metrics)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple | set | frozenset):
        return [jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, bool | int | str):
        return x
    if hasattr(x, "item"):  # numpy scalars
        return jsonable(x.item())
    return str(x)


def encode_body(seq: int, ts: float, payload: dict[str, Any]) -> bytes:
    """The JSON body: envelope first, then the payload (ValueError on NaN or infinity)."""
    return _encoder.encode({"v": VERSION, "seq": seq, "ts": ts, **payload}).encode()


def encode(topic_text: str, seq: int, ts: float, payload: dict[str, Any]) -> list[bytes]:
    """The two frames of a message."""
    return [topic_text.encode(), encode_body(seq, ts, payload)]


_json_str = _encoder.encode


class RegimeEncoder:
    """Regime bodies without building a dict: the hot path of the tick service.

    Produces the same JSON values as ``encode_body(seq, ts, decode.to_wire())``
    (a test holds it to that): probabilities rounded to 6 decimals (``%.6f``
    rounds exactly like `round`), floats as `repr` (valid JSON when finite, and
    the tracker lets through finite ticks only). Anything unusual (``extra``
    fields, a missing smoothed time) goes through the dict path.
    """

    def __init__(self) -> None:
        self._topics: dict[str, bytes] = {}
        self._symbols: dict[str, str] = {}
        self._regimes: dict[str, str] = {}
        self._probs: dict[int, str] = {}

    def topic(self, symbol: str) -> bytes:
        t = self._topics.get(symbol)
        if t is None:
            t = self._topics[symbol] = f"{REGIME}.{symbol}".encode()
        return t

    def encode(self, d: Any, seq: int, ts_text: str) -> bytes:
        """The body of decode `d` as message `seq`, published at `ts_text` (a float's repr)."""
        if d.extra or (d.smoothed_state is not None and d.smoothed_t is None):
            return encode_body(seq, float(ts_text), d.to_wire())
        # the constant pieces are cached per symbol, regime name and K: ~2.3 us a message
        sym = self._symbols.get(d.symbol)
        if sym is None:
            sym = self._symbols[d.symbol] = f',"symbol":{_json_str(d.symbol)},"t":'
        reg = self._regimes.get(d.regime)
        if reg is None:
            reg = self._regimes[d.regime] = f',"regime":{_json_str(d.regime)},"probs":['
        probs = d.probs
        fmt = self._probs.get(len(probs))
        if fmt is None:
            fmt = self._probs[len(probs)] = ",".join(["%.6f"] * len(probs))
        ss = d.smoothed_state
        if ss is None:
            tail = '],"changed":true}' if d.changed else '],"changed":false}'
        else:
            tail = (
                f'],"changed":{"true" if d.changed else "false"},'
                f'"smoothed_state":{ss:d},"smoothed_t":{d.smoothed_t!r}}}'
            )
        return (
            f'{{"v":{VERSION},"seq":{seq},"ts":{ts_text}{sym}{d.t!r},"price":{d.price!r},'
            f'"state":{d.state:d}{reg}{fmt % probs}{tail}'
        ).encode()


@dataclass(frozen=True, slots=True)
class Message:
    """A message as a subscriber sees it: topic frame text, decoded body, where it came from."""

    topic: str
    body: dict[str, Any]
    snapshot: bool = False  # delivered from the join snapshot, not live
    gap: int = 0  # messages lost on this topic just before this one

    @property
    def kind(self) -> str:
        return kind_of(self.topic)

    @property
    def seq(self) -> int:
        return int(self.body["seq"])

    @property
    def ts(self) -> float:
        return float(self.body["ts"])

    def to_json(self) -> dict[str, Any]:
        """One JSON line for `streamer listen`: the topic, markers, then the body.

        The markers (``from_snapshot``, ``lost_before``) are names no body uses.
        """
        line: dict[str, Any] = {"topic": self.topic}
        if self.snapshot:
            line["from_snapshot"] = True
        if self.gap:
            line["lost_before"] = self.gap
        line.update(self.body)
        return line


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_strict = json.JSONDecoder(parse_constant=_no_constants)
_raw_decode = _strict.raw_decode


def loads(data: bytes | str) -> Any:
    """Strict JSON: NaN and Infinity, which Python's json accepts, are refused.

    A decoder made once and `raw_decode` (2.5 times faster than `json.loads`,
    which builds a decoder per call when given options); whitespace around the
    value is still allowed, anything else after it is not.
    """
    s = data if isinstance(data, str) else bytes(data).decode()
    try:
        obj, end = _raw_decode(s)
    except ValueError:
        return _strict.decode(s)  # leading whitespace, or the precise error
    if end != len(s) and s[end:].strip(" \t\n\r"):
        raise ValueError(f"extra data after the JSON value at {end}")
    return obj


def decode(frames: Sequence[bytes], *, check: bool = True) -> Message:
    """Two frames into a Message; ProtocolError naming the problem (with `check`: the schema)."""
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames [topic, body], got {len(frames)}")
    try:
        topic_text = bytes(frames[0]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("topic frame is not UTF-8") from None
    try:
        body = loads(bytes(frames[1]))
    except ValueError as e:
        raise ProtocolError(f"{topic_text}: body is not JSON ({e})") from None
    if type(body) is not dict:
        raise ProtocolError(f"{topic_text}: body is not a JSON object")
    if check:
        kind = kind_of(topic_text)
        if kind in _CHECKS:
            err = _CHECKS[kind](body, topic_text)
            if err:
                raise ProtocolError(err)
        elif body.get("v") != VERSION or type(body.get("seq")) is not int:
            raise ProtocolError(f"{topic_text}: missing or wrong envelope (v, seq, ts)")
    return Message(topic_text, body)


# -- tick feed input ----------------------------------------------------------------------------

TICK_PROBLEMS = (
    "frames",  # not exactly [topic, body]
    "topic",  # first frame is not b"tick"
    "oversized",  # body longer than the limit
    "json",  # not UTF-8 JSON (NaN and Infinity included)
    "not_object",  # JSON, but not an object
    "missing_field",  # no symbol, t or price
    "wrong_type",  # symbol not a string, t or price not a number
    "bad_value",  # empty or too long symbol, price <= 0, t or price not finite
    "unknown_symbol",  # not in the configured symbol list
    "too_many_symbols",  # a new symbol beyond the configured maximum
)


class BadTick(ValueError):
    """A tick the feed drops; `kind` is one of TICK_PROBLEMS."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def parse_tick(body: bytes, max_bytes: int = MAX_TICK_BYTES) -> tuple[str, float, float]:
    """(symbol, t, price) from a tick body; BadTick with the reason otherwise.

    Written out by hand rather than through `validate`: it runs once per tick
    on the service's hot path, and must say *why* a tick is refused.
    """
    if len(body) > max_bytes:
        raise BadTick("oversized", f"{len(body)} bytes, limit {max_bytes}")
    try:
        # `loads` inlined for the common case (a compact object, nothing after it)
        text = body.decode()
        m, end = _raw_decode(text)
        if end != len(text):
            m = loads(text)
    except (ValueError, RecursionError) as e:
        try:
            m = loads(body)  # leading whitespace is fine; anything else has its message here
        except (ValueError, RecursionError):
            raise BadTick("json", str(e)) from None
    if type(m) is not dict:
        raise BadTick("not_object", f"a JSON {type(m).__name__}")
    try:
        symbol = m["symbol"]
        t = m["t"]
        price = m["price"]
    except KeyError as e:
        raise BadTick("missing_field", f"no {e.args[0]!r}") from None
    ts, tp = type(t), type(price)
    if (
        type(symbol) is not str
        or (ts is not float and ts is not int)
        or (tp is not float and tp is not int)
    ):
        raise BadTick(
            "wrong_type",
            f"symbol {type(symbol).__name__}, t {ts.__name__}, price {tp.__name__}",
        )
    if (
        not (0 < len(symbol) <= MAX_SYMBOL)
        or not (0.0 < price < math.inf)
        or not (-math.inf < t < math.inf)
    ):
        raise BadTick("bad_value", f"symbol {symbol[:80]!r}, t {t!r}, price {price!r}")
    return symbol, float(t), float(price)


def encode_tick(symbol: str, t: float, price: float) -> list[bytes]:
    """A tick message as a producer sends it (tests, the benchmark, examples)."""
    return [TICK_TOPIC, _encoder.encode({"symbol": symbol, "t": t, "price": price}).encode()]


# -- snapshots ----------------------------------------------------------------------------------


def snapshot_request(prefixes: Sequence[str]) -> list[bytes]:
    """A late joiner's request: the state for every topic starting with one of `prefixes`."""
    return [SNAPSHOT, _encoder.encode({"v": VERSION, "topics": list(prefixes)}).encode()]


def parse_snapshot_request(frames: Sequence[bytes]) -> list[str]:
    """The prefixes asked for (ProtocolError when the request is malformed)."""
    if len(frames) != 2 or bytes(frames[0]) != SNAPSHOT:
        raise ProtocolError('expected [b\'snapshot\', {"v": 1, "topics": [...]}]')
    try:
        req = loads(bytes(frames[1]))
    except ValueError:
        raise ProtocolError("snapshot request is not JSON") from None
    topics = req.get("topics") if type(req) is dict else None
    if (
        type(req) is not dict
        or req.get("v") != VERSION
        or type(topics) is not list
        or not all(type(t) is str for t in topics)
    ):
        raise ProtocolError(f'snapshot request must be {{"v": {VERSION}, "topics": [str, ...]}}')
    return topics


def snapshot_reply(
    session: str, ts: float, seqs: dict[str, int], items: Sequence[tuple[bytes, bytes]]
) -> list[bytes]:
    """The reply: ``[b"snapshot", meta, topic, body, ...]``, items already encoded."""
    meta = {"v": VERSION, "ts": ts, "session": session, "seq": seqs, "count": len(items)}
    frames = [SNAPSHOT, _encoder.encode(meta).encode()]
    for t, b in items:
        frames += [t, b]
    return frames


def parse_snapshot_reply(
    frames: Sequence[bytes], *, check: bool = True
) -> tuple[dict[str, Any], list[Message]]:
    """(meta, messages) from a reply; ProtocolError for an error reply or a malformed one."""
    if len(frames) >= 2 and bytes(frames[0]) == SNAPSHOT_ERROR:
        raise ProtocolError(f"snapshot refused: {bytes(frames[1]).decode(errors='replace')}")
    if len(frames) < 2 or bytes(frames[0]) != SNAPSHOT or len(frames) % 2:
        raise ProtocolError("malformed snapshot reply")
    try:
        meta = loads(bytes(frames[1]))
    except ValueError:
        raise ProtocolError("snapshot metadata is not JSON") from None
    err = _CHECKS["snapshot"](meta, "snapshot") if check else None
    if err:
        raise ProtocolError(err)
    items = [decode(frames[i : i + 2], check=check) for i in range(2, len(frames), 2)]
    msgs = [Message(m.topic, m.body, snapshot=True) for m in items]
    return meta, msgs


def error_reply(text: str) -> list[bytes]:
    return [SNAPSHOT_ERROR, text.encode()]


__all__ = [
    "DEFAULT_HEARTBEAT",
    "DEFAULT_HWM",
    "DEFAULT_PUB",
    "HEARTBEAT",
    "KINDS",
    "MAX_TICK_BYTES",
    "METRICS",
    "POLICIES",
    "REGIME",
    "SCHEMAS",
    "SNAPSHOT_SCHEMA",
    "SPEECH",
    "STATES",
    "STATUS",
    "TICK",
    "TICK_PROBLEMS",
    "TICK_SCHEMA",
    "TICK_TOPIC",
    "VERSION",
    "BadTick",
    "Message",
    "RegimeEncoder",
    "all_schemas",
    "decode",
    "dumps",
    "encode",
    "encode_body",
    "encode_tick",
    "error_reply",
    "jsonable",
    "kind_of",
    "loads",
    "matches",
    "parse_snapshot_reply",
    "parse_snapshot_request",
    "parse_tick",
    "problem",
    "snapshot_reply",
    "snapshot_request",
    "topic",
    "validate",
    "write_schemas",
]

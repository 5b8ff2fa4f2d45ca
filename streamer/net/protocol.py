"""The wire protocol (docs/protocol.md): the one module that knows what goes on the wire.

Every message is two frames, ``[topic, body]``. The topic is a kind (``speech``,
``regime``, ``summary``, ``heartbeat``, ``status``, ``metrics``), optionally followed by
``.KEY`` for finer prefix filtering (``regime.BTC-USD``); ZeroMQ filters by
prefix, so subscribing to the bare kind gets every key. The body is UTF-8 JSON
with the envelope ``v`` (schema version), ``seq`` (consecutive per topic frame,
from 0) and ``ts`` (publish time, UNIX seconds), then the kind's own fields.

Each kind is a typed msgspec Struct below, and that is the source of truth: msgspec
encodes them, decodes and validates bodies into them (well under a microsecond
each, in C), and writes ``docs/schemas/*.json`` from them (`write_schemas`; a test
checks the files are current). Consumers must ignore fields they do not know (the
Structs do): adding a field does not change `v`, renaming or removing one does.

Outside producers send ticks in as ``[b"tick", {"symbol", "t", "price"}]``
(`parse_tick`, `parse_ticks`); late joiners ask for a snapshot with
``[b"snapshot", {"v", "topics"}]`` and get ``[b"snapshot", meta, topic, body, ...]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias, TypeVar

import msgspec
import numpy as np
from msgspec import UNSET, Meta, Struct, UnsetType

from streamer.errors import ProtocolError
from streamer.messages import DecodeBatch, RegimeDecode

VERSION: Literal[1] = 1

SPEECH = "speech"
REGIME = "regime"
HEARTBEAT = "heartbeat"
STATUS = "status"
METRICS = "metrics"
SUMMARY = "summary"
KINDS = (SPEECH, REGIME, HEARTBEAT, STATUS, METRICS, SUMMARY)

TICK = "tick"  # input: outside producers -> the service's tick feed
TICK_TOPIC = b"tick"
SNAPSHOT = b"snapshot"  # request and reply, on the snapshot (ROUTER) socket
PROGRESS = b"progress"  # a subscriber's progress report, on the snapshot socket (no reply)
SNAPSHOT_ERROR = b"error"

DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_HWM = 200_000  # messages queued per subscriber before sends fail (see docs/protocol.md)
DEFAULT_HEARTBEAT = 0.5  # seconds between heartbeats: "at least once a second" with margin
MAX_TICK_BYTES = 4096
MAX_SYMBOL = 64

STATES = ("starting", "waiting", "running", "draining", "stopped")
POLICIES = ("fair", "lossless", "lossy")
State = Literal["starting", "waiting", "running", "draining", "stopped"]
PublishPolicy = Literal["fair", "lossless", "lossy"]
Policy = Literal["nodrop", "lossy"]  # what the socket does at a full queue right now

# -- the messages -------------------------------------------------------------------------------

NonNegInt = Annotated[int, Meta(ge=0)]
NonNeg = Annotated[float, Meta(ge=0)]
Prob = Annotated[float, Meta(ge=0, le=1)]
Counts = dict[str, NonNegInt]
T = TypeVar("T")
Opt: TypeAlias = T | UnsetType  # an optional field: left out of the body when UNSET
Version = Annotated[Literal[1], Meta(description="schema version; a consumer rejects other values")]
Seq = Annotated[
    int, Meta(ge=0, description="per topic frame, consecutive from 0: a jump is a lost message")
]
EpochId = Annotated[
    str,
    Meta(
        description="the seq numbering: the same across a restart from saved state (seq goes "
        "on), new when seq restarts from 0"
    ),
]
LastSeqs = Annotated[
    Counts, Meta(description="last seq published per topic frame: a subscriber behind it lost some")
]


class Envelope(Struct, kw_only=True):
    """What every published body starts with (any kind, known or not)."""

    v: Version
    seq: Seq
    ts: Annotated[float, Meta(description="publish time, UNIX seconds")]


class Candidate(Struct):
    """One entry of a word's n-best list."""

    label: str
    loglik: float


class Speech(Envelope, kw_only=True):
    """A recognised (or rejected) utterance; topic `speech`."""

    stream: Annotated[str, Meta(description="the audio stream (file or device)")]
    utterance: Annotated[int, Meta(ge=0, description="index in the stream")]
    label: Annotated[
        str | None, Meta(description="the word, or null when the utterance fits no word well")
    ]
    confidence: Prob
    start: Annotated[float, Meta(ge=0, description="stream seconds")]
    end: Annotated[float, Meta(ge=0, description="stream seconds")]
    nbest: list[Candidate]
    closed_at: Opt[Annotated[float, Meta(description="stream time the utterance closed")]] = UNSET
    error: Opt[Annotated[str, Meta(description="why recognition failed, if it did")]] = UNSET
    delay_ms: Opt[Annotated[float, Meta(description="close-to-publish wall time")]] = UNSET


class Regime(Envelope, kw_only=True):
    """The online regime decode after one tick; topic `regime.SYMBOL`."""

    symbol: Annotated[str, Meta(min_length=1)]
    t: Annotated[float, Meta(description="tick time, UNIX seconds")]
    price: Annotated[float, Meta(gt=0)]
    state: Annotated[
        int,
        Meta(ge=0, description="the decided regime (held until the filter is sure of another)"),
    ]
    regime: Annotated[str, Meta(description="its name")]
    probs: Annotated[
        list[Prob],
        Meta(min_length=1, description="filtered P(state | ticks so far), rounded to 6 decimals"),
    ]
    changed: Annotated[bool, Meta(description="the decided regime changed")]
    smoothed_state: Opt[NonNegInt] = UNSET
    smoothed_t: Opt[float] = UNSET


class Level(Struct):
    """One audio stream's level over the last heartbeat interval (full scale is 0 dBFS)."""

    rms_dbfs: Annotated[float, Meta(ge=-120, le=0, description="RMS, dBFS (silence: -120)")]
    peak_dbfs: Annotated[float, Meta(ge=-120, le=0, description="peak sample, dBFS")]


class Heartbeat(Envelope, kw_only=True):
    """Publisher liveness, at least once a second; topic `heartbeat`."""

    session: Annotated[str, Meta(description="new each time the publisher starts")]
    epoch: Opt[EpochId] = UNSET
    interval: Annotated[float, Meta(gt=0)]
    uptime: Opt[NonNeg] = UNSET
    subscribers: Opt[NonNegInt] = UNSET
    snapshot: Opt[Annotated[str | None, Meta(description="snapshot endpoint")]] = UNSET
    hwm: Opt[
        Annotated[NonNegInt, Meta(description="the publisher's queue per subscriber (0: no limit)")]
    ] = UNSET
    last: LastSeqs
    levels: Opt[
        Annotated[
            dict[str, Level],
            Meta(description="audio level per capture stream that had samples since the last"),
        ]
    ] = UNSET


class Status(Envelope, kw_only=True):
    """Service life cycle, published on every change; topic `status`."""

    state: State
    session: str
    epoch: Opt[EpochId] = UNSET
    pid: Opt[int] = UNSET
    version: Opt[str] = UNSET
    pub: Opt[str] = UNSET
    snapshot: Opt[str | None] = UNSET
    subscribers: Opt[NonNegInt] = UNSET
    sources: Opt[list[str]] = UNSET
    detail: Opt[str] = UNSET


class Readers(Struct, kw_only=True):
    """What subscribers that report their progress (`streamer.net.Subscriber`) said."""

    reporting: Annotated[NonNegInt, Meta(description="subscribers that reported lately")]
    behind: Annotated[
        NonNegInt, Meta(description="...of those, more than half the queue behind and reading")
    ]
    stalled: Annotated[
        NonNegInt, Meta(description="...of those, not reading for the stall timeout")
    ]
    missed: Annotated[NonNegInt, Meta(description="messages they saw lost (gaps in seq)")]
    resyncs: Annotated[NonNegInt, Meta(description="snapshots they took again after a gap")]


class Metrics(Envelope, kw_only=True):
    """Counters, every few seconds and at shutdown; topic `metrics`."""

    session: str
    epoch: Opt[EpochId] = UNSET
    uptime: NonNeg
    subscribers: NonNegInt
    hwm: NonNegInt
    policy: Annotated[
        Policy,
        Meta(description="now: a full queue refuses sends (nodrop) or drops its messages (lossy)"),
    ]
    publishing: Opt[Annotated[PublishPolicy, Meta(description="the policy chosen (--policy)")]] = (
        UNSET
    )
    stalls: Opt[
        Annotated[NonNegInt, Meta(description="times a stalled subscriber was cut loose (fair)")]
    ] = UNSET
    recoveries: Opt[
        Annotated[NonNegInt, Meta(description="times every queue had room again (fair)")]
    ] = UNSET
    held: Opt[
        Annotated[NonNegInt, Meta(description="messages waiting for room (a waiting replay)")]
    ] = UNSET
    readers: Opt[Readers] = UNSET
    sent: Annotated[Counts, Meta(description="messages sent, per kind")]
    dropped: Annotated[Counts, Meta(description="messages dropped at the high-water mark")]
    invalid: Opt[NonNegInt] = UNSET
    snapshots: Opt[NonNegInt] = UNSET
    feed: Opt[dict[str, Any]] = UNSET
    speech: Opt[dict[str, Any]] = UNSET
    ticks: Opt[dict[str, Any]] = UNSET


class Summary(Envelope, kw_only=True):
    """A symbol's regime decodes over the last summary interval; topic `summary.SYMBOL`.

    For clients that want a chart, not every decode (the dashboard): one message per
    symbol and interval, whatever the tick rate.
    """

    symbol: Annotated[str, Meta(min_length=1)]
    ticks: Annotated[int, Meta(ge=1, description="decodes in the interval")]
    t0: Annotated[float, Meta(description="tick time of the first, UNIX seconds")]
    t: Annotated[float, Meta(description="tick time of the last, UNIX seconds")]
    first: Annotated[float, Meta(gt=0)]
    low: Annotated[float, Meta(gt=0)]
    high: Annotated[float, Meta(gt=0)]
    last: Annotated[float, Meta(gt=0)]
    state: Annotated[int, Meta(ge=0, description="the last decode's decided regime")]
    regime: Annotated[str, Meta(description="its name")]
    probs: Annotated[list[Prob], Meta(min_length=1, description="the last decode's probs")]
    changes: Annotated[int, Meta(ge=0, description="decodes in the interval that changed regime")]
    regime_ts: Annotated[float, Meta(description="publish time of the last decode (its `ts`)")]
    regime_seq: Annotated[int, Meta(ge=0, description="its seq on `regime.SYMBOL`")]


class Tick(Struct):
    """A price tick from an outside producer; topic `tick` (input)."""

    symbol: Annotated[str, Meta(min_length=1, max_length=MAX_SYMBOL)]
    t: Annotated[float, Meta(description="UNIX seconds; strictly increasing per symbol")]
    price: Annotated[float, Meta(gt=0)]


class SnapshotMeta(Struct, kw_only=True):
    """Snapshot reply metadata (second frame of the reply)."""

    v: Literal[1]
    ts: float
    session: str
    epoch: Opt[EpochId] = UNSET
    seq: Annotated[
        Counts,
        Meta(description="last seq per topic frame when taken: drop updates at or below it"),
    ]
    count: Annotated[int, Meta(ge=0, description="(topic, body) pairs after it")]


class SnapshotRequest(Struct, kw_only=True):
    """A late joiner's request: the state of every topic starting with one of `topics`."""

    v: Literal[1]
    topics: list[str]


class Progress(Struct, kw_only=True):
    """A subscriber's progress report: ``[b"progress", body]`` on the snapshot socket, no reply."""

    v: Literal[1]
    client: Annotated[str, Meta(min_length=1, max_length=64, description="random, per client")]
    topics: Annotated[list[str], Meta(max_length=256, description="its subscriptions")]
    read: Annotated[
        NonNegInt,
        Meta(description="the next seq it expects, summed over its topic frames: how far it read"),
    ]
    missed: Annotated[NonNegInt, Meta(description="messages it saw lost")]
    resyncs: Annotated[NonNegInt, Meta(description="snapshots it took again after a gap")]


Body = Speech | Regime | Heartbeat | Status | Metrics | Summary | Envelope
TYPES: dict[str, type[Body]] = {
    SPEECH: Speech,
    REGIME: Regime,
    HEARTBEAT: Heartbeat,
    STATUS: Status,
    METRICS: Metrics,
    SUMMARY: Summary,
}
SCHEMA_TYPES: dict[str, type[Struct]] = {
    **TYPES,
    TICK: Tick,
    "snapshot": SnapshotMeta,
    "progress": Progress,
}

# -- encoding and decoding ----------------------------------------------------------------------


def _hook(x: Any) -> Any:
    """What msgspec does not know: numpy scalars and arrays as numbers, anything else as text."""
    return x.tolist() if hasattr(x, "tolist") else str(x)


_encoder = msgspec.json.Encoder(enc_hook=_hook)
_encode = _encoder.encode
_decoders = {cls: msgspec.json.Decoder(cls) for cls in (*SCHEMA_TYPES.values(), Envelope)}
_any = msgspec.json.Decoder()
_ticks = msgspec.json.Decoder(Tick)
_requests = msgspec.json.Decoder(SnapshotRequest)
_progress = msgspec.json.Decoder(Progress)


def dumps(obj: Any) -> str:
    """Compact JSON text of anything (non-finite floats as null), e.g. metrics on stderr."""
    return _encode(obj).decode()


def loads(data: bytes | str) -> Any:
    """Strict JSON (no NaN or Infinity, nothing after the value); ValueError otherwise."""
    return _any.decode(data)


def builtins(obj: Any) -> Any:
    """Counters, paths, numpy scalars... as plain JSON-able Python (metrics providers)."""
    return msgspec.to_builtins(obj, enc_hook=_hook, str_keys=True)


def parse_body(body: bytes, kind: str) -> Body:
    """The typed message in `body`; ProtocolError naming the problem (unknown kinds: envelope)."""
    try:
        out: Body = _decoders[TYPES.get(kind, Envelope)].decode(body)
    except msgspec.ValidationError as e:
        raise ProtocolError(f"{kind}: {e}") from None
    except msgspec.DecodeError as e:
        raise ProtocolError(f"{kind}: body is not JSON ({e})") from None
    return out


_KIND_OF: dict[type, str] = {cls: k for k, cls in TYPES.items()}


def encode(msg: Body | dict[str, Any], kind: str | None = None) -> bytes:
    """A message's body, checked against its Struct (NaN, a wrong type: ProtocolError).

    A dict is encoded as it is (envelope first; fields unknown to the Struct kept),
    then validated as `kind`.
    """
    body = _encode(msg)
    parse_body(body, kind or _KIND_OF[type(msg)])
    return body


def encode_body(kind: str, seq: int, ts: float, payload: dict[str, Any]) -> bytes:
    """The JSON body of `payload` as message `seq` of `kind` (ProtocolError if invalid)."""
    return encode({"v": VERSION, "seq": seq, "ts": ts, **payload}, kind)


def kind_of_type(msg: Body) -> str:
    """The kind a typed message is published as."""
    return _KIND_OF[type(msg)]


class _Row(Struct, omit_defaults=True, gc=False):
    """`Regime`'s fields in its order, made positionally: the tick path's row.

    Encodes to the very bytes of the `Regime` with the same values (a test holds
    it to that); an unset smoothed state is left out, as UNSET is.
    """

    v: int
    seq: int
    ts: float
    symbol: str
    t: float
    price: float
    state: int
    regime: str
    probs: list[float]
    changed: bool
    smoothed_state: int | None = None
    smoothed_t: float | None = None


def encode_regime(d: RegimeDecode, seq: int, ts: float) -> bytes:
    """The body of a regime decode as message `seq` (the tick path: a Struct, no dict).

    Valid by construction without a validation round: the fields are typed, the
    tracker lets through finite ticks only, and the probabilities are checked here.
    Anything unusual (``extra`` fields, a smoothed state without its time, odd
    probabilities) goes through `encode_body`, which validates.
    """
    ss, st = d.smoothed_state, d.smoothed_t
    probs = [round(p, 6) for p in d.probs]
    if d.extra or (ss is not None and st is None) or not (0.99 < sum(probs) < 1.01):
        return encode_body(REGIME, seq, ts, d.to_wire())
    if ss is None:
        st = None
    row = _Row(
        VERSION, seq, ts, d.symbol, d.t, d.price, d.state, d.regime, probs, d.changed, ss, st
    )
    return _encode(row)


def encode_regimes(b: DecodeBatch, seq: int, ts: float) -> list[bytes] | None:
    """The bodies of a batch of decodes as messages ``seq, seq + 1, ...``: the tick path.

    One pass over the arrays, no message object per tick: the probabilities are
    rounded to 6 decimals in numpy (``rint(p * 1e6) / 1e6``, which can differ from
    Python's `round` in the last digit only within a rounding error of a tie) and
    every value is checked at once. None if anything is unusual (not finite, out of
    range, an unknown state): the caller then encodes message by message with
    `encode_regime`, which validates, and drops only the bad ones.
    """
    n = len(b.t)
    if not n:
        return []
    probs = np.round(b.probs, 6)
    names = b.names
    sm = b.smoothed_state
    with_sm = sm >= 0
    sums = probs.sum(axis=1)
    if not (
        b.symbol
        and np.isfinite(probs).all()
        and (probs >= 0.0).all()
        and (probs <= 1.0).all()
        and ((sums > 0.99) & (sums < 1.01)).all()
        and np.isfinite(b.t).all()
        and ((b.price > 0.0) & np.isfinite(b.price)).all()
        and (b.state >= 0).all()
        and (b.state < len(names)).all()
        and np.isfinite(b.smoothed_t[with_sm]).all()
    ):
        return None
    enc = _encode
    sym = b.symbol
    if with_sm.all():
        sst: Iterable[int | None] = sm.tolist()
        stt: Iterable[float | None] = b.smoothed_t.tolist()
    elif not with_sm.any():
        sst, stt = repeat(None, n), repeat(None, n)
    else:
        sst = [s if s >= 0 else None for s in sm.tolist()]
        stt = [
            t if s >= 0 else None for s, t in zip(sm.tolist(), b.smoothed_t.tolist(), strict=True)
        ]
    return [
        enc(_Row(VERSION, q, ts, sym, t, p, s, names[s], pr, c, ss, st))
        for q, t, p, s, pr, c, ss, st in zip(
            range(seq, seq + n),
            b.t.tolist(),
            b.price.tolist(),
            b.state.tolist(),
            probs.tolist(),
            b.changed.tolist(),
            sst,
            stt,
            strict=True,
        )
    ]


def problem(kind: str, body: Any) -> str | None:
    """The first way a decoded `body` breaks the Struct of `kind`, or None if it conforms."""
    cls = SCHEMA_TYPES.get(kind)
    if cls is None:
        return f"unknown kind {kind!r}"
    try:
        _decoders[cls].decode(_encode(body))
    except msgspec.DecodeError as e:
        return f"{kind}: {e}"
    return None


# -- schemas ------------------------------------------------------------------------------------


def all_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every Struct by file stem: the kinds, the tick input, snapshot meta."""
    out = {}
    for name, cls in SCHEMA_TYPES.items():
        s = msgspec.json.schema(cls)
        defs = s.pop("$defs")
        top = defs.pop(cls.__name__)
        out[name] = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"https://streamer.invalid/schemas/{name}.json",
            **top,
            **({"$defs": defs} if defs else {}),
        }
    return out


def write_schemas(folder: str | Path) -> list[Path]:
    """Write docs/schemas/*.json (what the docs link to) from the Structs."""
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for name, schema in all_schemas().items():
        p = d / f"{name}.json"
        p.write_text(json.dumps(schema, indent=2) + "\n")
        out.append(p)
    return out


# -- topics and received messages ---------------------------------------------------------------


def topic(kind: str, key: str | None = None) -> str:
    """The topic frame text: the kind, or ``KIND.KEY``."""
    return kind if key is None else f"{kind}.{key}"


def kind_of(topic_text: str) -> str:
    """The kind of a topic frame: ``regime.BTC-USD`` -> ``regime``."""
    return topic_text.partition(".")[0]


def matches(topic_text: str, prefixes: Iterable[str]) -> bool:
    """Would a SUB socket subscribed to `prefixes` receive `topic_text`? (ZeroMQ: byte prefix.)"""
    return any(topic_text.startswith(p) for p in prefixes)


class Message:
    """A message as a subscriber sees it: topic, typed body (`data`), where it came from.

    `body` is the body as a plain dict (every field, known or not), decoded when
    first asked for.
    """

    __slots__ = ("_body", "data", "gap", "raw", "snapshot", "topic")

    def __init__(
        self,
        topic: str,
        data: Body,
        raw: bytes | None = None,
        *,
        snapshot: bool = False,  # delivered from the join snapshot, not live
        gap: int = 0,  # messages lost on this topic just before this one
    ) -> None:
        self.topic = topic
        self.data = data
        self.raw = raw
        self.snapshot = snapshot
        self.gap = gap
        self._body: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"Message({self.topic!r}, {self.data!r}, snapshot={self.snapshot}, gap={self.gap})"

    def marked(self, *, snapshot: bool | None = None, gap: int | None = None) -> Message:
        m = Message(self.topic, self.data, self.raw, snapshot=self.snapshot, gap=self.gap)
        m._body = self._body
        if snapshot is not None:
            m.snapshot = snapshot
        if gap is not None:
            m.gap = gap
        return m

    @property
    def kind(self) -> str:
        return kind_of(self.topic)

    @property
    def seq(self) -> int:
        return self.data.seq

    @property
    def ts(self) -> float:
        return self.data.ts

    @property
    def body(self) -> dict[str, Any]:
        if self._body is None:
            b = _any.decode(self.raw) if self.raw is not None else msgspec.to_builtins(self.data)
            self._body = b
        return self._body

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


def decode(frames: Sequence[bytes], *, check: bool = True) -> Message:
    """Two frames into a Message; ProtocolError naming the problem.

    With `check` the body must be its kind's Struct; without, only the envelope.
    """
    if len(frames) != 2:
        raise ProtocolError(f"expected 2 frames [topic, body], got {len(frames)}")
    try:
        topic_text = bytes(frames[0]).decode()
    except UnicodeDecodeError:
        raise ProtocolError("topic frame is not UTF-8") from None
    raw = bytes(frames[1])
    kind = kind_of(topic_text) if check else ""
    return Message(topic_text, parse_body(raw, kind), raw)


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


def _tick_problem(e: msgspec.DecodeError) -> str:
    """msgspec's message, sorted into TICK_PROBLEMS."""
    text = str(e)
    if not isinstance(e, msgspec.ValidationError):
        return "json"
    if "missing required field" in text:
        return "missing_field"
    if text.startswith("Expected `object`"):
        return "not_object"
    if "out of range" in text or " of length " in text or text.startswith("Expected `float` >"):
        return "bad_value"
    return "wrong_type"


def parse_tick(body: bytes, max_bytes: int = MAX_TICK_BYTES) -> Tick:
    """The tick in one body; BadTick with the reason otherwise."""
    if len(body) > max_bytes:
        raise BadTick("oversized", f"{len(body)} bytes, limit {max_bytes}")
    try:
        return _ticks.decode(body)
    except msgspec.DecodeError as e:
        raise BadTick(_tick_problem(e), str(e)) from None


def parse_ticks(bodies: Sequence[bytes], max_bytes: int = MAX_TICK_BYTES) -> list[Tick] | None:
    """The ticks of a whole batch in one decoder call, or None if any body needs a closer look.

    The bodies are joined as JSON lines; a body with a line break in it (which could
    pass for two) or one over the limit sends the batch to `parse_tick`, as does any
    error, and so does a count that is not one tick per body.
    """
    n = len(bodies)
    if not n or max(map(len, bodies)) > max_bytes:
        return None
    lines = b"\n".join(bodies)
    if lines.count(b"\n") != n - 1:
        return None
    try:
        out = _ticks.decode_lines(lines)
    except msgspec.DecodeError:
        return None
    return out if len(out) == n else None


def encode_tick(symbol: str, t: float, price: float) -> list[bytes]:
    """A tick message as a producer sends it (tests, the benchmark, examples)."""
    return [TICK_TOPIC, _encode(Tick(symbol, t, price))]


# -- snapshots ----------------------------------------------------------------------------------


def snapshot_request(prefixes: Sequence[str]) -> list[bytes]:
    """A late joiner's request: the state for every topic starting with one of `prefixes`."""
    return [SNAPSHOT, _encode(SnapshotRequest(v=VERSION, topics=list(prefixes)))]


def parse_snapshot_request(frames: Sequence[bytes]) -> list[str]:
    """The prefixes asked for (ProtocolError when the request is malformed)."""
    if len(frames) != 2 or bytes(frames[0]) != SNAPSHOT:
        raise ProtocolError('expected [b\'snapshot\', {"v": 1, "topics": [...]}]')
    try:
        return _requests.decode(frames[1]).topics
    except msgspec.DecodeError as e:
        raise ProtocolError(
            f'snapshot request must be {{"v": {VERSION}, "topics": [str, ...]}} ({e})'
        ) from None


def snapshot_reply(
    session: str,
    ts: float,
    seqs: dict[str, int],
    items: Sequence[tuple[bytes, bytes]],
    epoch: str | None = None,
) -> list[bytes]:
    """The reply: ``[b"snapshot", meta, topic, body, ...]``, items already encoded."""
    meta = SnapshotMeta(
        v=VERSION,
        ts=ts,
        session=session,
        epoch=UNSET if epoch is None else epoch,
        seq=seqs,
        count=len(items),
    )
    frames = [SNAPSHOT, _encode(meta)]
    for t, b in items:
        frames += [t, b]
    return frames


def parse_snapshot_reply(
    frames: Sequence[bytes], *, check: bool = True
) -> tuple[SnapshotMeta, list[Message]]:
    """(meta, messages) from a reply; ProtocolError for an error reply or a malformed one."""
    if len(frames) >= 2 and bytes(frames[0]) == SNAPSHOT_ERROR:
        raise ProtocolError(f"snapshot refused: {bytes(frames[1]).decode(errors='replace')}")
    if len(frames) < 2 or bytes(frames[0]) != SNAPSHOT or len(frames) % 2:
        raise ProtocolError("malformed snapshot reply")
    try:
        meta = _decoders[SnapshotMeta].decode(frames[1])
    except msgspec.DecodeError as e:
        raise ProtocolError(f"snapshot metadata: {e}") from None
    items = [decode(frames[i : i + 2], check=check) for i in range(2, len(frames), 2)]
    for m in items:
        m.snapshot = True
    return meta, items


def progress_report(
    client: str, topics: Sequence[str], read: int, missed: int, resyncs: int
) -> list[bytes]:
    """A subscriber's progress report (`Progress`), sent on the snapshot socket."""
    body = Progress(
        v=VERSION, client=client, topics=list(topics), read=read, missed=missed, resyncs=resyncs
    )
    return [PROGRESS, _encode(body)]


def parse_progress(frames: Sequence[bytes]) -> Progress:
    """A progress report's body (ProtocolError when malformed)."""
    if len(frames) != 2 or bytes(frames[0]) != PROGRESS:
        raise ProtocolError("expected [b'progress', body]")
    try:
        return _progress.decode(frames[1])
    except msgspec.DecodeError as e:
        raise ProtocolError(f"progress report: {e}") from None


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
    "PROGRESS",
    "REGIME",
    "SCHEMA_TYPES",
    "SPEECH",
    "STATES",
    "STATUS",
    "SUMMARY",
    "TICK",
    "TICK_PROBLEMS",
    "TICK_TOPIC",
    "TYPES",
    "UNSET",
    "VERSION",
    "BadTick",
    "Body",
    "Candidate",
    "Envelope",
    "Heartbeat",
    "Level",
    "Message",
    "Metrics",
    "Progress",
    "PublishPolicy",
    "Readers",
    "Regime",
    "SnapshotMeta",
    "SnapshotRequest",
    "Speech",
    "State",
    "Status",
    "Summary",
    "Tick",
    "all_schemas",
    "builtins",
    "decode",
    "dumps",
    "encode",
    "encode_body",
    "encode_regime",
    "encode_regimes",
    "encode_tick",
    "error_reply",
    "kind_of",
    "kind_of_type",
    "loads",
    "matches",
    "parse_body",
    "parse_progress",
    "parse_snapshot_reply",
    "parse_snapshot_request",
    "parse_tick",
    "parse_ticks",
    "problem",
    "progress_report",
    "snapshot_reply",
    "snapshot_request",
    "topic",
    "write_schemas",
]

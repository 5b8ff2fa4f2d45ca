"""The message types that pass between stages; nothing else crosses a stage boundary.

Sample counts, not wall-clock readings, carry stream time: the same replay gives
the same messages whatever the chunk size and whatever the machine's speed.
Wire encoding (`to_wire`) gives the JSON body of docs/protocol.md, minus the
envelope fields (`v`, `seq`, `ts`) that the publisher adds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, overload

import msgspec
import numpy as np


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A block of captured or replayed audio: int16 mono at `rate`, starting at sample `start`."""

    stream: str
    samples: np.ndarray
    rate: int
    start: int  # index of the first sample in the stream


@dataclass(frozen=True, slots=True)
class Utterance:
    """A stretch of speech cut by the segmenter; times in stream seconds."""

    stream: str
    index: int  # 0, 1, 2... within the stream
    samples: np.ndarray  # float32 mono at `rate`
    rate: int
    start: float
    end: float
    closed_at: float  # stream time at which the segmenter closed it (>= end)
    split: bool = False  # closed at the maximum length, speech goes on


@dataclass(frozen=True, slots=True)
class Recognition:
    """What the bank says about one utterance."""

    label: str | None  # None: the utterance fits no word well (rejected)
    confidence: float  # calibrated probability that `label` is right, in [0, 1]
    nbest: tuple[tuple[str, float], ...]  # (word, log-likelihood), best first
    best: str = ""  # the best-scoring word even when rejected


@dataclass(frozen=True, slots=True)
class WordEvent:
    """A recognised (or rejected) utterance, ready to publish on topic `speech`."""

    stream: str
    index: int
    start: float
    end: float
    recognition: Recognition
    error: str | None = None
    closed_at: float | None = None  # stream time the segmenter closed the utterance (latency)

    topic = "speech"

    def to_wire(self) -> dict[str, Any]:
        r = self.recognition
        body: dict[str, Any] = {
            "stream": self.stream,
            "utterance": self.index,
            "label": r.label,
            "confidence": round(float(r.confidence), 4),
            "start": round(self.start, 4),
            "end": round(self.end, 4),
            "nbest": [{"label": w, "loglik": round(float(s), 3)} for w, s in r.nbest],
        }
        if self.closed_at is not None:
            body["closed_at"] = round(self.closed_at, 4)
        if self.error:
            body["error"] = self.error
        return body


@dataclass(frozen=True, slots=True)
class Tick:
    """One price observation; `t` is UNIX seconds (UTC)."""

    symbol: str
    t: float
    price: float


class RegimeDecode(msgspec.Struct):  # one per tick: a Struct is made ~4x faster than a dataclass
    """The online regime decode after one tick, ready to publish on topic `regime`.

    `state` and `regime` are the published decision (it moves only when the filter
    holds a regime with enough probability for long enough); `probs` are the raw
    filtered probabilities, whose argmax is the filter's own answer.
    """

    symbol: str
    t: float
    price: float
    state: int  # the decided regime, ordered by volatility (0 = calmest)
    regime: str  # its name
    probs: tuple[float, ...]  # filtered P(state | ticks so far), sums to 1
    changed: bool  # the decided regime differs from the previous tick's
    smoothed_state: int | None = None  # fixed-lag smoothed state for the tick `lag` ticks back
    smoothed_t: float | None = None  # time of that earlier tick
    extra: dict[str, Any] = {}  # copied per instance by msgspec

    topic: ClassVar[str] = "regime"

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": self.symbol,
            "t": self.t,
            "price": self.price,
            "state": self.state,
            "regime": self.regime,
            "probs": [round(float(p), 6) for p in self.probs],
            "changed": self.changed,
        }
        if self.smoothed_state is not None:
            body["smoothed_state"] = self.smoothed_state
            body["smoothed_t"] = self.smoothed_t
        body.update(self.extra)
        return body


@dataclass(frozen=True, eq=False)
class DecodeBatch(Sequence[RegimeDecode]):
    """Decodes of consecutive ticks of one symbol as arrays (``step_many``).

    A sequence of `RegimeDecode` made on demand (`decodes()` gives them all), so any
    sink takes it; the publisher encodes it straight from the arrays, with no
    message object per tick (`streamer.net.protocol.encode_regimes`).
    """

    symbol: str
    names: tuple[str, ...]
    t: np.ndarray  # (n,)
    price: np.ndarray  # (n,)
    probs: np.ndarray  # (n, K) filtered
    state: np.ndarray  # (n,) the published decision (see `RegimeDecoder`)
    changed: np.ndarray  # (n,) bool: the decision differs from the previous tick's
    smoothed_state: np.ndarray  # (n,) -1 where not available yet
    smoothed_t: np.ndarray  # (n,) NaN where not available yet

    def __len__(self) -> int:
        return len(self.t)

    @overload
    def __getitem__(self, i: int) -> RegimeDecode: ...
    @overload
    def __getitem__(self, i: slice) -> list[RegimeDecode]: ...
    def __getitem__(self, i: int | slice) -> RegimeDecode | list[RegimeDecode]:
        if isinstance(i, slice):
            return self.decodes()[i]
        i = range(len(self.t))[i]  # negative indices, and IndexError past the end
        ss = int(self.smoothed_state[i])
        s = int(self.state[i])
        return RegimeDecode(
            self.symbol,
            float(self.t[i]),
            float(self.price[i]),
            s,
            self.names[s],
            tuple(self.probs[i].tolist()),
            bool(self.changed[i]),
            *((ss, float(self.smoothed_t[i])) if ss >= 0 else (None, None)),
        )

    def __iter__(self) -> Iterator[RegimeDecode]:
        return iter(self.decodes())

    @property
    def filtered(self) -> np.ndarray:
        """The filter's own answer per tick: the argmax of `probs`."""
        return self.probs.argmax(1) if len(self.t) else np.zeros(0, dtype=np.int64)

    def decodes(self) -> list[RegimeDecode]:
        names = self.names
        out = []
        for t, p, pr, s, c, ss, st in zip(
            self.t.tolist(),
            self.price.tolist(),
            self.probs.tolist(),
            self.state.tolist(),
            self.changed.tolist(),
            self.smoothed_state.tolist(),
            self.smoothed_t.tolist(),
            strict=True,
        ):
            smoothed = (ss, st) if ss >= 0 else (None, None)
            out.append(RegimeDecode(self.symbol, t, p, s, names[s], tuple(pr), c, *smoothed))
        return out


Message = WordEvent | RegimeDecode
"""What the recognisers and trackers send on: one union, published as topic `speech` / `regime`."""


class Sink(Protocol):
    """Where stages send their messages: the publisher, the JSON-lines writer, test collectors.

    Synchronous on purpose: a sink never waits (the publisher drops and counts
    rather than block), so a stage calls it inline and keeps its own pace.
    `delay` is the wall seconds from the utterance's close to its event (latency
    reports); `publish_many` is the tick path's batch form.
    """

    def publish(self, msg: Message, delay: float | None = None) -> object: ...

    def publish_many(self, msgs: Sequence[RegimeDecode]) -> object: ...

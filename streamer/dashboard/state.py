"""What the dashboard knows, and the frames it sends to browsers: a pure synchronous core.

The service may publish tens of thousands of regime decodes a second; a browser
wants a few chart points a second. So the service itself folds each symbol's
decodes into a `summary` message a few times a second (first, low, high, last
price and the latest decode), and each one becomes a chart point here. Taking
every `regime` message instead (`[dashboard] prices = "regime"`, for a publisher
that sends no summaries) puts every price into the open *bucket* of its symbol,
and `close_buckets` turns the open buckets into chart points once per frame
period. A browser gets at most one frame per period whatever the tick rate.

Each browser has a `Cursor`: how many points per symbol and how many words it
has already been sent. A frame carries only what is new to that browser (or
everything, the first time, and when it fell further behind than the history
kept), so frames need not be queued per browser: a slow one simply gets a
bigger frame later, and the memory used is the history, not the backlog.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streamer.market.settings import REGIME_NAMES
from streamer.net import protocol as P


def _default_name(k: int, i: int) -> str:
    """A regime's name before a decode in it was seen: the tracker's names for K states."""
    names = REGIME_NAMES.get(k)
    return names[i] if names is not None and i < len(names) else f"state {i}"


@dataclass
class Cursor:
    """What one browser has been sent so far."""

    points: dict[str, int] = field(default_factory=dict)  # symbol -> points sent (global count)
    words: int = 0  # words sent (global count)
    frames: int = 0


@dataclass
class _Symbol:
    """One symbol: the chart points kept, the open bucket, the latest decode."""

    history: int
    points: deque[list[float]] = field(init=False)
    total: int = 0  # points ever closed: a browser's cursor counts in these
    open: list[float] | None = None  # [t, first, min, max, last, state] of the open bucket
    ticks: int = 0
    t: float = 0.0
    price: float = 0.0
    ts: float = 0.0  # publish time of the latest decode
    state: int = 0
    regime: str = ""
    probs: list[float] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.points = deque(maxlen=self.history)

    def add(self, t: float, price: float, state: int) -> None:
        b = self.open
        if b is None:
            self.open = [t, price, price, price, price, state]
            return
        b[0] = t
        if price < b[2]:
            b[2] = price
        elif price > b[3]:
            b[3] = price
        b[4] = price
        b[5] = state

    def merge(self, b: P.Summary) -> None:
        """A summary's prices into the open bucket (which the caller closes at once)."""
        o = self.open
        if o is None:
            self.open = [b.t, b.first, b.low, b.high, b.last, b.state]
            return
        o[0] = b.t
        o[2] = min(o[2], b.low)
        o[3] = max(o[3], b.high)
        o[4] = b.last
        o[5] = b.state

    def close(self) -> bool:
        if self.open is None:
            return False
        if self.points and self.open[0] < self.points[-1][0]:
            # time went back (a replay started again): a new chart; counting past the history
            # sends every browser a reset
            self.points.clear()
            self.total += self.history
        self.points.append(self.open)
        self.open = None
        self.total += 1
        return True

    def summary(self) -> dict[str, Any]:
        k = len(self.probs)
        return {
            "regime": self.regime,
            "state": self.state,
            "probs": self.probs,
            "names": [self.names.get(i) or _default_name(k, i) for i in range(k)],
            "price": self.price,
            "t": self.t,
            "ts": self.ts,
            "ticks": self.ticks,
        }


@dataclass
class Health:
    """The service's health as the dashboard sees it."""

    last_heartbeat: float | None = None  # monotonic time of the latest heartbeat
    session: str | None = None
    subscribers: int | None = None
    state: str | None = None  # the service's status (running, draining, ...)
    dropped: int = 0  # messages the publisher reported dropped (metrics)
    levels: dict[str, list[float]] = field(default_factory=dict)  # stream -> [rms, peak] dBFS


class DashboardState:
    """Messages in (`ingest`), chart points made (`close_buckets`), frames out (`frame`)."""

    def __init__(self, *, history: int = 600, words: int = 20, stale_after: float = 3.0) -> None:
        self.history = history
        self.words_kept = words
        self.stale_after = stale_after
        self.symbols: dict[str, _Symbol] = {}
        self.streams: dict[str, deque[dict[str, Any]]] = {}
        self.recent: deque[tuple[int, dict[str, Any]]] = deque(maxlen=max(64, 4 * words))
        self.word_count = 0
        self.health = Health()
        self.received = 0
        self.version = 0  # bumped on anything a browser should see soon
        self.latest: _Symbol | None = None  # the symbol of the latest regime decode

    # -- in -----------------------------------------------------------------------------------

    def ingest(self, data: P.Body, now: float | None = None) -> None:
        """One message off the subscriber (typed, checked); other kinds are ignored."""
        self.received += 1
        if isinstance(data, P.Regime):
            self._regime(data)
        elif isinstance(data, P.Summary):
            self._summary(data)
        elif isinstance(data, P.Speech):
            self._speech(data)
        elif isinstance(data, P.Heartbeat):
            self._heartbeat(data, time.monotonic() if now is None else now)
        elif isinstance(data, P.Metrics):
            self.health.dropped = sum(data.dropped.values())
            self.health.subscribers = data.subscribers
        elif isinstance(data, P.Status):
            self.health.state = data.state
            self.version += 1

    def _symbol(self, name: str) -> _Symbol:
        s = self.symbols.get(name)
        if s is None:
            s = self.symbols[name] = _Symbol(self.history)
        return s

    def _summary(self, b: P.Summary) -> None:
        """A symbol's decodes over the service's summary interval: one chart point."""
        s = self._symbol(b.symbol)
        s.merge(b)
        s.close()
        s.ticks += b.ticks
        s.t, s.price, s.state, s.ts, s.probs = b.t, b.last, b.state, b.regime_ts, b.probs
        if b.regime != s.regime:
            s.regime = b.regime
            s.names[b.state] = b.regime
        self.latest = s
        self.version += 1

    def _regime(self, b: P.Regime) -> None:
        s = self._symbol(b.symbol)
        t, price, state = b.t, b.price, b.state
        s.add(t, price, state)
        s.ticks += 1
        s.t, s.price, s.state, s.ts, s.probs = t, price, state, b.ts, b.probs
        if b.regime != s.regime:
            s.regime = b.regime
            s.names[state] = b.regime
        self.latest = s

    def _speech(self, b: P.Speech) -> None:
        word: dict[str, Any] = {
            "stream": b.stream,
            "utterance": b.utterance,
            "label": b.label,
            "confidence": b.confidence,
            "start": b.start,
            "end": b.end,
            "nbest": [{"label": n.label, "loglik": n.loglik} for n in b.nbest[:5]],
            "ts": b.ts,
        }
        q = self.streams.get(b.stream)
        if q is None:
            q = self.streams[b.stream] = deque(maxlen=self.words_kept)
        q.append(word)
        self.recent.append((self.word_count, word))
        self.word_count += 1
        self.version += 1

    def _heartbeat(self, b: P.Heartbeat, now: float) -> None:
        h = self.health
        h.last_heartbeat = now
        h.session = b.session
        if isinstance(b.subscribers, int):
            h.subscribers = b.subscribers
        levels = b.levels if isinstance(b.levels, dict) else {}
        h.levels = {k: [v.rms_dbfs, v.peak_dbfs] for k, v in levels.items()}

    def close_buckets(self) -> int:
        """Turn every open bucket into a chart point; how many were closed."""
        n = 0
        for s in self.symbols.values():
            n += s.close()
        if n:
            self.version += 1
        return n

    # -- out ----------------------------------------------------------------------------------

    def connected(self, now: float) -> bool:
        hb = self.health.last_heartbeat
        return hb is not None and now - hb < self.stale_after

    def _lags(self) -> dict[str, float | None]:
        """Publish to now (how far behind this process is), and tick time to publish (the
        service's decode lag; only when tick times are live, not a replayed history)."""
        s = self.latest
        if s is None:
            return {"lag_ms": None, "decode_ms": None}
        d = s.ts - s.t
        return {
            "lag_ms": round(1000 * (time.time() - s.ts), 1),
            "decode_ms": round(1000 * d, 1) if 0 <= d < 60 else None,
        }

    def frame(
        self, cursor: Cursor, now: float, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """What is new to the browser behind `cursor` (everything, on its first frame)."""
        first = cursor.frames == 0
        symbols: dict[str, Any] = {}
        for name, s in self.symbols.items():
            seen = cursor.points.get(name, 0)
            new = s.total - seen
            kept = len(s.points)
            d = s.summary()
            if first or new > kept or name not in cursor.points:
                d["reset"] = True
                d["points"] = list(s.points)
            elif new > 0:
                d["points"] = [s.points[i] for i in range(kept - new, kept)]
            cursor.points[name] = s.total
            symbols[name] = d
        if first:
            words = [w for q in self.streams.values() for w in q]
            words.sort(key=lambda w: w["ts"])
        else:
            words = [w for i, w in self.recent if i >= cursor.words]
        cursor.words = self.word_count
        cursor.frames += 1
        h = self.health
        hb = h.last_heartbeat
        health = {
            "connected": self.connected(now),
            "heartbeat_age": None if hb is None else round(now - hb, 3),
            "session": h.session,
            "subscribers": h.subscribers,
            "state": h.state,
            "dropped": h.dropped,
            "levels": h.levels if self.connected(now) else {},
            **self._lags(),
            **(extra or {}),
        }
        return {
            "snapshot": first,
            "now": time.time(),
            "health": health,
            "symbols": symbols,
            "words": words,
        }


__all__ = ["Cursor", "DashboardState", "Health"]

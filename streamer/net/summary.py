"""Per-symbol summaries of the regime decodes: what a chart needs, a few times a second.

At 50k ticks/s a client that only draws a chart (the dashboard) would decode 50k
regime messages a second to keep a few points of them. The publisher has every
batch in hand already, so it folds the decodes of each symbol into an open
summary (first, low, high and last price, the tick count, the latest decode) and
`take` turns them into `summary.SYMBOL` messages every summary interval: one
message per symbol and interval, whatever the tick rate. A pure synchronous core;
the publisher's loop sends what `take` returns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from streamer.messages import DecodeBatch, RegimeDecode
from streamer.net import protocol as P


@dataclass(slots=True)
class _Open:
    """One symbol's summary being gathered."""

    t0: float
    first: float
    low: float
    high: float
    last: RegimeDecode
    ts: float  # publish time of `last`
    ticks: int = 0
    changes: int = 0


class Summaries:
    """Regime decodes in (`add`, once per published batch), summary messages out (`take`)."""

    def __init__(self) -> None:
        self._open: dict[str, _Open] = {}

    def add(self, decodes: Iterable[RegimeDecode], ts: float) -> None:
        """Fold in decodes published at `ts` (the hot path: a few attribute updates a tick)."""
        if isinstance(decodes, DecodeBatch):
            self._add_batch(decodes, ts)
            return
        opened = self._open
        for d in decodes:
            p = d.price
            b = opened.get(d.symbol)
            if b is None:
                b = opened[d.symbol] = _Open(d.t, p, p, p, d, ts)
            elif p < b.low:
                b.low = p
            elif p > b.high:
                b.high = p
            b.last = d
            b.ts = ts
            b.ticks += 1
            b.changes += d.changed

    def _add_batch(self, b: DecodeBatch, ts: float) -> None:
        """`add` for one symbol's decodes as arrays: numpy over the batch, one message made."""
        n = len(b)
        if not n:
            return
        low, high = float(b.price.min()), float(b.price.max())
        last = b[-1]
        o = self._open.get(b.symbol)
        if o is None:
            o = self._open[b.symbol] = _Open(float(b.t[0]), float(b.price[0]), low, high, last, ts)
        else:
            o.low, o.high = min(o.low, low), max(o.high, high)
        o.last = last
        o.ts = ts
        o.ticks += n
        o.changes += int(b.changed.sum())

    def __len__(self) -> int:
        return len(self._open)

    def take(self, regime_seq: Callable[[str], int]) -> list[P.Summary]:
        """The summaries gathered since the last call (their `seq`/`ts` are set when sent).

        `regime_seq(symbol)` is the seq of the symbol's latest `regime` message.
        """
        out = []
        for sym, b in self._open.items():
            d = b.last
            out.append(
                P.Summary(
                    v=P.VERSION,
                    seq=0,
                    ts=0.0,
                    symbol=sym,
                    ticks=b.ticks,
                    t0=b.t0,
                    t=d.t,
                    first=b.first,
                    low=b.low,
                    high=b.high,
                    last=d.price,
                    state=d.state,
                    regime=d.regime,
                    probs=[round(float(p), 6) for p in d.probs],
                    changes=b.changes,
                    regime_ts=b.ts,
                    regime_seq=max(0, regime_seq(sym)),
                )
            )
        self._open = {}
        return out


__all__ = ["Summaries"]

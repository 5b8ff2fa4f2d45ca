"""The live tick feed's core: ticks checked and decoded per symbol, pure and synchronous.

`streamer.net.feed.TickFeed` is the asyncio shell around it (the socket, the
executor for fits); everything that decides lives here, so it is tested
without sockets. Why batches, and why a fit never blocks a live feed: see
`streamer.net.feed`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from streamer.errors import ConfigError
from streamer.market.decoder import FitJob, RegimeTracker, TrackerConfig
from streamer.messages import RegimeDecode

log = logging.getLogger("streamer.net.feed")  # one logger for the feed, core and shell

PUSH_MANY_MIN = 16  # below this many ticks per symbol per batch, the per-tick path is cheaper
_MASKED_SYMBOLS = 8  # up to this many symbols in a batch, group them with numpy masks


class TickLike(Protocol):
    """One tick as the transport decoded it."""

    @property
    def symbol(self) -> str: ...
    @property
    def t(self) -> float: ...
    @property
    def price(self) -> float: ...


TickParser = Callable[[bytes, int], TickLike]
"""(body, max_bytes) -> the tick; ValueError (with `kind`, `detail`) for a bad one."""
BatchParser = Callable[[Sequence[bytes], int], Sequence[TickLike] | None]
"""(bodies, max_bytes) -> every tick of a batch in one go, or None: then `TickParser` per body."""


def _by_symbol(ticks: Sequence[TickLike]) -> list[tuple[str, list[float], list[float]]]:
    """(symbol, times, prices) per symbol of a batch, in order of first appearance.

    A batch of one symbol (the common case) is three list comprehensions; a few
    symbols, a pass of numpy comparisons each; many, one dictionary look-up per tick.
    """
    syms = [k.symbol for k in ticks]
    if not syms:
        return []
    ts = [k.t for k in ticks]
    ps = [k.price for k in ticks]
    first = syms[0]
    if syms.count(first) == len(syms):
        return [(first, ts, ps)]
    order = dict.fromkeys(syms)
    if len(order) <= _MASKED_SYMBOLS:
        sa = np.array(syms, dtype=object)
        ta, pa = np.asarray(ts), np.asarray(ps)
        out = []
        for s in order:
            m = sa == s
            out.append((s, ta[m].tolist(), pa[m].tolist()))
        return out
    groups: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in order}
    for s, t, p in zip(syms, ts, ps, strict=True):
        g = groups[s]
        g[0].append(t)
        g[1].append(p)
    return [(s, t_, p_) for s, (t_, p_) in groups.items()]


class TickDecoder:
    """Checks ticks and decodes them per symbol; pure and synchronous (fits are handed out).

    `feed(bodies)` takes the bodies of tick messages and returns the decodes they
    produced; the shell counts badly framed messages with `reject`. `parse` reads
    one body (the wire format is the transport's: `streamer.net.protocol.parse_tick`)
    and raises a ValueError with `kind` and `detail` for a tick to drop.
    Fits are not run here: `submit(symbol, tracker, job)` is called for each new
    fit job and the caller hands the result back with `fitted`.
    """

    def __init__(
        self,
        config: TrackerConfig,
        *,
        parse: TickParser,
        parse_many: BatchParser | None = None,
        symbols: Collection[str] | None = None,
        max_bytes: int = 4096,
        max_symbols: int = 10_000,
        submit: Callable[[str, RegimeTracker, FitJob], None] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        if max_bytes < 64:
            raise ConfigError(f"--max-tick-bytes must be at least 64, not {max_bytes}")
        self.config = config
        self.parse = parse
        self.parse_many = parse_many
        self.symbols = frozenset(symbols) if symbols else None
        self.max_bytes = max_bytes
        self.max_symbols = max_symbols
        self.submit = submit
        self.on_event = on_event  # a symbol's regimes changed (K, names): for the status topic
        self.trackers: dict[str, RegimeTracker] = {}
        self.received = 0
        self.accepted = 0
        self.decoded = 0
        self.batches = 0
        self.dropped: Counter[str] = Counter()
        self.fit_errors = 0
        self._examples: set[str] = set()
        self._jobs: dict[str, FitJob] = {}  # symbol -> job handed to `submit`

    @property
    def known(self) -> Collection[str]:
        """The symbols taken so far (`max_symbols` counts them)."""
        return self.trackers

    def reject(self, kind: str, detail: str, count: int = 1) -> None:
        """Count (and, the first time for `kind`, log) a dropped message, or `count` of them."""
        self.received += count
        self.dropped[kind] += count
        if kind not in self._examples:
            self._examples.add(kind)
            log.warning(
                "tick feed: dropping a tick (%s: %s); further ones are only counted",
                kind,
                detail[:200],
            )

    def feed(self, bodies: Sequence[bytes]) -> list[RegimeDecode]:
        """Check and decode the bodies of a batch of well-framed ``[b"tick", body]`` messages."""
        return [d for chunk in self.feed_chunks(bodies) for d in chunk]

    def feed_chunks(self, bodies: Sequence[bytes]) -> list[Sequence[RegimeDecode]]:
        """`feed`'s decodes in chunks of one symbol each (`DecodeBatch` where batched).

        The tick path's form: each chunk goes to the sink's `publish_many` as it is.
        """
        ticks = self.parse_many(bodies, self.max_bytes) if self.parse_many else None
        if ticks is None:
            ticks = self._parse_each(bodies)
        self.batches += 1
        taken = []  # every symbol is admitted before any is pushed (a push makes it known)
        new = 0  # symbols first seen in this batch
        for symbol, ts, ps in _by_symbol(ticks):
            if self.symbols is not None and symbol not in self.symbols:
                self.reject("unknown_symbol", f"symbol {symbol!r}", len(ts))
                continue
            known = self.known
            if symbol not in known:
                if len(known) + new >= self.max_symbols:
                    self.reject(
                        "too_many_symbols", f"{symbol!r} beyond {self.max_symbols}", len(ts)
                    )
                    continue
                new += 1
            taken.append((symbol, ts, ps))
        out: list[Sequence[RegimeDecode]] = []
        for symbol, ts, ps in taken:
            self.received += len(ts)
            self.accepted += len(ts)
            for chunk in self.push_chunks(symbol, ts, ps):
                self.decoded += len(chunk)
                out.append(chunk)
        return out

    def _parse_each(self, bodies: Sequence[bytes]) -> list[TickLike]:
        """The good ticks of a batch, one body at a time; the others dropped and counted."""
        out = []
        parse, max_bytes = self.parse, self.max_bytes
        for body in bodies:
            try:
                out.append(parse(body, max_bytes))
            except ValueError as e:
                self.reject(getattr(e, "kind", "invalid"), getattr(e, "detail", str(e)))
        return out

    def push(self, symbol: str, ts: Sequence[float], ps: Sequence[float]) -> list[RegimeDecode]:
        """Good ticks of one symbol into its tracker; its decodes (fits handed to `submit`)."""
        return [d for chunk in self.push_chunks(symbol, ts, ps) for d in chunk]

    def push_chunks(
        self, symbol: str, ts: Sequence[float], ps: Sequence[float]
    ) -> list[Sequence[RegimeDecode]]:
        """`push`, its decodes in chunks (`RegimeTracker.push_chunks` for a big batch)."""
        tr = self.trackers.get(symbol)
        if tr is None:
            tr = self.trackers[symbol] = RegimeTracker(
                symbol, self.config, inline=False, on_event=self.on_event
            )
        out: list[Sequence[RegimeDecode]]
        if len(ts) >= PUSH_MANY_MIN:
            out = tr.push_chunks(np.asarray(ts), np.asarray(ps))
        else:
            got: list[RegimeDecode] = []
            push = tr.push
            for t, p in zip(ts, ps, strict=True):
                r = push(t, p)
                if r:
                    got.extend(r)
            out = [got] if got else []
        self._hand_out(symbol, tr)
        return out

    def restore(self, trackers: Mapping[str, RegimeTracker]) -> None:
        """Take over trackers restored from a checkpoint (their pending fits are handed out)."""
        for symbol, tr in trackers.items():
            tr.inline, tr.on_event = False, self.on_event
            self.trackers[symbol] = tr
            self._hand_out(symbol, tr)

    def _hand_out(self, symbol: str, tr: RegimeTracker) -> None:
        job = tr.job
        if job is not None and self._jobs.get(symbol) is not job:
            self._jobs[symbol] = job
            if self.submit is not None:
                self.submit(symbol, tr, job)

    def fitted(
        self, symbol: str, tr: RegimeTracker, job: FitJob, report: Any, error: BaseException | None
    ) -> list[RegimeDecode]:
        """A fit came back: install it (the warm-up backlog's decodes come out), or start over."""
        if self.trackers.get(symbol) is not tr or tr.job is not job:
            return []  # superseded
        self._jobs.pop(symbol, None)
        if error is not None:
            self.fit_errors += 1
            if tr.refit_failed(job):
                # the regimes in use stay (names, seq and filter state go on): starting over
                # would hold its ticks back through a warm-up and lose those a stream ends with
                log.warning(
                    "%s: regime refit failed (%s: %s); keeping the current regimes",
                    symbol,
                    type(error).__name__,
                    error,
                )
                return []
            log.warning(
                "%s: regime fit failed (%s: %s); warming up again",
                symbol,
                type(error).__name__,
                error,
            )
            self.trackers[symbol] = RegimeTracker(
                symbol, self.config, inline=False, on_event=self.on_event
            )
            return []
        out = tr.install(report)
        self.decoded += len(out)
        self._hand_out(symbol, tr)
        return out

    def pending_first_fits(self) -> list[str]:
        """Symbols whose first fit is running: their buffered ticks still await decoding."""
        return [s for s, j in self._jobs.items() if j.first]

    def stats(self) -> dict[str, Any]:
        skipped: Counter[str] = Counter()
        warming = relabels = k_changes = 0
        for tr in self.trackers.values():
            skipped.update(tr.skipped)
            warming += tr.decoder is None
            relabels += tr.relabels
            k_changes += tr.k_changes
        return {
            "received": self.received,
            "accepted": self.accepted,
            "decoded": self.decoded,
            "dropped": dict(self.dropped),
            "skipped": dict(skipped),
            "symbols": len(self.trackers),
            "warming_up": warming,
            "fit_errors": self.fit_errors,
            "refit_relabels": relabels,  # refits whose regimes came out in another order
            "k_changes": k_changes,  # refits that changed a symbol's number of regimes
            "batches": self.batches,
        }


__all__ = ["PUSH_MANY_MIN", "BatchParser", "TickDecoder", "TickLike", "TickParser"]

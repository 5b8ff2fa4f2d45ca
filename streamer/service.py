"""The whole service: audio and tick sources in, words and regimes out over ZeroMQ.

`Service.run` is a thin asyncio shell around pieces that live elsewhere and are
imported, not copied: the audio path of `streamer replay` (WAV sources, the
segmenter settings, `run_stream` and the recognizer pool), the CSV tick replay
(`run_ticks`), the live tick feed (`streamer.net.feed`) and the publisher
(`streamer.net.publisher`). Every producer writes to the publisher directly;
publishing never waits.

Stopping (SIGINT or SIGTERM, or the `stop` event in tests) is a drain, not an
abort: capture stops (audio sources are closed, so each stream's segmenter is
flushed and its queued utterances are recognised and published; the tick feed
stops reading once its socket has been quiet briefly and decodes what it took
in; a CSV replay stops where it is), and everything produced is published
before the final ``metrics`` and ``stopped`` status. All of it within
`drain_timeout` seconds plus the publisher's bounded linger; a second signal
cuts the drain short. The exit code is 0, or 2 when an input failed.

Configuration comes from flags and, optionally, a TOML file (`--config`) whose
keys are the long flag names (``tick-feed = ["tcp://127.0.0.1:5558"]``,
``wait-subscribers = 1``, ``audio = ["a.wav"]``); tables only group keys. A flag
given on the command line wins over the file (see `mark_defaults`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import sys
import threading
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from streamer.errors import ConfigError, StreamerError
from streamer.net import protocol as P
from streamer.net.publisher import Publisher, publisher_from_args, wait_for_subscribers
from streamer.net.sockets import term_context

log = logging.getLogger(__name__)

DEFAULT_DRAIN_TIMEOUT = 5.0


# -- configuration: flags and a TOML file -------------------------------------------------------


class _Unset:
    """A flag's default, wrapped so that a value from the config file can tell it apart.

    argparse cannot say whether a value came from the command line or from the
    default. Wrapping every default lets `resolve_config` fill only the flags
    the user did not give. `__copy__` keeps append flags working: argparse copies
    the current value before appending the first command-line item.
    """

    __slots__ = ("default",)

    def __init__(self, default: Any) -> None:
        self.default = default

    def __copy__(self) -> list[Any]:
        return list(self.default or [])

    def __repr__(self) -> str:
        return repr(self.default)


def mark_defaults(parser: argparse.ArgumentParser) -> None:
    """Wrap every default of `parser` (call at the end of `add_arguments`)."""
    for a in parser._actions:
        if a.dest in ("help", "version") or a.default is argparse.SUPPRESS:
            continue
        if not isinstance(a.default, _Unset):
            a.default = _Unset(a.default)


def _convert(a: argparse.Action, value: Any, where: str) -> Any:
    """A TOML value for flag `a`, converted and checked the way argparse would."""

    def one(v: Any) -> Any:
        if isinstance(v, dict | list):
            raise ConfigError(f"{where}: expected a single value, not {type(v).__name__}")
        t = a.type
        try:
            if t is None:
                out = v if isinstance(v, str) else str(v)
            elif t in (int, float):
                if isinstance(v, bool) or not isinstance(v, int | float | str):
                    raise ValueError(v)
                out = t(v)
                if t is int and isinstance(v, float) and v != int(v):
                    raise ValueError(v)
            else:
                out = t(v if isinstance(v, str) else str(v))  # type: ignore[misc, operator]
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {v!r} is not a valid value") from None
        if a.choices is not None and out not in a.choices:
            raise ConfigError(f"{where}: {v!r} is not one of {list(a.choices)}")
        return out

    if a.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false")
        return value
    if isinstance(a, argparse._AppendAction) or a.nargs in ("*", "+"):
        items = value if isinstance(value, list) else [value]
        return [one(v) for v in items]
    return one(value)


def resolve_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill flags left at their default from ``args.config`` (TOML), then unwrap the rest."""
    path = getattr(args, "config", None)
    if isinstance(path, _Unset):
        path = path.default
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from None
        flat: dict[str, Any] = {}
        for k, v in data.items():
            if isinstance(v, dict):  # tables group settings; their names carry no meaning
                flat.update(v)
            else:
                flat[k] = v
        by_name: dict[str, argparse.Action] = {}
        for a in parser._actions:
            names = [s.lstrip("-") for s in a.option_strings if s.startswith("--")] or [a.dest]
            for n in names:
                by_name[n.replace("-", "_")] = a
        for key, value in flat.items():
            a = by_name.get(key.replace("-", "_"))
            if a is None or a.dest in ("help", "config"):
                known = ", ".join(sorted(n.replace("_", "-") for n in by_name if n != "help"))
                raise ConfigError(f"{path}: unknown setting {key!r} (known: {known})")
            if isinstance(getattr(args, a.dest, None), _Unset):
                setattr(args, a.dest, _convert(a, value, f"{path}: {key}"))
    for k, v in list(vars(args).items()):
        if isinstance(v, _Unset):
            setattr(args, k, v.default)


# -- the service --------------------------------------------------------------------------------


@dataclasses.dataclass
class _SpeechCounts:
    events: Counter[str] = dataclasses.field(default_factory=Counter)
    errors: int = 0


class Service:
    """Sources -> recognisers and trackers -> one publisher; `run` until done or stopped."""

    def __init__(
        self,
        args: argparse.Namespace,
        *,
        context: zmq.Context[Any] | None = None,
        recognizer_factory: Callable[[], Any] | None = None,
        tune_gc: bool = True,
    ) -> None:
        self.args = args
        self.tune_gc = tune_gc
        self.speed = float(getattr(args, "speed", 1.0))
        if not self.speed >= 0:
            raise ConfigError(f"--speed must be >= 0, not {args.speed}")
        self.drain_timeout = float(getattr(args, "drain_timeout", DEFAULT_DRAIN_TIMEOUT))
        if not self.drain_timeout > 0:
            raise ConfigError(f"--drain-timeout must be > 0, not {self.drain_timeout}")
        self.audio: list[str] = [str(a) for a in getattr(args, "audio", None) or []]
        self.ticks = list(getattr(args, "ticks", None) or [])
        self.feeds = list(getattr(args, "tick_feed", None) or [])
        self.feed_connect = list(getattr(args, "tick_feed_connect", None) or [])
        self.mic = bool(getattr(args, "mic", False))  # the microphone flag arrives later
        self.stay = bool(getattr(args, "stay", False))
        sources = self.audio or self.mic or self.ticks or self.feeds or self.feed_connect
        if not sources and not self.stay:
            raise ConfigError(
                "nothing to serve: give AUDIO files, --ticks CSV or --tick-feed ENDPOINT "
                "(or --stay to serve only heartbeats and snapshots)"
            )
        self.recognizer_factory = recognizer_factory
        self._own_ctx = context is None
        self.context = context
        self.publisher: Publisher | None = None
        self.feed: Any = None
        self.failed = 0
        self.speech = _SpeechCounts()
        self.tick_counts: Counter[str] = Counter()
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._sources: list[Any] = []
        self._pool: Any = None
        self._stream_stats: list[Any] = []
        self._tick_result: dict[str, Any] | None = None
        self._signals = 0
        self._reaped: set[asyncio.Task[Any]] = set()
        self._bank_watch: asyncio.Task[None] | None = None

    # -- stopping -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Begin the drain (a second call cuts it short)."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        log.warning(
            "%s: %s", signal.Signals(sig).name, "draining" if self._signals == 1 else "stopping now"
        )
        self.stop()

    @contextlib.contextmanager
    def _signal_handlers(self) -> Any:
        loop = asyncio.get_running_loop()
        sigs = (signal.SIGINT, signal.SIGTERM)
        installed = []
        if threading.current_thread() is threading.main_thread():
            for s in sigs:
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(s, self._on_signal, s)
                    installed.append(s)
        try:
            yield
        finally:
            for s in installed:
                loop.remove_signal_handler(s)

    # -- sources --------------------------------------------------------------------------------

    def _speech_emit(self, pub: Publisher) -> Callable[[Any, float], None]:
        counts = self.speech

        def emit(event: Any, delay: float | None = None) -> None:
            counts.events[event.stream] += 1
            counts.errors += event.error is not None
            pub.publish(event, delay)

        return emit

    def _tick_emit(self, pub: Publisher) -> Callable[[Any], None]:
        counts = self.tick_counts

        def emit(decode: Any) -> None:
            counts[decode.symbol] += 1
            pub.publish(decode)

        return emit

    def mic_sources(self, rate: int) -> list[Any]:
        """Live capture: the microphone `--mic [--device D]` asks for (none without it)."""
        if not self.mic:
            return []
        from streamer.audio.sources import mic_from_args

        mic = mic_from_args(self.args, rate=rate, on_event=self._device_event)
        return [mic] if mic is not None else []

    def _device_event(self, ev: Any) -> None:
        """A microphone lost, retrying or restored: on the status topic, where users look.

        (The source itself logs the event; this only publishes it.)"""
        pub = self.publisher
        if pub is not None and pub._sock is not None:
            pub.status(pub.state, detail=f"{ev.stream}: microphone {ev.kind} ({ev.detail})")

    async def _start_audio(self, pub: Publisher, tasks: dict[asyncio.Task[Any], str]) -> None:
        if not (self.audio or self.mic):
            return
        from streamer.audio.sources import WavSource
        from streamer.commands.replay import segmenter_config
        from streamer.paths import default_bank_path
        from streamer.speech.pipeline import run_stream
        from streamer.speech.recognizer import RecognizerPool, bank_factory

        args = self.args
        cfg = segmenter_config(args)
        factory = self.recognizer_factory
        bank_path: Path | None = None
        if factory is None:
            from streamer.speech.bank import WordBank

            bank_path = Path(args.bank) if getattr(args, "bank", None) else default_bank_path()
            WordBank.load(bank_path)  # a bad bank is one clear error before anything runs
            factory = bank_factory(bank_path)
        chunk_ms = getattr(args, "chunk_ms", None) or (250.0 if self.speed == 0 else 20.0)
        for a in self.audio:
            try:
                self._sources.append(
                    WavSource(a, stream=a, rate=cfg.rate, chunk_ms=chunk_ms, speed=self.speed)
                )
            except StreamerError as e:
                self.failed += 1
                _error(str(e))
        self._sources += self.mic_sources(cfg.rate)
        if not self._sources:
            return
        self._pool = RecognizerPool(
            factory,
            workers=getattr(args, "workers", 1),
            kind=getattr(args, "worker_kind", "process"),
            max_pending=getattr(args, "max_pending", None),
        )
        await self._pool.start(wait=False)
        self._watch_bank(pub, bank_path)
        emit = self._speech_emit(pub)

        async def one(src: Any) -> None:
            self._stream_stats.append(await run_stream(src, self._pool, emit, config=cfg))

        for src in self._sources:
            tasks[asyncio.create_task(one(src), name=f"audio:{src.stream}")] = f"audio {src.stream}"

    def _watch_bank(self, pub: Publisher, bank_path: Path | None) -> None:
        """Swap a changed bank file (`streamer enroll`) into the workers, between utterances."""
        interval = float(getattr(self.args, "watch_bank", 0) or 0)
        if bank_path is None or interval <= 0 or self._pool is None:
            return
        from streamer.speech.enroll import BankWatcher

        def said(kind: str, detail: str) -> None:
            if pub._sock is not None:
                pub.status(pub.state, detail=f"bank {detail}")

        watcher = BankWatcher(bank_path, self._pool, interval=interval, on_event=said)
        self._bank_watch = asyncio.create_task(watcher.run(), name="bank-watch")

    def _start_ticks(self, pub: Publisher, tasks: dict[asyncio.Task[Any], str]) -> None:
        if not self.ticks:
            return
        from streamer.market.stream import run_ticks

        async def ticks() -> None:
            self._tick_result = await run_ticks(self.args, self.speed, self._tick_emit(pub))

        tasks[asyncio.create_task(ticks(), name="ticks")] = "tick replay"

    def _open_feed(self, pub: Publisher) -> None:
        if not (self.feeds or self.feed_connect):
            return
        from streamer.market.stream import tick_config
        from streamer.net.feed import TickFeed

        args = self.args
        self.feed = TickFeed(
            pub.publish_many,
            bind_to=self.feeds,
            connect_to=self.feed_connect,
            config=tick_config(args),
            symbols=getattr(args, "feed_symbol", None),
            max_bytes=getattr(args, "max_tick_bytes", P.MAX_TICK_BYTES),
            max_symbols=getattr(args, "max_symbols", 10_000),
            context=self.context,
            curve=pub.curve,
        )
        self.feed.open()
        pub.add_metrics("feed", self.feed.stats)

    def _speech_metrics(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "events": sum(self.speech.events.values()),
            "errors": self.speech.errors,
            "streams": dict(self.speech.events),
        }
        if self._pool is not None:
            d["pool"] = dataclasses.asdict(self._pool.stats)
        d["dropped_samples"] = sum(getattr(s, "dropped", 0) for s in self._sources)
        return d

    def _ticks_metrics(self) -> dict[str, Any]:
        return {"decoded": sum(self.tick_counts.values()), "symbols": dict(self.tick_counts)}

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until every finite source is done (unless --stay) or a stop; the exit code."""
        if self.context is None:
            self.context = zmq.Context()
        try:
            with self._signal_handlers():
                await self._run()
        finally:
            if self._own_ctx and self.context is not None:
                ctx, self.context = self.context, None
                await term_context(ctx)
        return 2 if self.failed else 0

    async def _run(self) -> None:
        args = self.args
        pub = publisher_from_args(args, default=P.DEFAULT_PUB, context=self.context)
        pub.sources = (
            [f"audio:{a}" for a in self.audio]
            + (["mic"] if self.mic else [])
            + [f"ticks:{t}" for t in self.ticks]
            + [f"feed:{e}" for e in self.feeds + self.feed_connect]
        )
        self.publisher = pub
        tasks: dict[asyncio.Task[Any], str] = {}
        try:
            async with pub:
                pub.add_metrics("speech", self._speech_metrics)
                pub.add_metrics("ticks", self._ticks_metrics)
                pub.status("starting")
                if not await self._until_stopped(wait_for_subscribers(pub, args)):
                    pub.status("stopped", detail="stopped while waiting for subscribers")
                    return
                self._open_feed(pub)
                await self._start_audio(pub, tasks)
                self._start_ticks(pub, tasks)
                if self.feed is not None:
                    tasks[asyncio.create_task(self._run_feed(), name="feed")] = "tick feed"
                if self.tune_gc:
                    _tune_gc()
                pub.status("running")
                await self._serve(tasks)
                pub.status("draining")
                await self._drain(tasks)
                pub.publish_metrics()
                pub.status("stopped")  # last: a client that sees it has everything
        finally:
            if self._bank_watch is not None:
                self._bank_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._bank_watch
            for t in tasks:
                if not t.done():
                    t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self._pool is not None:
                await self._pool.aclose()
            if self.feed is not None:
                await self.feed.aclose()
        if getattr(args, "stats", False):
            final = pub.metrics()
            print(f"streamer serve: {P._encoder.encode(_plain(final))}", file=sys.stderr)

    async def _until_stopped(self, coro: Any) -> bool:
        """Run `coro` unless a stop comes first (False then)."""
        task = asyncio.ensure_future(coro)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return False
        task.result()
        return True

    async def _run_feed(self) -> None:
        await self.feed.run(drain_timeout=self.drain_timeout)

    def _reap(self, task: asyncio.Task[Any], tasks: dict[asyncio.Task[Any], str]) -> None:
        """A source task ended: a user error is one line (the others go on); a bug propagates."""
        if task.cancelled() or task in self._reaped:
            return
        self._reaped.add(task)
        e = task.exception()
        if isinstance(e, StreamerError):
            self.failed += 1
            _error(f"{tasks[task]}: {e}")
        elif e is not None:
            raise e

    async def _serve(self, tasks: dict[asyncio.Task[Any], str]) -> None:
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            live = set(tasks)
            while live or self.stay:
                done, _ = await asyncio.wait({*live, stop}, return_when=asyncio.FIRST_COMPLETED)
                for t in done - {stop}:
                    live.discard(t)
                    self._reap(t, tasks)
                if stop in done:
                    return
        finally:
            stop.cancel()

    async def _drain(self, tasks: dict[asyncio.Task[Any], str]) -> None:
        """Stop capture and let everything queued come out, within the drain timeout."""
        for src in self._sources:
            with contextlib.suppress(Exception):
                await src.aclose()
        if self.feed is not None:
            self.feed.stop()
        for t, name in tasks.items():
            if name == "tick replay" and not t.done():
                t.cancel()  # a file replay has nothing queued: stop where it is
        pending = {t for t in tasks if not t.done()}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout
        force = asyncio.ensure_future(self._force.wait())
        try:
            while pending:
                left = deadline - loop.time()
                if left <= 0:
                    break
                done, _ = await asyncio.wait(
                    {*pending, force}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
                if force in done:
                    break
                pending -= done
        finally:
            force.cancel()
        for t in tasks:
            if not t.done():
                log.warning("%s did not finish draining in time; cut short", tasks[t])
                t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            self._reap(t, tasks)


def _tune_gc() -> None:
    """Keep the garbage collector off the hot path (p99 latency, ~10% of the tick path's CPU).

    Everything alive at this point (modules, models, sockets) is moved out of the
    collector's sight (`gc.freeze`), and young collections run every 10,000
    allocations instead of 700: a busy service allocates a few objects per
    message, and each full collection otherwise rescans every module loaded.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _plain(x: Any) -> Any:
    from streamer.net.publisher import _jsonable

    return _jsonable(x)


def _error(msg: str) -> None:
    print(f"streamer serve: error: {msg}", file=sys.stderr)


async def serve(args: argparse.Namespace, **kw: Any) -> int:
    """Run the service from parsed (and resolved) flags; the exit code."""
    return await Service(args, **kw).run()


__all__ = ["Service", "mark_defaults", "resolve_config", "serve"]

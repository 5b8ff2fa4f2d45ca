"""The whole service: audio and tick sources in, words and regimes out over ZeroMQ.

`Service(config).run()` is a thin asyncio shell around pieces that live
elsewhere: the audio path (WAV and microphone sources, the segmenter,
`run_stream` and the recognizer pool), the CSV tick replay (`run_ticks`), the
live tick feed (`streamer.net.feed`) and one sink that every producer writes to
directly: the publisher (`streamer serve`) or JSON lines (`streamer replay`
without ``--pub``). Sinks never wait.

Stopping (SIGINT or SIGTERM, or the `stop` event in tests) is a drain, not an
abort: capture stops (audio sources are closed, so each stream's segmenter is
flushed and its queued utterances are recognised and published; the tick feed
stops reading once its socket has been quiet briefly and decodes what it took
in; a CSV replay stops where it is), and everything produced is published
before the final ``metrics`` and ``stopped`` status. All of it within
`drain_timeout` seconds plus the publisher's bounded linger; a second signal
cuts the drain short (running fits are ended, the linger shortened) and the
exit code is 1. Otherwise it is 0, or 2 when an input failed.

All settings come in one `streamer.config.Config`; the commands build it from a
TOML file and flags (`streamer.commands.options`), the demo and tests in code.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from streamer import realtime
from streamer.audio.level import LevelMeter
from streamer.audio.sources import AudioSource, DeviceEvent, MicSource, WavSource, find_input_device
from streamer.config import Config
from streamer.errors import ConfigError, StreamerError
from streamer.fits import close_fit_executor, fit_executor
from streamer.market.decoder import RegimeTracker
from streamer.messages import DecodeBatch, Message, RegimeDecode, Sink
from streamer.net import protocol as P
from streamer.net.feed import TickFeed
from streamer.net.publisher import Publisher
from streamer.net.security import CurveServer
from streamer.net.sockets import reachable, term_context
from streamer.paths import default_bank_path
from streamer.speech.pipeline import StreamStats, run_stream
from streamer.speech.recognizer import (
    RecognizerFactory,
    RecognizerPool,
    UtterancePool,
    bank_factory,
)
from streamer.state import MARKS_FILE, SEQ_FILE, Checkpointer, RegimeMarks, Resume, SeqJournal

if TYPE_CHECKING:  # Ray is imported only with --cluster
    from streamer.cluster.runtime import ClusterRuntime

log = logging.getLogger(__name__)

FORCED = 1  # the exit code when a second signal cut the drain short


class _Counting:
    """The sink the producers see: counts what goes by, then passes it on."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.words: Counter[str] = Counter()
        self.word_errors = 0
        self.decodes: Counter[str] = Counter()

    def publish(self, msg: Message, delay: float | None = None) -> object:
        if isinstance(msg, RegimeDecode):
            self.decodes[msg.symbol] += 1
        else:
            self.words[msg.stream] += 1
            self.word_errors += msg.error is not None
        return self.sink.publish(msg, delay)

    def publish_many(self, msgs: Sequence[RegimeDecode]) -> object:
        return self.sink.publish_many(msgs)


class _Replayed:
    """The CSV replay's view of `_Counting`: its batches of decodes counted too (the tick
    feed's are counted by the feed)."""

    def __init__(self, counting: _Counting) -> None:
        self.counting = counting

    def publish(self, msg: Message, delay: float | None = None) -> object:
        return self.counting.publish(msg, delay)

    def publish_many(self, msgs: Sequence[RegimeDecode]) -> object:
        if isinstance(msgs, DecodeBatch):  # one symbol's, as arrays: no message to look at
            self.counting.decodes[msgs.symbol] += len(msgs)
        else:
            self.counting.decodes.update(m.symbol for m in msgs)
        return self.counting.sink.publish_many(msgs)


def publisher_for(
    config: Config,
    *,
    curve: CurveServer | None,
    context: zmq.Context[Any] | None,
    resume: Resume | None = None,
    epoch: str | None = None,
) -> Publisher:
    """The publisher the `[publisher]` settings describe (its seq going on from `resume`)."""
    c = config.publisher
    snapshot: str | bool = c.snapshot if c.snapshot else c.snapshots
    if not c.snapshots:
        snapshot = False
    return Publisher(
        c.endpoint,
        snapshot=snapshot,
        hwm=c.hwm,
        policy=c.policy,
        stall_timeout=c.stall_timeout,
        lossy=c.lossy,
        heartbeat=c.heartbeat,
        metrics_interval=c.metrics_interval,
        summary_interval=c.summary_interval,
        curve=curve,
        context=context,
        latency=config.service.latency,
        epoch=resume.epoch if resume is not None else epoch,
        seqs=resume.seqs if resume is not None else None,
    )


def curve_for(config: Config) -> CurveServer | None:
    """The CURVE server keys the `[security]` settings name (None: no encryption)."""
    sec = config.security
    if sec.curve_secret is None or sec.curve_allow is None:
        return None
    return CurveServer(sec.curve_secret, sec.curve_allow)


class Service:
    """Sources -> recognisers and trackers -> one sink; `run` until done or stopped.

    The sink is the publisher built from `config.publisher` unless one is
    given (`streamer replay` gives a JSON-lines writer): then there are no
    heartbeats, snapshots or status messages, only the words and decodes.
    """

    def __init__(
        self,
        config: Config,
        *,
        sink: Sink | None = None,
        context: zmq.Context[Any] | None = None,
        recognizer_factory: RecognizerFactory | None = None,
        tune_gc: bool = True,
        name: str = "serve",
    ) -> None:
        self.config = config
        self.name = name
        self.tune_gc = tune_gc
        self.speed = config.service.speed
        self.drain_timeout = config.service.drain_timeout
        self.audio: list[str] = [str(a) for a in config.audio.files]
        self.ticks = list(config.ticks.files)
        self.feeds = list(config.feed.bind)
        self.feed_connect = list(config.feed.connect)
        self.mic = config.audio.mic
        self.stay = config.service.stay
        sources = self.audio or self.mic or self.ticks or self.feeds or self.feed_connect
        if not sources and not self.stay:
            raise ConfigError(
                f"nothing to {name}: give AUDIO files, --ticks CSV or --tick-feed ENDPOINT "
                "(or --stay to serve only heartbeats and snapshots)"
            )
        self.recognizer_factory = recognizer_factory
        self._own_ctx = context is None
        self.context = context
        self._given_sink = sink
        self.publisher: Publisher | None = None
        self.feed: TickFeed | None = None
        self.failed = 0
        self.counts: _Counting | None = None
        self.pool: UtterancePool | None = None
        self.cluster: ClusterRuntime | None = None
        self.stream_stats: list[StreamStats] = []
        self.tick_result: dict[str, Any] | None = None
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._sources: list[AudioSource] = []
        self.meters: dict[str, LevelMeter] = {}  # audio level per stream while it runs
        self._signals = 0
        self._reaped: set[asyncio.Task[Any]] = set()
        self._bank_watch: asyncio.Task[None] | None = None
        self.checkpointer: Checkpointer | None = None
        if config.state.dir is not None:
            self.checkpointer = Checkpointer(config.state, config.tracker)
        self.resume: Resume | None = None
        self._tick_trackers: dict[str, RegimeTracker] = {}  # CSV replays' (for checkpoints)
        self._checkpoints: asyncio.Task[None] | None = None
        self._journal: SeqJournal | None = None
        self._marks: RegimeMarks | None = None
        self._fit_pool: Executor | None = None  # where regime fits run (streamer.fits)

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
    def _signal_handlers(self) -> Iterator[None]:
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

    def _status(self, detail: str) -> None:
        """Say something on the status topic (where users look), if there is a publisher."""
        pub = self.publisher
        if pub is not None and not pub.closed:
            pub.status(pub.state, detail=detail)

    def mic_sources(self, rate: int) -> list[AudioSource]:
        """Live capture: the microphone `[audio] mic` asks for (none without it).

        The device is checked here, before anything starts, so a wrong one is one
        line on stderr instead of a service that starts and then fails.
        """
        a = self.config.audio
        if not a.mic:
            return []
        find_input_device(a.device)
        return [
            MicSource(
                device=a.device,
                rate=rate,
                block_ms=a.mic_block_ms,
                stream=a.mic_stream,
                on_event=self._device_event,
            )
        ]

    def _device_event(self, ev: DeviceEvent) -> None:
        """A microphone lost, retrying or restored: on the status topic, where users look.

        (The source itself logs the event; this only publishes it.)"""
        self._status(f"{ev.stream}: microphone {ev.kind} ({ev.detail})")

    async def _start_audio(self, sink: Sink, tasks: dict[asyncio.Task[Any], str]) -> None:
        if not (self.audio or self.mic):
            return
        cfg = self.config.segmenter
        rc = self.config.recognizer
        factory = self.recognizer_factory
        bank_path: Path | None = None
        if factory is None:
            from streamer.speech.bank import WordBank

            bank_path = rc.bank if rc.bank is not None else default_bank_path()
            data: bytes | None = None
            with contextlib.suppress(OSError):  # (a missing file: BankError just below)
                data = Path(bank_path).read_bytes()
            WordBank.load(bank_path, data)  # a bad bank is one clear error before anything runs
            factory = bank_factory(bank_path, data)  # these bytes, whatever the file becomes
        chunk_ms = self.config.audio.block_ms(self.speed)
        for a in self.audio:
            try:
                self._sources.append(
                    WavSource(a, stream=a, rate=cfg.rate, chunk_ms=chunk_ms, speed=self.speed)
                )
            except StreamerError as e:
                self.failed += 1
                self._error(str(e))
        self._sources += self.mic_sources(cfg.rate)
        if not self._sources:
            return
        pool: UtterancePool
        if self.cluster is not None:
            from streamer.cluster.speech import ClusterRecognizerPool

            cc = self.config.cluster
            pool = ClusterRecognizerPool(
                factory,
                self.cluster,
                actors=cc.recognizers or rc.workers,
                batch=cc.utterance_batch,
                in_flight=cc.in_flight,
                max_pending=rc.max_pending,
            )
        else:
            pool = RecognizerPool(
                factory, workers=rc.workers, kind=rc.kind, max_pending=rc.max_pending
            )
        self.pool = pool
        await pool.start(wait=False)
        self._watch_bank(bank_path)

        async def one(src: AudioSource) -> None:
            meter = self.meters[src.stream] = LevelMeter()
            try:
                self.stream_stats.append(await run_stream(src, pool, sink, config=cfg, meter=meter))
            finally:
                if self.meters.get(src.stream) is meter:
                    del self.meters[src.stream]

        for src in self._sources:
            tasks[asyncio.create_task(one(src), name=f"audio:{src.stream}")] = f"audio {src.stream}"

    def _watch_bank(self, bank_path: Path | None) -> None:
        """Swap a changed bank file (`streamer enroll`) into the workers, between utterances."""
        interval = self.config.recognizer.watch_bank
        if bank_path is None or interval <= 0 or self.pool is None:
            return
        from streamer.speech.enroll import BankWatcher

        def said(kind: str, detail: str) -> None:
            self._status(f"bank {detail}")

        watcher = BankWatcher(bank_path, self.pool, interval=interval, on_event=said)
        self._bank_watch = asyncio.create_task(watcher.run(), name="bank-watch")

    def _start_ticks(self, sink: Sink, tasks: dict[asyncio.Task[Any], str]) -> None:
        if not self.ticks:
            return
        from streamer.market.stream import run_ticks

        cluster = self.cluster

        async def ticks() -> None:
            replayed = _Replayed(sink) if isinstance(sink, _Counting) else sink
            if cluster is not None:
                from streamer.cluster.ticks import run_ticks_cluster

                self.tick_result = await run_ticks_cluster(
                    self.config.ticks,
                    self.config.tracker,
                    self.speed,
                    replayed,
                    cluster,
                    on_event=self._status,
                )
                return
            pub = self.publisher
            waits = pub is not None and self.speed == 0  # a replay flat out can wait for readers
            with pub.pacing() if pub is not None and waits else contextlib.nullcontext():
                self.tick_result = await run_ticks(
                    self.config.ticks,
                    self.config.tracker,
                    self.speed,
                    replayed,
                    on_event=self._status,
                    trackers=self._tick_trackers,
                    executor=self._fit_pool,
                    ready=pub.ready if pub is not None and waits else None,
                )

        tasks[asyncio.create_task(ticks(), name="ticks")] = "tick replay"

    def _open_feed(self, sink: Sink, curve: CurveServer | None) -> None:
        if not (self.feeds or self.feed_connect):
            return
        f = self.config.feed
        kw: dict[str, Any] = {
            "bind_to": self.feeds,
            "connect_to": self.feed_connect,
            "config": self.config.tracker,
            "symbols": f.symbols or None,
            "max_bytes": f.max_tick_bytes,
            "max_symbols": f.max_symbols,
            "context": self.context,
            "curve": curve,
            "on_event": self._status,
        }
        if self.cluster is not None:  # checked here, decoded by the shard actors
            from streamer.cluster.feed import ClusterTickFeed

            self.feed = ClusterTickFeed(sink, self.cluster, self.config.cluster, **kw)
        else:
            self.feed = TickFeed(sink, executor=self._fit_pool, **kw)
        self.feed.open()
        if self.resume is not None:
            self.feed.core.restore(self.resume.trackers.get("feed", {}))

    def audio_levels(self) -> dict[str, P.Level]:
        """Each running stream's level since the last heartbeat (none: left out)."""
        out = {}
        for name, m in self.meters.items():
            level = m.take()
            if level is not None:
                out[name] = P.Level(*level)
        return out

    def speech_metrics(self) -> dict[str, Any]:
        """Words out per stream, errors, the pool's counters, audio dropped at capture."""
        counts = self.counts
        words = counts.words if counts is not None else Counter()
        d: dict[str, Any] = {
            "events": sum(words.values()),
            "errors": counts.word_errors if counts is not None else 0,
            "streams": dict(words),
        }
        if self.pool is not None:
            d["pool"] = dataclasses.asdict(self.pool.stats)
        d["dropped_samples"] = sum(s.dropped for s in self._sources)
        return d

    def ticks_metrics(self) -> dict[str, Any]:
        """Regime decodes out, in all and per symbol."""
        decodes = self.counts.decodes if self.counts is not None else Counter()
        return {"decoded": sum(decodes.values()), "symbols": dict(decodes)}

    def metrics(self) -> dict[str, Any]:
        """The final figures (`--stats`): the publisher's metrics, or the producers' alone."""
        if self.publisher is not None:
            return self.publisher.metrics()
        d: dict[str, Any] = {"speech": self.speech_metrics(), "ticks": self.ticks_metrics()}
        if self.feed is not None:
            d["feed"] = self.feed.stats()
        if self.cluster is not None:
            d["cluster"] = self.cluster_metrics()
        out: dict[str, Any] = P.builtins(d)
        return out

    def cluster_metrics(self) -> dict[str, Any]:
        """What the cluster did: nodes and actors that did work, calls, recoveries."""
        return self.cluster.stats.as_dict() if self.cluster is not None else {}

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until every finite source is done (unless `stay`) or a stop; the exit code."""
        rt = self.config.service.realtime_priority
        why = realtime.enter(rt)
        if why is not None:
            log.warning("%s: running under the normal scheduling policy", why)
            rt = 0
        if self.context is None:
            self.context = realtime.context(rt)
        try:
            with self._signal_handlers():
                await self._run()
        finally:
            if self._own_ctx and self.context is not None:
                ctx, self.context = self.context, None
                await term_context(ctx)
            if rt:
                realtime.leave()
        if self.failed:
            return 2
        return FORCED if self._force.is_set() else 0  # a second signal cut the drain short

    async def _run(self) -> None:
        curve = curve_for(self.config)
        tasks: dict[asyncio.Task[Any], str] = {}
        pub: Publisher | None = None
        ck = self.checkpointer
        if ck is not None:
            self.resume = ck.load(on_event=self._status)  # StateError: one line, exit 2
            if self.resume is not None:
                self._tick_trackers.update(self.resume.trackers.get("ticks", {}))
        if self._given_sink is None:
            pub = self.publisher = publisher_for(
                self.config,
                curve=curve,
                context=self.context,
                resume=self.resume,
                epoch=ck.epoch if ck is not None else None,
            )
            if ck is not None:
                # words, status and metrics: a restart must not reuse their seqs (streamer.state)
                kept = {t: n for t, n in pub.next_seqs().items() if not t.startswith(P.REGIME)}
                self._journal = SeqJournal(ck.dir / SEQ_FILE, ck.epoch, kept)
                pub.on_seq = self._journal.note
                # regimes: the seq and tick time of the last published, so that new ticks
                # after a resume never take a seq that other decodes had before the crash
                marks = ck.dir / MARKS_FILE
                if self.resume is not None:
                    pub.renumber(RegimeMarks.read(marks, ck.epoch))
                self._marks = RegimeMarks(marks, ck.epoch)
                pub.on_regime = self._marks.note
            pub.sources = (
                [f"audio:{a}" for a in self.audio]
                + (["mic"] if self.mic else [])
                + [f"ticks:{t}" for t in self.ticks]
                + [f"feed:{e}" for e in self.feeds + self.feed_connect]
            )
        sink = self.counts = _Counting(pub if pub is not None else self._given_sink)  # type: ignore[arg-type]
        if self.tune_gc:
            gc.collect()  # now, before heartbeats start: a full collection is a long pause
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.config.cluster.address is not None:
                    await self._connect_cluster()
                if pub is not None:
                    await stack.enter_async_context(pub)
                    pub.add_metrics("speech", self.speech_metrics)
                    pub.levels = self.audio_levels
                    pub.add_metrics("ticks", self.ticks_metrics)
                    if ck is not None:
                        pub.add_metrics("state", ck.stats)
                    if self.cluster is not None:
                        pub.add_metrics("cluster", self.cluster_metrics)
                    pub.status("starting", detail=self.resume.describe() if self.resume else None)
                    c = self.config.publisher
                    if not await self._until_stopped(
                        pub.wait_for(c.wait_subscribers, c.wait_timeout)
                    ):
                        pub.status("stopped", detail="stopped while waiting for subscribers")
                        return
                    if self.config.dashboard.http is not None:
                        await self._start_dashboard(stack, pub)
                if (self.ticks or self.feeds or self.feed_connect) and self.cluster is None:
                    sc = self.config.service  # (on the cluster the shard actors fit)
                    # off the loop: a process pool's first worker waits for the forkserver's
                    # imports (seconds), and heartbeats must go on meanwhile
                    self._fit_pool = await asyncio.to_thread(
                        fit_executor, sc.fit_kind, sc.fit_workers
                    )
                self._open_feed(sink, curve)
                if pub is not None and self.feed is not None:
                    pub.add_metrics("feed", self.feed.stats)
                await self._start_audio(sink, tasks)
                self._start_ticks(sink, tasks)
                if self.feed is not None:
                    tasks[asyncio.create_task(self._run_feed(self.feed), name="feed")] = "tick feed"
                if self.tune_gc:
                    _tune_gc()
                if pub is not None:  # (a resume is said again: `starting` may go unseen)
                    pub.status("running", detail=self.resume.describe() if self.resume else None)
                if ck is not None and pub is not None:
                    self._checkpoints = asyncio.create_task(
                        self._checkpoint_every(ck, pub), name="checkpoints"
                    )
                await self._serve(tasks)
                if pub is not None:
                    pub.status("draining")
                await self._drain(tasks)
                if self._force.is_set() and pub is not None:
                    pub.linger = min(pub.linger, 0.2)  # cut short: do not wait on slow readers
                if self._checkpoints is not None:
                    self._checkpoints.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._checkpoints
                if pub is not None:
                    pub.publish_summaries()
                    pub.publish_metrics()
                    pub.status("stopped")  # last: a client that sees it has everything
                    if ck is not None and not self._force.is_set():
                        await self._checkpoint(ck, pub)  # the seqs of everything published
        finally:
            if self._checkpoints is not None and not self._checkpoints.done():
                self._checkpoints.cancel()
            if self.checkpointer is not None:
                await self.checkpointer.flush()
            if self._journal is not None:
                self._journal.close()
            if self._marks is not None:
                self._marks.close()
            if self._bank_watch is not None:
                self._bank_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._bank_watch
            for t in tasks:
                if not t.done():
                    t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            if self.pool is not None:
                await self.pool.aclose()
            if self.feed is not None:
                await self.feed.aclose()
            if self._fit_pool is not None:
                close_fit_executor(self._fit_pool, now=self._force.is_set())
            self._close_cluster()
        if self.config.service.stats:
            print(f"streamer {self.name}: {P.dumps(self.metrics())}", file=sys.stderr)

    async def _start_dashboard(self, stack: contextlib.AsyncExitStack, pub: Publisher) -> None:
        """`--http`: the web dashboard, subscribed to our own publisher over loopback."""
        from streamer.dashboard import dashboard_for  # aiohttp only when asked for

        own = reachable(pub.endpoint, "tcp://127.0.0.1:0")
        dash = dashboard_for(self.config, connect=own, context=self.context)
        await stack.enter_async_context(dash)
        print(f"streamer {self.name}: dashboard at {dash.url}", file=sys.stderr, flush=True)

    def _trackers(self) -> dict[str, dict[str, RegimeTracker]]:
        return {
            "ticks": self._tick_trackers,
            "feed": self.feed.core.trackers if self.feed is not None else {},
        }

    async def _checkpoint(self, ck: Checkpointer, pub: Publisher) -> None:
        await ck.flush()
        await ck.save(self._trackers(), pub.next_seqs())

    async def _checkpoint_every(self, ck: Checkpointer, pub: Publisher) -> None:
        """Write the state every `checkpoint_every` seconds (the first one at once)."""
        while True:
            await self._checkpoint(ck, pub)
            await asyncio.sleep(ck.config.checkpoint_every)

    async def _connect_cluster(self) -> None:
        """Join the Ray cluster `--cluster` names (ConfigError, one line, without Ray)."""
        from streamer.cluster.runtime import ClusterRuntime

        runtime = ClusterRuntime(self.config.cluster)
        await asyncio.to_thread(runtime.connect)
        self.cluster = runtime

    def _close_cluster(self) -> None:
        if self.cluster is not None:
            self.cluster.close()

    async def _until_stopped(self, coro: Awaitable[None]) -> bool:
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

    async def _run_feed(self, feed: TickFeed) -> None:
        await feed.run(drain_timeout=self.drain_timeout)

    def _error(self, msg: str) -> None:
        print(f"streamer {self.name}: error: {msg}", file=sys.stderr)

    def _reap(self, task: asyncio.Task[Any], tasks: dict[asyncio.Task[Any], str]) -> None:
        """A source task ended: a user error is one line (the others go on); a bug propagates."""
        if task.cancelled() or task in self._reaped:
            return
        self._reaped.add(task)
        e = task.exception()
        if isinstance(e, StreamerError):
            self.failed += 1
            self._error(f"{tasks[task]}: {e}")
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
    (The full collection before it runs at start-up, before the first heartbeat:
    here, with heartbeats going, it would hold them up for a few hundred ms.)
    """
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


__all__ = ["FORCED", "Service", "curve_for", "publisher_for"]

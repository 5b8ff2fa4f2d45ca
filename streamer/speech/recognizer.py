"""Recognition off the event loop: a pool of workers, each holding its own bank.

Scoring is numpy on small matrices and pure-Python glue, which mostly holds the
GIL, so worker *processes* are what scale; a thread pool and an inline mode
(in the loop, for tests and one-off use) sit behind the same interface.

The process pool is built on plain pipes rather than `ProcessPoolExecutor`:
each worker takes one utterance at a time, so when one dies (a segfault, the
OOM killer) the pool knows exactly which utterance it was holding. That one is
retried once on a fresh worker and, if it kills that one too, reported as an
error event; the utterances queued behind it are never lost. The bank is
loaded once per worker, by the factory, when the worker starts.

Backpressure: at most `max_pending` utterances are in the pool (queued or
being recognised). `submit` waits for room, which holds up the pipeline and,
through it, a replay source; nothing is dropped here. Results are futures in
submission order; the pipeline emits them in that order, per stream.

A new bank can be swapped in while audio flows (`swap`, used when the bank file
changes under a running service): utterances submitted before the swap finish
on the old bank, later ones use the new one. A process worker loads the new
bank once the oldest utterance waiting is a new one (at once if it is idle), so
nothing is dropped or re-ordered and no worker holds two banks.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import multiprocessing as mp
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamer.audio.wav import resample
from streamer.errors import AudioError, BankError, ConfigError, StreamerError
from streamer.messages import Recognition, Utterance, WordEvent

log = logging.getLogger(__name__)

KINDS = ("process", "thread", "inline")
REJECTED = Recognition(label=None, confidence=0.0, nbest=())


class Recognizer(Protocol):
    """What a worker needs from a bank."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def labels(self) -> list[str]: ...

    def recognize(self, samples: np.ndarray, where: str = "utterance") -> Recognition: ...


RecognizerFactory = Callable[[], Recognizer]


class UtterancePool(Protocol):
    """What the pipeline and the bank watcher need from a pool: `RecognizerPool`, or the
    cluster's (`streamer.cluster.speech.ClusterRecognizerPool`)."""

    stats: PoolStats

    async def start(self, wait: bool = True) -> None: ...

    async def submit(self, utt: Utterance) -> asyncio.Future[WordEvent]: ...

    def swap(self, factory: RecognizerFactory) -> int: ...

    async def aclose(self) -> None: ...


def _load_bank(path: str, data: bytes | None = None) -> Recognizer:
    from streamer.speech.bank import WordBank

    return WordBank.load(path, data)


def bank_factory(path: str | Path, data: bytes | None = None) -> RecognizerFactory:
    """A picklable factory that loads the bank at `path` as it is now (in each worker).

    The file's bytes (`data`, or read here) travel with the factory, so a worker
    started later, such as a crashed one's replacement, gets this same bank even
    when the file has changed or is half-written by then. An unreadable file is
    left for the worker to report (BankError at the pool's start).
    """
    if data is None:
        with contextlib.suppress(OSError):
            data = Path(path).read_bytes()
    return functools.partial(_load_bank, str(path), data)


class FakeRecognizer:
    """A deterministic stand-in for a bank, for tests: the label is the loudness band.

    `delay` seconds of busy work per utterance simulate scoring cost (it holds
    the GIL, like the real scorer); `jitter` adds 0, 1 or 2 times that much
    depending on the utterance's length, so workers finish out of order. An
    utterance whose first sample equals `crash_marker` kills the worker process
    on the spot, the way a segfault would: that is how the pool's crash
    handling is tested.
    """

    def __init__(
        self,
        labels: tuple[str, ...] = ("quiet", "loud"),
        sample_rate: int = 8000,
        delay: float = 0.0,
        crash_marker: float | None = None,
        min_samples: int = 400,
        jitter: float = 0.0,
    ) -> None:
        self._labels = list(labels)
        self._rate = sample_rate
        self.delay = delay
        self.crash_marker = crash_marker
        self.min_samples = min_samples
        self.jitter = jitter
        self.pid = os.getpid()

    @property
    def sample_rate(self) -> int:
        return self._rate

    @property
    def labels(self) -> list[str]:
        return self._labels

    def recognize(self, samples: np.ndarray, where: str = "utterance") -> Recognition:
        x = np.asarray(samples, dtype=np.float32)
        if self.crash_marker is not None and x.size and x[0] == np.float32(self.crash_marker):
            os._exit(70)  # die like a segfault would: no exception, no clean-up
        if x.size < self.min_samples:
            raise AudioError(f"{where}: utterance too short ({x.size} samples)")
        busy = self.delay + self.jitter * (x.size % 3)
        if busy:
            import time

            end = time.perf_counter() + busy
            while time.perf_counter() < end:
                pass
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        k = min(len(self._labels) - 1, int(rms * 20))
        ll = -float(x.size) / 100.0
        nbest = tuple((w, ll - 10.0 * abs(i - k)) for i, w in enumerate(self._labels))
        nbest = tuple(sorted(nbest, key=lambda t: -t[1]))
        return Recognition(label=self._labels[k], confidence=0.9, nbest=nbest, best=self._labels[k])


def fake_factory(**kw: Any) -> RecognizerFactory:
    """A picklable factory of FakeRecognizer(**kw)."""
    return functools.partial(FakeRecognizer, **kw)


_traced = False


def recognize_samples(
    rec: Recognizer, samples: np.ndarray, rate: int, where: str
) -> tuple[Recognition, str | None]:
    """Recognise one utterance; a user-level failure becomes an error string, not a raise."""
    try:
        x = samples if rate == rec.sample_rate else resample(samples, rate, rec.sample_rate)
        return rec.recognize(x, where=where), None
    except StreamerError as e:
        return REJECTED, str(e)
    except Exception as e:  # a bug in a recognizer must not take the stream down
        global _traced
        if not _traced:  # one traceback per process is enough to find the bug
            _traced = True
            log.exception("recognition failed on %s", where)
        return REJECTED, f"{where}: recognition failed ({type(e).__name__}: {e})"


def _where(u: Utterance) -> str:
    return f"{u.stream}#{u.index}"


def _event(u: Utterance, rec: Recognition, error: str | None) -> WordEvent:
    return WordEvent(
        stream=u.stream,
        index=u.index,
        start=u.start,
        end=u.end,
        recognition=rec,
        error=error,
        closed_at=u.closed_at,
    )


# -- the worker process -------------------------------------------------------------------------


def _worker_main(conn: Connection, factory: RecognizerFactory, inherited: list[int]) -> None:
    """A worker: load the bank once, then recognise utterances until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not a forked copy of the parent's drain
    # forked: drop the parent's ends of sibling workers' pipes (they would keep a sibling
    # alive after the parent dies) and the event loop's signal wake-up descriptor
    for fd in inherited:
        with contextlib.suppress(OSError):
            os.close(fd)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    try:
        rec = factory()
    except BaseException as e:
        msg = str(e) if isinstance(e, StreamerError) else f"{type(e).__name__}: {e}"
        with contextlib.suppress(Exception):
            conn.send(("failed", msg, type(e).__name__))
        return
    try:
        conn.send(("ready", os.getpid(), None))
    except (BrokenPipeError, OSError):
        return  # the pool closed while this worker was loading: nothing to do
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if msg[0] == "load":  # a new bank (swap): keep the old one if it cannot load
            _, new_factory, gen = msg
            try:
                rec = new_factory()
                reply: tuple[str, Any, str | None] = ("loaded", gen, None)
            except BaseException as e:
                reply = ("loadfail", gen, f"{type(e).__name__}: {e}")
            try:
                conn.send(reply)
            except (BrokenPipeError, OSError):
                return
            continue
        job, samples, rate, where = msg
        result, error = recognize_samples(rec, samples, rate, where)
        try:
            conn.send((job, result, error))
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Job:
    id: int
    utt: Utterance
    future: asyncio.Future[WordEvent]
    attempts: int = 0
    gen: int = 0  # the bank generation current when it was submitted


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    ready: bool = False
    job: _Job | None = None
    pid: int | None = None
    gen: int = 0  # the bank generation it holds
    loading: bool = False  # busy loading a new bank (swap)


@dataclass
class PoolStats:
    """What the pool did; `crashes` counts worker processes that died under it."""

    submitted: int = 0
    completed: int = 0
    errors: int = 0
    crashes: int = 0
    waited: float = 0.0  # seconds `submit` spent waiting for room (backpressure)
    crashed_utterances: list[str] = field(default_factory=list)
    swaps: int = 0  # new banks swapped in
    swap_failures: int = 0  # workers that could not load a swapped-in bank (kept the old one)
    workers: list[int] = field(default_factory=list)  # pids of the live worker processes


async def take_slot(
    slots: asyncio.Semaphore, loop: asyncio.AbstractEventLoop, stats: PoolStats
) -> asyncio.Future[WordEvent]:
    """Wait for room among a pool's pending utterances (the wait counted in `stats`), then
    a future for the utterance's WordEvent that frees the room when it is done."""
    if slots.locked():
        t0 = loop.time()
        await slots.acquire()
        stats.waited += loop.time() - t0
    else:
        await slots.acquire()
    stats.submitted += 1
    fut: asyncio.Future[WordEvent] = loop.create_future()
    fut.add_done_callback(lambda _f: slots.release())
    return fut


class RecognizerPool:
    """Recognise Utterances off the event loop; use as `async with RecognizerPool(...)`."""

    def __init__(
        self,
        factory: RecognizerFactory,
        *,
        workers: int = 1,
        kind: str = "process",
        max_pending: int | None = None,
        start_method: str | None = None,
        start_timeout: float = 120.0,
        max_attempts: int = 2,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"worker kind {kind!r}: choose from {', '.join(KINDS)}")
        if workers < 1:
            raise ConfigError(f"workers={workers}: need at least one")
        self.factory = factory
        self.kind = kind
        self.workers = workers if kind != "inline" else 1
        self.max_pending = max_pending or 2 * self.workers + 2
        if self.max_pending < 1:
            raise ConfigError("max_pending must be at least 1")
        self.start_method = start_method or "auto"
        self.start_timeout = start_timeout
        self.max_attempts = max_attempts
        self.stats = PoolStats()
        self.sample_rate: int | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Job] = deque()
        self._workers: list[_Worker] = []
        self._next_id = 0
        self._fatal: str | None = None
        self._closed = False
        self._inline: Recognizer | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._tls = threading.local()
        self._started: asyncio.Future[None] | None = None
        self.generation = 0  # bumped by every swap
        # thread workers load the bank of the generation an utterance was submitted under,
        # so one that starts (or reloads) after a swap does not use the new bank too early
        self._factories: dict[int, RecognizerFactory] = {0: factory}

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> RecognizerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self, wait: bool = True) -> None:
        """Start the workers and wait until each has its bank (BankError if it cannot load).

        With `wait=False` the workers boot in the background while utterances
        queue up (for a caller that has already checked the bank loads).
        """
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.max_pending)
        if self.kind == "inline":
            self._inline = self._make_local()
            self.sample_rate = self._inline.sample_rate
            return
        if self.kind == "thread":
            self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="recognizer")
            # load one bank per thread now, so the first utterances do not pay for it
            rates = await asyncio.gather(
                *(
                    self._loop.run_in_executor(self._threads, self._thread_warm)
                    for _ in range(self.workers)
                )
            )
            self.sample_rate = rates[0]
            return
        self._started = self._loop.create_future()
        # mark a start failure as seen even when nobody waits (wait=False): futures get it
        self._started.add_done_callback(lambda f: f.cancelled() or f.exception())
        for _ in range(self.workers):
            self._spawn()
        if not wait:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._started), self.start_timeout)
        except TimeoutError:
            await self.aclose()
            raise BankError(
                f"recognition workers did not start within {self.start_timeout:.0f} s"
            ) from None
        except BaseException:
            await self.aclose()
            raise

    def _make_local(self, factory: RecognizerFactory | None = None) -> Recognizer:
        try:
            return (factory or self.factory)()
        except StreamerError:
            raise
        except Exception as e:
            raise BankError(f"cannot load the recognizer: {type(e).__name__}: {e}") from None

    def _thread_warm(self) -> int:
        rec = getattr(self._tls, "rec", None)
        if rec is None:
            self._tls.gen = self.generation
            rec = self._tls.rec = self._make_local()
        return rec.sample_rate

    def _thread_run(
        self, samples: np.ndarray, rate: int, where: str, gen: int = 0
    ) -> tuple[Recognition, str | None]:
        rec = getattr(self._tls, "rec", None)
        if rec is None or getattr(self._tls, "gen", -1) != gen:
            rec = self._make_local(self._factories.get(gen))
            self._tls.gen, self._tls.rec = gen, rec
        return recognize_samples(rec, samples, rate, where)

    def swap(self, factory: RecognizerFactory) -> int:
        """Use `factory`'s recognizer for utterances submitted from now on; the new generation.

        Utterances already submitted finish on the old one. The caller checks
        beforehand that the factory works (a process worker that cannot load it
        keeps its old bank and counts a `swap_failure`; inline, the error raises).
        """
        if self._closed:
            raise ConfigError("the recognizer pool is closed")
        if self.kind == "inline" and self._loop is not None:
            old, self.factory = self.factory, factory
            try:
                self._inline = self._make_local()
            except BaseException:
                self.factory = old
                raise
        self.factory = factory
        previous = self.generation
        self.generation += 1
        # the previous bank stays for utterances still in flight; older ones are done with
        self._factories = {previous: self._factories[previous], self.generation: factory}
        self.stats.swaps += 1
        if self.kind == "process" and self._loop is not None:
            self._dispatch()
        return self.generation

    async def aclose(self) -> None:
        """Stop the workers; anything still queued fails with an error event."""
        if self._closed:
            return
        self._closed = True
        while self._queue:
            job = self._queue.popleft()
            self._finish(job, REJECTED, "recognizer pool closed before this utterance")
        for w in self._workers:
            if w.job is not None:
                self._finish(w.job, REJECTED, "recognizer pool closed before this utterance")
                w.job = None
            self._stop_worker(w)
        self._workers.clear()
        self.stats.workers.clear()
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        if self._started is not None and not self._started.done():
            self._started.cancel()

    # -- submitting -----------------------------------------------------------------------------

    async def submit(self, utt: Utterance) -> asyncio.Future[WordEvent]:
        """Queue one utterance, waiting while the pool is full; a future of its WordEvent."""
        if self._slots is None or self._loop is None:
            raise ConfigError("the recognizer pool is not started")
        if self._closed:
            raise ConfigError("the recognizer pool is closed")
        if self._fatal:
            raise BankError(self._fatal)
        fut = await take_slot(self._slots, self._loop, self.stats)
        if self.kind == "inline":
            assert self._inline is not None
            rec, err = recognize_samples(self._inline, utt.samples, utt.rate, _where(utt))
            self._finish(_Job(0, utt, fut), rec, err)
        elif self.kind == "thread":
            cf = self._loop.run_in_executor(
                self._threads, self._thread_run, utt.samples, utt.rate, _where(utt), self.generation
            )
            job = _Job(0, utt, fut)
            cf.add_done_callback(functools.partial(self._thread_done, job))
        else:
            self._next_id += 1
            self._queue.append(_Job(self._next_id, utt, fut, gen=self.generation))
            self._dispatch()
        return fut

    async def recognize(self, utt: Utterance) -> WordEvent:
        """Submit and wait: one utterance's event."""
        return await (await self.submit(utt))

    def _thread_done(self, job: _Job, cf: asyncio.Future[tuple[Recognition, str | None]]) -> None:
        if cf.cancelled():
            self._finish(job, REJECTED, "recognizer pool closed before this utterance")
            return
        exc = cf.exception()
        if exc is not None:
            self._finish(job, REJECTED, f"recognition failed: {exc}")
        else:
            self._finish(job, *cf.result())

    def _finish(self, job: _Job, rec: Recognition, error: str | None) -> None:
        if job.future.done():
            return
        self.stats.completed += 1
        self.stats.errors += error is not None
        job.future.set_result(_event(job.utt, rec, error))

    # -- the process pool -----------------------------------------------------------------------

    def _context(self) -> Any:
        """How to start a worker: `auto` forks while this process has a single thread.

        A fork inherits the modules the parent has already imported (numpy,
        scipy, the bank code), so a worker is ready in tens of milliseconds
        instead of the second or more a fresh interpreter needs; with other
        threads running, a fork could inherit a lock held mid-operation, so the
        fork server (started once, with the bank code preloaded) is used instead.
        """
        method = self.start_method
        if method == "auto":
            method = "fork" if threading.active_count() == 1 else "forkserver"
        ctx = mp.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(["streamer.speech.recognizer", "streamer.speech.bank"])
        return ctx

    def _spawn(self) -> _Worker:
        ctx = self._context()
        parent, child = ctx.Pipe(duplex=True)
        siblings = []  # descriptor numbers mean the same thing in the child only after a fork
        if ctx.get_start_method() == "fork":
            siblings = [w.conn.fileno() for w in self._workers if not w.conn.closed]
        proc = ctx.Process(
            target=_worker_main,
            args=(child, self.factory, siblings),
            daemon=True,
            name="streamer-recognizer",
        )
        proc.start()
        child.close()
        w = _Worker(proc=proc, conn=parent, gen=self.generation)
        self._workers.append(w)
        assert self._loop is not None
        self._loop.add_reader(parent.fileno(), self._on_readable, w)
        return w

    def _stop_worker(self, w: _Worker) -> None:
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(w.conn.fileno())
        if not w.ready:
            w.proc.kill()  # still loading its bank: no work of ours to finish
        with contextlib.suppress(Exception):
            w.conn.send(None)
        with contextlib.suppress(Exception):
            w.conn.close()
        w.proc.join(timeout=2.0)
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join(timeout=2.0)

    def _on_readable(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            self._on_crash(w)
            return
        if not w.ready:
            tag, info, kind = msg
            if tag == "ready":
                w.ready, w.pid = True, info
                self.stats.workers.append(info)
                started = self._started
                if started and not started.done() and all(x.ready for x in self._workers):
                    started.set_result(None)
                self._dispatch()
            else:
                self._fail_all(f"cannot load the recognizer in a worker: {info}", kind)
            return
        if msg[0] in ("loaded", "loadfail"):
            tag, gen, why = msg
            w.loading = False
            w.gen = max(w.gen, gen)
            if tag == "loadfail":
                self.stats.swap_failures += 1
                log.warning("recognition worker %s kept its old bank: %s", w.pid, why)
            self._dispatch()
            return
        job_id, rec, err = msg
        job = w.job
        w.job = None
        if job is not None and job.id == job_id:
            self._finish(job, rec, err)
        self._dispatch()

    def _on_crash(self, w: _Worker) -> None:
        """A worker died: report it, replace it, retry or fail only the utterance it held."""
        assert self._loop is not None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(w.conn.fileno())
        w.conn.close()
        w.proc.join(timeout=2.0)
        code = w.proc.exitcode
        if w in self._workers:
            self._workers.remove(w)
        if w.pid in self.stats.workers:
            self.stats.workers.remove(w.pid)
        if self._closed:
            return
        if not w.ready:
            self._fail_all(f"a recognition worker died while loading the bank (exit code {code})")
            return
        self.stats.crashes += 1
        job, w.job = w.job, None
        where = _where(job.utt) if job else "no utterance"
        log.warning(
            "recognition worker %s died (exit code %s) on %s; replacing it", w.pid, code, where
        )
        if job is not None:
            job.attempts += 1
            self.stats.crashed_utterances.append(where)
            if job.attempts < self.max_attempts:
                self._queue.appendleft(job)
            else:
                self._finish(
                    job, REJECTED, f"{where}: recognition worker crashed (exit code {code})"
                )
        self._spawn()
        self._dispatch()

    def _fail_all(self, message: str, kind: str | None = None) -> None:
        self._fatal = message
        if self._started is not None and not self._started.done():
            self._started.set_exception(BankError(message))
        while self._queue:
            self._finish(self._queue.popleft(), REJECTED, message)
        for w in self._workers:
            if w.job is not None:
                self._finish(w.job, REJECTED, message)
                w.job = None

    def _dispatch(self) -> None:
        for w in self._workers:
            if not w.ready or w.job is not None or w.loading:
                continue
            queue = self._queue
            if queue and queue[0].gen <= w.gen:
                job = queue.popleft()
                w.job = job
                u = job.utt
                # on a dead worker the reader sees EOF next and handles the crash
                with contextlib.suppress(BrokenPipeError, OSError):
                    w.conn.send((job.id, u.samples, u.rate, _where(u)))
            elif w.gen < self.generation:
                # a swap: the utterances before it are all out, so this worker moves on
                w.loading = True
                with contextlib.suppress(BrokenPipeError, OSError):
                    w.conn.send(("load", self.factory, self.generation))


def measure_kinds(
    factory: RecognizerFactory, utterances: list[Utterance], workers: int = 2
) -> dict[str, float]:
    """Utterances per second for each pool kind (used by the benchmark to pick one)."""
    import time

    async def one(kind: str) -> float:
        async with RecognizerPool(factory, workers=workers, kind=kind) as pool:
            await pool.recognize(utterances[0])
            t0 = time.perf_counter()
            futs = [await pool.submit(u) for u in utterances]
            await asyncio.gather(*futs)
            return len(utterances) / (time.perf_counter() - t0)

    return {kind: asyncio.run(one(kind)) for kind in KINDS}

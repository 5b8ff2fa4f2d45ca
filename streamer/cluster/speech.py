"""Recognition on recognizer actors, behind the `RecognizerPool` interface the pipeline uses.

The voice-activity detector stays next to the audio (`streamer.speech.pipeline`
runs it on the head): only utterances cross the network, never frames. Each
actor holds the bank (loaded once, from one copy in Ray's object store) and
takes utterances in small batches: whatever is waiting, up to
`utterance_batch`, to the actor with the fewest calls outstanding, at most
`in_flight` calls per actor. `submit` waits while `max_pending` utterances are
in the pool, which holds up the stream that submitted (back-pressure, as the
local pool does); nothing is dropped.

A bank swap (`swap`, from the bank watcher) puts the new bank into the object
store and bumps the generation; every later call names the new generation and
an actor loads that bank on its next call, so utterances submitted before the
swap finish on the old bank and later ones use the new one, on every actor.
Ray restarts a recognizer actor that dies and retries its calls (an actor
holds nothing but the bank, which it loads again).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections import deque
from dataclasses import dataclass
from typing import Any

from streamer.cluster.runtime import ClusterRuntime, call
from streamer.errors import BankError, ConfigError, StreamerError
from streamer.messages import Recognition, Utterance, WordEvent
from streamer.speech.recognizer import REJECTED, PoolStats, RecognizerFactory, take_slot


@dataclass
class _Job:
    utt: Utterance
    future: asyncio.Future[WordEvent]
    gen: int


@dataclass
class _Actor:
    handle: Any
    name: str
    outstanding: int = 0
    calls: int = 0


class ClusterRecognizerPool:
    """Utterances recognised by `actors` recognizer actors; the `RecognizerPool` interface."""

    def __init__(
        self,
        factory: RecognizerFactory,
        runtime: ClusterRuntime,
        *,
        actors: int = 1,
        batch: int = 4,
        in_flight: int = 2,
        max_pending: int | None = None,
    ) -> None:
        if actors < 1:
            raise ConfigError(f"recognizer actors: need at least one, not {actors}")
        self.factory = factory
        self.runtime = runtime
        self.n_actors = actors
        self.batch = batch
        self.in_flight = in_flight
        self.max_pending = max_pending or actors * in_flight * batch + batch
        self.stats = PoolStats()
        self.generation = 0
        self.sample_rate: int | None = None
        self._banks: dict[int, list[Any]] = {}
        self._actors: list[_Actor] = []
        self._queue: deque[_Job] = deque()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._closed = False

    def _put_bank(self, factory: RecognizerFactory) -> list[Any]:
        try:
            rec = factory()
        except StreamerError:
            raise
        except Exception as e:
            raise BankError(f"cannot load the recognizer: {type(e).__name__}: {e}") from None
        self.sample_rate = rec.sample_rate
        return [self.runtime.put(rec)]  # in a list: actors fetch it only when they need it

    async def start(self, wait: bool = True) -> None:
        """Load the bank once here, put it in the object store, start the actors.

        With `wait`, returns once every actor is placed (the bank is loaded on its first call)."""
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.max_pending)
        self._banks[0] = await asyncio.to_thread(self._put_bank, self.factory)
        self._actors = [
            _Actor(self.runtime.recognizer(), f"recognizer-{i}") for i in range(self.n_actors)
        ]
        self.runtime.stats.recognizers = max(self.runtime.stats.recognizers, self.n_actors)
        if wait:
            await asyncio.gather(*(call(a.handle.where) for a in self._actors))

    async def __aenter__(self) -> ClusterRecognizerPool:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def swap(self, factory: RecognizerFactory) -> int:
        """Later utterances use `factory`'s bank, on every actor; the new generation."""
        if self._closed:
            raise ConfigError("the recognizer pool is closed")
        bank = self._put_bank(factory)
        self.factory = factory
        previous = self.generation
        self.generation += 1
        self._banks = {previous: self._banks[previous], self.generation: bank}
        self.stats.swaps += 1
        self.runtime.stats.swaps += 1
        return self.generation

    async def submit(self, utt: Utterance) -> asyncio.Future[WordEvent]:
        """Queue one utterance, waiting while the pool is full; a future of its WordEvent."""
        if self._slots is None or self._loop is None:
            raise ConfigError("the recognizer pool is not started")
        if self._closed:
            raise ConfigError("the recognizer pool is closed")
        fut = await take_slot(self._slots, self._loop, self.stats)
        self._queue.append(_Job(utt, fut, self.generation))
        self._dispatch()
        return fut

    async def recognize(self, utt: Utterance) -> WordEvent:
        return await (await self.submit(utt))

    def _dispatch(self) -> None:
        while self._queue:
            # the least busy, and among those the least used: work spreads over every actor
            actor = min(self._actors, key=lambda a: (a.outstanding, a.calls))
            if actor.outstanding >= self.in_flight:
                return
            gen = self._queue[0].gen
            jobs: list[_Job] = []
            while self._queue and len(jobs) < self.batch and self._queue[0].gen == gen:
                jobs.append(self._queue.popleft())
            actor.outstanding += 1
            actor.calls += 1
            items = [(j.utt.samples, j.utt.rate, f"{j.utt.stream}#{j.utt.index}") for j in jobs]
            fut = call(actor.handle.recognize, gen, self._banks[gen], items)
            self._tasks.add(fut)
            fut.add_done_callback(functools.partial(self._done, actor=actor, jobs=jobs))

    def _done(self, f: asyncio.Future[Any], *, actor: _Actor, jobs: list[_Job]) -> None:
        self._tasks.discard(f)
        actor.outstanding -= 1
        if f.cancelled():
            for j in jobs:
                self._finish(j, REJECTED, "recognizer pool closed before this utterance")
        elif f.exception() is not None:
            e = f.exception()
            for j in jobs:
                self._finish(j, REJECTED, f"recognition failed on the cluster: {e}")
        else:
            results, busy, start, end, node = f.result()
            st = self.runtime.stats
            st.did(node, actor.name, busy, start, end)
            st.utterances += len(jobs)
            for j, (rec, err) in zip(jobs, results, strict=True):
                self._finish(j, rec, err)
        if not self._closed:
            self._dispatch()

    def _finish(self, job: _Job, rec: Recognition, error: str | None) -> None:
        if job.future.done():
            return
        self.stats.completed += 1
        self.stats.errors += error is not None
        u = job.utt
        job.future.set_result(
            WordEvent(
                stream=u.stream,
                index=u.index,
                start=u.start,
                end=u.end,
                recognition=rec,
                error=error,
                closed_at=u.closed_at,
            )
        )

    async def aclose(self) -> None:
        """Stop the actors; anything still queued fails with an error event."""
        if self._closed:
            return
        self._closed = True
        while self._queue:
            self._finish(self._queue.popleft(), REJECTED, "recognizer pool closed")
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for a in self._actors:
            self.runtime.kill(a.handle)

    def pool_stats(self) -> dict[str, Any]:
        return dataclasses.asdict(self.stats)


__all__ = ["ClusterRecognizerPool"]

"""The thin async wiring of the speech side: source -> segmenter -> recognizer -> events.

Everything that decides anything is synchronous and lives elsewhere (the
segmenter, the bank); this module only moves data and keeps order. Per stream,
utterances are submitted to the pool in the order the segmenter closed them
and their events are emitted in that same order, whatever order the workers
finish in. `submit` waits when the pool is full, which stops this loop from
pulling the source: a replay slows down, a microphone drops at its callback.
End of stream travels behind the data: the segmenter is flushed and every
queued event is emitted before `run_stream` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from streamer.audio.level import LevelMeter
from streamer.audio.segmenter import Segmenter, SegmenterConfig
from streamer.audio.sources import AudioSource
from streamer.messages import Sink, Utterance, WordEvent
from streamer.speech.recognizer import UtterancePool


@dataclass
class StreamStats:
    """What one stream did: counts, the wall-clock close-to-emit delays, drops upstream."""

    stream: str
    utterances: int = 0
    events: int = 0
    errors: int = 0
    audio_seconds: float = 0.0
    dropped_samples: int = 0
    delays: deque[float] = field(default_factory=lambda: deque(maxlen=100_000))
    segmenter: dict[str, int] = field(default_factory=dict)


async def run_stream(
    source: AudioSource,
    pool: UtterancePool,
    sink: Sink,
    *,
    config: SegmenterConfig | None = None,
    timer: Callable[[], float] = time.perf_counter,
    meter: LevelMeter | None = None,
) -> StreamStats:
    """Replay or capture one stream to its end; every utterance's event is out on return.

    ``sink.publish(event, delay)`` gets each event with the wall seconds since
    the segmenter closed its utterance. `meter` measures the audio's level as it passes.
    """
    cfg = config or SegmenterConfig(rate=source.rate)
    seg = Segmenter(cfg, stream=source.stream)
    stats = StreamStats(stream=source.stream)
    order: asyncio.Queue[tuple[asyncio.Future[WordEvent], float] | None] = asyncio.Queue()

    async def emitter() -> None:
        while True:
            item = await order.get()
            if item is None:
                return
            fut, closed = item
            event = await fut
            delay = timer() - closed
            stats.events += 1
            stats.errors += event.error is not None
            stats.delays.append(delay)
            sink.publish(event, delay)

    task = asyncio.create_task(emitter(), name=f"emit:{source.stream}")

    async def submit_all(utts: list[Utterance]) -> None:
        for utt in utts:
            closed = timer()
            stats.utterances += 1
            fut = await pool.submit(utt)
            order.put_nowait((fut, closed))
        if task.done():  # the emitter failed (a closed stdout, say): stop reading
            task.result()

    try:
        async with contextlib.aclosing(source.__aiter__()) as chunks:
            async for chunk in chunks:
                if meter is not None:
                    meter.add(chunk.samples)
                utts = seg.feed(chunk)
                if utts:
                    await submit_all(utts)
                elif task.done():
                    task.result()
        await submit_all(seg.flush())
        order.put_nowait(None)
        await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        stats.audio_seconds = seg.position / cfg.rate
        stats.dropped_samples = source.dropped
        s = seg.stats
        stats.segmenter = {
            "frames": s.frames,
            "utterances": s.utterances,
            "splits": s.splits,
            "dropped_short": s.dropped_short,
            "dropped_tail": s.dropped_tail,
            "gap_samples": s.gap_samples,
        }
    return stats

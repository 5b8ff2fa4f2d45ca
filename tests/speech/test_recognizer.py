"""The recognizer pool and the pipeline: order, backpressure, crashed workers, bad banks."""

from __future__ import annotations

import asyncio
import os

import numpy as np
import pytest

from streamer.audio.sources import WavSource
from streamer.audio.synth import HELDOUT_VOICES, synthesize
from streamer.audio.wav import to_pcm16
from streamer.errors import BankError
from streamer.messages import Utterance
from streamer.speech.pipeline import run_stream
from streamer.speech.recognizer import FakeRecognizer, RecognizerPool, bank_factory, fake_factory
from tests.sinks import Collector

MARKER = 0.123


def _utt(i: int, n: int = 2000, first: float | None = None, level: float = 0.1) -> Utterance:
    x = np.full(n, level, np.float32)
    if first is not None:
        x[0] = first
    return Utterance("s", i, x, 8000, i * 1.0, i * 1.0 + n / 8000, i * 1.0 + n / 8000 + 0.2)


def _stream(n_words: int = 8) -> np.ndarray:
    parts = [np.zeros(6000, np.float32)]
    for i in range(n_words):
        w = ("apple", "kiwi", "orange", "lime")[i % 4]
        parts += [synthesize(w, HELDOUT_VOICES[i % 8]) * 0.4, np.zeros(6000, np.float32)]
    return to_pcm16(np.concatenate(parts))


async def test_workers_finish_out_of_order_but_futures_keep_their_utterance() -> None:
    done: list[int] = []
    async with RecognizerPool(fake_factory(jitter=0.2), workers=2, kind="process") as pool:
        slow = await pool.submit(_utt(0, n=2000))  # 2000 % 3 == 2: 0.4 s of work
        fast = await pool.submit(_utt(1, n=2001))  # 2001 % 3 == 0: none
        for f in (slow, fast):
            f.add_done_callback(lambda f: done.append(f.result().index))
        assert (await slow).index == 0 and (await fast).index == 1
    assert done == [1, 0]


async def test_events_come_out_in_input_order() -> None:
    pcm = _stream(10)
    sink = Collector()
    async with RecognizerPool(
        fake_factory(delay=0.002, jitter=0.01), workers=2, kind="process", max_pending=6
    ) as pool:
        src = WavSource(pcm, source_rate=8000, speed=0, stream="s")
        stats = await run_stream(src, pool, sink)
    events = sink.words
    assert [e.index for e in events] == list(range(10))
    assert stats.utterances == stats.events == 10
    assert all(e.error is None and e.closed_at is not None for e in events)
    assert all(e.closed_at >= e.end for e in events)  # type: ignore[operator]


async def test_backpressure_slows_the_replay_instead_of_dropping() -> None:
    pcm = _stream(6)
    sink = Collector()
    async with RecognizerPool(
        fake_factory(delay=0.25), workers=1, kind="thread", max_pending=1
    ) as pool:
        src = WavSource(pcm, source_rate=8000, speed=40.0, stream="s")
        await run_stream(src, pool, sink)
    events = sink.words
    assert [e.index for e in events] == list(range(6))
    assert pool.stats.waited > 0.3  # submit waited for room...
    assert src.slid > 0.3  # ...and the replay's schedule slid rather than burst
    assert src.dropped == 0


async def test_in_flight_work_is_bounded() -> None:
    async with RecognizerPool(
        fake_factory(delay=0.05), workers=1, kind="thread", max_pending=2
    ) as pool:
        f1 = await pool.submit(_utt(0))
        f2 = await pool.submit(_utt(1))
        third = asyncio.ensure_future(pool.submit(_utt(2)))
        await asyncio.sleep(0.01)
        assert not third.done()  # the third waits for room
        await f1
        f3 = await asyncio.wait_for(third, 1.0)
        assert (await f2).index == 1 and (await f3).index == 2


@pytest.mark.parametrize("method", ["auto", "forkserver"])
async def test_a_crashed_worker_is_reported_and_replaced_and_nothing_after_it_is_lost(
    caplog: pytest.LogCaptureFixture, method: str
) -> None:
    utts = [_utt(i, first=MARKER if i == 3 else None, level=0.01 * i) for i in range(8)]
    factory = fake_factory(crash_marker=MARKER)
    async with RecognizerPool(factory, workers=2, kind="process", start_method=method) as pool:
        pids = {w.pid for w in pool._workers}
        futs = [await pool.submit(u) for u in utts]
        events = [await f for f in futs]
        after = await pool.recognize(_utt(9))
        pids_after = {w.pid for w in pool._workers}
        ready = {w.pid for w in pool._workers if w.ready}
        assert set(pool.stats.workers) == ready  # the live workers, in the metrics
    assert [e.index for e in events] == list(range(8))
    bad = events[3]
    assert bad.recognition.label is None and "crashed" in (bad.error or "")
    assert all(e.error is None and e.recognition.label for i, e in enumerate(events) if i != 3)
    assert pool.stats.crashes == 2  # the first attempt, then the one retry on a fresh worker
    assert pool.stats.crashed_utterances == ["s#3", "s#3"]
    assert after.error is None
    assert len(pids_after) == 2 and pids_after != pids
    assert "died" in caplog.text and "s#3" in caplog.text


async def test_pool_kinds_agree() -> None:
    utts = [_utt(i, n=1000 + 300 * i, level=0.02 * i) for i in range(6)]
    results = {}
    for kind in ("inline", "thread", "process"):
        async with RecognizerPool(fake_factory(), workers=2, kind=kind) as pool:
            results[kind] = [await pool.recognize(u) for u in utts]
    assert results["inline"] == results["thread"] == results["process"]


async def test_unusable_utterance_is_an_error_event_not_a_failure() -> None:
    async with RecognizerPool(fake_factory(min_samples=500), kind="inline") as pool:
        ev = await pool.recognize(_utt(0, n=100))
        ok = await pool.recognize(_utt(1, n=1000))
    assert ev.recognition.label is None and "too short" in (ev.error or "")
    assert ok.error is None
    assert pool.stats.errors == 1


async def test_utterances_at_another_rate_are_resampled_for_the_bank() -> None:
    u = Utterance("s", 0, np.full(4000, 0.1, np.float32), 16000, 0.0, 0.25, 0.4)
    async with RecognizerPool(fake_factory(min_samples=1900), kind="inline") as pool:
        ev = await pool.recognize(u)
    assert ev.error is None  # 4000 samples at 16 kHz are 2000 at the bank's 8 kHz


@pytest.mark.parametrize("kind", ["process", "thread", "inline"])
async def test_a_bank_that_cannot_load_is_a_bank_error(tmp_path, kind: str) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.npz"
    pool = RecognizerPool(bank_factory(missing), kind=kind)
    with pytest.raises(BankError, match=r"nope\.npz"):
        await pool.start()
    await pool.aclose()


def test_fake_recognizer_is_deterministic() -> None:
    r = FakeRecognizer()
    x = np.full(1000, 0.1, np.float32)
    assert r.recognize(x) == r.recognize(x.copy())
    assert r.pid == os.getpid()


async def test_paced_and_unpaced_replays_give_the_same_events() -> None:
    from streamer.audio.sources import VirtualClock

    pcm = _stream(5)
    runs = []
    for speed, chunk in ((0.0, 1000.0), (1.0, 20.0), (3.0, 7.0)):
        clock = VirtualClock()
        sink = Collector()
        async with RecognizerPool(fake_factory(), kind="inline") as pool:
            src = WavSource(pcm, source_rate=8000, speed=speed, chunk_ms=chunk, clock=clock)
            await run_stream(src, pool, sink)
        runs.append(sink.words)
        if speed:
            assert clock.t == pytest.approx(pcm.size / 8000 / speed, abs=0.01)
    assert len(runs[0]) == 5 and runs[0] == runs[1] == runs[2]

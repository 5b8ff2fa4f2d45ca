"""Enrollment (a word added to or retrained in a bank) and hot bank swaps in a running pool.

Speech is synthesised at test time: the takes come from one held-out voice, the
checks from other held-out voices, none of them ever in the bank's training.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.sources import WavSource
from streamer.audio.synth import HELDOUT_VOICES, synthesize
from streamer.audio.wav import write_wav
from streamer.cli import main
from streamer.errors import AudioError, ConfigError
from streamer.messages import Utterance, WordEvent
from streamer.paths import default_bank_path
from streamer.speech.bank import WordBank
from streamer.speech.enroll import BankWatcher, check_word, enroll_word, recipe_for
from streamer.speech.pipeline import run_stream
from streamer.speech.recognizer import RecognizerPool, bank_factory, fake_factory
from tests.sinks import Collector


def _takes(word: str, n: int) -> list[np.ndarray]:
    """`n` takes of one speaker, each a little faster or slower, higher or lower."""
    v = HELDOUT_VOICES[0]
    shifts = [(0, 0), (-12, 4), (10, -3), (5, 6), (-6, -5)]
    return [synthesize(word, replace(v, rate=v.rate + r, pitch=v.pitch + p)) for r, p in shifts[:n]]


@pytest.fixture(scope="module")
def base() -> WordBank:
    return WordBank.load(default_bank_path())


@pytest.fixture(scope="module")
def cherry(base: WordBank) -> WordBank:
    bank, report = enroll_word(base, "cherry", _takes("cherry", 3))
    assert report.action == "added" and report.examples == 3 and report.voices == 12
    return bank


def test_enrollment_adds_the_word_and_leaves_the_others_alone(
    base: WordBank, cherry: WordBank
) -> None:
    assert cherry.labels == [*base.labels, "cherry"]
    # calibration and background are kept: every old word scores exactly as before
    np.testing.assert_array_equal(cherry.calibration.coef, base.calibration.coef)
    assert cherry.calibration.threshold == base.calibration.threshold
    np.testing.assert_array_equal(cherry.calibration.dur_mean[:-1], base.calibration.dur_mean)
    x = synthesize("kiwi", HELDOUT_VOICES[3])
    old = dict(base.recognize(x, nbest=7).nbest)
    new = dict(cherry.recognize(x, nbest=8).nbest)
    assert all(new[w] == old[w] for w in base.labels)
    # the new word's duration statistics are its own
    assert cherry.calibration.dur_mean.size == 8 and cherry.calibration.dur_std[-1] > 0
    assert cherry.info["enrolled"]["cherry"]["examples"] == 3
    # held-out voices saying it: the takes are one voice's, so one of the seven others may
    # be heard as a neighbouring word (eSpeak's output also varies a little within a process)
    heard = {v.name: cherry.recognize(synthesize("cherry", v)).label for v in HELDOUT_VOICES[1:]}
    assert sum(label == "cherry" for label in heard.values()) >= len(heard) - 1, heard


def test_retraining_replaces_the_word_in_place(base: WordBank) -> None:
    bank, report = enroll_word(base, "Kiwi", _takes("kiwi", 2))
    assert report.action == "retrained"
    assert bank.labels == base.labels
    i = base.labels.index("kiwi")
    assert not np.array_equal(bank.models[i].means, base.models[i].means)
    j = base.labels.index("lime")
    assert bank.models[j] is base.models[j]
    assert bank.recognize(synthesize("kiwi", HELDOUT_VOICES[5])).label == "kiwi"


def test_recipe_and_word_checks(base: WordBank) -> None:
    cfg = recipe_for(base)
    assert cfg.features == base.features and cfg.hmm == base.hmm_config
    assert list(cfg.speeds) == base.info["speeds"]
    assert check_word(" Ice  Cream ") == "ice_cream"
    with pytest.raises(ConfigError, match="use letters"):
        check_word("../etc")
    with pytest.raises(AudioError, match="example 2"):
        enroll_word(base, "plum", [_takes("plum", 1)[0], np.zeros(100, dtype=np.float32)])


def test_enroll_command_with_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = []
    for i, x in enumerate(_takes("grape", 2)):
        files.append(tmp_path / f"g{i}.wav")
        write_wav(files[-1], x, 8000)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEjunk")
    bank = tmp_path / "sub" / "mine.npz"
    code = main(["enroll", "--bank", str(bank), "--word", "grape", *map(str, files), str(bad)])
    out, err = capsys.readouterr()
    assert code == 2  # one bad file: the others are used, the status says so
    assert "bad.wav" in err and "starting from" in err
    summary = json.loads(out)
    assert summary["word"] == "grape" and summary["examples"] == 2
    assert WordBank.load(bank).labels[-1] == "grape"
    assert not list(bank.parent.glob("*.tmp"))  # written through a temporary file


# -- hot swap -----------------------------------------------------------------------------------


def _utt(i: int, level: float) -> Utterance:
    x = np.full(800, level, dtype=np.float32)
    return Utterance("s", i, x, 8000, i * 1.0, i * 1.0 + 0.1, i * 1.0 + 0.2)


@pytest.mark.parametrize("kind", ["process", "thread", "inline"])
async def test_a_swap_applies_to_utterances_submitted_after_it(kind: str) -> None:
    old = fake_factory(labels=("a", "b"), delay=0.05)
    new = fake_factory(labels=("x", "y"))
    async with RecognizerPool(old, workers=2, kind=kind, max_pending=8) as pool:
        before = [await pool.submit(_utt(i, 0.01)) for i in range(4)]
        assert pool.swap(new) == 1
        after = [await pool.submit(_utt(i, 0.01)) for i in range(4, 8)]
        got_before = [(await f).recognition.label for f in before]
        got_after = [(await f).recognition.label for f in after]
        assert pool.stats.swaps == 1 and pool.stats.swap_failures == 0
    if kind != "inline":  # inline recognises at submit: nothing is ever in flight
        assert got_before == ["a"] * 4
    assert got_after == ["x"] * 4


async def test_the_watcher_swaps_a_changed_bank_and_ignores_a_broken_one(
    tmp_path: Path, cherry: WordBank
) -> None:
    path = tmp_path / "bank.npz"
    shutil.copy(default_bank_path(), path)
    said = synthesize("cherry", HELDOUT_VOICES[2])
    u = Utterance("s", 0, said, 8000, 0.0, said.size / 8000, said.size / 8000)
    events: list[tuple[str, str]] = []
    async with RecognizerPool(bank_factory(path), kind="thread") as pool:
        watch = BankWatcher(path, pool, interval=0.05, on_event=lambda k, d: events.append((k, d)))
        assert not await watch.check()
        assert (await pool.recognize(u)).recognition.label != "cherry"
        path.write_bytes(b"half a bank")  # not atomic, not a bank: keep the old one
        assert not await watch.check()
        assert (await pool.recognize(u)).recognition.label != "cherry"
        cherry.save(path)
        task = asyncio.create_task(watch.run())
        for _ in range(100):
            if watch.swaps:
                break
            await asyncio.sleep(0.02)
        task.cancel()
        assert (await pool.recognize(u)).recognition.label == "cherry"
    assert [k for k, _ in events] == ["ignored", "reloaded"]
    assert "cherry" in events[-1][1]


async def test_a_replacement_worker_gets_the_bank_even_after_the_file_broke(
    tmp_path: Path,
) -> None:
    """A worker that dies is replaced with the bank the pool was given, not with whatever the
    file holds by then (half a bank being copied in, say): one bad moment must not take
    every stream down."""
    path = tmp_path / "bank.npz"
    shutil.copy(default_bank_path(), path)
    said = synthesize("kiwi", HELDOUT_VOICES[1])
    u = Utterance("s", 0, said, 8000, 0.0, said.size / 8000, said.size / 8000)
    async with RecognizerPool(bank_factory(path), workers=1, kind="process") as pool:
        first = await pool.recognize(u)
        path.write_bytes(b"half a bank")
        (pid,) = pool.stats.workers
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):  # the pool notices, and starts a new worker
            if pool.stats.crashes:
                break
            await asyncio.sleep(0.02)
        again = await pool.recognize(u)
        assert pool.stats.crashes == 1 and pool.stats.workers and pool.stats.workers != [pid]
    assert first.error is None and again.error is None
    assert again.recognition.label == first.recognition.label


async def test_a_bank_swapped_mid_stream_drops_nothing(tmp_path: Path, cherry: WordBank) -> None:
    """A replay keeps flowing through a swap: every word gets its event, the later ones the new
    bank's labels."""
    path = tmp_path / "bank.npz"
    shutil.copy(default_bank_path(), path)
    words = ["cherry", "kiwi", "lime", "orange", "peach", "banana", "lime", "kiwi", "cherry"]
    gap = np.zeros(4000, dtype=np.float32)
    parts = [gap]
    for i, w in enumerate(words):
        parts += [synthesize(w, HELDOUT_VOICES[(i + 1) % len(HELDOUT_VOICES)]), gap]
    audio = np.concatenate(parts)
    checks: list[asyncio.Task[bool]] = []
    async with RecognizerPool(bank_factory(path), workers=2, max_pending=2) as pool:
        watcher = BankWatcher(path, pool)

        def after(e: WordEvent) -> None:
            if len(sink.words) == 2:
                cherry.save(path)
                checks.append(asyncio.ensure_future(watcher.check()))

        sink = Collector(on_word=after)
        # paced (5x): the swap comes while the later words are still to be spoken
        src = WavSource(audio, source_rate=8000, speed=5, chunk_ms=20)
        stats = await run_stream(src, pool, sink)
        assert len(checks) == 1 and await checks[0]
    events = sink.words
    assert stats.utterances == len(words) == len(events)
    assert [e.index for e in events] == list(range(len(words)))
    assert all(e.error is None for e in events)
    assert events[0].recognition.label != "cherry"  # before the swap: not a word it knew
    assert events[-1].recognition.label == "cherry"  # well after it
    assert pool.stats.swaps == 1


async def test_a_running_service_picks_up_an_enrolled_word(
    tmp_path: Path, cherry: WordBank
) -> None:
    """`streamer serve` with --watch-bank: the bank file changes mid-replay (as `streamer enroll`
    writes it) and the words after the change are recognised with the new bank; the swap is
    announced on the status topic and nothing is dropped."""
    from streamer.config import (
        AudioConfig,
        Config,
        PublisherConfig,
        RecognizerConfig,
        ServiceConfig,
    )
    from streamer.net.subscriber import Subscriber
    from streamer.service import Service

    path = tmp_path / "bank.npz"
    shutil.copy(default_bank_path(), path)
    words = ["cherry", "kiwi", "lime", "orange", "peach", "banana", "kiwi", "cherry"]
    gap = np.zeros(3200, dtype=np.float32)
    parts = [gap]
    for i, w in enumerate(words):
        parts += [synthesize(w, HELDOUT_VOICES[(i + 2) % len(HELDOUT_VOICES)]), gap]
    wav = tmp_path / "words.wav"
    write_wav(wav, np.concatenate(parts), 8000)
    config = Config(
        service=ServiceConfig(speed=4),
        audio=AudioConfig(files=(wav,)),
        recognizer=RecognizerConfig(bank=path, watch_bank=0.05),
        publisher=PublisherConfig(
            endpoint="tcp://127.0.0.1:*", wait_subscribers=1, metrics_interval=0
        ),
    )
    service = Service(config, tune_gc=False)
    task = asyncio.create_task(service.run())
    while service.publisher is None or "*" in service.publisher.endpoint:
        await asyncio.sleep(0.01)
    labels: list[str | None] = []
    details: list[str] = []
    async with Subscriber(service.publisher.endpoint, ["speech", "status"]) as sub:
        async with asyncio.timeout(30):
            async for msg in sub:
                if msg.kind == "speech":
                    labels.append(msg.body["label"])
                    if len(labels) == 2:
                        cherry.save(path)  # what `streamer enroll` does
                elif msg.body.get("detail"):
                    details.append(msg.body["detail"])
                if msg.kind == "status" and msg.body["state"] == "stopped":
                    break
    assert await task == 0
    assert len(labels) == len(words)
    assert labels[0] != "cherry" and labels[-1] == "cherry"
    assert any(d.startswith("bank reloaded") and "cherry" in d for d in details)

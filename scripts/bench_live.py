#!/usr/bin/env python3
"""Benchmark through a real (virtual) microphone: latency, accuracy, enrollment.

A private PulseAudio daemon (the tests' `VirtualMic`, recipe in
../shared/notes/virtual-mic.md) provides a null sink whose monitor is the
default PortAudio input. Three figures:

1. **Mic-to-subscriber latency.** `streamer serve --mic --latency` runs as a
   subprocess on that input; this script subscribes, plays one word at a time
   into the sink with `paplay` and times, for each word, from the moment it
   finished playing (paplay exits once its stream has drained into the sink;
   the WAV ends at the word's last audible sample) to its label arriving at the
   subscriber. The VAD's share is read from the event itself: `closed_at - end`
   in stream time is how long the segmenter waited in quiet after the word's
   last loud frame (its hangover). The rest is the capture device, the frame or
   two by which the 30 ms energy smoothing keeps the word loud past its end,
   recognition and ZeroMQ. The words are demo-style: held-out voices, jittered
   speed, pitch and level; their labels give the accuracy through the mic too.
2. **Demo stream accuracy** with the default bank: `streamer demo`'s stream and
   scoring (held-out voices through the whole service), for several seeds.
3. **Enrollment.** Five takes of a new word are recorded through the microphone
   with `streamer enroll` (one held-out speaker, a little different each take);
   the word is then enrolled from the first 3 and from all 5 takes and scored on
   the seven other held-out voices (three jittered takes each), beside the old
   words (do they now get mistaken for the new one?). With 0 takes (synthetic
   voices only) as the reference.

    .venv/bin/python scripts/bench_live.py [--words 60] [--seeds 5] [--json out.json]

Targets (issue 6): mic-to-subscriber p99 <= hangover + 50 ms; demo accuracy >= 95%.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from streamer.audio.segmenter import SegmenterConfig, segment  # noqa: E402
from streamer.audio.synth import HELDOUT_VOICES, Voice, synthesize  # noqa: E402
from streamer.audio.wav import load_audio, to_pcm16  # noqa: E402
from streamer.demo import DemoOptions, run_demo  # noqa: E402
from streamer.paths import default_bank_path  # noqa: E402
from streamer.speech.bank import WordBank  # noqa: E402
from streamer.speech.enroll import enroll_word  # noqa: E402
from tests.live.conftest import VirtualMic  # noqa: E402

STREAMER = [sys.executable, "-m", "streamer"]
RATE = 16000


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _jitter(v: Voice, rng: np.random.Generator) -> Voice:
    return replace(
        v,
        rate=round(v.rate * float(rng.uniform(0.85, 1.15))),
        pitch=int(np.clip(v.pitch + int(rng.integers(-8, 9)), 0, 99)),
    )


def _word_wav(vm: VirtualMic, word: str, voice: Voice, level_db: float) -> Path:
    """The word at `level_db` dBFS, cut at its last audible sample (so 'finished' means it)."""
    from streamer.audio.noise import speech_rms
    from streamer.audio.synth import trim_silence

    x = trim_silence(synthesize(word, voice, RATE), RATE, keep_s=0.0)
    gain = min(10 ** (level_db / 20) / max(speech_rms(x), 1e-9), 0.9 / float(np.abs(x).max()))
    return vm.wav((x * gain).astype(np.float32), RATE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- 1. latency through the microphone ----------------------------------------------------------


async def bench_latency(vm: VirtualMic, n_words: int, seed: int) -> dict[str, Any]:
    from streamer.net.subscriber import Subscriber

    bank = WordBank.load(default_bank_path())
    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    proc = await asyncio.create_subprocess_exec(
        *STREAMER,
        "serve",
        "--mic",
        "--latency",
        "--pub",
        endpoint,
        "--no-snapshot",
        "--wait-subscribers",
        "1",
        env=vm.env,
        stderr=asyncio.subprocess.DEVNULL,
    )
    loop = asyncio.get_running_loop()
    rng = np.random.default_rng(seed)
    labels = bank.labels
    order = np.concatenate([rng.permutation(len(labels)) for _ in range(n_words // 7 + 2)])
    rows: list[dict[str, Any]] = []
    try:
        async with Subscriber(endpoint, ["speech", "status"], snapshot=False) as sub:
            async with asyncio.timeout(60):
                async for msg in sub:
                    if msg.kind == "status" and msg.body["state"] == "running":
                        break
            await asyncio.sleep(1.0)  # the input is open and delivering
            for i in range(n_words + 1):  # the first word warms up and is not counted
                word = labels[int(order[i])]
                voice = _jitter(HELDOUT_VOICES[i % len(HELDOUT_VOICES)], rng)
                wav = _word_wav(vm, word, voice, float(rng.uniform(-32, -20)))
                played = await loop.run_in_executor(None, vm.play, wav)
                body = None
                async with asyncio.timeout(5):
                    async for msg in sub:
                        if msg.kind == "speech":
                            body = msg.body
                            break
                got = time.monotonic()
                assert body is not None
                if i == 0:
                    continue
                rows.append(
                    {
                        "word": word,
                        "voice": voice.label(),
                        "label": body["label"],
                        "latency_ms": (got - played) * 1000.0,
                        "vad_ms": (body["closed_at"] - body["end"]) * 1000.0,
                        "publish_ms": float(body.get("delay_ms", float("nan"))),
                        "duration_ms": (body["end"] - body["start"]) * 1000.0,
                    }
                )
                await asyncio.sleep(float(rng.uniform(0.2, 0.5)))
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lat = [r["latency_ms"] for r in rows]
    vad = [r["vad_ms"] for r in rows]
    rest = [r["latency_ms"] - r["vad_ms"] for r in rows]
    cfg = SegmenterConfig()
    correct = sum(r["label"] == r["word"] for r in rows)
    return {
        "words": len(rows),
        "latency_ms": {
            "p50": _pct(lat, 50),
            "p90": _pct(lat, 90),
            "p99": _pct(lat, 99),
            "max": max(lat),
        },
        "vad_wait_ms": {"p50": _pct(vad, 50), "p99": _pct(vad, 99), "max": max(vad)},
        "beyond_vad_ms": {"p50": _pct(rest, 50), "p99": _pct(rest, 99), "max": max(rest)},
        "close_to_publish_ms": {
            "p50": _pct([r["publish_ms"] for r in rows], 50),
            "p99": _pct([r["publish_ms"] for r in rows], 99),
        },
        "hangover_ms": cfg.hangover_ms,
        "short_hangover_ms": cfg.short_hangover_ms,
        "short_words": sum(r["duration_ms"] < cfg.short_ms + cfg.post_roll_ms for r in rows),
        "target_ms": cfg.hangover_ms + 50,
        "accuracy": correct / len(rows),
        "errors": dict(
            Counter(f"{r['word']}->{r['label']}" for r in rows if r["label"] != r["word"])
        ),
        "rows": rows,
    }


# -- 2. the demo stream -------------------------------------------------------------------------


async def bench_demo(seeds: int, speed: float) -> dict[str, Any]:
    per_seed = []
    errors: Counter[str] = Counter()
    right = total = 0
    for seed in range(seeds):
        board = await run_demo(DemoOptions(seed=seed, speed=speed), out=io.StringIO())
        per_seed.append(round(board.accuracy, 4))
        right += board.correct
        total += len(board.truth)
        for (said, heard), n in board.errors.items():
            errors[f"{said}->{heard}"] += n
    return {
        "seed0": per_seed[0],
        "per_seed": per_seed,
        "pooled": right / total,
        "words": total,
        "errors": dict(errors.most_common()),
    }


# -- 3. enrollment ------------------------------------------------------------------------------


def _record_takes(vm: VirtualMic, word: str, out: Path, n: int = 5) -> list[np.ndarray]:
    """`streamer enroll --count n` through the microphone; the takes it cut (saved WAVs)."""
    user = HELDOUT_VOICES[0]
    shifts = [(0, 0), (-12, 4), (10, -3), (5, 6), (-6, -5)]
    wavs = [
        _word_wav(vm, word, replace(user, rate=user.rate + r, pitch=user.pitch + p), -26.0)
        for r, p in shifts[:n]
    ]
    bank = out / f"{word}.npz"
    p = subprocess.Popen(
        [
            *STREAMER,
            "enroll",
            "--bank",
            str(bank),
            "--word",
            word,
            "--count",
            str(n),
            "--save",
            str(out / word),
        ],
        env=vm.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert p.stderr is not None
    k = 0
    for line in p.stderr:
        if f"say {word!r}" in line:
            vm.play(wavs[k])
            k += 1
    if p.wait(60) != 0:
        raise RuntimeError(f"streamer enroll failed for {word}")
    return [load_audio(f, 8000) for f in sorted((out / word).glob(f"{word}_*.wav"))]


def _score(
    bank: WordBank, tests: list[tuple[str, np.ndarray]], new_word: str
) -> tuple[float, float, Counter]:
    new_ok = new_n = old_ok = old_n = 0
    errs: Counter[str] = Counter()
    for word, x in tests:
        utts = segment(to_pcm16(x))
        label = bank.recognize(utts[0].samples).label if len(utts) == 1 else "(segmentation)"
        ok = label == word
        if word == new_word:
            new_ok += ok
            new_n += 1
        else:
            old_ok += ok
            old_n += 1
        if not ok:
            errs[f"{word}->{label}"] += 1
    return new_ok / max(new_n, 1), old_ok / max(old_n, 1), errs


def bench_enroll(vm: VirtualMic, words: list[str], folder: Path, seed: int) -> dict[str, Any]:
    base = WordBank.load(default_bank_path())
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    pad = np.zeros(2400, dtype=np.float32)
    for word in words:
        takes = _record_takes(vm, word, folder)
        tests: list[tuple[str, np.ndarray]] = []
        for v in HELDOUT_VOICES[1:]:
            for w in [word] * 3 + list(base.labels):
                x = synthesize(w, _jitter(v, rng))
                tests.append((w, np.concatenate([pad, x, pad])))
        res = {"takes_recorded": len(takes)}
        for k in (0, 3, 5):
            bank, rep = enroll_word(base, word, takes[:k])
            new_acc, old_acc, errs = _score(bank, tests, word)
            res[f"after_{k}"] = {
                "new_word_accuracy": round(new_acc, 4),
                "old_words_accuracy": round(old_acc, 4),
                "train_seconds": rep.seconds,
                "errors": dict(errs.most_common()),
            }
        _, base_old, _ = _score(base, [t for t in tests if t[0] != word], word)
        res["old_words_accuracy_before"] = round(base_old, 4)
        out[word] = res
    return out


# -- main ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--words", type=int, default=60, help="words timed through the mic (>= 50)")
    p.add_argument("--seeds", type=int, default=5, help="demo streams scored (default 5)")
    p.add_argument("--speed", type=float, default=0.0, help="demo replay speed (default 0)")
    p.add_argument("--enroll", nargs="*", default=["cherry", "grape", "lemon"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", default=None, help="write every figure here")
    a = p.parse_args(argv)
    logging.getLogger("streamer.net.publisher").setLevel(logging.ERROR)  # "waiting for 1..."
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        vm = VirtualMic(Path(tmp))
        vm.start()
        try:
            lat = asyncio.run(bench_latency(vm, a.words, a.seed))
            enr = bench_enroll(vm, a.enroll, Path(tmp), a.seed) if a.enroll else {}
        finally:
            vm.stop()
    demo = asyncio.run(bench_demo(a.seeds, a.speed))
    L = lat["latency_ms"]
    print(f"mic -> subscriber, {lat['words']} words through the virtual microphone:")
    print(
        f"  latency   p50 {L['p50']:.0f} ms  p90 {L['p90']:.0f} ms  p99 {L['p99']:.0f} ms  "
        f"max {L['max']:.0f} ms  (target p99 <= {lat['target_ms']} ms = hangover "
        f"{lat['hangover_ms']} + 50)"
    )
    V, R = lat["vad_wait_ms"], lat["beyond_vad_ms"]
    print(
        f"  VAD wait  p50 {V['p50']:.0f} ms  p99 {V['p99']:.0f} ms  (hangover {lat['hangover_ms']}"
        f" ms, {lat['short_hangover_ms']} ms for a short word; {lat['short_words']} short)"
    )
    print(
        f"  the rest  p50 {R['p50']:.0f} ms  p99 {R['p99']:.0f} ms  (device, recognition, "
        f"ZeroMQ; close-to-publish p50 {lat['close_to_publish_ms']['p50']:.1f} ms)"
    )
    print(f"  labels through the mic: {100 * lat['accuracy']:.1f}% right  {lat['errors']}")
    print(
        f"demo stream, default bank: seed 0 {100 * demo['seed0']:.1f}%, {a.seeds} seeds "
        f"{[round(100 * x, 1) for x in demo['per_seed']]}, pooled {100 * demo['pooled']:.1f}% "
        f"of {demo['words']} words (target >= 95%)"
    )
    print(f"  errors (said->heard): {demo['errors']}")
    for word, r in enr.items():
        print(
            f"enroll {word!r} ({r['takes_recorded']} takes recorded through the mic; old words "
            f"before: {100 * r['old_words_accuracy_before']:.1f}%):"
        )
        for k in (0, 3, 5):
            e = r[f"after_{k}"]
            print(
                f"  after {k} takes: new word {100 * e['new_word_accuracy']:.1f}%, old words "
                f"{100 * e['old_words_accuracy']:.1f}%, trained in {e['train_seconds']:.1f} s"
                f"  {e['errors']}"
            )
    if a.json:
        Path(a.json).write_text(
            json.dumps({"latency": lat, "demo": demo, "enroll": enr}, indent=1, default=float)
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

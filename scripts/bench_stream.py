#!/usr/bin/env python3
"""Benchmark of streaming audio (issue 3): detection, labels, latency, speed and memory.

Streams are built by make_stream.py from the fruit recordings of one fold and
recognised with a bank trained (by `train_bank`, its defaults) on the other
folds, so no test utterance was heard in training. Each fold's stream is run
clean and at 10 dB SNR of noise kinds the bank never trained with (it trains
with pink and brown noise; babble and factory are unseen).

Figures:
- word-detection precision and recall, label accuracy on matched words;
- true end -> close (stream time), close -> event (wall time, measured on a
  paced replay so no queueing is included), and true end -> event = both;
- processing speed at --speed 0 (audio seconds per wall second) per pool kind,
  and inline on one core; the whole `streamer replay --speed 0` command on a
  10-minute stream, start-up included;
- peak RSS, and RSS after one hour of streamed audio against after one minute.

    .venv/bin/python scripts/bench_stream.py [--folds 3] [--passes 4] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamer.audio.score import Event, match, percentiles
from streamer.audio.sources import WavSource
from streamer.audio.teststream import build_stream, collect
from streamer.audio.wav import load_audio, to_pcm16, write_wav
from streamer.config import AudioConfig
from streamer.paths import data_dir
from streamer.speech.pipeline import run_stream
from streamer.speech.recognizer import RecognizerPool, bank_factory

ROOT = Path(__file__).resolve().parent.parent


def rss_kb(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":")
                out[k] = int(v.split()[0])
    return out


# -- folds and banks ------------------------------------------------------------------------------


def make_folds(files: list[tuple[str, Path]], k: int, seed: int) -> list[list[tuple[str, Path]]]:
    """Stratified: each label's recordings shuffled and dealt round-robin to k folds."""
    rng = np.random.default_rng(seed)
    folds: list[list[tuple[str, Path]]] = [[] for _ in range(k)]
    labels = sorted({lab for lab, _ in files})
    for lab in labels:
        mine = [f for f in files if f[0] == lab]
        for i, j in enumerate(rng.permutation(len(mine))):
            folds[i % k].append(mine[j])
    return folds


def fold_bank(train: list[tuple[str, Path]], cache: Path, log: Any) -> Path:
    """Train (or reuse) a bank on these recordings, via a folder of symlinks."""
    from streamer.speech.train import train_bank

    key = hashlib.sha1("\n".join(sorted(str(p.resolve()) for _, p in train)).encode())
    # the recipe is part of the key: a bank cached by older training code is not reused
    for mod in ("speech/train.py", "speech/features.py", "speech/bank.py", "audio/noise.py"):
        key.update((ROOT / "streamer" / mod).read_bytes())
    key = key.hexdigest()[:12]
    out = cache / f"bank-{key}.npz"
    if out.exists():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        for lab, p in train:
            d = Path(tmp) / lab
            d.mkdir(exist_ok=True)
            (d / p.name).symlink_to(p.resolve())
        t0 = time.perf_counter()
        bank = train_bank(tmp)
        log(f"  trained {out.name} on {len(train)} recordings in {time.perf_counter() - t0:.0f} s")
    bank.save(out)
    return out


# -- one replay -----------------------------------------------------------------------------------


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


async def replay(
    pcm: np.ndarray, bank: Path, speed: float, kind: str = "process", workers: int = 1
) -> tuple[list[Event], float, float, float]:
    """Run the pipeline in-process; (events with closed_at and delay, wall s, start-up s, cpu s).

    The CPU seconds are this process's plus the workers' over the run itself.
    """
    events: list[Event] = []
    t0 = time.perf_counter()
    async with RecognizerPool(bank_factory(bank), workers=workers, kind=kind) as pool:
        t1 = time.perf_counter()
        pids = [w.proc.pid for w in pool._workers]
        cpu0 = self_cpu() + sum(proc_cpu(p) for p in pids)
        chunk = AudioConfig().block_ms(speed)  # as `streamer replay` does
        src = WavSource(pcm, source_rate=8000, speed=speed, stream="bench", chunk_ms=chunk)

        class Sink:
            def publish(self, e, delay=None):  # type: ignore[no-untyped-def]
                events.append(Event(e.recognition.label, e.start, e.end, e.closed_at, delay))

            def publish_many(self, msgs):  # type: ignore[no-untyped-def]
                raise AssertionError("no ticks here")

        await run_stream(src, pool, Sink())
        t2 = time.perf_counter()
        cpu = self_cpu() + sum(proc_cpu(p) for p in pids) - cpu0
    return events, t2 - t1, t1 - t0, cpu


def pooled(results: list[tuple[list[Event], list[Event]]]) -> dict[str, Any]:
    """Pool (events, truth) pairs of several streams into one set of figures."""
    n_words = n_events = n_matched = correct = lab_events = lab_matched = 0
    close, to_event, delays, s_err, e_err = [], [], [], [], []
    for events, truth in results:
        pairs = match(events, truth)
        n_words += len(truth)
        n_events += len(events)
        n_matched += len(pairs)
        lab_events += sum(e.label is not None for e in events)
        delays += [e.delay for e in events]
        for i, j in pairs:
            e, t = events[i], truth[j]
            correct += e.label == t.label
            lab_matched += e.label is not None
            close.append(e.closed_at - t.end)
            to_event.append(e.closed_at - t.end + e.delay)
            s_err.append(abs(e.start - t.start))
            e_err.append(abs(e.end - t.end))
    return {
        "words": n_words,
        "events": n_events,
        "precision": round(n_matched / max(1, n_events), 4),
        "labelled_precision": round(lab_matched / max(1, lab_events), 4),
        "recall": round(n_matched / max(1, n_words), 4),
        "label_accuracy": round(correct / max(1, n_matched), 4),
        "start_err_ms": round(1000 * float(np.mean(s_err)), 1) if s_err else None,
        "end_err_ms": round(1000 * float(np.mean(e_err)), 1) if e_err else None,
        "true_end_to_close_ms": percentiles(close),
        "close_to_event_ms": percentiles(delays),
        "true_end_to_event_ms": percentiles(to_event),
    }


# -- memory: run in a child process so its RSS is the pipeline's own -----------------------------


def rss_child(wav: str, bank: str) -> None:
    """(child) Replay `wav` at speed 0, printing RSS at stream-time checkpoints as JSON lines."""
    marks = [60.0] + [600.0 * k for k in range(1, 7)]

    async def main() -> None:
        async with RecognizerPool(bank_factory(bank), workers=1) as pool:
            src = WavSource(wav, speed=0, chunk_ms=1000)
            wpid = pool._workers[0].proc.pid

            class Sink:
                def publish(self, e, delay=None):  # type: ignore[no-untyped-def]
                    while marks and e.closed_at >= marks[0]:
                        t = marks.pop(0)
                        r = rss_kb()
                        try:
                            w = rss_kb(wpid)
                        except OSError:
                            w = {}
                        print(json.dumps({"t": t, "main": r, "worker": w}), flush=True)

                def publish_many(self, msgs):  # type: ignore[no-untyped-def]
                    raise AssertionError("no ticks here")

            await run_stream(src, pool, Sink())
            print(json.dumps({"t": "end", "main": rss_kb(), "worker": rss_kb(wpid)}), flush=True)

    asyncio.run(main())


def measure_rss(wav: Path, bank: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--rss-child", str(wav), str(bank)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    by_t = {r["t"]: r for r in rows}
    first, last = by_t.get(60.0), by_t.get(3600.0)
    end = by_t["end"]
    res: dict[str, Any] = {"checkpoints": rows}
    if first and last:
        res["main_rss_1min_mb"] = round(first["main"]["VmRSS"] / 1024, 1)
        res["main_rss_1h_mb"] = round(last["main"]["VmRSS"] / 1024, 1)
        res["main_growth_mb"] = round((last["main"]["VmRSS"] - first["main"]["VmRSS"]) / 1024, 2)
        if first["worker"] and last["worker"]:
            res["worker_growth_mb"] = round(
                (last["worker"]["VmRSS"] - first["worker"]["VmRSS"]) / 1024, 2
            )
    res["main_peak_mb"] = round(end["main"]["VmHWM"] / 1024, 1)
    res["worker_peak_mb"] = round(end["worker"]["VmHWM"] / 1024, 1)
    return res


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None, help="fruit recordings (default: shared)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--passes", type=int, default=4, help="each test recording used this often")
    p.add_argument("--noises", nargs="*", default=["babble", "factory"])
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--speed", type=float, default=20.0, help="pace of the accuracy/latency runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--realtime-s", type=float, default=60.0, help="seconds replayed at real time (0: skip)"
    )
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "streamer-bench")
    p.add_argument("--quick", action="store_true", help="one fold, fewer passes, no 1 h run")
    p.add_argument("--no-rss", action="store_true", help="skip the one-hour memory run")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    p.add_argument("--rss-child", nargs=2, metavar=("WAV", "BANK"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.rss_child:
        rss_child(*a.rss_child)
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    folder = a.data or data_dir() / "fruits"
    files = collect(folder)
    a.cache.mkdir(parents=True, exist_ok=True)
    folds = make_folds(files, a.folds, a.seed)
    run_folds = range(1 if a.quick else a.folds)
    passes = 2 if a.quick else a.passes
    conditions: list[tuple[str, str | None]] = [("clean", None)] + [
        (f"{n}{a.snr:g}dB", n) for n in a.noises
    ]
    report: dict[str, Any] = {"folds": a.folds, "passes": passes, "conditions": {}}
    results: dict[str, list[tuple[list[Event], list[Event]]]] = {c: [] for c, _ in conditions}
    banks = []
    for k in run_folds:
        train = [f for j, fold in enumerate(folds) if j != k for f in fold]
        log(f"fold {k + 1}/{a.folds}: {len(folds[k])} test recordings, {len(train)} for training")
        bank = fold_bank(train, a.cache, log)
        banks.append(bank)
        recs = [(lab, load_audio(path)) for lab, path in folds[k]]
        for name, kind in conditions:
            x, truth = build_stream(
                recs, seed=1000 * a.seed + k, passes=passes, noise=kind, snr_db=a.snr
            )
            events, wall, _, _ = asyncio.run(replay(to_pcm16(x), bank, a.speed))
            tr = [Event(t.label, t.start, t.end) for t in truth]
            results[name].append((events, tr))
            log(f"  {name}: {x.size / 8000:.0f} s of audio, {len(truth)} words, {wall:.1f} s")
    for name, _ in conditions:
        report["conditions"][name] = pooled(results[name])

    # close -> event at real time: nothing else competes, as for a live microphone
    if a.realtime_s > 0:
        recs = [(lab, load_audio(path)) for lab, path in folds[0]]
        xr, _ = build_stream(recs, seed=a.seed + 55, noise=a.noises[0] if a.noises else None)
        xr = xr[: int(a.realtime_s * 8000)]
        events, _, _, _ = asyncio.run(replay(to_pcm16(xr), banks[0], 1.0))
        report["close_to_event_realtime_ms"] = percentiles(e.delay for e in events)
        report["close_to_event_realtime_ms"]["n"] = len(events)
        log(f"  real time: close -> event {report['close_to_event_realtime_ms']}")

    # processing speed on a 10-minute clean stream (the first fold's recordings and bank)
    recs = [(lab, load_audio(path)) for lab, path in folds[0]]
    x10, _ = build_stream(recs, seed=a.seed + 77, minutes=10)
    pcm10 = to_pcm16(x10)
    wav10 = a.cache / "stream10min.wav"
    write_wav(wav10, x10)
    audio_s = pcm10.size / 8000
    speed: dict[str, Any] = {"audio_s": round(audio_s, 1)}
    for kind, workers in (("inline", 1), ("thread", 1), ("process", 1), ("process", 2)):
        best = None
        for _ in range(3):  # best of three: other work on the machine only slows a run down
            _, wall, startup, cpu = asyncio.run(replay(pcm10, banks[0], 0.0, kind, workers))
            if best is None or wall < best[0]:
                best = (wall, startup, cpu)
        wall, startup, cpu = best  # type: ignore[misc]
        speed[f"{kind}x{workers}"] = {
            "x_realtime": round(audio_s / wall, 1),
            "x_per_cpu_second": round(audio_s / cpu, 1),  # audio seconds per CPU second
            "startup_s": round(startup, 2),
            "cpu_s": round(cpu, 2),
        }
        log(
            f"  speed {kind} x{workers}: {audio_s / wall:.0f}x real time, "
            f"{audio_s / cpu:.0f}x per CPU second"
        )
    cmd = [str(ROOT / ".venv/bin/streamer"), "replay", str(wav10), "--bank", str(banks[0])]
    cmd += ["--speed", "0"]
    if not Path(cmd[0]).exists():
        cmd = [sys.executable, "-m", "streamer", *cmd[1:]]
    walls, cpus = [], []
    for _ in range(3):
        ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        walls.append(time.perf_counter() - t0)
        ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime)
    speed["cli_10min"] = {
        "wall_s": round(min(walls), 2),
        "x_realtime": round(audio_s / min(walls), 1),
        "cpu_s": round(min(cpus), 2),  # the command and its worker, start-up included
        "events": len(out.splitlines()),
    }
    log(f"  whole command: {audio_s / min(walls):.0f}x real time ({min(walls):.2f} s)")
    report["speed"] = speed

    if not (a.quick or a.no_rss):
        x1h, _ = build_stream(recs, seed=a.seed + 99, minutes=61)
        wav1h = a.cache / "stream1h.wav"
        write_wav(wav1h, x1h)
        del x1h
        report["memory"] = measure_rss(wav1h, banks[0])
        report["memory"].pop("checkpoints", None)
        log(f"  memory: {report['memory']}")

    print(json.dumps(report, indent=2))
    if a.json:
        a.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())

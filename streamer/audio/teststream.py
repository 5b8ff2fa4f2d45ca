"""A long test stream with ground truth, from a folder of labelled recordings.

`FOLDER/LABEL/*.wav` recordings are laid end to end in random order, separated by
random pauses, optionally mixed with background noise at a chosen SNR and
resampled; the truth gives where each recording was placed. The same seed gives
the same stream, so a replay scored against its truth is a reproducible test.
Used by `scripts/make_stream.py` (its command line), the benchmarks and the tests.

The SNR is the speech level over the noise RMS, with the speech level measured
on the recordings alone (`streamer.audio.noise.speech_rms` of the words, not of
the pauses), so "10 dB" means what it means for a single utterance.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.audio.noise import make_noise, speech_rms
from streamer.audio.wav import CANONICAL_RATE, load_audio, resample
from streamer.errors import DataError


@dataclass(frozen=True)
class TruthWord:
    """One recording placed in the stream; times in seconds."""

    label: str
    start: float
    end: float
    source: str = ""


def collect(folder: str | Path, labels: list[str] | None = None) -> list[tuple[str, Path]]:
    """(label, path) for every FOLDER/LABEL/*.wav, sorted, optionally only some labels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    out: list[tuple[str, Path]] = []
    for d in sorted(p for p in folder.iterdir() if p.is_dir()):
        if labels is not None and d.name not in labels:
            continue
        out.extend((d.name, f) for f in sorted(d.glob("*.wav")))
    if not out:
        raise DataError(f"{folder}: no LABEL/*.wav recordings")
    return out


def _level(a: np.ndarray, level_db: float) -> np.ndarray:
    """Scale to a speech level in dBFS without letting the peak pass 0.95."""
    rms = speech_rms(a)
    peak = float(np.max(np.abs(a))) if a.size else 0.0
    if rms <= 0 or peak <= 0:
        return a
    gain = min(10 ** (level_db / 20) / rms, 0.95 / peak)
    return (a * gain).astype(np.float32)


def build_stream(
    recordings: list[tuple[str, np.ndarray]],
    seed: int = 0,
    rate: int = CANONICAL_RATE,
    minutes: float | None = None,
    passes: int = 1,
    pause: tuple[float, float] = (0.3, 2.0),
    lead: float = 1.0,
    noise: str | None = None,
    snr_db: float = 10.0,
    noise_track_s: float = 120.0,
    level_db: float | None = -26.0,
) -> tuple[np.ndarray, list[TruthWord]]:
    """Lay (label, audio at `rate`) recordings in random order; float32 stream and its truth.

    Every recording is used once per shuffled pass, `passes` times; with
    `minutes`, passes repeat (each reshuffled) until the stream is at least that
    long. A pause of `lead` seconds opens and closes the stream so the noise
    floor can be learnt. Noise comes from its own seed stream (one
    `noise_track_s` track, tiled), so a clean and a noisy stream with the same
    seed hold the same words at the same times. With `level_db`, every
    recording is first scaled to that speech level (dBFS, `speech_rms`; never
    past a 0.95 peak), so the SNR holds for every word and not only on average
    (the fruit recordings' own levels spread over 14 dB).
    """
    if not recordings:
        raise DataError("no recordings to build a stream from")
    if level_db is not None:
        recordings = [(label, _level(a, level_db)) for label, a in recordings]
    rng = np.random.default_rng(seed)
    order: list[int] = []
    total = lead
    mean_len = float(np.mean([a.size for _, a in recordings])) / rate + sum(pause) / 2
    target = None if minutes is None else minutes * 60.0
    while True:
        order.extend(rng.permutation(len(recordings)).tolist())
        total = lead + len(order) * mean_len
        if len(order) >= passes * len(recordings) and (target is None or total >= target):
            break
    gaps = rng.uniform(pause[0], pause[1], size=len(order))
    gaps[-1] = lead
    pos = int(lead * rate)
    places = []
    for i, k in enumerate(order):
        places.append(pos)
        pos += recordings[k][1].size + int(gaps[i] * rate)
    x = np.zeros(pos, dtype=np.float64)
    truth = []
    for p, k in zip(places, order, strict=True):
        label, a = recordings[k]
        x[p : p + a.size] += a
        truth.append(TruthWord(label, p / rate, (p + a.size) / rate, str(k)))
    if noise:
        nrng = np.random.default_rng([seed, 7919])
        n_track = min(x.size, int(noise_track_s * rate))
        track = make_noise(noise, n_track, rate, nrng)
        reps = -(-x.size // n_track)
        nz = np.tile(track, reps)[: x.size]
        words = np.concatenate([recordings[k][1] for k in order[: min(len(order), 400)]])
        level = speech_rms(words) / 10 ** (snr_db / 20)
        x += level * nz
    return x.astype(np.float32), truth


def make_stream(
    folder: str | Path,
    seed: int = 0,
    rate: int = CANONICAL_RATE,
    out_rate: int | None = None,
    labels: list[str] | None = None,
    files: list[tuple[str, Path]] | None = None,
    **kwargs: object,
) -> tuple[np.ndarray, list[TruthWord], int]:
    """Load the recordings and build a stream; (audio at out_rate or rate, truth, its rate)."""
    found = files if files is not None else collect(folder, labels)
    recs = [(label, load_audio(path, rate)) for label, path in found]
    x, truth = build_stream(recs, seed=seed, rate=rate, **kwargs)  # type: ignore[arg-type]
    if out_rate and out_rate != rate:
        x = resample(x, rate, out_rate)
        rate = out_rate
    return x, truth, rate


def write_truth(path: str | Path, truth: list[TruthWord]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "start", "end"])
        for t in truth:
            w.writerow([t.label, f"{t.start:.4f}", f"{t.end:.4f}"])


def read_truth(path: str | Path) -> list[TruthWord]:
    with open(path, newline="") as f:
        return [
            TruthWord(r["label"], float(r["start"]), float(r["end"])) for r in csv.DictReader(f)
        ]


__all__ = ["TruthWord", "build_stream", "collect", "make_stream", "read_truth", "write_truth"]

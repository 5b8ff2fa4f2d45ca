"""Scoring rules (known answers) and the test-stream maker (determinism, truth, SNR)."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.noise import speech_rms
from streamer.audio.score import Event, events_from_lines, match, score
from streamer.audio.teststream import build_stream, read_truth

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def make_stream_main(argv: list[str]) -> int:
    """scripts/make_stream.py as a user runs it."""
    import subprocess

    cmd = [sys.executable, str(SCRIPTS / "make_stream.py"), *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).returncode


T = [Event("apple", 1.0, 1.5), Event("kiwi", 3.0, 3.4), Event("lime", 5.0, 5.5)]


def test_known_answer_scoring() -> None:
    events = [
        Event("apple", 0.95, 1.45, closed_at=1.7, delay=0.01),  # hit, right label
        Event("lime", 2.9, 3.3, closed_at=3.6),  # hit, wrong label
        Event("kiwi", 3.35, 3.5, closed_at=3.7),  # second piece of the same word: false alarm
        Event(None, 8.0, 8.5, closed_at=8.7),  # nothing there: false alarm
    ]  # lime at 5.0 is missed
    s = score(events, T)
    assert (s.words, s.events, s.matched) == (3, 4, 2)
    assert s.precision == 0.5 and s.recall == pytest.approx(2 / 3)
    assert s.label_accuracy == 0.5
    assert s.confusions == {"kiwi->lime": 1}
    assert s.labelled_precision == pytest.approx(2 / 3)
    assert s.close_latency_ms["max"] == pytest.approx(200.0)
    assert s.latency_ms["p50"] == pytest.approx(205.0)
    assert s.start_err_ms == pytest.approx(75.0)


def test_merged_words_count_one_hit_and_one_miss() -> None:
    pairs = match([Event("apple", 0.9, 3.5)], T)
    assert pairs == [(0, 0)]  # the larger overlap wins; kiwi is missed
    assert score([Event("apple", 0.9, 3.5)], T).matched == 1


def test_events_from_replay_lines() -> None:
    lines = [
        json.dumps({"topic": "regime", "seq": 0, "symbol": "X"}),
        json.dumps(
            {
                "topic": "speech",
                "seq": 0,
                "stream": "a",
                "label": "kiwi",
                "start": 3.0,
                "end": 3.4,
                "closed_at": 3.6,
                "delay_ms": 4.0,
            }
        ),
        "",
        json.dumps(
            {"topic": "speech", "seq": 1, "stream": "b", "label": None, "start": 1, "end": 2}
        ),
    ]
    ev = events_from_lines(lines)
    assert [e.stream for e in ev] == ["a", "b"]
    assert ev[0].delay == pytest.approx(0.004) and ev[1].closed_at is None
    assert len(events_from_lines(lines, stream="a")) == 1


def _recs() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    t = np.arange(3200) / 8000
    return [
        (lab, (0.2 * k * np.sin(2 * np.pi * f * t) * rng.uniform(0.5, 1)).astype(np.float32))
        for k, (lab, f) in enumerate((("a", 300), ("b", 500), ("c", 700)), start=1)
    ]


def test_stream_is_deterministic_and_its_truth_is_consistent() -> None:
    recs = _recs()
    x1, t1 = build_stream(recs, seed=3, passes=4)
    x2, t2 = build_stream(recs, seed=3, passes=4)
    x3, _ = build_stream(recs, seed=4, passes=4)
    assert np.array_equal(x1, x2) and t1 == t2
    assert not np.array_equal(x1[: x3.size], x3[: x1.size])
    assert len(t1) == 12 and sorted(w.label for w in t1) == sorted(["a", "b", "c"] * 4)
    for a, b in itertools.pairwise(t1):
        assert 0.3 - 1e-3 <= b.start - a.end <= 2.0 + 1e-3
    for w in t1:  # the words are where the truth says, at the normalised level
        seg = x1[round(w.start * 8000) : round(w.end * 8000)]
        assert 20 * np.log10(speech_rms(seg)) == pytest.approx(-26.0, abs=0.1)
    assert x1[: round(t1[0].start * 8000)].max() == 0.0  # clean pauses are silent


def test_noise_at_the_asked_snr_and_the_same_words() -> None:
    recs = _recs()
    clean, t = build_stream(recs, seed=1, passes=2)
    noisy, t_noisy = build_stream(recs, seed=1, passes=2, noise="white", snr_db=10.0)
    assert t == t_noisy
    noise = noisy - clean
    level = 20 * np.log10(np.sqrt(np.mean(noise.astype(np.float64) ** 2)))
    assert level == pytest.approx(-36.0, abs=0.3)  # 10 dB under the -26 dBFS words


def test_minutes_and_the_cli(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    from streamer.audio.wav import write_wav

    for lab, x in _recs():
        (folder / lab).mkdir(parents=True)
        write_wav(folder / lab / f"{lab}01.wav", x)
    out = tmp_path / "s.wav"
    argv = [str(folder), str(out), "--minutes", "0.5", "--rate", "22050", "--seed", "2"]
    assert make_stream_main(argv) == 0
    from streamer.audio.wav import read_wav

    data, rate = read_wav(out)
    truth = read_truth(out.with_suffix(".csv"))
    assert rate == 22050 and data.size / rate >= 30.0
    assert truth[-1].end <= data.size / rate
    assert make_stream_main([str(tmp_path / "missing"), str(out)]) == 2

"""`streamer demo`: the whole service from nothing, as `make demo` runs it, and its parts."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from streamer.audio.segmenter import segment
from streamer.audio.wav import to_pcm16
from streamer.cli import main
from streamer.demo import Scoreboard, demo_prices, speak_stream


def test_the_stream_says_each_word_equally_often_with_held_out_voices() -> None:
    labels = ["apple", "kiwi", "lime"]
    audio, words = speak_stream(labels, 9, seed=3)
    assert [w.label for w in words].count("kiwi") == 3
    assert len({w.voice.split("@")[0] for w in words}) == 8  # all eight held-out voices
    from streamer.audio.synth import TRAIN_VOICES

    trained = {v.name for v in TRAIN_VOICES}
    assert not trained & {w.voice.split("@")[0] for w in words}
    assert all(b.start - a.end >= 0.3 for a, b in itertools.pairwise(words))
    # the segmenter finds exactly the words that were placed
    utts = segment(to_pcm16(audio))
    assert len(utts) == 9
    for u, w in zip(utts, words, strict=True):
        assert u.start < w.end and w.start < u.end
    # the same seed, the same words, voices and places (eSpeak NG itself varies by a few
    # samples from one call to the next)
    _, again = speak_stream(labels, 9, seed=3)
    assert [(w.label, w.voice) for w in again] == [(w.label, w.voice) for w in words]
    assert np.allclose([w.start for w in again], [w.start for w in words], atol=0.02)


def test_prices_are_retimed_over_the_audio(tmp_path) -> None:  # type: ignore[no-untyped-def]
    p = demo_prices(tmp_path, 30.0, ticks=300, seed=1)
    assert p.ticks == 300 and p.states is not None and p.path.exists()
    assert p.times[-1] - p.times[0] == pytest.approx(30.0)
    lines = p.path.read_text().splitlines()
    assert lines[0] == "timestamp,price" and len(lines) == 301


def test_scoreboard_matches_by_overlap_and_counts_misses() -> None:
    from streamer.demo import DemoWord

    truth = [DemoWord("kiwi", "v", 1.0, 1.5), DemoWord("lime", "v", 2.0, 2.4)]
    b = Scoreboard(truth)
    assert b.word({"start": 0.95, "end": 1.6, "label": "kiwi"}) == (truth[0], True)
    assert b.word({"start": 5.0, "end": 5.2, "label": "kiwi"}) == (None, False)
    assert b.missed() == [truth[1]] and b.extra == 1 and b.accuracy == 0.5


def test_demo_end_to_end_prints_words_regimes_and_the_score_last(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["demo", "--words", "8", "--speed", "0", "--ticks", "300"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("streamer demo: 8 words")
    words = [line for line in out if re.search(r"\s(ok|WRONG|MISSED)$", line)]
    assert len(words) == 8
    assert any(line.startswith("regimes of SYN") for line in out)
    assert any(line.strip().startswith("true |") for line in out)
    m = re.fullmatch(r"score: (\d+)/8 words right = ([\d.]+)% word accuracy", out[-1])
    assert m is not None, out[-1]
    assert int(m.group(1)) >= 6  # a smoke test; the benchmark measures the accuracy

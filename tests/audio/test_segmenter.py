"""The segmenter: chunk-size invariance, end-pointing, and the bad inputs of the issue."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from streamer.audio.score import Event, score
from streamer.audio.segmenter import Segmenter, SegmenterConfig, segment
from streamer.audio.synth import HELDOUT_VOICES, synthesize
from streamer.audio.wav import resample, to_pcm16
from streamer.errors import ConfigError
from streamer.messages import AudioChunk, Utterance

from .conftest import Synthetic, make_synthetic


def _chunked(pcm: np.ndarray, size: int, cfg: SegmenterConfig | None = None) -> list[Utterance]:
    seg = Segmenter(cfg)
    out: list[Utterance] = []
    for i in range(0, pcm.size, size):
        out += seg.feed(AudioChunk("s", pcm[i : i + size], 8000, i))
    return out + seg.flush()


def _key(u: Utterance) -> tuple:
    return (u.index, u.start, u.end, u.closed_at, u.split, u.samples.tobytes())


def _scored(utts: list[Utterance], truth: list[tuple[str, float, float]]):
    events = [Event(None, u.start, u.end, u.closed_at) for u in utts]
    return score(events, [Event(lab, s, e) for lab, s, e in truth])


def test_config_rejects_what_webrtcvad_cannot_take() -> None:
    with pytest.raises(ConfigError, match="22050"):
        SegmenterConfig(rate=22050)
    with pytest.raises(ConfigError, match="frame"):
        SegmenterConfig(frame_ms=25)
    with pytest.raises(ConfigError, match="aggressiveness"):
        SegmenterConfig(aggressiveness=4)
    with pytest.raises(ConfigError):
        SegmenterConfig(min_ms=500, max_ms=400)
    for rate in (8000, 16000, 32000, 48000):
        for frame in (10, 20, 30):
            assert SegmenterConfig(rate=rate, frame_ms=frame).frame_len == rate * frame // 1000


@pytest.mark.parametrize("size", [1, 7, 80, 333, 4096])
def test_any_chunking_gives_identical_utterances(synthetic: Synthetic, size: int) -> None:
    pcm = to_pcm16(synthetic.x)
    whole = segment(pcm)
    if size == 1:
        pcm = pcm[: 3 * 8000]  # one sample at a time is slow: the first three seconds
        whole = segment(pcm)
    assert [_key(u) for u in _chunked(pcm, size)] == [_key(u) for u in whole]


def test_each_word_is_found_once_and_closes_fast(synthetic: Synthetic) -> None:
    utts = segment(to_pcm16(synthetic.x))
    s = _scored(utts, synthetic.truth)
    assert s.matched == len(synthetic.truth) == len(utts)
    for u in utts:
        assert u.start < u.end <= u.closed_at
        assert u.samples.dtype == np.float32
        assert u.samples.size == round((u.end - u.start) * 8000)
        assert not u.split
    assert [u.index for u in utts] == list(range(len(utts)))
    # close latency from the true end: hangover (160 ms) plus smoothing, well under 250 ms
    assert s.close_latency_ms["max"] < 250
    assert s.start_err_ms < 120 and s.end_err_ms < 120


def test_other_vad_rates_and_frames_find_the_same_words(synthetic: Synthetic) -> None:
    for rate, frame in ((16000, 20), (32000, 30), (48000, 10)):
        pcm = to_pcm16(resample(synthetic.x, 8000, rate))
        utts = segment(pcm, SegmenterConfig(rate=rate, frame_ms=frame))
        assert _scored(utts, synthetic.truth).matched == len(synthetic.truth) == len(utts)
        assert all(u.rate == rate for u in utts)


def test_words_with_internal_stops_are_not_split() -> None:
    # "pineapple" and "apple" have a closure inside; so does a two-word phrase said fast
    x = np.concatenate(
        [np.zeros(6000, np.float32)]
        + [
            np.concatenate([synthesize(w, v) * 0.5, np.zeros(8000, np.float32)])
            for w in ("pineapple", "apple", "peach", "orange")
            for v in HELDOUT_VOICES[:4]
        ]
    )
    assert len(segment(to_pcm16(x))) == 16


def test_all_silence_and_digital_zero_give_nothing() -> None:
    assert segment(np.zeros(8000 * 20, np.int16)) == []
    rng = np.random.default_rng(1)
    hiss = to_pcm16(rng.standard_normal(8000 * 20) * 10 ** (-70 / 20))
    assert segment(hiss) == []


@pytest.mark.parametrize("kind", ["white", "pink", "babble", "hum", "factory"])
def test_all_noise_gives_almost_nothing(kind: str) -> None:
    from streamer.audio.noise import make_noise

    rng = np.random.default_rng(2)
    x = make_noise(kind, 8000 * 30, 8000, rng) * 0.1
    utts = segment(to_pcm16(x))
    # steady noise is learnt as the floor; at most a couple of bursts in 30 s get through
    assert len(utts) <= 2, [(u.start, u.end) for u in utts]


def test_words_in_noise_are_still_found() -> None:
    syn = make_synthetic(8, seed=3, noise_db=-40)  # about 10 dB under the quietest word
    utts = segment(to_pcm16(syn.x))
    s = _scored(utts, syn.truth)
    assert s.recall == 1.0 and s.precision == 1.0


def test_clipping_and_dc_offset_change_nothing_that_matters(synthetic: Synthetic) -> None:
    base = segment(to_pcm16(synthetic.x))
    clipped = np.clip(synthetic.x * 8.0, -1.0, 1.0)  # hard clipped, 18 dB too hot
    dc = synthetic.x + 0.25  # a quarter of full scale of DC
    for x in (clipped, dc):
        utts = segment(to_pcm16(x))
        s = _scored(utts, synthetic.truth)
        assert s.matched == len(base) == len(utts)
        assert s.start_err_ms < 150 and s.end_err_ms < 150


def test_stream_ending_mid_frame_and_mid_word_is_flushed(synthetic: Synthetic) -> None:
    _, start, end = synthetic.truth[2]
    cut = int((start + end) / 2 * 8000) + 37  # inside the third word, not on a frame edge
    pcm = to_pcm16(synthetic.x[:cut])
    seg = Segmenter()
    fed = seg.feed(pcm)
    assert len(fed) == 2 and seg.speaking
    last = seg.flush()
    assert len(last) == 1
    u = last[0]
    assert u.end == pytest.approx(cut / 8000) and u.closed_at == pytest.approx(cut / 8000)
    assert seg.flush() == []  # flushing twice loses and repeats nothing


def test_ten_minutes_without_a_pause_are_split_at_the_maximum_length() -> None:
    text = "the quick brown fox jumps over the lazy dog and runs into the green forest"
    speech = synthesize(text, HELDOUT_VOICES[1]) * 0.5
    # one talker reading on and on: copies overlap by 400 ms, so no pause at the joins
    hop = speech.size - 3200
    talk = np.zeros(600 * 8000 + speech.size, np.float32)
    for at in range(0, 600 * 8000, hop):
        talk[at : at + speech.size] += speech
    x = np.concatenate([np.zeros(8000, np.float32), talk[: 600 * 8000]])
    cfg = SegmenterConfig()
    utts = segment(to_pcm16(x), cfg)
    full = [u for u in utts if u.split]
    assert len(full) == len(utts) - 1 >= 59  # all but the piece left at the end
    for u in full:
        assert u.end - u.start == pytest.approx(cfg.max_ms / 1000, abs=0.011)
        assert u.closed_at == pytest.approx(u.end)
    # nothing lost or duplicated across the splits: each piece starts where the last ended
    for a, b in itertools.pairwise(utts):
        if a.split:
            assert b.start == pytest.approx(a.end)
            assert b.samples[0] == pytest.approx(x[round(b.start * 8000)], abs=1 / 32768)
    covered = sum(u.samples.size for u in utts)
    assert covered >= 0.97 * 600 * 8000


def test_a_gap_in_the_stream_is_filled_with_silence(synthetic: Synthetic) -> None:
    pcm = to_pcm16(synthetic.x)
    seg = Segmenter()
    out = seg.feed(AudioChunk("s", pcm[:8000], 8000, 0))
    out += seg.feed(AudioChunk("s", pcm[8800:], 8000, 8800))  # 100 ms dropped upstream
    out += seg.flush()
    assert seg.stats.gap_samples == 800
    assert seg.position == pcm.size
    with pytest.raises(ConfigError, match="overlap"):
        seg.feed(AudioChunk("s", pcm[:10], 8000, 0))
    with pytest.raises(ConfigError, match="resample"):
        Segmenter().feed(AudioChunk("s", pcm[:10], 16000, 0))


def test_click_shorter_than_min_is_dropped() -> None:
    x = np.zeros(8000 * 3, np.float32)
    t = np.arange(400) / 8000
    x[8000:8400] = 0.5 * np.sin(2 * np.pi * 300 * t)  # 50 ms tone burst
    seg = Segmenter()
    assert seg.feed(to_pcm16(x)) + seg.flush() == []


def test_noise_that_starts_mid_stream_is_learnt_not_taken_for_speech() -> None:
    from streamer.audio.noise import make_noise

    x = np.zeros(8000 * 70, np.float32)
    x[8000 * 5 :] = make_noise("babble", 8000 * 65, 8000, np.random.default_rng(4)) * 0.05
    utts = segment(to_pcm16(x))
    # the onset may open one utterance; the floor then follows the noise and ends it
    assert len(utts) <= 3, [(u.start, u.end) for u in utts]
    assert all(u.end - u.start <= 7.0 for u in utts)

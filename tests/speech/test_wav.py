"""Reading any WAV into canonical audio, and the errors for files that are not usable."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from streamer.audio.wav import CANONICAL_RATE, load_audio, resample, to_pcm16, write_wav
from streamer.errors import AudioError


def tone(freq: float, rate: int, seconds: float = 0.5, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float64)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[np.argmax(spec)])


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 32000, 44100, 48000])
@pytest.mark.parametrize("fmt", ["int16", "int32", "float32", "float64"])
def test_any_format_and_rate_becomes_canonical(tmp_path: Path, rate: int, fmt: str) -> None:
    x = tone(440.0, rate)
    if fmt == "int16":
        data = (x * 32767).astype(np.int16)
    elif fmt == "int32":
        data = (x * 2147483647).astype(np.int32)
    else:
        data = x.astype(fmt)
    p = tmp_path / "a.wav"
    wavfile.write(p, rate, data)
    y = load_audio(p)
    assert y.dtype == np.float32
    assert abs(y.size - 0.5 * CANONICAL_RATE) <= 2
    assert abs(peak_hz(y, CANONICAL_RATE) - 440.0) < 5
    assert 0.45 < np.abs(y).max() < 0.55


def test_stereo_is_downmixed(tmp_path: Path) -> None:
    left, right = tone(300, 16000), tone(1000, 16000)
    p = tmp_path / "s.wav"
    wavfile.write(p, 16000, (np.stack([left, right], 1) * 32767).astype(np.int16))
    y = load_audio(p)
    spec = np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(y.size, 1 / CANONICAL_RATE)
    assert spec[np.argmin(abs(f - 300))] > 0.3 * spec.max()
    assert spec[np.argmin(abs(f - 1000))] > 0.3 * spec.max()


def test_resampling_round_trip_keeps_the_signal() -> None:
    x = tone(700, 8000, 1.0).astype(np.float32)
    y = resample(resample(x, 8000, 44100), 44100, 8000)
    assert y.size == x.size
    assert np.max(np.abs(x[200:-200] - y[200:-200])) < 0.01


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    x = tone(500, 8000).astype(np.float32)
    write_wav(tmp_path / "r.wav", x)
    assert np.max(np.abs(load_audio(tmp_path / "r.wav") - x)) < 1e-4
    assert to_pcm16(np.array([2.0, -2.0])).tolist() == [32767, -32768]


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"e\.wav: empty file"):
        load_audio(tmp_path / "e.wav")


def test_not_a_wav(tmp_path: Path) -> None:
    (tmp_path / "n.wav").write_text("hello, I am text")
    with pytest.raises(AudioError, match="not a WAV file"):
        load_audio(tmp_path / "n.wav")


def test_truncated_wav(tmp_path: Path) -> None:
    p = tmp_path / "t.wav"
    wavfile.write(p, 8000, (tone(440, 8000) * 32767).astype(np.int16))
    p.write_bytes(p.read_bytes()[:2000])
    with pytest.raises(AudioError, match="truncated WAV"):
        load_audio(p)


def test_rate_below_8k(tmp_path: Path) -> None:
    p = tmp_path / "low.wav"
    wavfile.write(p, 4000, (tone(440, 4000) * 32767).astype(np.int16))
    with pytest.raises(AudioError, match="4000 Hz is outside"):
        load_audio(p)


def test_nan_in_float_wav(tmp_path: Path) -> None:
    x = tone(440, 8000).astype(np.float32)
    x[100] = np.nan
    wavfile.write(tmp_path / "nan.wav", 8000, x)
    with pytest.raises(AudioError, match="NaN"):
        load_audio(tmp_path / "nan.wav")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="is a folder"):
        load_audio(tmp_path)


def test_riff_without_data_chunk(tmp_path: Path) -> None:
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    raw = (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt))
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
    )
    (tmp_path / "nodata.wav").write_bytes(raw)
    with pytest.raises(AudioError, match="no data chunk"):
        load_audio(tmp_path / "nodata.wav")

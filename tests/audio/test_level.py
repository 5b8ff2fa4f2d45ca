"""The audio level meter: RMS and peak in dBFS of what passed since the last reading."""

from __future__ import annotations

import math

import numpy as np

from streamer.audio.level import FLOOR_DBFS, LevelMeter, dbfs


def sine(amplitude: float, n: int = 8000, rate: int = 8000, hz: float = 440.0) -> np.ndarray:
    t = np.arange(n) / rate
    return np.round(amplitude * 32768 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def test_a_sine_reads_its_rms_and_peak_and_each_reading_starts_afresh() -> None:
    m = LevelMeter()
    x = sine(0.25)
    for block in np.array_split(x, 50):  # as the capture loop hands it over
        m.add(block)
    rms, peak = m.take() or (0.0, 0.0)
    assert abs(rms - 20 * math.log10(0.25 / math.sqrt(2))) < 0.15  # -15.1 dBFS
    assert abs(peak - 20 * math.log10(0.25)) < 0.15  # -12.0 dBFS
    assert m.take() is None  # nothing since
    m.add(sine(0.01))
    rms2, _ = m.take() or (0.0, 0.0)
    assert abs(rms2 - 20 * math.log10(0.01 / math.sqrt(2))) < 0.3  # not mixed with the loud part


def test_silence_and_full_scale_stay_in_range() -> None:
    m = LevelMeter()
    m.add(np.zeros(160, np.int16))
    assert m.take() == (FLOOR_DBFS, FLOOR_DBFS)
    m.add(np.full(160, -32768, np.int16))
    assert m.take() == (0.0, 0.0)
    assert dbfs(1e-9) == FLOOR_DBFS

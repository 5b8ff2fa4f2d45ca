"""Synthetic streams for the streaming tests: held-out eSpeak voices, known word positions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from streamer.audio.synth import HELDOUT_VOICES, synthesize

WORDS = ("apple", "banana", "kiwi", "lime", "orange", "peach", "pineapple")


@dataclass(frozen=True)
class Synthetic:
    """A float32 stream at 8 kHz with (label, start, end) of each spoken word."""

    x: np.ndarray
    truth: list[tuple[str, float, float]]
    rate: int = 8000


def make_synthetic(
    n_words: int = 8, seed: int = 0, noise_db: float | None = None, lead: float = 0.8
) -> Synthetic:
    """Words from held-out voices with 0.5-1.2 s pauses; optional white noise at `noise_db` dBFS."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(int(lead * 8000), np.float32)]
    truth = []
    pos = parts[0].size
    for i in range(n_words):
        label = WORDS[int(rng.integers(len(WORDS)))]
        voice = HELDOUT_VOICES[i % len(HELDOUT_VOICES)]
        w = synthesize(label, voice) * 0.5
        truth.append((label, pos / 8000, (pos + w.size) / 8000))
        gap = np.zeros(int(rng.uniform(0.5, 1.2) * 8000), np.float32)
        parts += [w, gap]
        pos += w.size + gap.size
    x = np.concatenate(parts)
    if noise_db is not None:
        x = x + (10 ** (noise_db / 20) * rng.standard_normal(x.size)).astype(np.float32)
    return Synthetic(x.astype(np.float32), truth)


@pytest.fixture(scope="session")
def synthetic() -> Synthetic:
    return make_synthetic(8, seed=0, noise_db=-55)

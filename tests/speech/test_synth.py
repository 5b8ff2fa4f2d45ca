"""Synthetic voices and noise: deterministic, disjoint train/held-out voices, exact SNR."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from streamer.audio.noise import KINDS, TRAINING_KINDS, add_noise, make_noise, speech_rms
from streamer.audio.synth import HELDOUT_VOICES, TRAIN_VOICES, Voice, synthesize
from streamer.errors import ConfigError

_HASH = """
import hashlib
from streamer.audio.synth import TRAIN_VOICES, synthesize
h = hashlib.sha1()
for v in TRAIN_VOICES:
    h.update(synthesize("pineapple", v).tobytes())
print(h.hexdigest())
"""


def test_synthesis_is_deterministic_across_runs() -> None:
    """Breathy voices add noise; with the seed reset, two fresh processes agree bit for bit."""
    runs = [
        subprocess.run([sys.executable, "-c", _HASH], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    assert runs[0].stdout == runs[1].stdout and len(runs[0].stdout.strip()) == 40


def test_synthesis_is_trimmed() -> None:
    for v in (TRAIN_VOICES[1], TRAIN_VOICES[8], HELDOUT_VOICES[0]):
        a = synthesize("pineapple", v)
        assert 0.3 < a.size / 8000 < 1.5
        assert np.abs(a[:40]).max() < 0.5 * np.abs(a).max()


def test_voice_sets_are_disjoint() -> None:
    assert not {v.name for v in TRAIN_VOICES} & {v.name for v in HELDOUT_VOICES}


def test_unknown_voice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown eSpeak voice"):
        synthesize("apple", Voice("xx-nonexistent"))


@pytest.mark.parametrize("kind", KINDS)
def test_noise_kinds_mix_at_the_requested_snr(kind: str, rng: np.random.Generator) -> None:
    speech = synthesize("banana")
    noise = make_noise(kind, speech.size, 8000, rng)
    assert noise.shape == speech.shape
    assert np.sqrt(np.mean(noise**2)) == pytest.approx(1.0, rel=1e-6)
    noisy = add_noise(speech, 10.0, kind, rng, noise=noise)
    added = noisy.astype(np.float64) - speech
    snr = 20 * np.log10(speech_rms(speech) / np.sqrt(np.mean(added**2)))
    assert snr == pytest.approx(10.0, abs=0.05)


def test_training_kinds_leave_realistic_kinds_unseen() -> None:
    assert {"babble", "hum", "factory"}.isdisjoint(TRAINING_KINDS)
    with pytest.raises(ConfigError, match="unknown noise kind"):
        make_noise("rain", 10, 8000, np.random.default_rng(0))


def test_word_lists_are_disjoint() -> None:
    """Background, calibration and test words never overlap, nor name a fruit of the bank."""
    from streamer.speech.evaluate import TEST_OOV_WORDS
    from streamer.speech.train import BACKGROUND_WORDS, OOV_WORDS

    fruits = {"apple", "banana", "kiwi", "lime", "orange", "peach", "pineapple"}
    lists = [set(BACKGROUND_WORDS), set(OOV_WORDS), set(TEST_OOV_WORDS), fruits]
    words = [{p for w in s for p in w.split()} for s in lists]
    for i in range(len(words)):
        for j in range(i + 1, len(words)):
            assert not words[i] & words[j], words[i] & words[j]

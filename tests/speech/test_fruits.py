"""Integration on the real fruit recordings (shared data; a failure under CI when missing)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.noise import add_noise
from streamer.audio.synth import HELDOUT_VOICES, synthesize
from streamer.paths import default_bank_path
from streamer.speech.bank import HmmConfig, WordBank
from streamer.speech.evaluate import evaluate
from streamer.speech.train import TrainConfig, list_dataset, load_dataset


@pytest.fixture(scope="module")
def shipped() -> WordBank:
    return WordBank.load(default_bank_path())


@pytest.fixture(scope="module")
def recordings(fruits_dir: Path) -> dict[str, list[np.ndarray]]:
    return load_dataset(list_dataset(fruits_dir), 8000)


def test_dataset_is_seven_words_of_fifteen(recordings: dict[str, list[np.ndarray]]) -> None:
    assert {w: len(x) for w, x in recordings.items()} == {
        w: 15 for w in ["apple", "banana", "kiwi", "lime", "orange", "peach", "pineapple"]
    }


def test_shipped_bank_labels_every_recording(
    shipped: WordBank, recordings: dict[str, list[np.ndarray]]
) -> None:
    """The bank was trained on these: every one must get its label, none rejected."""
    wrong = [
        (w, i)
        for w, xs in recordings.items()
        for i, x in enumerate(xs)
        if shipped.recognize(x).label != w
    ]
    assert len(wrong) <= 1, wrong


def test_shipped_bank_keeps_noisy_clipped_and_new_voices(
    shipped: WordBank, recordings: dict[str, list[np.ndarray]]
) -> None:
    """Rejection must not eat known words that are noisy, cut short, or from another voice."""
    rng = np.random.default_rng(5)
    hits = total = 0
    for w, xs in recordings.items():
        for x in xs[::3]:
            for variant in (
                add_noise(x, 10.0, "factory", rng),
                x[: int(x.size * 0.88)],
            ):
                hits += shipped.recognize(variant).label == w
                total += 1
        for v in HELDOUT_VOICES[:4]:
            hits += shipped.recognize(synthesize(w, v)).label == w
            total += 1
    assert hits / total >= 0.9, f"{hits}/{total}"


def test_shipped_bank_rejects_other_words(shipped: WordBank) -> None:
    words = ["table", "window", "grape", "melon", "seven", "carrot", "music", "yellow"]
    rejected = sum(
        shipped.recognize(synthesize(w, v)).label is None for w in words for v in HELDOUT_VOICES[:2]
    )
    assert rejected / (2 * len(words)) >= 0.6


def test_cross_validation_beats_the_baseline(recordings: dict[str, list[np.ndarray]]) -> None:
    """A light version of the recipe (fewer voices and restarts) still cross-validates well."""
    cfg = replace(
        TrainConfig(),
        synth_voices=3,
        noisy_copies=1,
        jobs=2,
        hmm=HmmConfig(n_restarts=1, n_iter=10),
    )
    res = evaluate(recordings, folds=3, cfg=cfg, voices=(), oov_words=())
    assert res["clean"].n == 105
    assert res["clean"].accuracy() >= 0.97

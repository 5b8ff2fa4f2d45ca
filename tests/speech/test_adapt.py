"""MAP adaptation to one speaker: the maths, the known answer, refused takes, the command."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hmmlearn import hmm

from streamer.audio.synth import HELDOUT_VOICES, TRAIN_VOICES, synthesize
from streamer.audio.wav import write_wav
from streamer.cli import main
from streamer.errors import DataError
from streamer.speech.adapt import _state_posteriors, adapt_bank, check_take, map_means
from streamer.speech.bank import HmmConfig, WordBank, WordModel
from streamer.speech.train import TrainConfig, train_bank

WORDS = ("lemon", "rocket", "seven", "window")
CFG = TrainConfig(
    hmm=HmmConfig(n_restarts=1, n_iter=8),
    speeds=(),
    noisy_copies=1,
    synth_voices=0,
    calibrate=False,
)


@pytest.fixture(scope="module")
def bank() -> WordBank:
    data = {w: [synthesize(w, v) for v in TRAIN_VOICES[:6]] for w in WORDS}
    return train_bank(data, CFG)


def test_posteriors_equal_hmmlearn(bank: WordBank) -> None:
    x = bank.featurize(synthesize("rocket", HELDOUT_VOICES[0]))
    i = bank.labels.index("rocket")
    m = bank.models[i]
    ref = hmm.GaussianHMM(m.n_states, covariance_type="diag", init_params="")
    ref.startprob_, ref.transmat_ = m.startprob, m.transmat
    ref.means_, ref.covars_ = m.means[:, 0], m.covars[:, 0]
    ref.n_features = x.shape[1]
    post, comp = _state_posteriors(bank, i, x)
    np.testing.assert_allclose(post, ref.predict_proba(x), atol=1e-6)
    np.testing.assert_allclose(comp.sum(2), post, atol=1e-9)


def test_map_means_between_prior_and_data() -> None:
    rng = np.random.default_rng(0)
    m = WordModel(
        startprob=np.array([1.0]),
        transmat=np.array([[1.0]]),
        means=np.zeros((1, 1, 2)),
        covars=np.ones((1, 1, 2)),
        weights=np.ones((1, 1)),
    )
    x = rng.normal(3.0, 0.1, size=(40, 2))
    gamma = np.ones((40, 1, 1))
    np.testing.assert_allclose(map_means(m, [(x, gamma)], 1e-9).means[0, 0], x.mean(0))
    np.testing.assert_allclose(map_means(m, [(x, gamma)], 1e9).means[0, 0], 0.0, atol=1e-6)
    half = map_means(m, [(x, gamma)], 40.0).means[0, 0]
    np.testing.assert_allclose(half, x.mean(0) / 2)


def test_adaptation_moves_towards_the_speaker_and_leaves_other_words(bank: WordBank) -> None:
    voice = HELDOUT_VOICES[2]
    takes = {
        w: [(f"{w} {k}", synthesize(w, replace(voice, rate=voice.rate + 10 * k))) for k in range(3)]
        for w in WORDS[:3]
    }
    new, report = adapt_bank(bank, takes)
    # a bank of six synthetic voices is a rough judge: a take may look like no word to it
    assert set(report.used) == set(WORDS[:3]) and min(report.used.values()) >= 2
    assert len(report.refused) <= 1
    unseen = synthesize("lemon", replace(voice, rate=voice.rate + 5))
    i = bank.labels.index("lemon")
    before = bank.loglik(bank.featurize(unseen))[0][i]
    after = new.loglik(new.featurize(unseen))[0][i]
    assert after > before  # a take it never saw, by the same speaker, fits better
    j = bank.labels.index("window")
    np.testing.assert_array_equal(new.models[j].means, bank.models[j].means)
    assert not np.allclose(new.models[i].means, bank.models[i].means)


def test_bad_takes_are_refused_not_adapted_on(bank: WordBank) -> None:
    good = synthesize("seven", HELDOUT_VOICES[1])
    clipped = np.clip(good * 40, -1, 1)
    noise = np.random.default_rng(3).standard_normal(8000).astype(np.float32) * 0.3
    assert check_take(bank, np.zeros(4000, np.float32), "t") == "silence"
    assert "clipped" in (check_take(bank, clipped, "t") or "")
    assert "no speech" in (check_take(bank, noise, "t") or "")
    backwards = synthesize("lemon", HELDOUT_VOICES[1])[::-1].copy()
    assert "fits no word" in (check_take(bank, backwards, "t") or "")
    assert check_take(bank, good, "t") is None
    takes = {"seven": [("ok", good), ("quiet", np.zeros(4000, np.float32)), ("hiss", noise)]}
    _, report = adapt_bank(bank, takes)
    assert report.used == {"seven": 1}
    assert [w for w, _ in report.refused] == ["quiet", "hiss"]
    with pytest.raises(DataError, match="no usable take"):
        adapt_bank(bank, {"seven": [("hiss", noise)]})
    with pytest.raises(DataError, match="'cherry': the bank has no such word"):
        adapt_bank(bank, {"cherry": [("c", good)]})


def test_vtln_bank_fixes_the_speakers_warp() -> None:
    data = {w: [synthesize(w, v) for v in TRAIN_VOICES[:6]] for w in WORDS}
    cfg = replace(CFG, features=replace(CFG.features, vtln=(0.9, 1.0, 1.1)))
    b = train_bank(data, cfg)
    x = synthesize("rocket", HELDOUT_VOICES[0])
    warp, _ = b.choose_warp(x)
    assert warp in (0.9, 1.0, 1.1)
    takes = {w: [(w, synthesize(w, HELDOUT_VOICES[0]))] for w in WORDS}
    new, report = adapt_bank(b, takes)
    assert report.warp in (0.9, 1.0, 1.1)
    assert new.features.vtln == (report.warp,)


def test_adapt_command(bank: WordBank, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bank.npz"
    bank.save(src)
    takes = tmp_path / "takes"
    for w in ("lemon", "rocket"):
        (takes / w).mkdir(parents=True)
        for k in range(2):
            write_wav(takes / w / f"{k}.wav", synthesize(w, HELDOUT_VOICES[4], 16000), 16000)
    write_wav(takes / "rocket" / "silent.wav", np.zeros(8000, np.float32), 8000)
    out = tmp_path / "me.npz"
    rc = main(["adapt", "--bank", str(src), "--out", str(out), str(takes)])
    captured = capsys.readouterr()
    assert rc == 2  # one take left out
    summary = json.loads(captured.out.strip())
    assert summary["adapted"] == {"lemon": 2, "rocket": 2}
    errors = [ln for ln in captured.err.splitlines() if "error" in ln]
    assert len(errors) == 1 and "silent.wav" in errors[0] and "silence" in errors[0]
    adapted = WordBank.load(out)
    assert adapted.labels == bank.labels and adapted.info["adapted"]["takes"]["lemon"] == 2
    (takes / "cherry").mkdir()
    write_wav(takes / "cherry" / "0.wav", synthesize("cherry", HELDOUT_VOICES[4]), 8000)
    rc = main(["adapt", "--bank", str(src), "--out", str(tmp_path / "x.npz"), str(takes)])
    err = capsys.readouterr().err
    assert rc == 2 and "'cherry': the bank has no such word" in err
    assert not (tmp_path / "x.npz").exists()

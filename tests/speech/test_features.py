"""MFCC features: shape, normalisation, true sample rate, and unusable utterances."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamer.audio.wav import resample
from streamer.errors import AudioError, ConfigError
from streamer.speech.features import FeatureConfig, mfcc, mfcc_warps


def chirp(rate: int, seconds: float = 0.6) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * np.sin(2 * np.pi * (300 + 1500 * t) * t)).astype(np.float32)


def test_shape_and_cmvn(rng: np.random.Generator) -> None:
    x = chirp(8000) + 0.01 * rng.standard_normal(4800).astype(np.float32)
    f = mfcc(x)
    assert f.shape == (59, 39)
    np.testing.assert_allclose(f.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(f.std(0), 1, atol=1e-3)


def test_configurable_parts() -> None:
    x = chirp(8000)
    assert mfcc(x, FeatureConfig(deltas=False, delta_deltas=False)).shape[1] == 13
    assert mfcc(x, FeatureConfig(delta_deltas=False)).shape[1] == 26
    raw = mfcc(x, FeatureConfig(cmvn=False))
    assert np.abs(raw.mean(0)).max() > 1  # without CMVN the cepstra keep their levels
    with pytest.raises(ConfigError):
        FeatureConfig(deltas=False, delta_deltas=True)
    with pytest.raises(ConfigError):
        FeatureConfig(nfft=64)


def test_features_do_not_depend_on_the_recording_rate() -> None:
    """The same sound recorded at 16 kHz and 8 kHz gives the same features once canonical."""
    x16 = chirp(16000)
    x8 = resample(x16, 16000, 8000)
    direct = mfcc(chirp(8000))
    via16 = mfcc(x8)
    assert np.corrcoef(direct[:, :13].ravel(), via16[:, :13].ravel())[0, 1] > 0.98


def test_wrong_rate_analysis_differs() -> None:
    """Analysing 8 kHz audio as 16 kHz (the notebook's mistake) changes the features."""
    x = chirp(8000)
    right = mfcc(x, FeatureConfig(sample_rate=8000))
    wrong = mfcc(x, FeatureConfig(sample_rate=16000, nfft=512, highfreq=None))
    n = min(len(right), len(wrong))
    assert np.corrcoef(right[:n, 1:13].ravel(), wrong[:n, 1:13].ravel())[0, 1] < 0.9


def test_too_short_and_silent() -> None:
    with pytest.raises(AudioError, match="too short"):
        mfcc(np.zeros(100, dtype=np.float32) + 0.1)
    with pytest.raises(AudioError, match="too short"):
        mfcc(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="digital silence"):
        mfcc(np.zeros(4000, dtype=np.float32))


def test_deltas_of_a_ramp_are_constant() -> None:
    from streamer.speech.features import _deltas

    ramp = np.arange(20, dtype=float)[:, None] * np.array([[1.0, 2.0]])
    d = _deltas(ramp, 2)
    np.testing.assert_allclose(d[2:-2], [[1.0, 2.0]] * 16)


def test_spectral_subtraction_takes_off_steady_noise(rng: np.random.Generator) -> None:
    """Subtraction lowers the log filterbank energy of noise-only frames (the margins a
    VAD leaves around a word) much more than that of the word itself."""
    from streamer.audio.noise import add_noise
    from streamer.speech.features import _cepstra, _power

    def log_energy(cfg: FeatureConfig) -> np.ndarray:
        return _cepstra(_power(noisy.astype(np.float64), cfg), cfg)[:, 0]

    noisy = add_noise(chirp(8000), 10.0, "white", rng, margin=(0.3, 0.3))
    off = log_energy(FeatureConfig(denoise=0.0, trim_db=0.0))
    on = log_energy(FeatureConfig(denoise=1.0, trim_db=0.0))
    margin, word = slice(2, 25), slice(45, 88)
    assert (off[margin] - on[margin]).mean() > 0.5  # noise frames lose over a third
    assert (off[word] - on[word]).mean() < 0.2  # loud speech frames barely move


def test_old_banks_keep_their_features() -> None:
    """A bank saved before spectral subtraction existed is read with it off."""
    cfg = FeatureConfig.from_dict(
        {k: v for k, v in FeatureConfig().to_dict().items() if not k.startswith("denoise")}
    )
    assert cfg.denoise == 0.0
    assert FeatureConfig.from_dict(FeatureConfig().to_dict()) == FeatureConfig()
    old = {k: v for k, v in FeatureConfig().to_dict().items() if not k.startswith(("trim", "vtln"))}
    assert FeatureConfig.from_dict(old).trim_db == 0.0
    assert FeatureConfig.from_dict(old).vtln == ()
    warped = FeatureConfig(vtln=(0.9, 1.0, 1.1))
    assert FeatureConfig.from_dict(warped.to_dict()) == warped  # JSON turns tuples into lists


def test_trimming_drops_padding_but_keeps_the_word(rng: np.random.Generator) -> None:
    """A word padded with quiet gives (nearly) the features of the word cut tight."""
    word = chirp(4000)
    quiet = rng.standard_normal(4000).astype(np.float32) * 1e-4
    padded = np.concatenate([quiet, word, quiet])
    cfg = FeatureConfig()
    assert abs(mfcc(padded, cfg).shape[0] - mfcc(word, cfg).shape[0]) <= 14  # 50 ms pads
    assert mfcc(padded, FeatureConfig(trim_db=0.0)).shape[0] > 120  # all 1.3 s


def test_trimming_keeps_a_word_cut_tight() -> None:
    """A recording with no silence around its word: its quietest tenth is speech 10-18 dB
    below the peak, not noise, and trimming must not cut the word down to its loudest part."""
    t = np.arange(3200) / 8000
    env = np.where(t < 0.03, 1.0, 0.2 + 0.1 * np.sin(2 * np.pi * 3 * t))  # a burst, then a vowel
    word = (env * np.sin(2 * np.pi * 700 * t)).astype(np.float32)
    full = mfcc(word, FeatureConfig(trim_db=0.0)).shape[0]
    assert mfcc(word, FeatureConfig()).shape[0] >= 0.9 * full


def test_vtln_warp_moves_formants_the_right_way() -> None:
    """alpha > 1 pulls filter edges down: a tone excites a higher filter than unwarped."""
    from streamer.speech.features import warped_filterbank

    args = (26, 256, 8000, 100.0, 3800.0)
    tone_bin = 48  # 1.5 kHz
    peak = {a: int(np.argmax(warped_filterbank(*args, a)[tone_bin])) for a in (0.9, 1.0, 1.1)}
    assert peak[0.9] < peak[1.0] < peak[1.1]
    fb = warped_filterbank(*args, 1.0)
    assert fb.shape == (129, 26) and np.all(fb.max(0) > 0.5)
    cfg = FeatureConfig(vtln=(0.9, 1.0, 1.1))
    feats = mfcc_warps(chirp(8000), cfg)
    assert len(feats) == 3 and not np.allclose(feats[0], feats[2])


def test_a_bank_from_another_feature_recipe_is_refused(tmp_path: Path) -> None:
    """Features this version cannot compute would score silently wrong: a clear error."""
    import json
    import zipfile

    from streamer.errors import BankError
    from streamer.paths import default_bank_path
    from streamer.speech.bank import WordBank

    src = default_bank_path()
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes().decode("utf-8"))
    meta["features"]["gammatone"] = True
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    bad = tmp_path / "future.npz"
    np.savez(bad, **arrays)
    assert zipfile.is_zipfile(bad)
    with pytest.raises(BankError, match=r"future.npz: .*feature recipe .*\(gammatone\)"):
        WordBank.load(bad)

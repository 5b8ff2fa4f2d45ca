"""MFCC features with deltas and per-utterance normalisation.

Computed at the audio's true sample rate (the notebook's baseline analysed
8 kHz audio as if it were 16 kHz). Cepstral mean and variance normalisation
per utterance removes the channel and most of the effect of stationary noise,
which is what lets a bank trained on one microphone work on another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import python_speech_features as psf
from scipy.fft import dct

from streamer.audio.wav import CANONICAL_RATE
from streamer.errors import AudioError, ConfigError

# +-16% covers adult vocal tracts, men to women (and some children), in steps that move
# the formants by about one filter's width at the top of the band.
VTLN_WARPS = (0.84, 0.88, 0.92, 0.96, 1.0, 1.04, 1.08, 1.12, 1.16)


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides what a feature vector is; stored inside each bank."""

    sample_rate: int = CANONICAL_RATE
    winlen: float = 0.025
    winstep: float = 0.010
    numcep: int = 13
    nfilt: int = 26
    nfft: int = 256
    lowfreq: float = 100.0
    highfreq: float | None = 3800.0
    preemph: float = 0.97
    ceplifter: int = 22
    append_energy: bool = True
    deltas: bool = True
    delta_deltas: bool = True
    delta_window: int = 2
    cmvn: bool = True
    min_frames: int = 5
    # Spectral subtraction: the mean power spectrum of the quietest frames (the noise
    # around the word) times `denoise` is taken off every frame, leaving at least
    # `denoise_floor` of the frame's own power. 0 turns it off.
    denoise: float = 1.0
    denoise_floor: float = 0.1
    denoise_quantile: float = 0.15
    # End trimming: frames outside the span louder than both `trim_db` below the peak and
    # `trim_floor_db` above the noise floor (10th percentile) are dropped, keeping
    # `trim_pad` seconds each side. A recording padded with silence then gives the same
    # features as the segmenter's cut of the same word. 0 turns it off. Frames within
    # `trim_keep_db` of the peak are always speech: a recording cut tight around its word
    # has no silence, so its 10th percentile is speech, not noise floor.
    trim_db: float = 30.0
    trim_floor_db: float = 12.0
    trim_keep_db: float = 20.0
    trim_pad: float = 0.05
    # Vocal-tract-length normalisation: warp factors of the frequency axis tried per
    # utterance; the bank keeps the one its background model finds most likely. Empty: off.
    vtln: tuple[float, ...] = VTLN_WARPS

    def __post_init__(self) -> None:
        if self.nfft < self.winlen * self.sample_rate:
            raise ConfigError(
                f"nfft={self.nfft} is shorter than a {self.winlen * 1000:.0f} ms window "
                f"at {self.sample_rate} Hz"
            )
        if self.delta_deltas and not self.deltas:
            raise ConfigError("delta_deltas needs deltas")
        if any(not 0.7 <= a <= 1.3 for a in self.vtln):
            raise ConfigError(f"vtln warp factors must lie in 0.7..1.3, not {self.vtln}")

    @property
    def dim(self) -> int:
        return self.numcep * (1 + int(self.deltas) + int(self.delta_deltas))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        # banks written before spectral subtraction, trimming and VTLN existed
        d = {"denoise": 0.0, "trim_db": 0.0, **d}
        d["vtln"] = tuple(float(a) for a in d.get("vtln", ()))
        unknown = sorted(set(d) - known)
        if unknown:  # features this version cannot compute: scoring would be silently wrong
            raise ConfigError(
                f"made with a feature recipe this streamer does not know ({', '.join(unknown)}); "
                "upgrade streamer or retrain the bank"
            )
        return cls(**d)


def _deltas(feat: np.ndarray, n: int) -> np.ndarray:
    """Regression deltas over +-n frames (edges padded), vectorised."""
    t = feat.shape[0]
    padded = np.pad(feat, ((n, n), (0, 0)), mode="edge")
    num = np.zeros_like(feat)
    for k in range(1, n + 1):
        num += k * (padded[n + k : n + k + t] - padded[n - k : n - k + t])
    return num / (2 * sum(k * k for k in range(1, n + 1)))


@lru_cache(maxsize=8)
def _filterbank(nfilt: int, nfft: int, rate: int, low: float, high: float | None) -> np.ndarray:
    fb: np.ndarray = psf.get_filterbanks(nfilt, nfft, rate, low, high or rate / 2).T.copy()
    return fb


@lru_cache(maxsize=64)
def warped_filterbank(
    nfilt: int, nfft: int, rate: int, low: float, high: float | None, alpha: float
) -> np.ndarray:
    """Triangular mel filters whose edges are scaled by 1/alpha (piecewise linear, so the
    top edge stays put): alpha > 1 moves every filter down, which suits a speaker whose
    formants are lower than average (a longer vocal tract), alpha < 1 the reverse.
    Exact triangles on the FFT grid, (nfft//2+1, nfilt)."""
    top = high or rate / 2
    mel = np.linspace(2595 * np.log10(1 + low / 700), 2595 * np.log10(1 + top / 700), nfilt + 2)
    edges = 700 * (10 ** (mel / 2595) - 1)
    knee = 0.85 * top * min(1.0, alpha)
    warped = np.where(
        edges <= knee,
        edges / alpha,
        knee / alpha + (edges - knee) * (top - knee / alpha) / (top - knee),
    )
    freqs = np.arange(nfft // 2 + 1) * rate / nfft
    lo, mid, hi = warped[:-2, None], warped[1:-1, None], warped[2:, None]
    fb = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return np.ascontiguousarray(fb.T)


def _power(x: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Framed power spectra, with spectral subtraction and end trimming as configured."""
    sig = psf.sigproc.preemphasis(x, cfg.preemph)
    frames = psf.sigproc.framesig(
        sig, cfg.winlen * cfg.sample_rate, cfg.winstep * cfg.sample_rate, np.hamming
    )
    pspec: np.ndarray = psf.sigproc.powspec(frames, cfg.nfft)
    energy = pspec.sum(1)
    if cfg.denoise > 0:
        k = max(3, int(len(energy) * cfg.denoise_quantile))
        noise = pspec[np.argsort(energy)[:k]].mean(0)
        pspec = np.maximum(pspec - cfg.denoise * noise, cfg.denoise_floor * pspec)
    if cfg.trim_db > 0:
        pspec = pspec[_speech_span(energy, cfg)]
    return pspec


def _speech_span(energy: np.ndarray, cfg: FeatureConfig) -> slice:
    """The frames from the first to the last loud one, padded; at least min_frames."""
    e = 10 * np.log10(energy + 1e-12)
    peak = float(e.max())
    level = max(peak - cfg.trim_db, float(np.percentile(e, 10)) + cfg.trim_floor_db)
    level = min(level, peak - cfg.trim_keep_db)
    loud = np.flatnonzero(e > level)
    if loud.size == 0:
        return slice(0, e.size)
    pad = round(cfg.trim_pad / cfg.winstep)
    a, b = max(0, int(loud[0]) - pad), min(e.size, int(loud[-1]) + 1 + pad)
    while b - a < cfg.min_frames and (a > 0 or b < e.size):
        a, b = max(0, a - 1), min(e.size, b + 1)
    return slice(a, b)


def _cepstra(pspec: np.ndarray, cfg: FeatureConfig, alpha: float = 1.0) -> np.ndarray:
    """python_speech_features' MFCC, step by step, from power spectra, with the filterbank
    built once per configuration (and warp) instead of once per call."""
    tiny = np.finfo(float).eps
    energy = np.maximum(pspec.sum(1), tiny)
    if cfg.vtln:
        bank = warped_filterbank(
            cfg.nfilt, cfg.nfft, cfg.sample_rate, cfg.lowfreq, cfg.highfreq, alpha
        )
    else:
        bank = _filterbank(cfg.nfilt, cfg.nfft, cfg.sample_rate, cfg.lowfreq, cfg.highfreq)
    fb = np.maximum(pspec @ bank, tiny)
    feat: np.ndarray = dct(np.log(fb), type=2, axis=1, norm="ortho")[:, : cfg.numcep]
    feat = psf.base.lifter(feat, cfg.ceplifter)
    if cfg.append_energy:
        feat[:, 0] = np.log(energy)
    return feat


def _finish(feat: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    parts = [feat]
    if cfg.deltas:
        d = _deltas(feat, cfg.delta_window)
        parts.append(d)
        if cfg.delta_deltas:
            parts.append(_deltas(d, cfg.delta_window))
    out = np.hstack(parts)
    if cfg.cmvn:
        out = out - out.mean(axis=0)
        out = out / (out.std(axis=0) + 1e-8)
    return out


def mfcc(
    x: np.ndarray,
    cfg: FeatureConfig = FeatureConfig(),
    where: str = "audio",
    warp: float = 1.0,
) -> np.ndarray:
    """Canonical audio at cfg.sample_rate to a (frames, cfg.dim) float64 feature matrix."""
    return mfcc_warps(x, cfg, where, (warp,))[0]


def mfcc_warps(
    x: np.ndarray,
    cfg: FeatureConfig = FeatureConfig(),
    where: str = "audio",
    warps: tuple[float, ...] | None = None,
) -> list[np.ndarray]:
    """Features of one utterance under each VTLN warp (default: the config's), sharing the
    spectral analysis, which is most of the cost."""
    x = np.asarray(x, dtype=np.float64)
    n_frames = 1 + int(
        max(0, x.size - cfg.winlen * cfg.sample_rate) // (cfg.winstep * cfg.sample_rate)
    )
    if x.size < cfg.winlen * cfg.sample_rate or n_frames < cfg.min_frames:
        raise AudioError(
            f"{where}: utterance too short ({x.size / cfg.sample_rate * 1000:.0f} ms; "
            f"need at least {cfg.min_frames} frames)"
        )
    if not np.any(x):
        raise AudioError(f"{where}: utterance is digital silence")
    # A tiny dither keeps log-energies finite on exact zeros without changing real audio.
    rng = np.random.default_rng(x.size)
    x = x + rng.standard_normal(x.size) * 1e-5
    pspec = _power(x, cfg)
    return [_finish(_cepstra(pspec, cfg, a), cfg) for a in (warps or cfg.vtln or (1.0,))]


def dynamic_range_db(x: np.ndarray, rate: int, frame_s: float = 0.02) -> float:
    """Loud-frame over quiet-frame energy in dB: a cheap SNR proxy for one utterance.

    Rejection uses it to tell a known word in noise (low range, everything fits
    worse) from an unknown word in quiet (high range, only the words fit worse).
    """
    n = int(frame_s * rate)
    x = np.asarray(x, dtype=np.float64)
    if x.size < 2 * n:
        return 0.0
    e = np.mean(x[: x.size // n * n].reshape(-1, n) ** 2, axis=1) + 1e-12
    lo, hi = np.percentile(e, [10, 95])
    return float(10 * np.log10(hi / lo))

"""Background noise of several kinds, mixed at a chosen signal-to-noise ratio.

Used for training augmentation (TRAINING_KINDS) and for measuring robustness to
kinds the bank never heard (every other kind). White noise is the least
realistic: babble, hum and machinery are what a microphone in a room meets.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

from streamer.errors import ConfigError

KINDS = ("white", "pink", "brown", "ssn", "ssn-mod", "crowd", "babble", "hum", "factory")
# The bank's default augmentation: stationary noises of different colours, speech-shaped
# noise (stationary, with the long-term spectrum of speech) and a crowd (many
# overlapping training voices saying words of their own). Babble, hum and factory
# noise stay unseen, to measure robustness to kinds never heard: the crowd shares no
# voice and no word with the benchmark's babble.
TRAINING_KINDS = ("white", "pink", "brown", "ssn", "crowd")

# What the crowd says: no word of the babble list, of any shipped vocabulary, or of the
# rejection word lists.
_CROWD_WORDS = (
    "blanket",
    "orchestra",
    "kettle",
    "garage",
    "velvet",
    "thunder",
    "lantern",
    "saturday",
    "basket",
    "island",
    "shadow",
    "because",
    "quickly",
    "people",
    "family",
    "winter",
    "holiday",
    "bicycle",
    "elephant",
    "library",
    "against",
    "whenever",
    "remember",
    "tomorrow",
)

_BABBLE_WORDS = (
    "table",
    "window",
    "seven",
    "morning",
    "river",
    "yellow",
    "garden",
    "paper",
    "doctor",
    "music",
    "kitchen",
    "summer",
    "happy",
    "number",
    "letter",
    "mountain",
    "city",
    "water",
    "coffee",
    "picture",
    "station",
    "forest",
    "silver",
    "question",
    "minute",
    "travel",
)


def _colored(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec /= f ** (exponent / 2)
    x = np.fft.irfft(spec, n)
    return x


def _speech_shaped(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Stationary noise with the long-term average speech spectrum (flat to 500 Hz, then
    falling about 9 dB per octave)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    gain = np.where(f < 500, 1.0, (np.maximum(f, 1) / 500.0) ** (-1.5))
    gain[f < 80] *= (np.maximum(f[f < 80], 1) / 80.0) ** 2
    return np.fft.irfft(spec * gain, n)


def _envelope(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A random loudness envelope fluctuating at syllable rates (2-8 Hz), 0.1..1."""
    k = max(4, int(n / rate * 8))
    knots = rng.uniform(0.0, 1.0, size=k) ** 2
    env = np.interp(np.linspace(0, k - 1, n), np.arange(k), knots)
    return 0.1 + 0.9 * env


def _hum(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz with decaying odd and even harmonics and a little hiss."""
    base = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
    t = np.arange(n) / rate
    x = np.zeros(n)
    for h in range(1, int(min(rate / 2, 2000) // base)):
        x += np.sin(2 * np.pi * base * h * t + rng.uniform(0, 2 * np.pi)) / h**0.8
    out: np.ndarray = x + 0.05 * x.std() * rng.standard_normal(n)
    return out


def _factory(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Machinery: a motor's harmonic whine, band-passed rumble and periodic hammer blows."""
    t = np.arange(n) / rate
    f0 = rng.uniform(90, 180)
    x: np.ndarray = sum(
        (np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.28)) / k for k in range(1, 8)),
        np.zeros(n),
    )
    sos = butter(2, [200 / (rate / 2), min(1500 / (rate / 2), 0.99)], btype="band", output="sos")
    x = x + 2.0 * sosfilt(sos, rng.standard_normal(n))
    period = int(rate * rng.uniform(0.25, 0.6))
    decay = np.exp(-np.arange(int(0.05 * rate)) / (0.008 * rate))
    for start in range(int(rng.integers(0, period)), n, period):
        seg = decay[: n - start] * rng.standard_normal(min(decay.size, n - start)) * 6.0
        x[start : start + seg.size] += seg
    return x


def _babble(n: int, rate: int, rng: np.random.Generator, talkers: int = 5) -> np.ndarray:
    """Several synthetic talkers saying ordinary (non-vocabulary) words at once."""
    from streamer.audio.synth import Voice, synthesize

    names = ("en-us+m3", "en-us+f1", "en+m4", "en-us-nyc+f3", "en-029+m5", "en+f2", "en-us+m2")
    x = np.zeros(n)
    for k in range(talkers):
        voice = Voice(names[k % len(names)], int(rng.integers(130, 190)), int(rng.integers(25, 75)))
        track = []
        total = 0
        while total < n:
            words = " ".join(rng.choice(_BABBLE_WORDS, size=6))
            s = synthesize(words, voice, rate)
            track.append(s)
            total += s.size
        tr = np.concatenate(track)
        shift = int(rng.integers(0, max(1, tr.size - n + 1)))
        seg = tr[shift : shift + n]
        x[: seg.size] += seg / (seg.std() + 1e-9)
    return x


def _crowd(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """8-14 overlapping training voices (several languages) saying their own words: a
    crowd is denser and more varied than a few talkers, and trains for babble without
    being the benchmark's babble."""
    from streamer.audio.synth import TRAIN_VOICES, synthesize

    languages = ("en", "en", "de", "fr", "es", "it")
    x = np.zeros(n)
    for _ in range(int(rng.integers(8, 15))):
        base = TRAIN_VOICES[int(rng.integers(len(TRAIN_VOICES)))]
        voice = base.speaking(str(rng.choice(languages)))
        track: list[np.ndarray] = []
        total = 0
        while total < n:
            s = synthesize(" ".join(rng.choice(_CROWD_WORDS, size=6)), voice, rate)
            track.append(s)
            total += s.size
        tr = np.concatenate(track)
        shift = int(rng.integers(0, max(1, tr.size - n + 1)))
        seg = tr[shift : shift + n]
        x[: seg.size] += seg / (seg.std() + 1e-9) * rng.uniform(0.5, 1.0)
    return x


def make_noise(kind: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of noise of `kind` at `rate` Hz, unit RMS, float64."""
    if kind == "white":
        x = rng.standard_normal(n)
    elif kind == "pink":
        x = _colored(n, rng, 1.0)
    elif kind == "brown":
        x = _colored(n, rng, 2.0)
        x = sosfilt(butter(1, 20 / (rate / 2), btype="high", output="sos"), x)
    elif kind == "ssn":
        x = _speech_shaped(n, rate, rng)
    elif kind == "ssn-mod":
        x = _speech_shaped(n, rate, rng) * _envelope(n, rate, rng)
    elif kind == "hum":
        x = _hum(n, rate, rng)
    elif kind == "factory":
        x = _factory(n, rate, rng)
    elif kind == "babble":
        x = _babble(n, rate, rng)
    elif kind == "crowd":
        x = _crowd(n, rate, rng)
    else:
        raise ConfigError(f"unknown noise kind {kind!r}; choose from {', '.join(KINDS)}")
    rms = float(np.sqrt(np.mean(x**2))) if n else 1.0
    return x / (rms + 1e-12)


def speech_rms(x: np.ndarray, frame: int = 160) -> float:
    """RMS over the louder half of 20 ms frames: the level of the speech, not of the pauses."""
    x = np.asarray(x, dtype=np.float64)
    if x.size < frame:
        return float(np.sqrt(np.mean(x**2))) if x.size else 0.0
    frames = x[: x.size // frame * frame].reshape(-1, frame)
    e = np.mean(frames**2, axis=1)
    loud = np.sort(e)[e.size // 2 :]
    return float(np.sqrt(loud.mean()))


def add_noise(
    x: np.ndarray,
    snr_db: float,
    kind: str,
    rng: np.random.Generator,
    rate: int = 8000,
    noise: np.ndarray | None = None,
    margin: tuple[float, float] = (0.0, 0.0),
) -> np.ndarray:
    """Mix noise into `x` at `snr_db` (speech level over noise RMS); float32 out.

    Pass `noise` (unit RMS, at least len(x) samples) to reuse an expensive noise
    track such as babble; a random stretch of it is used. `margin` (seconds
    before, after) pads `x` with silence first, so the result looks like an
    utterance cut from a noisy stream by the VAD, noise on either side.
    """
    x = np.asarray(x, dtype=np.float64)
    ref = speech_rms(x)
    if margin != (0.0, 0.0):
        x = np.pad(x, (int(margin[0] * rate), int(margin[1] * rate)))
    if noise is None:
        nz = make_noise(kind, x.size, rate, rng)
    else:
        off = int(rng.integers(0, max(1, noise.size - x.size + 1)))
        nz = noise[off : off + x.size]
    level = ref / (10 ** (snr_db / 20))
    return (x + level * nz).astype(np.float32)

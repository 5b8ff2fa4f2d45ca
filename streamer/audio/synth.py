"""Speech synthesised with eSpeak NG, for training voices, the demo and tests.

The PyPI package `espeakng-loader` ships `libespeak-ng.so` and its data, so no
system package is needed; we drive the C API through ctypes. The same sequence
of calls in a fresh process gives the same samples (the noise seed is reset per
call), which keeps training reproducible; within one process the engine's filter
state carries over, so repeating a word gives a near, not exact, copy.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, replace

import numpy as np

from streamer.audio.wav import CANONICAL_RATE, resample
from streamer.errors import ConfigError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _VOLUME, _PITCH, _RANGE, _WORDGAP = 1, 2, 3, 4, 7

_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an eSpeak language/variant plus rate and pitch."""

    name: str = "en"  # e.g. "en-us+m3", "en-gb-scotland+f2"
    rate: int = 150  # words per minute
    pitch: int = 50  # 0..99
    range: int = 50  # pitch range 0..99

    def label(self) -> str:
        return f"{self.name}@{self.rate}wpm/p{self.pitch}"

    def speaking(self, language: str) -> Voice:
        """The same speaker (variant, rate, pitch) speaking another eSpeak language."""
        variant = self.name.partition("+")[2]
        return replace(self, name=f"{language}+{variant}" if variant else language)


def check_language(language: str) -> str:
    """`language` if eSpeak NG has a voice for it; ConfigError naming it otherwise."""
    eng = _get_engine()
    with eng.lock:
        ok = eng.lib.espeak_SetVoiceByName(language.encode()) == 0
    if not ok:
        raise ConfigError(f"eSpeak NG has no language {language!r} (e.g. en, ar, de, fr, es)")
    return language


class _Engine:
    """A process-wide eSpeak NG instance (the library keeps global state)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover - dependency is declared
            raise ConfigError("speech synthesis needs the package espeakng-loader") from e
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        data = espeakng_loader.get_data_path().encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if rate <= 0:
            raise ConfigError("eSpeak NG failed to initialise")
        self.rate = int(rate)
        self._chunks: list[np.ndarray] = []

        def on_audio(wav, n, _events):  # type: ignore[no-untyped-def]
            if wav and n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = _CALLBACK(on_audio)  # keep a reference: ctypes does not
        self.lib.espeak_SetSynthCallback(self._cb)
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lock = threading.Lock()
        self._seed = getattr(self.lib, "espeak_ng_SetRandSeed", None)

    def say(self, text: str, voice: Voice) -> np.ndarray:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise ConfigError(f"unknown eSpeak voice {voice.name!r}")
            for param, value in (
                (_RATE, voice.rate),
                (_PITCH, voice.pitch),
                (_RANGE, voice.range),
                (_VOLUME, 100),
                (_WORDGAP, 0),
            ):
                self.lib.espeak_SetParameter(param, int(value), 0)
            if self._seed is not None:
                self._seed(0)  # breathy voices add noise: same seed, same audio
            self._chunks = []
            buf = text.encode("utf-8") + b"\0"
            self.lib.espeak_Synth(buf, len(buf), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            chunks, self._chunks = self._chunks, []
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(chunks).astype(np.float32) / 32768.0


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def _get_engine() -> _Engine:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def synthesize(text: str, voice: Voice = Voice(), rate: int = CANONICAL_RATE) -> np.ndarray:
    """Speak `text` with `voice`; canonical float32 audio at `rate`, silence trimmed to 30 ms."""
    eng = _get_engine()
    x = resample(eng.say(text, voice), eng.rate, rate)
    return trim_silence(x, rate)


def trim_silence(
    x: np.ndarray, rate: int, keep_s: float = 0.03, floor_db: float = -40
) -> np.ndarray:
    """Cut leading and trailing near-silence (relative to the peak), keeping a short margin."""
    if x.size == 0:
        return x
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        return x[:0]
    thr = peak * 10 ** (floor_db / 20)
    idx = np.flatnonzero(np.abs(x) > thr)
    keep = int(keep_s * rate)
    return x[max(0, idx[0] - keep) : min(x.size, idx[-1] + 1 + keep)]


# Voices for training and for evaluation are disjoint sets: the bank is trained with
# TRAIN_VOICES and the demo, tests and benchmarks speak with HELDOUT_VOICES, so a
# score on the latter is a score on voices the bank never heard.
TRAIN_VOICES: tuple[Voice, ...] = (
    Voice("en-us+m1", 140, 40),
    Voice("en-us+f2", 150, 65),
    Voice("en+m3", 125, 35),
    Voice("en+f4", 165, 70),
    Voice("en-gb-x-rp+m5", 135, 45),
    Voice("en-gb-scotland+f1", 145, 60),
    Voice("en-029+m2", 155, 50),
    Voice("en-us+m6", 175, 30),
    Voice("en+f5", 120, 75),
    Voice("en-gb-x-gbclan+m4", 150, 55),
    Voice("en-us+klatt", 140, 50),
    Voice("en+croak", 130, 40),
)

HELDOUT_VOICES: tuple[Voice, ...] = (
    Voice("en-us+m7", 145, 45),
    Voice("en-us+f3", 135, 62),
    Voice("en-us-nyc+m8", 160, 38),
    Voice("en-gb-x-gbcwmd+f1", 150, 68),
    Voice("en+m2", 115, 52),
    Voice("en-us+klatt3", 155, 44),
    Voice("en-gb-x-rp+f4", 170, 58),
    Voice("en-029+m1", 130, 48),
)

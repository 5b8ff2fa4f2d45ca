"""Reading any WAV into the one canonical form the rest of the pipeline uses.

Canonical audio is mono float32 in [-1, 1] at a single sample rate (8 kHz by
default: the telephone band, where the shipped recordings live and where
webrtcvad works). Doing the conversion once, at the edge, means features,
VAD and models never see a second format.
"""

from __future__ import annotations

import struct
import warnings
from math import gcd
from pathlib import Path

import numpy as np

from streamer.errors import AudioError

CANONICAL_RATE = 8000
MIN_RATE = 8000
MAX_RATE = 192000


def _check_riff(path: Path, raw: bytes) -> None:
    """Walk the RIFF chunks so a truncated or foreign file is named precisely."""
    if len(raw) == 0:
        raise AudioError(f"{path}: empty file")
    if len(raw) < 12 or raw[:4] not in (b"RIFF", b"RIFX") or raw[8:12] != b"WAVE":
        raise AudioError(f"{path}: not a WAV file (no RIFF/WAVE header)")
    pos = 12
    seen_fmt = False
    while pos + 8 <= len(raw):
        cid = raw[pos : pos + 4]
        (size,) = struct.unpack("<I" if raw[:4] == b"RIFF" else ">I", raw[pos + 4 : pos + 8])
        body = pos + 8
        if cid == b"fmt ":
            seen_fmt = True
        if cid == b"data":
            if not seen_fmt:
                raise AudioError(f"{path}: malformed WAV (data chunk before fmt chunk)")
            have = len(raw) - body
            if size > have and size != 0xFFFFFFFF:
                raise AudioError(
                    f"{path}: truncated WAV "
                    f"(header promises {size} bytes of audio, file has {have})"
                )
            return
        pos = body + size + (size & 1)
    raise AudioError(f"{path}: malformed WAV (no data chunk)")


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """Integer or float samples, mono or multichannel, to mono float32 in [-1, 1]."""
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype == np.int16:
        x = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:
        x = (data.astype(np.float64) / 2147483648.0).astype(np.float32)
    elif np.issubdtype(data.dtype, np.floating):
        x = data.astype(np.float32, copy=False)
    else:
        raise AudioError(f"unsupported sample type {data.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1, dtype=np.float32)
    elif x.ndim != 1:
        raise AudioError(f"unsupported audio shape {data.shape}")
    return x


def resample(x: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling (anti-aliased) from `rate` to `target` Hz."""
    if rate == target or x.size == 0:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly  # here: scipy.signal costs a second to import

    g = gcd(int(rate), int(target))
    y: np.ndarray = resample_poly(x, target // g, rate // g)
    return y.astype(np.float32)


def to_canonical(
    data: np.ndarray, rate: int, target: int = CANONICAL_RATE, where: str = "audio"
) -> np.ndarray:
    """Check, downmix and resample raw samples to canonical mono float32 at `target` Hz."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise AudioError(f"{where}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    x = to_float_mono(np.asarray(data))
    if np.issubdtype(np.asarray(data).dtype, np.floating) and not np.all(np.isfinite(x)):
        raise AudioError(f"{where}: NaN or infinite samples in float audio")
    return resample(x, rate, target)


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a WAV file as it is: (samples as stored, sample rate). Raises AudioError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise AudioError(f"{path}: is a folder, not a WAV file") from None
    except OSError as e:
        raise AudioError(f"{path}: cannot read ({e.strerror})") from None
    _check_riff(path, raw)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import io

            from scipy.io import wavfile

            rate, data = wavfile.read(io.BytesIO(raw))
    except (ValueError, struct.error, EOFError) as e:
        raise AudioError(f"{path}: unreadable WAV ({e})") from None
    return data, int(rate)


def load_audio(path: str | Path, rate: int = CANONICAL_RATE) -> np.ndarray:
    """Read any WAV (8-192 kHz, int16/int32/float, mono/stereo) as canonical audio."""
    data, file_rate = read_wav(path)
    return to_canonical(data, file_rate, rate, where=str(path))


def write_wav(path: str | Path, x: np.ndarray, rate: int = CANONICAL_RATE) -> None:
    """Write float audio in [-1, 1] as 16-bit PCM (clipped)."""
    from scipy.io import wavfile

    pcm = np.clip(np.asarray(x, dtype=np.float64) * 32768.0, -32768, 32767).astype(np.int16)
    wavfile.write(str(path), int(rate), pcm)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float audio to int16 samples, the format webrtcvad and sound cards take."""
    return np.clip(np.round(np.asarray(x, dtype=np.float64) * 32768.0), -32768, 32767).astype(
        np.int16
    )

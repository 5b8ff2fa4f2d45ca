"""Cutting a continuous stream into utterances: webrtcvad plus energy end-pointing.

A pure, synchronous state machine: `feed(chunk)` returns the utterances that
closed inside it, `flush()` closes whatever is open at the end of the stream.
Audio is processed in fixed frames whatever the chunk size (the high-pass
filter's state carries across chunks), so the same stream gives the same
utterances however it is chunked; time is counted in samples.

Why not only the classic py-webrtcvad collector: its 300 ms ring of unvoiced
frames (plus webrtcvad's own internal hangover) closes an utterance 300-470 ms
after the word really ends. Here the *start* is the classic ring-buffer
voiced-ratio trigger, gated by energy over an adaptive noise level, but the
*end* is decided per frame on energy alone (high-passed, smoothed over 30 ms):
a frame continues the utterance while it stands `off_db` over the noise level
and within `drop_db` of the utterance's peak; a short run of quiet frames
(`hangover_ms`) then ends it, and a burst of noise shorter than `blip_ms`
inside that run does not restart it.

Words with internal stops ("ap-ple", "pine-ap-ple", "or-ange"): in clean audio
the gap stays far above the peak-relative threshold. In noise the weak parts
are buried, so the gaps look longer but so does the word end come earlier: the
hangover and the post-roll grow with how close the utterance's peak is to the
noise (`noisy_hangover_ms`, `noisy_post_roll_ms`), a still-short utterance
waits `short_hangover_ms`, and a weak fragment that starts within `tail_gap_ms`
of the last utterance is taken for that word's buried tail and dropped.

The noise level is the median of recent frames outside utterances (and of
unvoiced quiet frames inside them), so speech does not raise it; a long
"utterance" whose energy barely varies is steady noise (babble, a machine)
and becomes the new level, while a talker who never pauses is split at
`max_ms`, each piece starting where the last ended. Digital silence never goes
into an utterance's pre- or post-roll.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import webrtcvad

from streamer.errors import ConfigError
from streamer.messages import AudioChunk, Utterance

VAD_RATES = (8000, 16000, 32000, 48000)
VAD_FRAME_MS = (10, 20, 30)
_SILENCE_DB = -120.0


@dataclass(frozen=True)
class SegmenterConfig:
    """Every timing and threshold of the segmenter; defaults tuned on short command words."""

    rate: int = 8000  # sample rate the VAD runs at: 8000, 16000, 32000 or 48000 Hz
    frame_ms: int = 10  # VAD frame: 10, 20 or 30 ms
    aggressiveness: int = 2  # webrtcvad mode 0 (least) .. 3 (most aggressive)
    start_ms: int = 80  # ring buffer of the start trigger
    start_ratio: float = 0.6  # share of voiced, loud frames in the ring that starts speech
    pre_roll_ms: int = 30  # audio kept before the first loud frame of the trigger
    post_roll_ms: int = 20  # audio kept after the last loud frame, in clear audio...
    noisy_post_roll_ms: int = 150  # ...and in noise, where the word's quiet end is buried
    hangover_ms: int = 160  # trailing quiet that ends an utterance well above the noise...
    noisy_hangover_ms: int = 200  # ...and one that stands only `noisy_snr_db` over it
    clean_snr_db: float = 30.0  # utterance peak over noise level: at or above, `hangover_ms`
    noisy_snr_db: float = 15.0  # at or below, `noisy_hangover_ms`; linear in between
    blip_ms: int = 60  # a louder stretch this short during the hangover does not reset it
    short_ms: int = 260  # an utterance shorter than this so far...
    short_hangover_ms: int = 260  # ...waits this long before it ends
    min_ms: int = 100  # shorter speech (a click, a cough of noise) is dropped
    tail_gap_ms: int = 450  # speech starting this soon after the last utterance's end...
    tail_db: float = 6.0  # ...that stays this far under its peak...
    tail_ms: int = 250  # ...and lasts no longer is that word's buried tail: dropped
    max_ms: int = 10000  # longer speech is split here, the rest going on
    highpass_hz: float = 150.0  # energy is measured above this (rumble and hum do not count)
    smooth_ms: int = 30  # energy is averaged over this many ms (causal) before thresholds
    on_db: float = 5.0  # loudness over the noise level that can start speech
    off_db: float = 4.0  # loudness over the noise level that continues it
    drop_db: float = 36.0  # ...and at most this far under the utterance's peak
    abs_db: float = -60.0  # frames quieter than this (dBFS) are never speech
    noise_ms: int = 2000  # window of the noise-level estimate (frames outside speech)
    noise_percentile: float = 50.0  # percentile of those frames taken as the noise level
    floor_ms: int = 5000  # window of the all-frames floor, which lets a noise rise end speech
    floor_percentile: float = 1.0  # percentile of all frames taken as the floor
    stationary_db: float = 15.0  # speech longer than floor_ms whose energy spreads (p10..p90)
    # less than this is steady noise (babble, a machine), not a talker: it becomes the floor

    def __post_init__(self) -> None:
        if self.rate not in VAD_RATES:
            raise ConfigError(
                f"VAD sample rate {self.rate} Hz: webrtcvad takes only "
                f"{', '.join(map(str, VAD_RATES))} Hz (resample first)"
            )
        if self.frame_ms not in VAD_FRAME_MS:
            raise ConfigError(f"VAD frame of {self.frame_ms} ms: choose 10, 20 or 30 ms")
        if not 0 <= self.aggressiveness <= 3:
            raise ConfigError(f"VAD aggressiveness {self.aggressiveness}: choose 0..3")
        if not 0.0 < self.start_ratio <= 1.0:
            raise ConfigError(f"start ratio {self.start_ratio}: must be in (0, 1]")
        for name in ("floor_percentile", "noise_percentile"):
            if not 0.0 <= getattr(self, name) <= 100.0:
                raise ConfigError(f"{name}={getattr(self, name)}: must be in 0..100")
        if not 0.0 <= self.highpass_hz < self.rate / 2:
            raise ConfigError(f"highpass_hz={self.highpass_hz}: must be in 0..{self.rate // 2}")
        if self.noisy_snr_db >= self.clean_snr_db:
            raise ConfigError("noisy_snr_db must be below clean_snr_db")
        for name in (
            "start_ms",
            "hangover_ms",
            "noisy_hangover_ms",
            "min_ms",
            "max_ms",
            "floor_ms",
            "noise_ms",
        ):
            if getattr(self, name) < self.frame_ms:
                raise ConfigError(f"{name}={getattr(self, name)} is shorter than one frame")
        if max(self.post_roll_ms, self.noisy_post_roll_ms) > min(
            self.hangover_ms, self.noisy_hangover_ms
        ):
            raise ConfigError("post-roll cannot be longer than the hangover that precedes a close")
        for name in (
            "pre_roll_ms",
            "post_roll_ms",
            "noisy_post_roll_ms",
            "short_ms",
            "short_hangover_ms",
            "smooth_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.max_ms < self.min_ms:
            raise ConfigError(f"max_ms={self.max_ms} is shorter than min_ms={self.min_ms}")

    @property
    def frame_len(self) -> int:
        return self.rate * self.frame_ms // 1000

    def frames(self, ms: int) -> int:
        """A duration in whole frames (at least one)."""
        return max(1, round(ms / self.frame_ms))


@dataclass
class SegmenterStats:
    """Counters a user can read to see what the segmenter threw away."""

    frames: int = 0
    utterances: int = 0
    splits: int = 0
    dropped_short: int = 0
    dropped_tail: int = 0
    dropped_steady: int = 0  # long stretches of steady noise taken for speech at first
    gap_samples: int = 0  # audio lost upstream, replaced by silence


class _SlidingQuantile:
    """A quantile of the last `size` values, in O(size) memmove per update (size ~ 100s)."""

    def __init__(self, size: int, percentile: float) -> None:
        self.size = size
        self.q = percentile / 100.0
        self._win: deque[float] = deque()
        self._sorted: list[float] = []

    def add(self, v: float) -> None:
        self._win.append(v)
        bisect.insort(self._sorted, v)
        if len(self._win) > self.size:
            old = self._win.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def value(self, default: float) -> float:
        s = self._sorted
        return s[int(self.q * (len(s) - 1) + 0.5)] if s else default

    def reset(self, values: list[float]) -> None:
        self._win = deque(values[-self.size :])
        self._sorted = sorted(self._win)

    def at(self, q: float) -> float:
        s = self._sorted
        return s[int(q * (len(s) - 1) + 0.5)]

    @property
    def full(self) -> bool:
        return len(self._win) >= self.size


@dataclass
class _Open:
    """The utterance being collected."""

    start: int  # first sample (pre-roll included)
    first_loud: int  # first sample of the first loud frame
    last_loud: int  # end sample of the last loud frame
    peak_db: float
    frames: list[np.ndarray] = field(default_factory=list)
    split_from: bool = False
    steady: bool = False  # found to be steady noise: its level becomes the noise estimate


class Segmenter:
    """webrtcvad segmenter for one stream: int16 chunks in, Utterances out, nothing async."""

    def __init__(self, config: SegmenterConfig | None = None, stream: str = "audio") -> None:
        self.config = cfg = config or SegmenterConfig()
        self.stream = stream
        self.stats = SegmenterStats()
        self._vad = webrtcvad.Vad(cfg.aggressiveness)
        self._n = cfg.frame_len
        self._pending = np.zeros(0, dtype=np.int16)
        self._sos: np.ndarray | None = None
        self._zi: np.ndarray | None = None
        if cfg.highpass_hz > 0:
            # scipy here, not at import: a second of start-up for the commands that never segment
            from scipy.signal import butter, sosfilt

            self._sosfilt = sosfilt
            self._sos = butter(4, cfg.highpass_hz, btype="high", fs=cfg.rate, output="sos")
            self._zi = np.zeros((self._sos.shape[0], 2))
        self._pos = 0  # stream sample of the next frame to process
        self._index = 0
        # causal energy smoothing: the last few frame powers
        self._powers: deque[float] = deque(maxlen=max(1, round(cfg.smooth_ms / cfg.frame_ms)))
        self._power_sum = 0.0
        # start trigger ring: (frame start sample, voiced-and-loud)
        self._ring: deque[tuple[int, bool]] = deque(maxlen=cfg.frames(cfg.start_ms))
        self._ring_hits = 0
        self._start_need = max(1, int(np.ceil(cfg.start_ratio * cfg.frames(cfg.start_ms))))
        # pre-roll: recent frames kept while quiet
        self._history: deque[np.ndarray] = deque(
            maxlen=cfg.frames(cfg.pre_roll_ms) + cfg.frames(cfg.start_ms)
        )
        self._noise = _SlidingQuantile(cfg.frames(cfg.noise_ms), cfg.noise_percentile)
        self._floor = _SlidingQuantile(cfg.frames(cfg.floor_ms), cfg.floor_percentile)
        self._open: _Open | None = None
        self._last_stop = 0  # end sample of the last utterance: the next never overlaps it
        self._last_loud = -(10**9)  # end of the last utterance's loud part...
        self._last_peak = 0.0  # ...and its peak, to recognise its tail
        self._quiet_run = 0
        self._loud_run = 0
        self._blip = cfg.frames(cfg.blip_ms)
        self._hang = cfg.frames(cfg.hangover_ms)
        self._short_hang = cfg.frames(cfg.short_hangover_ms)
        self._noisy_hang = cfg.frames(cfg.noisy_hangover_ms)
        ms = cfg.rate // 1000
        self._short = cfg.short_ms * ms
        self._post = cfg.post_roll_ms * ms
        self._noisy_post = cfg.noisy_post_roll_ms * ms
        self._pre = cfg.pre_roll_ms * ms
        self._min = cfg.min_ms * ms
        self._max = cfg.max_ms * ms
        self._tail_gap = cfg.tail_gap_ms * ms
        self._tail = cfg.tail_ms * ms
        self._floor_len = cfg.floor_ms * ms

    # -- public -------------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Samples consumed so far (complete frames plus any pending partial frame)."""
        return self._pos + self._pending.size

    @property
    def noise_db(self) -> float:
        """The current noise-level estimate in dBFS (-120 before anything is heard)."""
        return max(self._noise.value(_SILENCE_DB), self._floor.value(_SILENCE_DB))

    @property
    def speaking(self) -> bool:
        return self._open is not None

    def feed(self, chunk: AudioChunk | np.ndarray) -> list[Utterance]:
        """Take the next block of int16 samples; return the utterances it closed."""
        if isinstance(chunk, AudioChunk):
            if chunk.rate != self.config.rate:
                raise ConfigError(
                    f"{self.stream}: chunk at {chunk.rate} Hz fed to a {self.config.rate} Hz "
                    "segmenter (resample in the source)"
                )
            if chunk.start < self.position:
                raise ConfigError(
                    f"{self.stream}: chunk starts at sample {chunk.start}, "
                    f"before the {self.position} already seen (overlapping audio)"
                )
            out = self._gap(chunk.start - self.position) if chunk.start > self.position else []
            return out + self._feed(chunk.samples)
        return self._feed(chunk)

    def _gap(self, n: int) -> list[Utterance]:
        """Audio lost upstream (a microphone drop): silence in its place, so time stays true.

        A long gap is not filled sample by sample: the open utterance is closed
        where the audio stopped and the stream resumes after the gap.
        """
        self.stats.gap_samples += n
        if n <= self.config.rate:
            return self._feed(np.zeros(n, dtype=np.int16))
        out = self.flush()
        self._pos += n
        self._history.clear()
        self._ring.clear()
        self._ring_hits = 0
        return out

    def _feed(self, samples: np.ndarray) -> list[Utterance]:
        samples = np.asarray(samples)
        if samples.dtype != np.int16:
            raise ConfigError(f"{self.stream}: segmenter takes int16 samples, got {samples.dtype}")
        if samples.ndim != 1:
            raise ConfigError(f"{self.stream}: segmenter takes mono audio")
        buf = np.concatenate((self._pending, samples)) if self._pending.size else samples
        n = self._n
        whole = buf.size // n * n
        self._pending = buf[whole:].copy()
        if whole == 0:
            return []
        frames = buf[:whole].reshape(-1, n)
        f = buf[:whole].astype(np.float64) * (1.0 / 32768.0)
        if self._sos is not None:
            # the filter's state carries over, so any chunking gives the same energies
            f, self._zi = self._sosfilt(self._sos, f, zi=self._zi)
        f = f.reshape(-1, n)
        powers = np.einsum("ij,ij->i", f, f) / n
        out: list[Utterance] = []
        for frame, pw in zip(frames, powers.tolist(), strict=True):
            self._step(frame, pw, out)
        return out

    def flush(self) -> list[Utterance]:
        """End of stream: close the open utterance (a trailing partial frame included)."""
        out: list[Utterance] = []
        tail = self._pending
        self._pending = np.zeros(0, dtype=np.int16)
        end_pos = self._pos + tail.size
        o = self._open
        if o is not None:
            if tail.size:
                o.frames.append(tail)
            post = self._post_roll(self._noisiness(o, self.noise_db))
            self._close(min(o.last_loud + post, end_pos), end_pos, out, split=False)
        self._pos = end_pos
        return out

    # -- internals ------------------------------------------------------------------------------

    def _step(self, frame: np.ndarray, power: float, out: list[Utterance]) -> None:
        cfg = self.config
        start = self._pos
        self._pos = end = start + self._n
        self.stats.frames += 1
        pw = self._powers
        if len(pw) == pw.maxlen:
            self._power_sum -= pw[0]
        pw.append(power)
        self._power_sum += power
        e = 10.0 * math.log10(max(self._power_sum, 0.0) / len(pw) + 1e-12)
        noise = max(self._noise.value(_SILENCE_DB), self._floor.value(_SILENCE_DB))
        self._floor.add(e)
        o = self._open
        if o is None:
            loud = e > noise + cfg.on_db and e > cfg.abs_db
            voiced = loud and self._vad.is_speech(frame.tobytes(), cfg.rate)
            self._noise.add(e)
            self._history.append(frame)
            ring = self._ring
            if len(ring) == ring.maxlen and ring[0][1]:
                self._ring_hits -= 1
            ring.append((start, voiced))
            self._ring_hits += voiced
            if self._ring_hits >= self._start_need:
                first = next(s for s, v in ring if v)
                self._begin(first, end, e)
            return
        # speaking: energy-only end-pointing
        o.frames.append(frame)
        if e > o.peak_db:
            o.peak_db = e
        if end - o.start >= self._floor_len and self._floor.full:
            # a long "utterance" with the small energy spread of steady noise: learn it
            fl = self._floor
            if fl.at(0.9) - fl.at(0.1) < cfg.stationary_db:
                noise = max(noise, fl.at(0.5))
                o.steady = True
        if e > cfg.abs_db and e > noise + cfg.off_db and e > o.peak_db - cfg.drop_db:
            self._loud_run += 1
            if self._quiet_run == 0 or self._loud_run >= self._blip:
                o.last_loud = end
                self._quiet_run = 0
            else:
                self._quiet_run += 1  # a blip of noise inside the hangover: still counted quiet
        else:
            self._loud_run = 0
            self._quiet_run += 1
            if not self._vad.is_speech(frame.tobytes(), cfg.rate):
                self._noise.add(e)
        w = self._noisiness(o, noise)
        if self._quiet_run >= self._hangover(o, w) and self._loud_run == 0:
            self._close(min(o.last_loud + self._post_roll(w), end), end, out, split=False)
        elif end - o.start >= self._max:
            self._close(end, end, out, split=True)
            # speech goes on: the next utterance starts exactly here, nothing lost or repeated
            self._open = _Open(start=end, first_loud=end, last_loud=end, peak_db=e, split_from=True)

    def _noisiness(self, o: _Open, noise: float) -> float:
        """0 for an utterance well clear of the noise, 1 for one barely over it."""
        cfg = self.config
        snr = o.peak_db - max(noise, cfg.abs_db - cfg.off_db)
        w = (cfg.clean_snr_db - snr) / (cfg.clean_snr_db - cfg.noisy_snr_db)
        return min(1.0, max(0.0, w))

    def _hangover(self, o: _Open, w: float) -> float:
        """Frames of quiet that end `o`: longer for a short or a noisy utterance."""
        hang = self._hang + w * (self._noisy_hang - self._hang)
        if o.last_loud - o.first_loud < self._short:
            hang = max(hang, self._short_hang)
        return hang

    def _post_roll(self, w: float) -> int:
        """Samples kept after the last loud frame: in noise the word goes on, buried."""
        return round(self._post + w * (self._noisy_post - self._post))

    def _begin(self, first_loud: int, end: int, e: float) -> None:
        """Open an utterance whose first loud frame starts at `first_loud`."""
        hist = list(self._history)
        hist_start = end - len(hist) * self._n
        start = max(hist_start, first_loud - self._pre, self._last_stop)
        skip = -(-(start - hist_start) // self._n)  # whole frames, never before `start`
        start = hist_start + skip * self._n
        self._open = _Open(
            start=start, first_loud=first_loud, last_loud=end, peak_db=e, frames=hist[skip:]
        )
        self._quiet_run = 0
        self._loud_run = 0
        self._history.clear()
        self._ring.clear()
        self._ring_hits = 0

    def _trim_silence(self, audio: np.ndarray, begin: int, o: _Open) -> tuple[np.ndarray, int]:
        """Drop digital silence (under `abs_db`) from the pre- and post-roll.

        The rolls are there to catch a word's quiet edges; frames of near-zero
        samples hold none, and the bank scores them as a very odd kind of audio.
        """
        n = self._n
        limit = n * (10 ** (self.config.abs_db / 10)) * 32768.0**2

        def quiet(block: np.ndarray) -> bool:
            b = block.astype(np.float64)
            return float(b @ b) < limit * (b.size / n)

        k = 0
        while (k + 1) * n <= o.first_loud - begin and quiet(audio[k * n : (k + 1) * n]):
            k += 1
        audio, begin = audio[k * n :], begin + k * n
        end = audio.size
        keep = max(0, o.last_loud - begin)
        while end - n >= keep and quiet(audio[end - n : end]):
            end -= n
        return audio[:end], begin

    def _close(self, stop: int, now: int, out: list[Utterance], split: bool) -> None:
        o = self._open
        assert o is not None
        self._open = None
        self._quiet_run = 0
        self._loud_run = 0
        self._last_stop = stop
        # frames wholly after `stop` can be the next utterance's pre-roll
        kept = (now - stop) // self._n
        if kept and not split:
            self._history.extend(o.frames[-kept:])
        if o.steady:
            # what was taken for speech is the new background: start from its level
            self._noise.reset(list(self._floor._win)[-self._noise.size :])
        cfg = self.config
        rate = cfg.rate
        span = o.last_loud - o.first_loud
        if o.steady:
            self.stats.dropped_steady += 1
            return
        if span < self._min and not o.split_from:
            self.stats.dropped_short += 1
            return
        if (
            not o.split_from
            and o.first_loud - self._last_loud < self._tail_gap
            and o.peak_db < self._last_peak - cfg.tail_db
            and span <= self._tail
        ):
            # the quiet end of the last word, cut off by a gap longer than the hangover
            self.stats.dropped_tail += 1
            return
        self._last_loud = o.last_loud
        self._last_peak = o.peak_db
        audio = np.concatenate(o.frames) if o.frames else np.zeros(0, dtype=np.int16)
        audio = audio[: max(0, stop - o.start)]
        begin = o.start
        if not o.split_from:
            audio, begin = self._trim_silence(audio, begin, o)
        if audio.size == 0:
            return
        self.stats.utterances += 1
        self.stats.splits += split
        out.append(
            Utterance(
                stream=self.stream,
                index=self._index,
                samples=audio.astype(np.float32) * (1.0 / 32768.0),
                rate=rate,
                start=begin / rate,
                end=(begin + audio.size) / rate,
                closed_at=now / rate,
                split=split,
            )
        )
        self._index += 1


def segment(
    samples: np.ndarray, config: SegmenterConfig | None = None, stream: str = "audio"
) -> list[Utterance]:
    """Segment a whole int16 signal at once (the same result as feeding it in any chunks)."""
    seg = Segmenter(config, stream)
    return seg.feed(np.asarray(samples, dtype=np.int16)) + seg.flush()

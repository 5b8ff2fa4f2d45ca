"""Audio sources behind one async interface: a WAV replayed as if live, and a microphone.

Both yield `AudioChunk`s of int16 mono at the pipeline's rate (8 kHz by
default, what the bank and webrtcvad take) with `start` counted in samples, so
downstream nothing can tell a replay from live capture. Replays are paced
against an injected `Clock`: real time by default, `speed` times faster, or as
fast as the consumer takes them (`speed=0`). A replay never drops: when the
consumer falls behind (backpressure from recognition), it waits and its
schedule slides. The microphone cannot wait, so its PortAudio callback is the
one place where audio is dropped, and every dropped sample is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import threading
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamer.audio.wav import CANONICAL_RATE, load_audio, to_canonical, to_pcm16
from streamer.errors import AudioError, ConfigError, DeviceError
from streamer.messages import AudioChunk

log = logging.getLogger(__name__)

__all__ = [
    "AudioSource",
    "Clock",
    "LoopClock",
    "MicSource",
    "VirtualClock",
    "WavSource",
]


class Clock(Protocol):
    """Where a paced source reads the time and waits: the loop's clock, or a fake one."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock that moves only when someone sleeps on it: pacing tests run instantly."""

    def __init__(self, start: float = 0.0) -> None:
        self.t = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Let time pass without a sleep (a slow consumer, say)."""
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class AudioSource(Protocol):
    """What the pipeline reads: int16 chunks of one stream, and what was lost."""

    stream: str
    rate: int

    @property
    def dropped(self) -> int: ...

    def __aiter__(self) -> AsyncIterator[AudioChunk]: ...

    async def aclose(self) -> None: ...


# -- WAV replay ---------------------------------------------------------------------------------


class _PcmReader:
    """Reads 16-bit PCM frames from a WAV in blocks: memory stays flat on an hour-long file."""

    def __init__(self, path: Path, offset: int, nbytes: int, channels: int) -> None:
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._f.seek(offset)
        self._left = nbytes // (2 * channels)
        self.channels = channels

    def read(self, n: int) -> np.ndarray:
        n = min(n, self._left)
        if n <= 0:
            return np.zeros(0, dtype=np.int16)
        raw = self._f.read(n * 2 * self.channels)
        got = len(raw) // (2 * self.channels)
        self._left = 0 if got < n else self._left - n
        x = np.frombuffer(raw[: got * 2 * self.channels], dtype="<i2")
        if self.channels > 1:
            x = x.reshape(-1, self.channels).mean(axis=1)
            return np.round(x).astype(np.int16)
        return x.astype(np.int16)

    def close(self) -> None:
        self._f.close()


def _pcm16_layout(path: Path, rate: int) -> tuple[int, int, int] | None:
    """(data offset, data bytes, channels) if `path` is plain 16-bit PCM at `rate`, else None.

    Anything else (float, 24-bit, another rate, an odd header) goes through the
    whole-file reader, which converts, resamples and reports problems precisely.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            size = path.stat().st_size
            fmt = None
            while True:
                h = f.read(8)
                if len(h) < 8:
                    return None
                cid, n = h[:4], struct.unpack("<I", h[4:])[0]
                if cid == b"fmt ":
                    body = f.read(n + (n & 1))
                    if len(body) < 16:
                        return None
                    fmt = struct.unpack("<HHIIHH", body[:16])
                elif cid == b"data":
                    if fmt is None:
                        return None
                    tag, channels, file_rate, _, _, bits = fmt
                    if tag != 1 or bits != 16 or file_rate != rate or channels < 1:
                        return None
                    if f.tell() + n > size:
                        return None  # truncated: let the full reader name the problem
                    return f.tell(), n, channels
                else:
                    f.seek(n + (n & 1), 1)
    except OSError:
        return None


class WavSource:
    """A recording (a WAV path, or samples in memory) replayed as a live stream.

    The audio is converted once, up front, to int16 mono at `rate`; a 16-bit PCM
    file already at `rate` is instead read block by block from disk. Chunk `k`
    is released when its last sample would have been captured live:
    `t0 + end_sample / rate / speed` on the clock. If the consumer holds the
    source back for longer than `max_lag` seconds, the schedule slides instead
    of bursting to catch up.
    """

    def __init__(
        self,
        audio: str | Path | np.ndarray,
        *,
        stream: str | None = None,
        rate: int = CANONICAL_RATE,
        source_rate: int | None = None,
        chunk_ms: float = 20.0,
        speed: float = 1.0,
        clock: Clock | None = None,
        max_lag: float = 0.2,
    ) -> None:
        if speed < 0 or not np.isfinite(speed):
            raise ConfigError(f"speed {speed}: must be 0 (as fast as possible) or positive")
        if chunk_ms <= 0:
            raise ConfigError(f"chunk of {chunk_ms} ms: must be positive")
        self.rate = rate
        self.speed = float(speed)
        self.clock: Clock = clock or LoopClock()
        self.chunk = max(1, round(chunk_ms * rate / 1000))
        self.max_lag = max_lag
        self.slid = 0.0  # seconds the schedule slid because the consumer was slow
        self.position = 0  # samples delivered
        self._reader: _PcmReader | None = None
        self._pcm: np.ndarray | None = None
        if isinstance(audio, np.ndarray):
            if source_rate is None:
                raise ConfigError("in-memory audio needs its source_rate")
            self.stream = stream or "memory"
            x = np.asarray(audio)
            if x.dtype == np.int16 and x.ndim == 1 and source_rate == rate:
                self._pcm = x
            else:
                self._pcm = to_pcm16(to_canonical(x, source_rate, rate, where=self.stream))
        else:
            path = Path(audio)
            self.stream = stream or path.name
            layout = _pcm16_layout(path, rate)
            if layout is not None:
                self._reader = _PcmReader(path, *layout)
            else:
                self._pcm = to_pcm16(load_audio(path, rate))
        self._closed = False

    @property
    def dropped(self) -> int:
        return 0  # a replay waits; it never drops

    @property
    def duration(self) -> float | None:
        """Length in seconds when known up front."""
        if self._pcm is not None:
            return self._pcm.size / self.rate
        if self._reader is not None:
            return self._reader._left / self.rate
        return None

    def _next_block(self) -> np.ndarray:
        if self._pcm is not None:
            return self._pcm[self.position : self.position + self.chunk]
        assert self._reader is not None
        return self._reader.read(self.chunk)

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        clock = self.clock
        t0 = clock.now()
        try:
            while not self._closed:
                block = self._next_block()
                if block.size == 0:
                    break
                start = self.position
                self.position += block.size
                if self.speed > 0:
                    due = t0 + self.position / self.rate / self.speed
                    now = clock.now()
                    if due > now:
                        await clock.sleep(due - now)
                    elif now - due > self.max_lag:
                        # held back by the consumer: slide the schedule, do not burst
                        t0 += now - due
                        self.slid += now - due
                else:
                    await asyncio.sleep(0)  # let other producers and the emitter run
                yield AudioChunk(self.stream, block, self.rate, start)
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.close()


# -- microphone ---------------------------------------------------------------------------------


class MicSource:
    """Live capture through sounddevice (PortAudio), handed to the event loop without blocking.

    The PortAudio callback runs on its own thread. It copies the block into a
    bounded deque and, at most once per wake-up, schedules a wake-up on the loop
    with `call_soon_threadsafe`. When the deque is full the block is dropped and
    counted right there: the callback never waits for the loop. Stream time is
    the count of samples captured, dropped ones included, so a drop shows up
    downstream as a gap (which the segmenter fills with silence), not a time warp.
    `sd` can be injected: tests pass a fake sounddevice module.
    """

    def __init__(
        self,
        *,
        device: int | str | None = None,
        rate: int = CANONICAL_RATE,
        block_ms: float = 20.0,
        queue_blocks: int = 50,
        stream: str = "mic",
        sd: Any = None,
    ) -> None:
        if queue_blocks < 1:
            raise ConfigError("the microphone queue needs room for at least one block")
        self.stream = stream
        self.rate = rate
        self.device = device
        self.block = max(1, round(block_ms * rate / 1000))
        self.capacity = queue_blocks
        self._sd = sd
        self._buf: deque[tuple[int, np.ndarray]] = deque()
        self._captured = 0  # samples seen by the callback, dropped or not
        self.dropped_blocks = 0
        self._dropped = 0
        self.overflows = 0  # PortAudio's own input overflow flags
        self._wake_pending = False
        self._lock = threading.Lock()  # guards the two counters above
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Event | None = None
        self._pa_stream: Any = None
        self._closed = False

    @property
    def dropped(self) -> int:
        """Samples lost because the consumer fell behind."""
        return self._dropped

    def _callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        """PortAudio thread: never blocks, never raises."""
        try:
            start = self._captured
            self._captured += frames
            if status and getattr(status, "input_overflow", False):
                self.overflows += 1
            if len(self._buf) >= self.capacity:
                self.dropped_blocks += 1
                self._dropped += frames
                return
            self._buf.append((start, np.array(indata[:, 0] if indata.ndim == 2 else indata)))
            with self._lock:
                if self._wake_pending:
                    return
                self._wake_pending = True
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(self._wake)
        except Exception:  # pragma: no cover - a raise here would kill the audio thread
            log.exception("microphone callback failed")

    def _wake(self) -> None:
        with self._lock:
            self._wake_pending = False
        if self._ready is not None:
            self._ready.set()

    async def start(self) -> None:
        """Open the device and start capturing (DeviceError if PortAudio or it is missing)."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        sd = self._sd
        if sd is None:
            try:
                import sounddevice as sd
            except OSError as e:  # PortAudio library missing
                raise DeviceError(f"PortAudio is not available ({e})") from None
        try:
            self._pa_stream = sd.InputStream(
                samplerate=self.rate,
                channels=1,
                dtype="int16",
                blocksize=self.block,
                device=self.device,
                callback=self._callback,
            )
            self._pa_stream.start()
        except Exception as e:
            raise DeviceError(f"cannot open audio input {self.device!r}: {e}") from None

    async def __aiter__(self) -> AsyncIterator[AudioChunk]:
        if self._pa_stream is None:
            await self.start()
        assert self._ready is not None
        try:
            while True:
                while self._buf:
                    start, block = self._buf.popleft()
                    yield AudioChunk(
                        self.stream, block.astype(np.int16, copy=False), self.rate, start
                    )
                if self._closed:
                    break
                self._ready.clear()
                if not self._buf:
                    await self._ready.wait()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ready is not None:
            self._ready.set()
        s, self._pa_stream = self._pa_stream, None
        if s is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(s.stop)
            with contextlib.suppress(Exception):
                s.close()


def open_source(
    audio: str | Path, *, rate: int = CANONICAL_RATE, speed: float = 1.0, **kw: Any
) -> WavSource:
    """A replay source for a path; AudioError if the file is not usable audio."""
    src = WavSource(audio, rate=rate, speed=speed, **kw)
    if src.duration == 0:
        raise AudioError(f"{audio}: no audio samples")
    return src

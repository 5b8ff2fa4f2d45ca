"""Audio sources behind one async interface: a WAV replayed as if live, and a microphone.

Both yield `AudioChunk`s of int16 mono at the pipeline's rate (8 kHz by
default, what the bank and webrtcvad take) with `start` counted in samples, so
downstream nothing can tell a replay from live capture. Replays are paced
against an injected `Clock`: real time by default, `speed` times faster, or as
fast as the consumer takes them (`speed=0`). A replay never drops: when the
consumer falls behind (backpressure from recognition), it waits and its
schedule slides. The microphone cannot wait, so its PortAudio callback is the
one place where audio is dropped, and every dropped sample is counted.

A microphone that goes away (unplugged, its sound server restarted) is not an
end of stream: the source notices that callbacks stopped, reopens the device
with exponential backoff, reports each step as a `DeviceEvent` (the service
publishes them on its status topic) and counts the missed audio as a gap in
stream time. Only the first open fails hard, with a one-line `DeviceError`.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamer.audio.wav import CANONICAL_RATE, load_audio, to_canonical, to_pcm16
from streamer.clock import Clock, LoopClock, VirtualClock
from streamer.errors import AudioError, ConfigError, DeviceError
from streamer.messages import AudioChunk

log = logging.getLogger(__name__)

__all__ = [
    "MIC_BLOCK_MS",
    "AudioSource",
    "Clock",
    "DeviceEvent",
    "InputDevice",
    "LoopClock",
    "MicSource",
    "VirtualClock",
    "WavSource",
    "find_input_device",
    "input_devices",
    "load_portaudio",
    "open_source",
]


class AudioSource(Protocol):
    """What the pipeline reads: int16 chunks of one stream, and what was lost."""

    stream: str
    rate: int

    @property
    def dropped(self) -> int: ...

    def __aiter__(self) -> AsyncGenerator[AudioChunk, None]: ...

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
            mono: np.ndarray = np.round(x.reshape(-1, self.channels).mean(axis=1))
            return mono.astype(np.int16)
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

    async def __aiter__(self) -> AsyncGenerator[AudioChunk, None]:
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


def load_portaudio(sd: Any = None) -> Any:
    """The sounddevice module (or the injected fake); DeviceError when PortAudio is missing.

    sounddevice raises OSError at import when the PortAudio shared library is
    absent: that is a setup problem with a one-line fix, not a traceback.
    """
    if sd is not None:
        return sd
    try:
        import sounddevice
    except OSError as e:
        raise DeviceError(
            f"PortAudio is not available ({e}); install it (Debian: apt-get install libportaudio2)"
        ) from None
    return sounddevice


@dataclass(frozen=True)
class InputDevice:
    """One PortAudio input as `streamer devices` lists it."""

    index: int
    name: str
    hostapi: str
    channels: int
    default_rate: float
    default: bool = False


def input_devices(sd: Any = None) -> list[InputDevice]:
    """Every PortAudio device with at least one input channel (DeviceError without PortAudio)."""
    sd = load_portaudio(sd)
    try:
        devices = list(sd.query_devices())
        apis = [a["name"] for a in sd.query_hostapis()]
    except Exception as e:
        raise DeviceError(f"cannot list audio devices: {e}") from None
    try:
        default_in = int(sd.default.device[0])
    except Exception:
        default_in = -1
    out = []
    for i, d in enumerate(devices):
        if int(d.get("max_input_channels", 0)) < 1:
            continue
        api = d.get("hostapi", -1)
        out.append(
            InputDevice(
                index=int(d.get("index", i)),
                name=str(d["name"]),
                hostapi=apis[api] if 0 <= api < len(apis) else "?",
                channels=int(d["max_input_channels"]),
                default_rate=float(d.get("default_samplerate", 0.0)),
                default=int(d.get("index", i)) == default_in,
            )
        )
    return out


def _listing(devices: list[InputDevice]) -> str:
    return ", ".join(f"{d.index} {d.name!r}" for d in devices)


def find_input_device(device: int | str | None, sd: Any = None) -> InputDevice:
    """The input `device` names: an index, a name (or a unique part of one), or None: the default.

    DeviceError, listing what there is, when nothing (or more than one input) matches.
    """
    devices = input_devices(sd)
    if not devices:
        raise DeviceError(
            "no audio input devices: PortAudio found none (no sound card, or no sound server "
            "such as PulseAudio running when streamer started)"
        )
    if device is None or device == "":
        for d in devices:
            if d.default:
                return d
        return devices[0]
    if isinstance(device, int) or (isinstance(device, str) and device.strip().isdigit()):
        k = int(device)
        for d in devices:
            if d.index == k:
                return d
        raise DeviceError(f"no audio input with index {k} (inputs: {_listing(devices)})")
    want = str(device).strip().lower()
    exact = [d for d in devices if d.name.lower() == want]
    if exact:
        return exact[0]
    part = [d for d in devices if want in d.name.lower()]
    if len(part) == 1:
        return part[0]
    if not part:
        raise DeviceError(f"no audio input matches {device!r} (inputs: {_listing(devices)})")
    raise DeviceError(f"{device!r} matches several audio inputs: {_listing(part)}; give an index")


@dataclass(frozen=True)
class DeviceEvent:
    """A change in a microphone's health: `lost`, `retrying` or `restored` (with the gap)."""

    stream: str
    kind: str
    detail: str
    attempt: int = 0
    gap: float = 0.0  # seconds of audio missed, on `restored`


DeviceListener = Callable[[DeviceEvent], None]
_AUTO = object()
_open_streams = 0  # PortAudio streams this process has open (a rescan would break them)
_open_lock = threading.Lock()


def _skip_portaudio_exit(sd: Any) -> None:
    """Take sounddevice's exit handler off: it stops the last stream and terminates
    PortAudio at the interpreter's exit, and with a stream still stuck closing in another
    thread that waits for ever (the service hung after SIGTERM, having shut down). The
    process's exit frees the device anyway."""
    handler = getattr(sd, "_exit_handler", None)
    if callable(handler):
        atexit.unregister(handler)


async def _release(s: Any, first: str, timeout: float, name: str, sd: Any = None) -> None:
    """Stop (``first``: stop or abort) and close a PortAudio stream, off the event loop.

    A wedged device can hang both calls. They run in a daemon thread of their own, so
    the loop, and the interpreter's exit, never wait for them past `timeout` (nor does
    PortAudio's own exit handler, which `sd`, the sounddevice module, would run); the
    stream counts as open until PortAudio lets go of it, so no rescan runs under it.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def settle() -> None:
        if not done.done():
            done.set_result(None)

    def shut() -> None:
        global _open_streams
        with contextlib.suppress(Exception):
            getattr(s, first)()
        with contextlib.suppress(Exception):
            s.close()
        with _open_lock:
            _open_streams -= 1
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=shut, name=f"{name} close", daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.shield(done), timeout)
    except TimeoutError:
        log.warning("%s: the audio device did not close in %g s; left closing", name, timeout)
        _skip_portaudio_exit(sd if sd is not None else sys.modules.get("sounddevice"))


MIC_BLOCK_MS = 10.0  # capture block: smaller blocks, sooner labels


class MicSource:
    """Live capture through sounddevice (PortAudio), handed to the event loop without blocking.

    The PortAudio callback runs on its own thread. It copies the block into a
    bounded deque and, at most once per wake-up, schedules a wake-up on the loop
    with `call_soon_threadsafe`. When the deque is full the block is dropped and
    counted right there: the callback never waits for the loop. Stream time is
    the count of samples captured, dropped ones included, so a drop shows up
    downstream as a gap (which the segmenter fills with silence), not a time warp.

    When callbacks stop for `stall_timeout` seconds (or PortAudio says the
    stream is no longer active) the device is taken for gone: it is reopened
    every `retry` seconds, doubling up to `max_retry`, until it answers or the
    source is closed; `on_event` hears about each step. The audio missed meanwhile
    becomes a gap in stream time. `sd` can be injected: tests pass a fake
    sounddevice module (which is then not asked for a latency unless one is given).
    """

    def __init__(
        self,
        *,
        device: int | str | None = None,
        rate: int = CANONICAL_RATE,
        block_ms: float = MIC_BLOCK_MS,
        queue_blocks: int = 50,
        stream: str = "mic",
        sd: Any = None,
        latency: Any = _AUTO,
        stall_timeout: float = 1.0,
        open_timeout: float = 3.0,
        retry: float = 0.25,
        max_retry: float = 5.0,
        on_event: DeviceListener | None = None,
    ) -> None:
        if queue_blocks < 1:
            raise ConfigError("the microphone queue needs room for at least one block")
        if stall_timeout <= 0 or retry <= 0 or max_retry < retry:
            raise ConfigError("stall timeout and retry delays must be positive, max >= first")
        self.stream = stream
        self.rate = rate
        self.device = device
        self.block = max(1, round(block_ms * rate / 1000))
        self.capacity = queue_blocks
        self._sd = sd
        # PortAudio's "low" latency: a word's end reaches us tens of ms sooner than "high"
        self.latency = ("low" if sd is None else None) if latency is _AUTO else latency
        self.stall_timeout = stall_timeout
        # a freshly started sound server can take ~2 s to deliver the first block
        self.open_timeout = max(open_timeout, stall_timeout)
        self.retry = retry
        self.max_retry = max_retry
        self.on_event = on_event
        self.events: list[DeviceEvent] = []
        self.reconnects = 0
        self.gap_samples = 0  # stream time lost while the device was away
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
        self._last_cb = 0.0  # time.monotonic() of the last callback
        self._opened_at = 0.0
        self._heard = False  # a callback came since the stream was (re)opened
        self._closed = False
        self.device_name: str | None = None

    @property
    def dropped(self) -> int:
        """Samples lost because the consumer fell behind."""
        return self._dropped

    def _callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        """PortAudio thread: never blocks, never raises."""
        try:
            self._last_cb = time.monotonic()
            self._heard = True
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

    def _open(self, gap_from: float | None = None) -> None:
        """Open and start the PortAudio stream (any thread); DeviceError when it cannot."""
        global _open_streams
        sd = load_portaudio(self._sd)
        device = self.device
        if self._sd is None:
            found = find_input_device(device, sd)  # clear errors for a missing device
            device, self.device_name = found.index, found.name
        extra = {} if self.latency is None else {"latency": self.latency}
        try:
            s = sd.InputStream(
                samplerate=self.rate,
                channels=1,
                dtype="int16",
                blocksize=self.block,
                device=device,
                callback=self._callback,
                **extra,
            )
        except Exception as e:
            raise DeviceError(f"cannot open audio input {self.device!r}: {e}") from None
        if gap_from is not None:
            # the audio missed while the device was away: a gap in stream time, not a warp
            gap = max(0, round((time.monotonic() - gap_from) * self.rate))
            self._captured += gap
            self.gap_samples += gap
        self._last_cb = self._opened_at = time.monotonic()
        self._heard = False
        try:
            s.start()
        except Exception as e:
            with contextlib.suppress(Exception):
                s.close()
            raise DeviceError(f"cannot start audio input {self.device!r}: {e}") from None
        self._pa_stream = s
        with _open_lock:
            _open_streams += 1

    async def start(self) -> None:
        """Open the device and start capturing (DeviceError if PortAudio or it is missing)."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._open()

    def _stalled(self) -> bool:
        s = self._pa_stream
        if self._closed:
            return False
        if s is None or not getattr(s, "active", True):
            return True
        if not self._heard:
            return time.monotonic() - self._opened_at > self.open_timeout
        return time.monotonic() - self._last_cb > self.stall_timeout

    def _event(self, kind: str, detail: str, attempt: int = 0, gap: float = 0.0) -> None:
        ev = DeviceEvent(self.stream, kind, detail, attempt, gap)
        self.events.append(ev)
        (log.info if kind == "restored" else log.warning)("%s: %s", self.stream, detail)
        if self.on_event is not None:
            try:
                self.on_event(ev)
            except Exception:  # a listener's bug must not stop capture
                log.exception("device event listener failed")

    async def _close_stream(self) -> None:
        s, self._pa_stream = self._pa_stream, None
        if s is not None:
            # a dead device can make stop() hang: abort drops nothing we still could get
            await _release(s, "abort", 2.0, self.stream, self._sd)

    def _rescan(self) -> None:
        """Let PortAudio see devices that appeared since it started (only with no stream open)."""
        sd = self._sd
        if sd is not None or _open_streams > 0:
            return
        import sounddevice

        with contextlib.suppress(Exception):
            sounddevice._terminate()
            sounddevice._initialize()

    async def _reconnect(self) -> None:
        """The device went away: reopen it with backoff until it answers or we are closed."""
        lost_at = self._last_cb
        name = self.device_name or self.device or "default input"
        await self._close_stream()
        self._event(
            "lost",
            f"audio input {name!r} stopped delivering audio "
            f"({time.monotonic() - lost_at:.1f} s); reconnecting",
        )
        delay = self.retry
        attempt = 0
        assert self._ready is not None
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    while not self._closed:  # aclose() sets _ready
                        self._ready.clear()
                        await self._ready.wait()
            if self._closed:
                return
            attempt += 1
            try:
                if attempt > 1:
                    await asyncio.to_thread(self._rescan)
                await asyncio.to_thread(self._open, lost_at)
            except DeviceError as e:
                delay = min(delay * 2, self.max_retry)
                self._event(
                    "retrying", f"attempt {attempt} failed ({e}); next in {delay:g} s", attempt
                )
                continue
            self.reconnects += 1
            gap = time.monotonic() - lost_at
            self._event(
                "restored", f"audio input {name!r} back after {gap:.1f} s", attempt, round(gap, 3)
            )
            return

    async def __aiter__(self) -> AsyncGenerator[AudioChunk, None]:
        if self._closed:
            return
        if self._pa_stream is None:
            await self.start()
        assert self._ready is not None
        check = min(0.25, self.stall_timeout / 2)
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
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(check):
                            await self._ready.wait()
                    if not self._buf and self._stalled():
                        await self._reconnect()
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
            await _release(s, "stop", 5.0, self.stream, self._sd)


def open_source(
    audio: str | Path, *, rate: int = CANONICAL_RATE, speed: float = 1.0, **kw: Any
) -> WavSource:
    """A replay source for a path; AudioError if the file is not usable audio."""
    src = WavSource(audio, rate=rate, speed=speed, **kw)
    if src.duration == 0:
        raise AudioError(f"{audio}: no audio samples")
    return src

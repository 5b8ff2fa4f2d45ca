"""Sources: pacing against an injected clock, format conversion, and the microphone's drop point."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from streamer.audio.sources import MicSource, VirtualClock, WavSource
from streamer.audio.wav import to_pcm16
from streamer.errors import AudioError, ConfigError
from streamer.messages import AudioChunk


async def _collect(src, consume=None) -> list[AudioChunk]:  # type: ignore[no-untyped-def]
    out = []
    async for c in src:
        out.append(c)
        if consume is not None:
            consume(c)
    return out


def _tone(seconds: float, rate: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


async def test_real_time_pacing_against_a_virtual_clock() -> None:
    clock = VirtualClock(100.0)
    src = WavSource(to_pcm16(_tone(2.0)), source_rate=8000, chunk_ms=20, speed=1.0, clock=clock)
    chunks = await _collect(src)
    assert len(chunks) == 100
    assert [c.start for c in chunks] == [i * 160 for i in range(100)]
    assert sum(c.samples.size for c in chunks) == 16000
    assert clock.t == pytest.approx(102.0)  # two seconds of audio took two clock seconds
    assert all(s == pytest.approx(0.02) for s in clock.sleeps)


@pytest.mark.parametrize("speed", [4.0, 0.5])
async def test_speed_scales_the_schedule(speed: float) -> None:
    clock = VirtualClock()
    src = WavSource(to_pcm16(_tone(1.0)), source_rate=8000, chunk_ms=50, speed=speed, clock=clock)
    await _collect(src)
    assert clock.t == pytest.approx(1.0 / speed)


async def test_speed_zero_never_sleeps() -> None:
    clock = VirtualClock()
    src = WavSource(to_pcm16(_tone(1.0)), source_rate=8000, chunk_ms=7, speed=0, clock=clock)
    chunks = await _collect(src)
    assert clock.sleeps == [] and clock.t == 0.0
    assert sum(c.samples.size for c in chunks) == 8000
    assert chunks[-1].samples.size == 8000 % 56  # the last chunk is what is left


async def test_a_slow_consumer_slides_the_schedule_instead_of_bursting() -> None:
    clock = VirtualClock()
    src = WavSource(to_pcm16(_tone(2.0)), source_rate=8000, chunk_ms=20, speed=1.0, clock=clock)
    seen = []

    def consume(c: AudioChunk) -> None:
        seen.append(clock.now())
        if c.start == 8000:  # the consumer stalls for half a second once
            clock.advance(0.5)

    await _collect(src, consume)
    gaps = np.diff(seen)
    # after the stall the source does not rush out 25 chunks at once to catch up
    assert np.count_nonzero(gaps < 1e-9) <= 1
    assert src.slid == pytest.approx(0.5, abs=0.03)
    assert clock.t == pytest.approx(2.5, abs=0.03)


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        WavSource(np.zeros(10, np.int16), source_rate=8000, speed=-1)
    with pytest.raises(ConfigError):
        WavSource(np.zeros(10, np.int16), source_rate=8000, chunk_ms=0)
    with pytest.raises(ConfigError, match="source_rate"):
        WavSource(np.zeros(10, np.int16))


async def test_streamed_file_equals_in_memory_replay(tmp_path: Path) -> None:
    x = to_pcm16(_tone(1.3))
    path = tmp_path / "a.wav"
    wavfile.write(path, 8000, x)
    from_file = WavSource(path, chunk_ms=30, speed=0)
    assert from_file._reader is not None  # 16-bit PCM at the target rate is read block by block
    a = await _collect(from_file)
    b = await _collect(WavSource(x, source_rate=8000, chunk_ms=30, speed=0))
    assert [c.start for c in a] == [c.start for c in b]
    assert np.array_equal(np.concatenate([c.samples for c in a]), x)
    assert a[0].stream == "a.wav"


@pytest.mark.parametrize("rate", [22050, 44100, 16000])
async def test_other_rates_and_formats_are_converted(tmp_path: Path, rate: int) -> None:
    x = _tone(1.0, rate)
    stereo = np.stack([x, x], axis=1)
    path = tmp_path / "s.wav"
    wavfile.write(path, rate, stereo)  # float32 stereo at a rate webrtcvad cannot take
    chunks = await _collect(WavSource(path, speed=0))
    y = np.concatenate([c.samples for c in chunks])
    assert all(c.rate == 8000 and c.samples.dtype == np.int16 for c in chunks)
    assert y.size == 8000
    spec = np.abs(np.fft.rfft(y.astype(float)))
    assert np.argmax(spec) == pytest.approx(440, abs=2)  # 1 s: bins are 1 Hz


def test_unusable_files_are_audio_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(AudioError, match=r"bad\.wav"):
        WavSource(bad)
    trunc = tmp_path / "trunc.wav"
    wavfile.write(trunc, 8000, to_pcm16(_tone(1.0)))
    trunc.write_bytes(trunc.read_bytes()[:5000])
    with pytest.raises(AudioError, match="truncated"):
        WavSource(trunc)
    with pytest.raises(AudioError, match="no such file"):
        WavSource(tmp_path / "missing.wav")


# -- microphone -----------------------------------------------------------------------------------


class _FakeStream:
    """Stands in for sounddevice.InputStream: a thread calls back with blocks at a fixed rate."""

    def __init__(self, *, samplerate, channels, dtype, blocksize, device, callback):  # type: ignore[no-untyped-def]
        assert dtype == "int16" and channels == 1
        self.block, self.callback = blocksize, callback
        self.blocks = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.n_blocks = 200

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set() and k < self.n_blocks:
            data = np.full((self.block, 1), k % 1000, dtype=np.int16)
            self.callback(data, self.block, None, None)
            k += 1
            self.blocks = k
            time.sleep(0.0005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def close(self) -> None:
        pass


class _FakeSd:
    def __init__(self) -> None:
        self.stream: _FakeStream | None = None

    def InputStream(self, **kw):  # type: ignore[no-untyped-def]
        self.stream = _FakeStream(**kw)
        return self.stream


async def _close_when_done(mic: MicSource, sd: _FakeSd) -> None:
    """Stop the microphone once the fake device has delivered all its blocks."""
    while sd.stream is None or sd.stream._thread.is_alive() or not sd.stream.blocks:
        await asyncio.sleep(0.005)
    await mic.aclose()  # what is still queued is delivered, then the iteration ends


async def test_microphone_drops_and_counts_when_the_consumer_is_slow() -> None:
    sd = _FakeSd()
    mic = MicSource(sd=sd, block_ms=10, queue_blocks=5)
    got: list[AudioChunk] = []
    closer = asyncio.create_task(_close_when_done(mic, sd))
    async for chunk in mic:
        got.append(chunk)
        time.sleep(0.01)  # a consumer that blocks the loop: the callback must not wait for it
    await closer
    assert sd.stream is not None
    total = sd.stream.n_blocks * 80
    assert mic.dropped > 0 and mic.dropped_blocks == mic.dropped // 80
    # everything captured is either delivered or counted as dropped
    assert sum(c.samples.size for c in got) + mic.dropped == total
    # stream time counts dropped samples: a drop is a gap, never a time warp
    starts = [c.start for c in got]
    assert starts == sorted(starts) and starts[-1] < total
    assert all(c.samples[0] == (c.start // 80) % 1000 for c in got)
    # the callback never waited for the consumer: had it waited, nothing would have dropped,
    # and the device delivered every block while the loop was blocked (no wall-clock bound)
    assert sd.stream.blocks == sd.stream.n_blocks


async def test_microphone_keeps_everything_when_the_consumer_keeps_up() -> None:
    sd = _FakeSd()
    mic = MicSource(sd=sd, block_ms=10, queue_blocks=1000)
    got = []
    closer = asyncio.create_task(_close_when_done(mic, sd))
    async for chunk in mic:
        got.append(chunk)
    await closer
    assert mic.dropped == 0
    assert [c.start for c in got] == [i * 80 for i in range(200)]


async def test_missing_device_is_a_device_error() -> None:
    from streamer.errors import DeviceError

    class Broken:
        def InputStream(self, **kw):  # type: ignore[no-untyped-def]
            raise RuntimeError("Error querying device -1")

    mic = MicSource(sd=Broken())
    with pytest.raises(DeviceError, match="cannot open audio input"):
        await mic.start()
    await asyncio.sleep(0)


async def test_a_wedged_device_never_holds_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead device can hang abort(), stop() and close(): the loop goes on, no rescan under it."""
    from streamer.audio import sources

    release = threading.Event()

    class Wedged(_FakeStream):
        def abort(self) -> None:
            release.wait()

        def stop(self) -> None:
            release.wait()

        def close(self) -> None:
            release.wait()

    class WedgedSd(_FakeSd):
        def InputStream(self, **kw):  # type: ignore[no-untyped-def]
            self.stream = Wedged(**kw)
            return self.stream

    monkeypatch.setattr(sources, "_open_streams", 0)
    mic = MicSource(sd=WedgedSd(), block_ms=10)
    await mic.start()
    assert sources._open_streams == 1
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    t0 = time.monotonic()
    try:
        await mic._close_stream()  # what a lost device leads to
        took = time.monotonic() - t0
        assert 1.5 < took < 4.0  # gave up after its 2 s, did not hang
        assert ticks > 50  # the loop ran all the while
        assert sources._open_streams == 1  # still PortAudio's: no rescan may run
    finally:
        t.cancel()
        release.set()
    for _ in range(200):
        if sources._open_streams == 0:
            break
        await asyncio.sleep(0.01)
    assert sources._open_streams == 0  # counted closed once PortAudio let go
    await mic.aclose()


_EXIT_SCRIPT = """
import asyncio, atexit, threading
from streamer.audio.sources import MicSource
from tests.audio.test_sources import _FakeSd, _FakeStream

stuck = threading.Event()

class Wedged(_FakeStream):
    def abort(self):
        stuck.wait()

    def close(self):
        stuck.wait()

class WedgedSd(_FakeSd):
    def InputStream(self, **kw):
        self.stream = Wedged(**kw)
        return self.stream

    def _exit_handler(self):  # sounddevice's: stop the last stream, terminate PortAudio
        stuck.wait()

sd = WedgedSd()
atexit.register(sd._exit_handler)

async def main():
    mic = MicSource(sd=sd, block_ms=10)
    await mic.start()
    await mic._close_stream()  # the device is lost and its stream will not close

asyncio.run(main())
print("done", flush=True)
"""


def test_a_stream_left_closing_does_not_hold_the_process_at_exit() -> None:
    """PortAudio's exit handler would wait for the wedged stream: the process must still end."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    p = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT], cwd=root, capture_output=True, timeout=20
    )
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert p.stdout.decode().strip() == "done"

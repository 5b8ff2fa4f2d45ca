"""Device faults with a fake PortAudio: no input at all, a wrong name, a device that goes away.

These need no sound server, so they run everywhere; the same paths through a
real PortAudio device are in test_mic.py.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from typing import Any

import numpy as np
import pytest

from streamer.audio.sources import DeviceEvent, MicSource, find_input_device, input_devices
from streamer.errors import DeviceError
from streamer.messages import AudioChunk


class _Stream:
    """An input stream that delivers `blocks` blocks, then falls silent (the device is gone)."""

    def __init__(self, owner: _Sd, blocksize: int, callback: Any, blocks: int) -> None:
        self.owner, self.block, self.callback, self.blocks = owner, blocksize, callback, blocks
        self.active = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set() and (self.blocks < 0 or k < self.blocks):
            self.callback(np.full((self.block, 1), 100, dtype=np.int16), self.block, None, None)
            k += 1
            time.sleep(0.002)
        self.active = False  # PortAudio marks a stream whose device died as inactive

    def start(self) -> None:
        self.active = True
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    abort = stop

    def close(self) -> None:
        pass


class _Sd:
    """A sounddevice stand-in: the first stream dies after 20 blocks, then `fail` opens fail."""

    def __init__(self, fail: int = 2, devices: list[dict[str, Any]] | None = None) -> None:
        self.fail = fail
        self.opened = 0
        self.streams: list[_Stream] = []
        self._devices = devices if devices is not None else []
        self.default = type("D", (), {"device": [0, 0]})()

    def InputStream(self, *, blocksize: int, callback: Any, **kw: Any) -> _Stream:
        self.opened += 1
        if 1 < self.opened <= 1 + self.fail:
            raise RuntimeError("Error opening InputStream: Illegal combination of I/O devices")
        s = _Stream(self, blocksize, callback, 20 if self.opened == 1 else -1)
        self.streams.append(s)
        return s

    def query_devices(self) -> list[dict[str, Any]]:
        return self._devices

    def query_hostapis(self) -> list[dict[str, Any]]:
        return [{"name": "ALSA"}]


async def test_a_device_that_goes_away_is_reopened_with_backoff_and_reported() -> None:
    sd = _Sd(fail=2)
    seen: list[DeviceEvent] = []
    mic = MicSource(
        sd=sd, block_ms=10, stall_timeout=0.1, retry=0.02, max_retry=0.05, on_event=seen.append
    )
    chunks: list[AudioChunk] = []

    async def consume() -> None:
        async for c in mic:
            chunks.append(c)
            if any(e.kind == "restored" for e in seen) and len(chunks) > 40:
                await mic.aclose()

    await asyncio.wait_for(consume(), 10)
    kinds = [e.kind for e in seen]
    assert kinds == ["lost", "retrying", "retrying", "restored"]
    assert seen[-1].attempt == 3 and seen[-1].gap > 0.1
    assert "stopped delivering audio" in seen[0].detail
    assert mic.reconnects == 1 and sd.opened == 4
    # the missed time is a gap in stream time, not a time warp
    starts = [c.start for c in chunks]
    jumps = [b - a for a, b in itertools.pairwise(starts) if b - a != 80]
    assert len(jumps) == 1 and jumps[0] >= 0.1 * 8000
    assert mic.gap_samples == jumps[0] - 80


async def test_closing_while_the_device_is_away_ends_the_stream() -> None:
    sd = _Sd(fail=10**6)
    seen: list[DeviceEvent] = []
    mic = MicSource(sd=sd, block_ms=10, stall_timeout=0.1, retry=0.02, on_event=seen.append)

    async def consume() -> int:
        n = 0
        async for _ in mic:
            n += 1
        return n

    task = asyncio.create_task(consume())
    while not any(e.kind == "retrying" for e in seen):
        await asyncio.sleep(0.01)
    await mic.aclose()
    assert await asyncio.wait_for(task, 2) == 20


def test_device_lookup_errors_are_one_line_and_list_the_inputs() -> None:
    devs = [
        {"name": "pulse", "max_input_channels": 32, "hostapi": 0, "default_samplerate": 44100.0},
        {"name": "HDMI out", "max_input_channels": 0, "hostapi": 0, "default_samplerate": 48e3},
        {"name": "default", "max_input_channels": 32, "hostapi": 0, "default_samplerate": 44100.0},
    ]
    sd = _Sd(devices=devs)
    sd.default.device = [2, 1]
    got = input_devices(sd)
    got_rows = [(d.index, d.name, d.default) for d in got]
    assert got_rows == [(0, "pulse", False), (2, "default", True)]
    assert find_input_device(None, sd).name == "default"
    assert find_input_device("2", sd).name == "default"
    assert find_input_device("PULSE", sd).index == 0
    with pytest.raises(DeviceError, match=r"no audio input matches 'usb' \(inputs: 0 'pulse'"):
        find_input_device("usb", sd)
    with pytest.raises(DeviceError, match="no audio input with index 1"):
        find_input_device(1, sd)  # an output-only device is not an input
    with pytest.raises(DeviceError, match="several audio inputs"):
        find_input_device("ul", sd)
    with pytest.raises(DeviceError, match="PortAudio found none"):
        find_input_device(None, _Sd(devices=[]))


def test_cli_reports_a_missing_portaudio_or_device_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamer.commands.devices as devices_cmd
    from streamer.cli import main

    def no_portaudio(sd: Any = None) -> Any:
        raise DeviceError("PortAudio is not available (PortAudio library not found); install it")

    monkeypatch.setattr(devices_cmd, "input_devices", lambda: no_portaudio())
    assert main(["devices"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PortAudio is not available" in err
    monkeypatch.setattr(devices_cmd, "input_devices", lambda: [])
    assert main(["devices"]) == 2
    assert "no audio input devices" in capsys.readouterr().err

"""A real PortAudio microphone with no hardware: a private PulseAudio daemon per test session.

The recipe is ../shared/notes/virtual-mic.md: a null sink whose monitor (remapped
as `virtmic`) is the default source, plus a silent source looped into the sink
so the idle sink renders in small blocks instead of 2 s ones. Whatever is played
into `virt_sink` (`VirtualMic.play`) is what a PortAudio input hears.

The daemon lives in its own HOME and XDG_RUNTIME_DIR under the session's tmp
folder, so parallel sessions (other engineers, CI) never share one. Clients find
it through `VirtualMic.env` (PULSE_SERVER and friends); PortAudio reads its
device list once, so the code under test runs in a subprocess with that
environment, or re-initialises PortAudio in-process (`VirtualMic.activate`).

Under CI (CI=true) the tests run or fail, they never skip: a missing `pulseaudio`
binary is a failure there. Elsewhere they skip when it is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamer.audio.wav import write_wav

_CONFIG = """\
load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=virt_sink rate=16000 channels=1 format=s16le
load-module module-remap-source master=virt_sink.monitor source_name=virtmic
load-module module-null-source source_name=silence rate=16000 channels=1 format=s16le
load-module module-loopback source=silence sink=virt_sink latency_msec=10
set-default-sink virt_sink
set-default-source virtmic
"""


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path:
        return path
    msg = f"{binary} is not installed (Debian: pulseaudio pulseaudio-utils libportaudio2)"
    if in_ci():
        pytest.fail(msg)  # under CI the live tests run, or fail: never skip
    pytest.skip(msg)


class VirtualMic:
    """The daemon, its environment, and a way to speak into the microphone it provides."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "run"
        self.runtime.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.runtime, 0o700)
        self.config = root / "virtual-mic.pa"
        self.config.write_text(_CONFIG)
        client = root / "client.conf"
        client.write_text("autospawn = no\n")  # a client must never start a daemon of its own
        self.log = root / "pulseaudio.log"
        self.env = {
            **os.environ,
            "HOME": str(root),
            "XDG_RUNTIME_DIR": str(self.runtime),
            "PULSE_SERVER": f"unix:{self.runtime}/pulse/native",
            "PULSE_CLIENTCONFIG": str(client),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._n = 0

    def start(self, settle: float = 2.0) -> None:
        """Start the daemon; return once it answers and the null sink has settled."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    _need("pulseaudio"),
                    "-n",
                    "-F",
                    str(self.config),
                    "--exit-idle-time=-1",
                    "--daemonize=no",
                    "--use-pid-file=no",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 15
        while self.pactl("info").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                pytest.fail(f"PulseAudio did not start:\n{tail}")
            time.sleep(0.02)
        time.sleep(settle)  # the idle null sink drops to small render blocks (see the notes)

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is None:
            return
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)

    def kill(self) -> None:
        """Take the microphone away the hard way (what an unplugged device looks like)."""
        p, self.proc = self.proc, None
        if p is not None:
            p.kill()
            p.wait(5)

    def pactl(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [_need("pactl"), *args], env=self.env, capture_output=True, timeout=10
        )

    def wav(self, audio: np.ndarray, rate: int) -> Path:
        """Write float audio to a WAV in the session folder, for `play`."""
        self._n += 1
        path = self.root / f"say{self._n:04d}.wav"
        write_wav(path, audio, rate)
        return path

    def play(self, wav: Path) -> float:
        """Play a WAV into the sink; returns time.monotonic() when it has finished playing.

        paplay drains its stream before it exits, so its exit is when the last
        sample has been played into the sink (measured: within ~10 ms).
        """
        subprocess.run(
            [_need("paplay"), "-d", "virt_sink", str(wav)],
            env=self.env,
            check=True,
            timeout=30,
            capture_output=True,
        )
        return time.monotonic()

    def activate(self) -> dict[str, str | None]:
        """Point this process's PortAudio at the daemon; returns the old values to restore."""
        keys = ("HOME", "XDG_RUNTIME_DIR", "PULSE_SERVER", "PULSE_CLIENTCONFIG")
        old = {k: os.environ.get(k) for k in keys}
        for k in keys:
            os.environ[k] = self.env[k]
        _reinit_portaudio()
        return old


def _reinit_portaudio() -> None:
    """PortAudio lists devices once, at initialisation: make it look again."""
    if "sounddevice" in sys.modules:
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()
    else:
        import sounddevice  # noqa: F401 - the import initialises PortAudio with the new env


@pytest.fixture(scope="session")
def virtual_mic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualMic]:
    """A running private PulseAudio daemon whose null sink is the default microphone."""
    _need("pulseaudio")
    _need("paplay")
    _need("pactl")
    root = Path(tmp_path_factory.mktemp("pulse"))
    vm = VirtualMic(root)
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()


@pytest.fixture
def mic_in_process(virtual_mic: VirtualMic) -> Iterator[VirtualMic]:
    """The virtual microphone visible to PortAudio in this process, for the test's duration."""
    old = virtual_mic.activate()
    try:
        yield virtual_mic
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reinit_portaudio()

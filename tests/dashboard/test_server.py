"""The dashboard server with real sockets: frame rate per browser, a stalled browser dropped
without holding up the others, `streamer serve --http`, and the command's user errors."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from streamer.cli import main
from streamer.dashboard import DashboardServer
from tests.dashboard.test_state import regime


def _fill(d: DashboardServer, symbols: int, points: int) -> None:
    for i in range(points):
        for k in range(symbols):
            d.state.ingest(regime(f"S{k}", float(i), 100.0 + i, i % 2))
        d.state.close_buckets()


def _stalled_client(url: str) -> socket.socket:
    """A browser tab that stopped reading: a WebSocket handshake, then nothing read."""
    host, port = re.match(r"http://([\d.]+):(\d+)/", url).groups()  # type: ignore[union-attr]
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    s.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return s


async def test_each_browser_gets_at_most_frame_rate_frames_and_a_stalled_one_is_dropped(
    tmp_path: Path,
) -> None:
    d = DashboardServer(
        f"ipc://{tmp_path / 'nobody'}", "127.0.0.1:0", frame_rate=10, history=300,
        stall_timeout=0.5,
    )  # fmt: skip
    _fill(d, symbols=200, points=300)  # a first frame of several megabytes
    async with d:
        stalled = _stalled_client(d.url)
        stop = asyncio.Event()

        async def ticks() -> None:  # prices keep coming, far faster than frames go out
            i = 1000
            while not stop.is_set():
                for _ in range(200):
                    i += 1
                    d.state.ingest(regime("S0", float(i), 100.0))
                await asyncio.sleep(0.001)

        feeder = asyncio.create_task(ticks())
        frames: list[dict[str, Any]] = []
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "ws") as ws:
            t0 = time.monotonic()
            while time.monotonic() - t0 < 2.5:
                msg = await asyncio.wait_for(ws.receive(), 2.0)
                frames.append(json.loads(msg.data))
            took = time.monotonic() - t0
        stop.set()
        await feeder
        stalled.close()
        assert d.stats.dropped == 1  # the tab that read nothing, after stall_timeout
        assert frames[0]["snapshot"] and len(frames[0]["symbols"]) == 200
        assert not any(f["snapshot"] for f in frames[1:])
        rate = (len(frames) - 1) / took
        assert 5 <= rate <= 11, rate  # about frame_rate, however fast the prices came
        assert sum(len(f["symbols"]["S0"].get("points", [])) for f in frames[1:]) >= 10


def test_serve_http_serves_the_page_from_the_service(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "serve", "--stay", "--pub", f"ipc://{tmp_path / 'p'}",
         "--heartbeat", "0.2", "--http", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = None
        while url is None:
            line = proc.stderr.readline()
            assert line, f"streamer serve exited {proc.wait()}"
            m = re.search(r"dashboard at (http://127\.0\.0\.1:\d+/)", line)
            url = m.group(1) if m else None
        with urllib.request.urlopen(url) as r:
            assert 'data-testid="connection"' in r.read().decode()
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        deadline = time.monotonic() + 10
        while True:
            with urllib.request.urlopen(url + "stats") as r:
                stats = json.loads(r.read())
            if stats["connected"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert stats["connected"] and stats["subscriber"]["snapshots"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_bad_http_address_and_a_taken_port_are_one_line_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["dashboard", "--http", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "HOST:PORT" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["dashboard", "--http", f"127.0.0.1:{taken.getsockname()[1]}"]) == 2
    err = capsys.readouterr().err
    assert "cannot listen" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_dashboard_command_loads_without_the_model_stack() -> None:
    """`streamer dashboard` imports its own command only, and no scipy, hmmlearn or sklearn:
    seconds of start-up on a busy machine that a web page does not need."""
    code = (
        "import sys\n"
        "from streamer.cli import build_parser\n"
        "args = build_parser('dashboard').parse_args(['dashboard', '--connect', 'tcp://127.0.0.1:1'])\n"
        "import streamer.dashboard\n"
        "heavy = ('scipy', 'hmmlearn', 'sklearn', 'streamer.market.model', 'streamer.speech')\n"
        "print(args.command, [m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(maxsplit=1) == ["dashboard", "[]\n"]

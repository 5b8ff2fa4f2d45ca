"""The dashboard's thin asyncio shell: a ZeroMQ subscriber in, an HTTP + WebSocket server out.

It subscribes like any client (`Subscriber`: the snapshot on join, seq gaps,
reconnects, CURVE) to words, the service's own topics and the per-symbol price
`summary` messages (not every `regime` decode: at 50k ticks/s decoding those alone
would take half a core, and the newest price would wait behind a queue), feeds
`DashboardState`, and serves the static page and one
WebSocket per browser (aiohttp). Every browser has its own sender task that
builds a frame from its cursor only once the previous frame has been handed to
the socket: at most one frame pending per browser, at most `frame_rate` frames
a second. A browser whose frame stays unsent for `stall_timeout` seconds (its
socket buffers full: a frozen or vanished tab) is dropped and counted; it
reconnects by itself when it wakes and gets the snapshot again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import zmq
from aiohttp import WSMsgType, web

from streamer.dashboard.state import Cursor, DashboardState
from streamer.errors import ConfigError
from streamer.net import protocol as P
from streamer.net.security import CurveClient
from streamer.net.subscriber import Subscriber

log = logging.getLogger(__name__)

STATIC = Path(str(resources.files("streamer.dashboard") / "static"))
IDLE_FRAME = 0.5  # seconds: with nothing new, a browser still gets the health this often
# Kernel send buffer per browser: a few seconds of frames. Small and fixed (no autotuning up to
# megabytes), so a tab that stops reading fills it soon and its stall is seen and bounded.
SEND_BUFFER = 256 * 1024
YIELD_EVERY = 256  # messages taken in between turns of the other tasks (the browsers, HTTP)

# The page loads nothing from elsewhere; the policy makes the browser refuse it if it tried.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def parse_http(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ConfigError otherwise."""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)|([^:\s]+):(\d+)", text.strip())
    if not m:
        raise ConfigError(f"dashboard.http {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if port > 65535:
        raise ConfigError(f"dashboard.http {text!r}: port must be at most 65535")
    return host, port


@dataclass(eq=False)  # kept in a set, by identity
class _Client:
    ws: web.WebSocketResponse
    request: web.Request
    cursor: Cursor = field(default_factory=Cursor)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last: float = 0.0
    sent: int = 0
    since: float = field(default_factory=time.monotonic)


@dataclass
class DashboardStats:
    browsers: int = 0  # connected now
    joined: int = 0
    dropped: int = 0  # cut off after a stall
    refused: int = 0  # beyond max_browsers
    frames: int = 0
    bytes: int = 0


class DashboardServer:
    """`async with DashboardServer(...) as d: await d.wait()`; `d.url` is the page."""

    def __init__(
        self,
        connect: str,
        http: str = "127.0.0.1:8080",
        *,
        frame_rate: float = 10.0,
        history: int = 600,
        words: int = 20,
        stall_timeout: float = 10.0,
        stale_after: float = 3.0,
        max_browsers: int = 16,
        prices: str = P.SUMMARY,
        curve: CurveClient | None = None,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.endpoint = connect
        self.host, self.port = parse_http(http)
        self.period = 1.0 / frame_rate
        self.stall_timeout = stall_timeout
        self.stale_after = stale_after
        self.max_browsers = max_browsers
        if prices not in (P.SUMMARY, P.REGIME):
            raise ConfigError(f"dashboard.prices: {P.SUMMARY} or {P.REGIME}, not {prices!r}")
        self.state = DashboardState(history=history, words=words, stale_after=stale_after)
        self.sub = Subscriber(
            connect,
            [P.SPEECH, P.STATUS, P.METRICS, P.HEARTBEAT, prices],
            heartbeat_timeout=stale_after,
            curve=curve,
            context=context,
        )
        self.stats = DashboardStats()
        self.clients: set[_Client] = set()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._seen_version = -1

    # -- life cycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> DashboardServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> str:
        """Listen (ConfigError if the address is taken) and start subscribing; the page's URL."""
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/stats", self._stats)
        app.router.add_get("/favicon.ico", self._favicon)
        app.router.add_static("/static/", STATIC, follow_symlinks=False)
        app.on_response_prepare.append(self._headers)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
        except OSError as e:
            sock.close()
            raise ConfigError(
                f"dashboard: cannot listen on {self.host}:{self.port}: {e.strerror or e}"
            ) from None
        port = sock.getsockname()[1]
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        await web.SockSite(runner, sock).start()
        shown = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.url = f"http://{shown}:{port}/"
        self.sub.open()
        self._tasks = [
            asyncio.create_task(self._subscribe(), name="dashboard subscriber"),
            asyncio.create_task(self._clock(), name="dashboard clock"),
        ]
        return self.url

    async def wait(self) -> None:
        """Until the subscriber fails (a bug: it reconnects by itself otherwise)."""
        await asyncio.gather(*self._tasks)

    async def aclose(self) -> None:
        for t in [*self._tasks, *self._senders]:
            t.cancel()
        await asyncio.gather(*self._tasks, *self._senders, return_exceptions=True)
        for c in list(self.clients):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(c.ws.close(), 1.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.sub.aclose()

    # -- ZeroMQ in ------------------------------------------------------------------------------

    async def _subscribe(self) -> None:
        ingest = self.state.ingest
        n = 0
        async for msg in self.sub:
            data = msg.data
            ingest(data)
            if type(data) is P.Speech or type(data) is P.Summary:
                # words and price points go out as they come, not on the clock (which must
                # not wake the browsers again for them: it would spend the frame slot the
                # next summary needs, and that one would wait a whole period)
                self._seen_version = self.state.version
                self._wake_all()
            n += 1
            if n >= YIELD_EVERY:
                # the subscriber returns without awaiting while input is queued: under a
                # steady stream the browsers' tasks would never run
                n = 0
                await asyncio.sleep(0)

    async def _clock(self) -> None:
        """Close the price buckets once a frame period and wake the browsers if anything changed."""
        while True:
            await asyncio.sleep(self.period)
            self.state.close_buckets()
            if self.state.version != self._seen_version:
                self._seen_version = self.state.version
                self._wake_all()

    def _wake_all(self) -> None:
        for c in self.clients:
            c.wake.set()

    def health_extra(self) -> dict[str, Any]:
        missed = self.sub.stats.missed
        return {
            "missed": missed,
            "lost": missed + self.state.health.dropped,
            "browsers": self.stats.browsers,
            "browsers_dropped": self.stats.dropped,
            "reconnects": self.sub.stats.reconnects,
            "invalid": self.sub.stats.invalid,
        }

    # -- HTTP out -------------------------------------------------------------------------------

    async def _headers(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Content-Security-Policy"] = _CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Cache-Control"] = "no-cache"

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def _favicon(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "favicon.svg", headers={"Content-Type": "image/svg+xml"})

    async def _stats(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        return web.json_response(
            {
                "dashboard": vars(self.stats),
                "subscriber": self.sub.stats_dict(),
                "received": self.state.received,
                "ticks": sum(s.ticks for s in self.state.symbols.values()),
                "connected": self.state.connected(now),
                "browsers": [
                    {"frames": c.sent, "seconds": round(now - c.since, 3)} for c in self.clients
                ],
            },
            dumps=P.dumps,
        )

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        if len(self.clients) >= self.max_browsers:
            self.stats.refused += 1
            raise web.HTTPServiceUnavailable(text="too many dashboard browsers")
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=4096)
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        await ws.prepare(request)
        client = _Client(ws, request)
        self.clients.add(client)
        self.stats.browsers = len(self.clients)
        self.stats.joined += 1
        sender = asyncio.create_task(self._send(client), name="dashboard sender")
        self._senders.add(sender)
        try:
            async for msg in ws:  # the page sends nothing we need; read to see it close
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self._senders.discard(sender)
            self.clients.discard(client)
            self.stats.browsers = len(self.clients)
        return ws

    async def _send(self, c: _Client) -> None:
        """One browser's frames: from its cursor, one at a time, at most one per period."""
        loop = asyncio.get_running_loop()
        while not c.ws.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(c.wake.wait(), IDLE_FRAME)
            c.wake.clear()
            wait = c.last + self.period - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = time.monotonic()
            data = P.dumps(self.state.frame(c.cursor, now, self.health_extra()))
            c.last = loop.time()
            try:
                await asyncio.wait_for(c.ws.send_str(data), self.stall_timeout)
            except TimeoutError:
                self.stats.dropped += 1
                log.warning(
                    "dashboard: a browser read nothing for %g s; dropped it", self.stall_timeout
                )
                transport = c.request.transport
                if transport is not None:
                    transport.abort()
                return
            except (ConnectionError, RuntimeError):
                return  # the browser went away; its handler cleans up
            c.sent += 1
            self.stats.frames += 1
            self.stats.bytes += len(data)


__all__ = ["STATIC", "DashboardServer", "DashboardStats", "parse_http"]

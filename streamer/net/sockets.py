"""Small pieces every socket owner here shares: endpoint checks, contexts, and waiting.

Why plain (synchronous) pyzmq sockets, woken by the event loop: the hot paths
(tick feed in, decodes out) move tens of thousands of messages a second, and a
`zmq.asyncio` send or receive costs a future per call. Here the loop only tells
us that a socket *may* have input (its file descriptor became readable); the
owner then drains everything queued with non-blocking calls, in one go. ZeroMQ's
descriptor is edge-like: it signals that the socket's state changed, and reading
`zmq.EVENTS` is what re-arms it, so `SocketWaiter.wait` always looks at
`EVENTS` before it sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
from typing import Any

import zmq

from streamer.errors import ConfigError

_ENDPOINT = re.compile(r"^(tcp|ipc|inproc)://\S+$")


def check_endpoint(endpoint: str, what: str = "endpoint") -> str:
    """The endpoint itself if it is tcp://, ipc:// or inproc://; ConfigError otherwise."""
    if not isinstance(endpoint, str) or not _ENDPOINT.match(endpoint):
        raise ConfigError(
            f"{what} {endpoint!r}: expected tcp://HOST:PORT, ipc://PATH or inproc://NAME"
        )
    return endpoint


def bind(sock: zmq.Socket[Any], endpoint: str, what: str = "endpoint") -> str:
    """Bind, turning ZeroMQ's errors into one ConfigError line; returns the actual endpoint."""
    check_endpoint(endpoint, what)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise ConfigError(f"cannot bind {what} {endpoint}: {e}") from None
    last = sock.getsockopt_string(zmq.LAST_ENDPOINT)
    return last or endpoint


def connect(sock: zmq.Socket[Any], endpoint: str, what: str = "endpoint") -> None:
    """Connect, turning ZeroMQ's errors into one ConfigError line."""
    check_endpoint(endpoint, what)
    try:
        sock.connect(endpoint)
    except zmq.ZMQError as e:
        raise ConfigError(f"cannot connect to {what} {endpoint}: {e}") from None


def sync_socket(ctx: zmq.Context[Any], kind: int) -> zmq.Socket[Any]:
    """A synchronous socket, even on a `zmq.asyncio.Context` (see the module docstring)."""
    sock: zmq.Socket[Any] = ctx.socket(kind, socket_class=zmq.Socket)
    sock.linger = 0
    return sock


def derived_endpoint(endpoint: str, suffix: str = "snapshot") -> str:
    """The snapshot endpoint that goes with a publish endpoint: TCP port + 1, or a sibling path.

    A wildcard port (``tcp://127.0.0.1:*``) gives a wildcard: the real one is
    announced in heartbeats and status messages.
    """
    m = re.match(r"^tcp://(.+):(\d+|\*)$", endpoint)
    if m:
        host, port = m.groups()
        return f"tcp://{host}:{'*' if port == '*' else int(port) + 1}"
    if endpoint.startswith(("ipc://", "inproc://")):
        return f"{endpoint}.{suffix}"
    raise ConfigError(f"cannot derive a {suffix} endpoint from {endpoint!r}; give it explicitly")


def reachable(announced: str, used: str) -> str:
    """`announced` with a wildcard bind address replaced by the host in `used` (what we dialled).

    A server bound on ``tcp://0.0.0.0:5557`` announces that; a client that
    reached its publisher at ``tcp://10.0.0.5:5556`` must dial 10.0.0.5.
    """
    m = re.match(r"^tcp://(0\.0\.0\.0|\*|\[::\]|::):(\d+)$", announced)
    u = re.match(r"^tcp://(.+):(\d+)$", used)
    if m and u:
        return f"tcp://{u.group(1)}:{m.group(2)}"
    return announced


class SocketWaiter:
    """Await "this socket may have input" on the running loop, without a future per message."""

    def __init__(self, sock: zmq.Socket[Any]) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._fd: int = sock.getsockopt(zmq.FD)  # type: ignore[assignment]  # FD is an int
        self._loop.add_reader(self._fd, self._event.set)
        self._closed = False
        self._poked = False

    def ready(self) -> bool:
        """True if a receive would succeed now (reading EVENTS also re-arms the descriptor)."""
        events: int = self.sock.getsockopt(zmq.EVENTS)  # type: ignore[assignment]  # an int
        return bool(events & zmq.POLLIN)

    async def wait(self, timeout: float | None) -> bool:
        """Wait for input (True), or for `timeout` seconds or a `poke` (False).

        The descriptor also wakes us for things that are not input (a peer
        connecting, room to send): those are looked at and waited through.
        """
        if self.ready():
            return True
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            self._event.clear()
            if self.ready():
                return True
            if self._poked:
                self._poked = False
                return False
            if deadline is None:
                await self._event.wait()
                continue
            left = deadline - loop.time()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._event.wait()

    def unpoke(self) -> None:
        """Forget a poke nobody waited for."""
        self._poked = False

    def poke(self) -> None:
        """Make a waiter return (False unless input is there too): stop requests and the like."""
        self._poked = True
        self._event.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._fd)


async def term_context(ctx: zmq.Context[Any], timeout: float = 5.0) -> bool:
    """Terminate a context we own without blocking the loop; False if it did not end in time."""
    done = threading.Event()

    def _term() -> None:
        ctx.term()
        done.set()

    t = threading.Thread(target=_term, name="zmq-term", daemon=True)
    t.start()
    await asyncio.to_thread(done.wait, timeout)
    return done.is_set()


__all__ = [
    "SocketWaiter",
    "bind",
    "check_endpoint",
    "connect",
    "derived_endpoint",
    "reachable",
    "sync_socket",
    "term_context",
]

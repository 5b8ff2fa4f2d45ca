"""Fixtures for the ZeroMQ tests: a context that must terminate, endpoints, messages, schemas.

Habits from pyzmq's own tests: every socket closes with linger=0 (the context's
default here), ports are random (``tcp://127.0.0.1:*``, or ipc paths in a temp
folder for subprocesses), and a context that does not terminate within a few
seconds, because a socket was left open, fails the test.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import zmq

from streamer.messages import Recognition, RegimeDecode, WordEvent
from streamer.net import protocol as P

TERM_TIMEOUT = 5.0


@pytest.fixture
def zctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context that must terminate once the test is over (no leaked sockets)."""
    ctx: zmq.Context[Any] = zmq.Context()
    ctx.linger = 0
    yield ctx
    done = threading.Event()

    def term() -> None:
        ctx.term()
        done.set()

    threading.Thread(target=term, daemon=True).start()
    if not done.wait(TERM_TIMEOUT):
        pytest.fail(
            f"the ZeroMQ context did not terminate within {TERM_TIMEOUT} s: a socket was left open"
        )


@pytest.fixture
def ipc(tmp_path: Path) -> Callable[[str], str]:
    """ipc:// endpoints in the test's temp folder (no port races for subprocesses)."""
    return lambda name: f"ipc://{tmp_path / name}"


@pytest.fixture(scope="session")
def validators() -> dict[str, jsonschema.protocols.Validator]:
    """A jsonschema validator per message kind, from docs/schemas/*.json."""
    root = Path(__file__).resolve().parents[2] / "docs" / "schemas"
    import json

    out = {}
    for name in P.all_schemas():
        schema = json.loads((root / f"{name}.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        out[name] = jsonschema.Draft202012Validator(schema)
    return out


def validate_message(validators: dict[str, Any], topic: str, body: dict[str, Any]) -> None:
    """Check a received message against its JSON Schema (jsonschema, not the fast checker)."""
    validators[P.kind_of(topic)].validate(body)
    assert P.problem(P.kind_of(topic), body) is None  # the fast check agrees


def regime(
    symbol: str = "BTC-USD",
    t: float = 1.7e9,
    price: float = 100.0,
    state: int = 1,
    smoothed: bool = False,
) -> RegimeDecode:
    return RegimeDecode(
        symbol,
        t,
        price,
        state,
        ("calm", "normal", "turbulent")[state],
        (0.1, 0.7, 0.2),
        False,
        0 if smoothed else None,
        t - 1.0 if smoothed else None,
    )


def word(stream: str = "a.wav", index: int = 0, label: str | None = "apple") -> WordEvent:
    rec = Recognition(label, 0.9 if label else 0.2, (("apple", -10.0), ("kiwi", -12.5)), "apple")
    start = 0.5 * index
    return WordEvent(stream, index, start, start + 0.4, rec, closed_at=start + 0.6)


async def recv_all(
    sock: zmq.Socket[Any], timeout: float = 1.0, until: int | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """What a raw SUB receives until `timeout` passes without a data message (or `until` of
    them); heartbeats and metrics, which never stop, do not extend the wait."""
    out: list[tuple[str, dict[str, Any]]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    cap = loop.time() + 10.0
    while loop.time() < min(end, cap) and (until is None or len(out) < until):
        try:
            t, b = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            await asyncio.sleep(0.005)
            continue
        out.append((t.decode(), P.loads(b)))
        if P.kind_of(t.decode()) not in (P.HEARTBEAT, P.METRICS):
            end = loop.time() + timeout
    return out


async def dial_feed(producer: zmq.Socket[Any], feed: str) -> None:
    """Connect an XPUB `producer` to a service's tick feed and wait for its subscription.

    XPUB_NODROP: a burst waits at the high-water mark rather than vanish. The
    service binds its feed once its publisher has its subscribers, so this can
    take many seconds on a loaded machine.
    """
    producer.setsockopt(zmq.XPUB_NODROP, 1)
    producer.connect(feed)
    for _ in range(3000):
        if producer.poll(0):
            break
        await asyncio.sleep(0.02)
    assert producer.recv() == b"\x01tick", "the service never subscribed to its feed"


def sub_socket(ctx: zmq.Context[Any], endpoint: str, *topics: str) -> zmq.Socket[Any]:
    s = ctx.socket(zmq.SUB)
    s.linger = 0
    for t in topics or ("",):
        s.subscribe(t.encode())
    s.connect(endpoint)
    return s

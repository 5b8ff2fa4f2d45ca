"""CURVE: `streamer keys`, and an allow-list that lets in exactly the listed clients."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import zmq

from streamer.cli import main
from streamer.errors import ConfigError
from streamer.net.publisher import Publisher
from streamer.net.security import CurveClient, CurveServer, create_keypair
from streamer.net.subscriber import Subscriber

from .conftest import regime, sub_socket


@pytest.fixture(autouse=True)
def _curve_available() -> None:
    """Under CI a libzmq without CURVE is a failure (the feature is shipped); elsewhere a skip."""
    if not zmq.has("curve"):
        msg = "this libzmq was built without CURVE"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Server keys, two client key pairs, and an allow-list holding only `alice`'s public key."""
    d = tmp_path / "keys"
    create_keypair(d, "server")
    create_keypair(d, "alice")
    create_keypair(d, "mallory")
    allow = tmp_path / "allowed"
    allow.mkdir()
    shutil.copy(d / "alice.key", allow / "alice.key")
    return {"dir": d, "allow": allow}


def test_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", str(tmp_path), "--name", "svc"]) == 0
    out = capsys.readouterr().out
    assert "svc.key" in out and "svc.key_secret" in out
    assert (tmp_path / "svc.key").exists()
    assert (tmp_path / "svc.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", str(tmp_path), "--name", "svc"]) == 2  # refuses to overwrite
    assert "--force" in capsys.readouterr().err
    assert main(["keys", str(tmp_path), "--name", "svc", "--force"]) == 0


def test_bad_key_files(keys: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no secret key"):
        CurveServer(keys["dir"] / "server.key", keys["allow"])
    with pytest.raises(ConfigError, match="does not exist"):
        CurveServer(keys["dir"] / "server.key_secret", tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a readable certificate"):
        CurveClient(tmp_path / "missing", keys["dir"] / "server.key")


async def test_only_listed_clients_receive(zctx: zmq.Context[Any], keys: dict[str, Path]) -> None:
    d = keys["dir"]
    server = CurveServer(d / "server.key_secret", keys["allow"])
    alice = CurveClient(d / "alice.key_secret", d / "server.key")
    mallory = CurveClient(d / "mallory.key_secret", d / "server.key")
    async with Publisher("tcp://127.0.0.1:*", context=zctx, curve=server,
                         metrics_interval=0) as pub:  # fmt: skip
        # an unlisted client, with keys that are valid but not in the allow-list
        intruder = zctx.socket(zmq.SUB)
        mallory.apply(intruder)
        intruder.subscribe(b"")
        intruder.connect(pub.endpoint)
        plain = sub_socket(zctx, pub.endpoint)  # and one without CURVE at all
        try:
            async with Subscriber(pub.endpoint, ["regime"], context=zctx, curve=alice) as sub:
                for i in range(5):
                    pub.publish_many([regime("BTC", 1.7e9 + i)])
                    await asyncio.sleep(0.05)
                m = await asyncio.wait_for(sub.recv(), 5)  # the snapshot came through too
                assert m.topic == "regime.BTC" and m.snapshot
                assert pub.subscribers == 1
            await asyncio.sleep(0.3)
            assert intruder.poll(0) == 0 and plain.poll(0) == 0  # nothing, not even heartbeats
        finally:
            intruder.close()
            plain.close()

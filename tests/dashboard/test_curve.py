"""The dashboard subscribes with its own CURVE keys when the service uses CURVE."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest
import zmq

from streamer.config import Config, DashboardConfig, SecurityConfig
from streamer.dashboard import dashboard_for
from streamer.errors import ConfigError
from streamer.messages import RegimeDecode
from streamer.net.publisher import Publisher
from streamer.net.security import CurveServer, create_keypair


@pytest.fixture(autouse=True)
def _curve_available() -> None:
    if not zmq.has("curve"):
        msg = "this libzmq was built without CURVE"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)


async def test_the_dashboard_uses_its_own_key_in_the_allow_list(tmp_path: Path) -> None:
    d, allow = tmp_path / "keys", tmp_path / "allowed"
    create_keypair(d, "server")
    create_keypair(d, "dash")
    allow.mkdir()
    shutil.copy(d / "dash.key", allow / "dash.key")
    security = SecurityConfig(curve_secret=d / "server.key_secret", curve_allow=allow)
    with pytest.raises(ConfigError, match="curve_secret"):  # CURVE on, no key of its own
        dashboard_for(Config(security=security), http="127.0.0.1:0")
    config = Config(
        security=security,
        dashboard=DashboardConfig(http="127.0.0.1:0", curve_secret=d / "dash.key_secret"),
    )
    server = CurveServer(d / "server.key_secret", allow)
    async with Publisher(
        "tcp://127.0.0.1:*", curve=server, heartbeat=0.2, metrics_interval=0
    ) as pub:
        pub.publish(RegimeDecode("BTC", 1.7e9, 100.0, 1, "turbulent", (0.3, 0.7), False))
        # the service's public key comes from its secret certificate, as `serve --http` does
        async with dashboard_for(config, connect=pub.endpoint) as dash:
            for _ in range(100):
                if "BTC" in dash.state.symbols and dash.state.connected(time.monotonic()):
                    break
                await asyncio.sleep(0.05)
            assert dash.state.symbols["BTC"].regime == "turbulent"  # from the join snapshot
            assert dash.sub.stats.snapshots == 1

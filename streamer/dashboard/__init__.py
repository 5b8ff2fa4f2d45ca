"""The live web dashboard: words, regimes and health in a browser (`streamer dashboard`)."""

from __future__ import annotations

from typing import Any

import zmq

from streamer.config import Config
from streamer.dashboard.server import DashboardServer
from streamer.dashboard.state import DashboardState
from streamer.errors import ConfigError
from streamer.net.security import CurveClient


def dashboard_for(
    config: Config,
    *,
    connect: str | None = None,
    http: str | None = None,
    context: zmq.Context[Any] | None = None,
) -> DashboardServer:
    """The dashboard the `[dashboard]` settings describe (CURVE keys when `[security]` is on).

    `connect` and `http` override the settings (`streamer serve` passes its own
    publisher's endpoint).
    """
    d = config.dashboard
    server_key = d.curve_server or config.security.curve_secret  # a secret cert holds the public
    curve = None
    if d.curve_secret is not None or config.security.curve_secret is not None:
        if d.curve_secret is None or server_key is None:
            raise ConfigError(
                "dashboard: CURVE needs the dashboard's own secret certificate "
                "([dashboard] curve_secret, or --curve-secret FILE; its public key in the "
                "service's allow-list) and the service's public key (--curve-server FILE)"
            )
        curve = CurveClient(d.curve_secret, server_key)
    return DashboardServer(
        connect or d.connect or config.publisher.endpoint,
        http or d.http_or_default(),
        frame_rate=d.frame_rate,
        history=d.chart_points,
        words=d.words,
        stall_timeout=d.stall_timeout,
        stale_after=d.stale_after,
        max_browsers=d.max_browsers,
        prices=d.prices,
        curve=curve,
        context=context,
    )


__all__ = ["DashboardServer", "DashboardState", "dashboard_for"]

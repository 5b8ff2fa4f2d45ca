"""`streamer dashboard --connect ENDPOINT [--http HOST:PORT]`: the live web dashboard.

Subscribes to a streamer publisher like any client (the snapshot on join, so a
page opened late shows the current state at once) and serves the page at
``http://HOST:PORT/`` (127.0.0.1:8080 unless told otherwise). Settings come
from the `[dashboard]` table of a `--config` file too (docs/configuration.md),
flags winning. Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from streamer.commands.options import DASHBOARD_GROUPS, add_config_arguments, config_from_args
from streamer.config import DEFAULT_DASHBOARD_HTTP
from streamer.dashboard import dashboard_for
from streamer.net.protocol import DEFAULT_PUB

NAME = "dashboard"
HELP = "a live web page of the words, regimes and health a streamer publisher sends"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, DASHBOARD_GROUPS)
    p.epilog = (
        f"Subscribes to {DEFAULT_PUB} unless --connect says otherwise; "
        f"the page is at http://{DEFAULT_DASHBOARD_HTTP}/ unless --http says otherwise."
    )


async def serve_dashboard(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for s in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(s, stop.set)
    async with dashboard_for(config) as dash:
        print(f"streamer {NAME}: {dash.url} (from {dash.endpoint})", file=sys.stderr, flush=True)
        done = asyncio.ensure_future(dash.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({done, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if done.done():
            done.result()
        else:
            done.cancel()
    return 0


def run(args: argparse.Namespace) -> int:
    return asyncio.run(serve_dashboard(args))

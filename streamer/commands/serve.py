"""`streamer serve [AUDIO...] [--mic] [--ticks CSV] [--tick-feed ENDPOINT] [--pub ENDPOINT]`.

Runs until every finite input is done (or for good with a live tick feed, or
`--stay`), publishing words, regimes, heartbeats, status and metrics as in
docs/protocol.md. The flags are `streamer replay`'s plus the microphone, tick
feed and service ones (`streamer.commands.options`); any setting can also come
from a TOML file given with `--config` (docs/configuration.md), flags winning.
SIGINT or SIGTERM drains and exits 0 within `--drain-timeout` seconds plus the
publisher's linger (2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from streamer.commands.options import SERVE_GROUPS, add_config_arguments, config_from_args
from streamer.net.protocol import DEFAULT_PUB
from streamer.service import FORCED, Service

NAME = "serve"
HELP = "run the service: audio and ticks in, words and regimes out over ZeroMQ"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, SERVE_GROUPS)
    p.epilog = f"Publishes on {DEFAULT_PUB} unless --pub (or [publisher] endpoint) says otherwise."


def run(args: argparse.Namespace) -> int:
    rc = asyncio.run(Service(config_from_args(args), name=NAME).run())
    if rc == FORCED:
        # a second signal: everything is closed; leave without the interpreter's teardown
        # (unloading numpy, scipy and the rest takes most of a second on a busy machine)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc

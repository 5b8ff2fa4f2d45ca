"""`streamer serve [AUDIO...] [--mic] [--ticks CSV] [--tick-feed ENDPOINT] [--pub ENDPOINT]`.

Runs until every finite input is done (or for good with a live tick feed, or
`--stay`), publishing words, regimes, heartbeats, status and metrics as in
docs/protocol.md. The flags are `streamer replay`'s (taken from it, so they
cannot drift apart) plus the publishing, tick feed and service ones; any of
them can come from a TOML file given with `--config` (see `streamer.service`).
SIGINT or SIGTERM drains and exits 0 within `--drain-timeout` seconds plus the
publisher's linger (2 s).
"""

from __future__ import annotations

import argparse
import asyncio

from streamer.audio.sources import add_mic_arguments
from streamer.commands import replay
from streamer.net.feed import add_feed_arguments
from streamer.net.protocol import DEFAULT_PUB
from streamer.net.publisher import add_pub_arguments
from streamer.service import DEFAULT_DRAIN_TIMEOUT, mark_defaults, resolve_config, serve

NAME = "serve"
HELP = "run the service: audio and ticks in, words and regimes out over ZeroMQ"


def add_arguments(p: argparse.ArgumentParser) -> None:
    replay.add_arguments(p)
    add_mic_arguments(p)
    add_pub_arguments(p)
    add_feed_arguments(p)
    g = p.add_argument_group("service")
    g.add_argument("--config", metavar="TOML", help="settings file; flags given here win over it")
    g.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT,
        metavar="S",
        help=f"on SIGINT/SIGTERM, seconds allowed to publish what is queued "
        f"(default {DEFAULT_DRAIN_TIMEOUT:g})",
    )
    g.add_argument(
        "--watch-bank",
        type=float,
        default=1.0,
        metavar="S",
        help="check the bank file every S seconds and swap a changed one in (after "
        "`streamer enroll`) without dropping audio; 0 = never (default 1)",
    )
    g.add_argument(
        "--stay",
        action="store_true",
        help="keep serving heartbeats and snapshots after the inputs end, until a signal",
    )
    p.epilog = f"Publishes on {DEFAULT_PUB} unless --pub says otherwise."
    mark_defaults(p)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"streamer {NAME}")
    add_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    resolve_config(args, _parser())
    return asyncio.run(serve(args))

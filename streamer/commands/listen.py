"""`streamer listen ENDPOINT [--topic T]...`: what a publisher sends, as JSON lines on stdout.

Each line is ``{"topic": ..., ["from_snapshot": true,] ["lost_before": n,] ...body}``: the
join snapshot first (the current state: every symbol's regime, each stream's
last word, the service status), then live messages. Heartbeats are shown only
when asked for (``--topic heartbeat``). Lost messages are reported on stderr
as they are noticed; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from streamer.commands.options import add_curve_client_arguments, curve_client_from_args
from streamer.net.subscriber import Subscriber

NAME = "listen"
HELP = "print what a streamer publisher sends, as JSON lines"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "endpoint", metavar="ENDPOINT", help="publisher endpoint, e.g. tcp://127.0.0.1:5556"
    )
    p.add_argument(
        "--topic",
        action="append",
        metavar="T",
        help="topic prefix (repeatable): speech, regime, regime.BTC-USD, status, metrics, "
        "heartbeat (default: all but heartbeats)",
    )
    p.add_argument("--no-snapshot", action="store_true", help="skip the join snapshot")
    p.add_argument(
        "--no-check", action="store_true", help="do not check messages against the schemas"
    )
    p.add_argument("--count", type=int, default=0, metavar="N", help="exit after N messages")
    p.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=3.0,
        metavar="S",
        help="silence that means the publisher is gone (default 3)",
    )
    p.add_argument(
        "--exit-on-silence",
        action="store_true",
        help="exit 2 when the publisher goes silent instead of reconnecting",
    )
    add_curve_client_arguments(p)


async def listen(args: argparse.Namespace) -> int:
    topics = args.topic or ["speech", "regime", "status", "metrics"]
    out = sys.stdout
    async with Subscriber(
        args.endpoint,
        topics,
        snapshot=not args.no_snapshot,
        check=not args.no_check,
        heartbeat_timeout=args.heartbeat_timeout,
        reconnect=not args.exit_on_silence,
        curve=curve_client_from_args(args),
    ) as sub:
        n = 0
        missed = 0
        async for msg in sub:
            out.write(json.dumps(msg.to_json(), separators=(",", ":")) + "\n")
            out.flush()
            if sub.stats.missed != missed:
                print(
                    f"streamer {NAME}: {sub.stats.missed - missed} message(s) lost",
                    file=sys.stderr,
                )
                missed = sub.stats.missed
            n += 1
            if args.count and n >= args.count:
                break
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(listen(args))
    except KeyboardInterrupt:
        return 0

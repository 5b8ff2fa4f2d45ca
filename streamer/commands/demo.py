"""`streamer demo`: the service end to end, from nothing, with its word accuracy last.

Speaks fruit words with voices the bank never trained on, replays them with a
price series through `streamer serve`'s own service, subscribes over ZeroMQ
on loopback and prints each word beside the truth, regime changes, a regime
summary and, as the last line on stdout, the word accuracy. See `streamer.demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from streamer.demo import DemoOptions, run_demo
from streamer.errors import ConfigError

NAME = "demo"
HELP = "speak, serve, subscribe and score: the whole service on this machine"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--words", type=int, default=42, help="words to speak (default 42)")
    p.add_argument(
        "--speed",
        type=float,
        default=4.0,
        help="X times real time (default 4); 0 = as fast as the machine goes",
    )
    p.add_argument("--seed", type=int, default=0, help="which words, voices and prices (default 0)")
    p.add_argument(
        "--bank", default=None, help="bank file (default: the shipped models/fruits.npz)"
    )
    p.add_argument(
        "--prices",
        default=None,
        metavar="CSV|none",
        help="a price CSV to replay (re-timed to the words) instead of the synthetic series; "
        "'none' for words only",
    )
    p.add_argument("--ticks", type=int, default=800, help="prices to replay (default 800)")
    p.add_argument("--workers", type=int, default=1, help="recognition workers (default 1)")


def run(args: argparse.Namespace) -> int:
    if args.words < 1:
        raise ConfigError(f"--words {args.words}: need at least one")
    if not args.speed >= 0:
        raise ConfigError(f"--speed must be >= 0, not {args.speed}")
    if args.ticks < 100:
        raise ConfigError(f"--ticks {args.ticks}: need at least 100 for the regime model")
    opts = DemoOptions(
        words=args.words,
        speed=args.speed,
        seed=args.seed,
        bank=args.bank,
        prices=args.prices,
        ticks=args.ticks,
        workers=args.workers,
    )
    if args.verbose == 0:  # "waiting for 1 subscriber": the demo's own, not news
        logging.getLogger("streamer.net.publisher").setLevel(logging.ERROR)
    asyncio.run(run_demo(opts))
    return 0

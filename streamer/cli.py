"""The `streamer` command: one subcommand per module in `streamer/commands/`.

Each command module defines `NAME`, `HELP`, `add_arguments(parser)` and
`run(args) -> int`. User errors (StreamerError) print one line on stderr and
exit 2; nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from streamer import __version__
from streamer.errors import StreamerError

COMMANDS = (
    "train",
    "recognize",
    "evaluate",
    "replay",
    "regimes",
    "serve",
    "listen",
    "dashboard",
    "keys",
    "devices",
    "enroll",
    "adapt",
    "demo",
    "config",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Every command's parser, or with `only` just that one's (imports only its module)."""
    parser = argparse.ArgumentParser(
        prog="streamer",
        description="Streaming recognizer: words from audio, regimes from prices, over ZeroMQ.",
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.set_defaults(run_command=None)  # no COMMAND given: help
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS if only is None else (only,):
        try:
            mod = importlib.import_module(f"streamer.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"streamer.commands.{name}":
                continue  # not built yet
            raise
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(run_command=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `streamer COMMAND ...` imports that command alone: `streamer dashboard` need not load
    # the recognizer and the HMM stack of the others (seconds on a slow machine)
    first = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(first if first in COMMANDS else None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # hmmlearn reports EM convergence through logging; it is chatter unless asked for (-vv)
    logging.getLogger("hmmlearn").setLevel(logging.DEBUG if args.verbose >= 2 else logging.ERROR)
    if args.run_command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run_command(args) or 0)
    except StreamerError as e:
        print(f"streamer {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0

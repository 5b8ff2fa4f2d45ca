"""`streamer devices`: the PortAudio inputs `--device` can name.

One line per input: index, name, host API, channels, default rate; `*` marks
the default. No PortAudio, or no input at all, is a one-line error (exit 2)
that says what to install or start, since that is what a user can act on.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from streamer.audio.sources import find_input_device, input_devices
from streamer.errors import DeviceError

NAME = "devices"
HELP = "list the audio inputs (PortAudio) that --device can name"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument(
        "--check",
        metavar="D",
        default=None,
        help="only check that input D (index or name) exists; print the one it resolves to",
    )


def run(args: argparse.Namespace) -> int:
    if args.check is not None:
        devices = [find_input_device(args.check)]
    else:
        devices = input_devices()
        if not devices:
            raise DeviceError(
                "no audio input devices: PortAudio found none (no sound card, or no sound server "
                "such as PulseAudio running)"
            )
    for d in devices:
        if args.json:
            print(json.dumps(asdict(d)))
        else:
            mark = "*" if d.default else " "
            print(
                f"{mark} {d.index:>3}  {d.name:<32} {d.hostapi:<6} {d.channels:>3} in  "
                f"{d.default_rate:>7.0f} Hz"
            )
    sys.stdout.flush()
    return 0

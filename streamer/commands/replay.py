"""`streamer replay [AUDIO...] [--ticks CSV] [--speed X] [--pub ENDPOINT]`: recordings, as live.

The service itself (`streamer.service.Service`, the code behind `streamer serve`)
with a JSON-lines sink instead of a publisher: each WAV becomes a stream,
replayed side by side as live microphones would be, cut into utterances and
recognised off the event loop; price CSVs replay beside them into their regime
trackers. One JSON line per message goes to stdout, each topic numbered by its
own `seq`: ``{"topic": "speech", "seq": n, ...WordEvent.to_wire()}``. With
``--pub`` it publishes over ZeroMQ instead, exactly as `streamer serve` does.
The command exits once every input is done and every event is out: 0, or 2 if
any input failed (one line on stderr each; the others go on).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from streamer.commands.options import REPLAY_GROUPS, add_config_arguments, config_from_args, given
from streamer.errors import ConfigError
from streamer.service import Service
from streamer.sinks import JsonLinesSink

NAME = "replay"
HELP = "replay recordings (and price ticks) as live streams; JSON lines of events on stdout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_arguments(p, REPLAY_GROUPS)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if not config.audio.files and not config.ticks.files:
        raise ConfigError("nothing to replay: give AUDIO files or --ticks")
    # JSON lines unless --pub asks for the publisher (the file's [publisher] then applies)
    sink = (
        None
        if given(args, "publisher.endpoint")
        else JsonLinesSink(sys.stdout, latency=config.service.latency)
    )
    return asyncio.run(Service(config, sink=sink, name=NAME).run())

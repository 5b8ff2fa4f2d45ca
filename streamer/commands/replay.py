"""`streamer replay [AUDIO...] [--bank BANK] [--speed X]`: recordings replayed as live streams.

Each WAV becomes a stream, replayed side by side with the others as live
microphones would be, cut into utterances by the VAD segmenter and recognised
off the event loop; one JSON line per utterance goes to stdout:
`{"topic": "speech", "seq": n, ...WordEvent.to_wire()}`. Other producers (the
price-tick replay, when `streamer.market.stream` is installed) run
concurrently into the same emitter, each topic with its own `seq`. The command
exits once every input is done and every event is out: 0, or 2 if any input
failed (one line on stderr each; the others go on).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TextIO

from streamer.audio.segmenter import SegmenterConfig
from streamer.audio.sources import WavSource
from streamer.errors import ConfigError, StreamerError
from streamer.net.publisher import add_pub_arguments, publishing
from streamer.paths import default_bank_path
from streamer.speech.pipeline import run_stream
from streamer.speech.recognizer import KINDS, RecognizerPool, bank_factory

try:  # the price-tick replay (regime issue); audio works without it
    import streamer.market.stream as _ticks
except ImportError:  # pragma: no cover - depends on what is installed
    _ticks = None  # type: ignore[assignment]

NAME = "replay"
HELP = "replay recordings (and price ticks) as live streams; JSON lines of events on stdout"

log = logging.getLogger(__name__)

# VAD flags: (flag, SegmenterConfig field, type, help)
_VAD_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--vad-mode", "aggressiveness", int, "webrtcvad aggressiveness 0..3"),
    ("--vad-frame-ms", "frame_ms", int, "VAD frame: 10, 20 or 30 ms"),
    ("--vad-rate", "rate", int, "rate the VAD runs at: 8000, 16000, 32000 or 48000"),
    ("--start-ms", "start_ms", int, "ring buffer of the start trigger"),
    ("--start-ratio", "start_ratio", float, "share of voiced frames in it that starts speech"),
    ("--pre-roll-ms", "pre_roll_ms", int, "audio kept before speech starts"),
    ("--post-roll-ms", "post_roll_ms", int, "audio kept after speech ends"),
    ("--hangover-ms", "hangover_ms", int, "trailing quiet that ends a clear utterance"),
    ("--noisy-hangover-ms", "noisy_hangover_ms", int, "...and one close to the noise"),
    ("--min-ms", "min_ms", int, "shorter speech is dropped"),
    ("--max-ms", "max_ms", int, "longer speech is split"),
    ("--on-db", "on_db", float, "dB over the noise level that starts speech"),
    ("--off-db", "off_db", float, "dB over the noise level that continues it"),
    ("--drop-db", "drop_db", float, "speech ends this many dB under the utterance's peak"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("audio", nargs="*", metavar="AUDIO", help="WAV files, one stream each")
    p.add_argument("--bank", help="bank file (default: the shipped models/fruits.npz)")
    p.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="X times real time (default 1); 0 = as fast as possible",
    )
    p.add_argument("--workers", type=int, default=1, help="recognition workers (default 1)")
    p.add_argument(
        "--worker-kind",
        choices=KINDS,
        default="process",
        help="process (default), thread, or inline (in the event loop)",
    )
    p.add_argument(
        "--max-pending",
        type=int,
        default=None,
        help="utterances in recognition at once before the replay waits (default 2*workers+2)",
    )
    p.add_argument(
        "--chunk-ms",
        type=float,
        default=None,
        help="audio block size (default 20 ms; 1 s at --speed 0); results do not depend on it",
    )
    p.add_argument(
        "--latency",
        action="store_true",
        help="add delay_ms (wall ms from the utterance's close to its event) to each line",
    )
    p.add_argument("--stats", action="store_true", help="print a summary on stderr at the end")
    g = p.add_argument_group("voice activity detection")
    for flag, name, typ, text in _VAD_FLAGS:
        default = getattr(SegmenterConfig(), name)
        g.add_argument(flag, dest=f"vad_{name}", type=typ, default=None, help=f"{text} ({default})")
    g.add_argument(
        "--vad",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other segmenter setting (see streamer.audio.segmenter.SegmenterConfig)",
    )
    if _ticks is not None:
        _ticks.add_tick_arguments(p)
    add_pub_arguments(p)


def segmenter_config(args: argparse.Namespace) -> SegmenterConfig:
    """The segmenter settings from the VAD flags (ConfigError for nonsense)."""
    fields = {f.name: f for f in dataclasses.fields(SegmenterConfig)}
    kw: dict[str, Any] = {}
    for _, name, _, _ in _VAD_FLAGS:
        v = getattr(args, f"vad_{name}", None)
        if v is not None:
            kw[name] = v
    for item in getattr(args, "vad", []) or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise ConfigError(
                f"--vad {item!r}: expected KEY=VALUE with KEY one of {sorted(fields)}"
            )
        default = getattr(SegmenterConfig(), key)
        try:
            kw[key] = type(default)(value)
        except ValueError:
            raise ConfigError(
                f"--vad {item!r}: {value!r} is not a {type(default).__name__}"
            ) from None
    return SegmenterConfig(**kw)


class Emitter:
    """One output for every producer: JSON lines, each topic numbered by its own `seq`."""

    def __init__(self, out: TextIO, latency: bool = False) -> None:
        self.out = out
        self.latency = latency
        self.seq: Counter[str] = Counter()

    def __call__(self, msg: Any, delay: float | None = None) -> None:
        topic = msg.topic
        n = self.seq[topic]
        self.seq[topic] = n + 1
        line = {"topic": topic, "seq": n, **msg.to_wire()}
        if self.latency and delay is not None:
            line["delay_ms"] = round(delay * 1000.0, 3)
        self.out.write(json.dumps(line, separators=(",", ":")) + "\n")
        self.out.flush()


def _error(msg: str) -> None:
    print(f"streamer {NAME}: error: {msg}", file=sys.stderr)


async def replay(
    args: argparse.Namespace,
    emit: Emitter,
    extra: list[Callable[[], Awaitable[Any]]] | None = None,
) -> int:
    """Run every producer concurrently into `emit`; the number of inputs that failed."""
    speed = float(args.speed)
    if not speed >= 0:
        raise ConfigError(f"--speed must be >= 0, not {args.speed}")
    audio: list[str] = list(args.audio or [])
    ticks = _ticks is not None and bool(getattr(args, "ticks", None))
    if not audio and not ticks and not extra:
        raise ConfigError("nothing to replay: give AUDIO files" + (" or --ticks" if _ticks else ""))
    failed = 0
    producers: list[Awaitable[Any]] = [f() for f in extra or []]
    pool: RecognizerPool | None = None
    stats: list[Any] = []
    if audio:
        cfg = segmenter_config(args)
        bank_path = Path(args.bank) if args.bank else default_bank_path()
        from streamer.speech.bank import WordBank

        bank = WordBank.load(bank_path)  # a bad bank is one clear error, before anything runs
        chunk_ms = args.chunk_ms or (1000.0 if speed == 0 else 20.0)
        sources = []
        for a in audio:
            try:
                sources.append(
                    WavSource(a, stream=a, rate=cfg.rate, chunk_ms=chunk_ms, speed=speed)
                )
            except StreamerError as e:
                failed += 1
                _error(str(e))
        pool = RecognizerPool(
            bank_factory(bank_path),
            workers=args.workers,
            kind=args.worker_kind,
            max_pending=args.max_pending,
        )
        await pool.start(wait=False)
        log.info("bank %s: %s at %d Hz", bank_path, ", ".join(bank.labels), bank.sample_rate)
        del bank

        async def one(src: WavSource) -> None:
            stats.append(await run_stream(src, pool, emit, config=cfg))

        producers += [one(s) for s in sources]
    if ticks:
        producers.append(_ticks.run_ticks(args, speed, emit))
    try:
        results = await asyncio.gather(*producers, return_exceptions=True)
    finally:
        if pool is not None:
            await pool.aclose()
    for r in results:
        if isinstance(r, StreamerError):
            failed += 1
            _error(str(r))
        elif isinstance(r, BaseException):
            raise r
    if args.stats:
        _print_stats(stats, pool, results)
    return failed


def _print_stats(stats: list[Any], pool: RecognizerPool | None, results: list[Any]) -> None:
    for st in stats:
        d = dataclasses.asdict(st)
        d.pop("delays")
        print(f"streamer {NAME}: {json.dumps(d)}", file=sys.stderr)
    if pool is not None:
        print(
            f"streamer {NAME}: pool {json.dumps(dataclasses.asdict(pool.stats))}", file=sys.stderr
        )
    for r in results:
        if isinstance(r, dict):
            print(f"streamer {NAME}: ticks {json.dumps(r, default=str)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.pub:  # publish over ZeroMQ instead of printing

        async def main() -> int:
            async with publishing(args, sources=list(args.audio or [])) as pub:
                return await replay(args, pub)  # type: ignore[arg-type]

        failed = asyncio.run(main())
    else:
        failed = asyncio.run(replay(args, Emitter(sys.stdout, latency=args.latency)))
    return 2 if failed else 0

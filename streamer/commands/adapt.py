"""`streamer adapt --bank BANK --out NEW_BANK TAKES`: a bank adapted to one speaker.

TAKES is a folder of LABEL/*.wav (1-5 takes per word are plenty), or `--mic`
records `--count` takes of every word with prompts, like `enroll`. The word
models (and the bank's speaker normalisation) are MAP-adapted to the speaker
(see `streamer.speech.adapt`); words without takes stay as they were. A take
that is silence, clipped or fits no word is one line on stderr and is left out.
NEW_BANK is written atomically and is an ordinary bank for every command.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from streamer.audio.segmenter import SegmenterConfig
from streamer.audio.sources import find_input_device
from streamer.audio.wav import load_audio, resample
from streamer.commands.options import add_mic_arguments, mic_from_args
from streamer.errors import ConfigError, DataError, StreamerError
from streamer.paths import default_bank_path
from streamer.progress import Progress
from streamer.speech.adapt import Takes, adapt_bank
from streamer.speech.bank import WordBank
from streamer.speech.enroll import record_utterances

NAME = "adapt"
HELP = "adapt a bank to one speaker from a few takes per word (MAP)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("takes", nargs="?", metavar="TAKES", help="folder of LABEL/*.wav takes")
    p.add_argument("--bank", default=None, help="bank to adapt (default: the shipped bank)")
    p.add_argument("--out", "-o", required=True, metavar="NEW_BANK", help="bank file to write")
    p.add_argument(
        "--tau",
        type=float,
        default=10.0,
        help="prior weight of the trained means, in frames (default 10; larger moves less)",
    )
    p.add_argument("--mic", action="store_true", help="record the takes from the microphone")
    p.add_argument("--count", type=int, default=3, help="takes per word from the microphone")
    p.add_argument(
        "--timeout", type=float, default=15.0, metavar="S", help="seconds to wait for a take"
    )
    add_mic_arguments(p)


def _say(msg: str) -> None:
    print(f"streamer {NAME}: {msg}", file=sys.stderr, flush=True)


def _folder(root: Path, rate: int) -> tuple[Takes, int]:
    if not root.is_dir():
        raise DataError(f"{root}: no such takes folder (expected LABEL/*.wav)")
    takes: Takes = {}
    failed = 0
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(q for q in d.iterdir() if q.suffix.lower() == ".wav"):
            try:
                takes.setdefault(d.name, []).append((str(f), load_audio(f, rate)))
            except StreamerError as e:
                failed += 1
                print(f"streamer {NAME}: error: {e}", file=sys.stderr)
    if not takes and not failed:
        raise DataError(f"{root}: no takes (expected LABEL/*.wav)")
    return takes, failed


async def _record(args: argparse.Namespace, bank: WordBank) -> Takes:
    cfg = SegmenterConfig()
    takes: Takes = {}
    for label in bank.labels:
        mic = mic_from_args(args, rate=cfg.rate)
        spoken = label.replace("_", " ")

        def prompt(i: int, n: int, spoken: str = spoken) -> None:
            _say(f"say {spoken!r} ({i}/{n})")

        got = await record_utterances(
            mic, args.count, config=cfg, on_prompt=prompt, timeout=args.timeout
        )
        takes[label] = [
            (f"{label} take {i + 1}", resample(u.samples, u.rate, bank.sample_rate))
            for i, u in enumerate(got)
        ]
    return takes


def run(args: argparse.Namespace) -> int:
    if not args.takes and not args.mic:
        raise ConfigError("give a TAKES folder (LABEL/*.wav) or --mic")
    if args.tau <= 0:
        raise ConfigError(f"--tau {args.tau:g}: must be positive")
    if args.mic:
        find_input_device(args.device)
    bank = WordBank.load(args.bank or default_bank_path())
    failed = 0
    if args.mic:
        takes = asyncio.run(_record(args, bank))
    else:
        takes, failed = _folder(Path(args.takes), bank.sample_rate)

    def refused(where: str, why: str) -> None:
        nonlocal failed
        failed += 1
        print(f"streamer {NAME}: error: {where}: left out: {why}", file=sys.stderr)

    with Progress(len(takes) + 1, "adapting") as bar:
        new, report = adapt_bank(
            bank, takes, tau=args.tau, on_refused=refused, progress=bar.advance
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    new.save(out)
    _say(
        f"wrote {out}: adapted {len(report.used)} of {len(bank.labels)} words on "
        f"{sum(report.used.values())} takes"
        + (f", speaker warp {report.warp:.2f}" if report.warp is not None else "")
        + (f"; {len(report.refused)} take(s) left out" if report.refused else "")
    )
    print(
        json.dumps(
            {
                "bank": str(out),
                "adapted": report.used,
                "refused": [{"take": w, "why": y} for w, y in report.refused],
                "warp": report.warp,
            }
        ),
        flush=True,
    )
    return 2 if failed else 0

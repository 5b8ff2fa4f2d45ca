"""`streamer enroll --bank BANK --word W [--count N] [FILES...]`: teach a bank a word.

With FILES, those WAVs are the examples; without, N takes are recorded from the
microphone, cut by the service's own segmenter, with prompts on stderr. The
word is added, or retrained if the bank knows it, with the bank's training
recipe (see `streamer.speech.enroll`), and the bank is written back atomically,
so a `streamer serve` watching it picks the word up within a second. A BANK
that does not exist yet starts as a copy of `--base` (default: the shipped
bank). One JSON summary line goes to stdout; a bad file is one line on stderr
and, as everywhere, exit status 2 at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np

from streamer.audio.segmenter import SegmenterConfig
from streamer.audio.sources import find_input_device
from streamer.audio.wav import load_audio, write_wav
from streamer.commands.options import add_mic_arguments, mic_from_args
from streamer.errors import ConfigError, StreamerError
from streamer.messages import Utterance
from streamer.paths import default_bank_path
from streamer.progress import Progress
from streamer.speech.bank import WordBank
from streamer.speech.enroll import ENROLL_STEPS, check_word, enroll_word, record_utterances

NAME = "enroll"
HELP = "add a word to a bank (or retrain one) from microphone takes or WAV files"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE", help="WAV examples (default: record)")
    p.add_argument("--bank", required=True, help="bank to update (created from --base if absent)")
    p.add_argument("--word", required=True, help="the word, as it should be labelled")
    p.add_argument(
        "--count", type=int, default=5, help="takes to record from the microphone (default 5)"
    )
    p.add_argument(
        "--base",
        default=None,
        help="bank to start from when --bank does not exist (default: the shipped bank)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=15.0,
        metavar="S",
        help="give up when no take comes within S seconds of a prompt (default 15)",
    )
    p.add_argument("--save", metavar="DIR", help="also keep the recorded takes as WAVs here")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    add_mic_arguments(p)


def _say(msg: str) -> None:
    print(f"streamer {NAME}: {msg}", file=sys.stderr, flush=True)


def _load_base(bank_path: Path, base: str | None) -> WordBank:
    if bank_path.exists():
        return WordBank.load(bank_path)
    src = Path(base) if base else default_bank_path()
    _say(f"{bank_path} does not exist yet: starting from {src}")
    return WordBank.load(src)


def _files(paths: list[str], rate: int) -> tuple[list[np.ndarray], int]:
    xs, failed = [], 0
    for f in paths:
        try:
            xs.append(load_audio(f, rate))
        except StreamerError as e:
            failed += 1
            print(f"streamer {NAME}: error: {e}", file=sys.stderr)
    return xs, failed


async def _record(args: argparse.Namespace, word: str) -> list[Utterance]:
    cfg = SegmenterConfig()
    args.mic = True
    mic = mic_from_args(args, rate=cfg.rate)
    assert mic is not None
    spoken = word.replace("_", " ")

    def prompt(i: int, n: int) -> None:
        _say(f"say {spoken!r} ({i}/{n})")

    def took(u: Utterance, why: str | None) -> None:
        if why:
            _say(f"  heard {u.end - u.start:.2f} s: {why}")
        else:
            _say(f"  got {u.end - u.start:.2f} s")

    return await record_utterances(
        mic, args.count, config=cfg, on_prompt=prompt, on_take=took, timeout=args.timeout
    )


def run(args: argparse.Namespace) -> int:
    word = check_word(args.word)
    bank_path = Path(args.bank)
    if not args.files and args.count < 1:
        raise ConfigError(f"--count {args.count}: need at least one take")
    if not args.files:
        find_input_device(args.device)  # before loading anything: a missing device is one line
    bank = _load_base(bank_path, args.base)
    failed = 0
    rate = bank.sample_rate
    if args.files:
        examples, failed = _files(args.files, rate)
        if not examples:
            raise ConfigError("no usable example among the files")
    else:
        takes = asyncio.run(_record(args, word))
        rate = takes[0].rate
        examples = [u.samples for u in takes]
        if args.save:
            out = Path(args.save)
            out.mkdir(parents=True, exist_ok=True)
            for i, x in enumerate(examples):
                write_wav(out / f"{word}_{i + 1:02d}.wav", x, rate)
    _say(f"training {word!r} on {len(examples)} example(s) and the bank's synthetic voices")
    with Progress(ENROLL_STEPS, "enrolling") as bar:
        new, report = enroll_word(
            bank, word, examples, rate=rate, seed=args.seed, progress=bar.advance
        )
    bank_path.parent.mkdir(parents=True, exist_ok=True)
    new.save(bank_path)
    _say(
        f"{report.action} {word!r} in {bank_path} ({report.seconds:.1f} s): "
        f"{len(new.labels)} words, {', '.join(new.labels)}"
    )
    summary = {
        "bank": str(bank_path),
        "word": word,
        "action": report.action,
        "examples": report.examples,
        "synthetic": report.voices,
        "states": report.states,
        "labels": list(report.labels),
    }
    print(json.dumps(summary), flush=True)
    return 2 if failed else 0

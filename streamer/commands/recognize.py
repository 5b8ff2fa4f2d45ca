"""`streamer recognize --bank BANK FILE...`: one JSON line per file."""

from __future__ import annotations

import argparse
import json
import sys

from streamer.audio.wav import load_audio
from streamer.errors import StreamerError
from streamer.paths import default_bank_path
from streamer.speech.bank import WordBank

NAME = "recognize"
HELP = "recognise the word in each WAV file (JSON lines on stdout)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="WAV files, one word each")
    p.add_argument("--bank", help="bank file (default: the shipped models/fruits.npz)")
    p.add_argument("--nbest", type=int, default=5, help="how many alternatives to list")


def run(args: argparse.Namespace) -> int:
    bank = WordBank.load(args.bank or default_bank_path())
    failed = 0
    for f in args.files:
        try:
            r = bank.recognize(load_audio(f, bank.sample_rate), where=f, nbest=args.nbest)
        except StreamerError as e:
            failed += 1
            print(f"streamer recognize: error: {e}", file=sys.stderr)
            continue
        line = {
            "file": f,
            "label": r.label,
            "confidence": round(r.confidence, 4),
            "best": r.best,
            "nbest": [{"label": w, "loglik": round(s, 3)} for w, s in r.nbest],
        }
        print(json.dumps(line), flush=True)
    return 2 if failed else 0

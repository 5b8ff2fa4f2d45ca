#!/usr/bin/env python3
"""Build a long test stream with ground truth from a folder of labelled recordings.

The command line of `streamer.audio.teststream` (which says how streams are made).

`FOLDER/LABEL/*.wav` recordings are laid end to end in random order, separated by
random pauses, optionally mixed with background noise at a chosen SNR and
resampled; the result is a WAV plus a CSV `label,start,end` (seconds) giving
where each recording was placed. The same seed gives the same stream, so a
replay scored against its truth is a reproducible test.

The SNR is the speech level over the noise RMS, with the speech level measured
on the recordings alone (`streamer.audio.noise.speech_rms` of the words, not of
the pauses), so "10 dB" means what it means for a single utterance.

    python scripts/make_stream.py ../shared/data/fruits out.wav --minutes 10 --seed 1 \
        --noise babble --snr 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from streamer.audio.noise import KINDS
from streamer.audio.teststream import make_stream, write_truth
from streamer.audio.wav import write_wav
from streamer.errors import AudioError, DataError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", help="FOLDER/LABEL/*.wav recordings")
    p.add_argument("out", help="output WAV; the truth goes next to it as .csv")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="repeat passes up to this length")
    p.add_argument("--passes", type=int, default=1, help="use every recording this many times")
    p.add_argument("--pause", type=float, nargs=2, default=(0.3, 2.0), metavar=("MIN", "MAX"))
    p.add_argument("--noise", choices=KINDS, default=None)
    p.add_argument("--snr", type=float, default=10.0, help="dB, speech level over noise")
    p.add_argument(
        "--level",
        type=float,
        default=-26.0,
        help="scale every recording to this speech level in dBFS first (nan: keep levels)",
    )
    p.add_argument("--rate", type=int, default=None, help="resample the output to this rate")
    p.add_argument("--labels", nargs="*", default=None, help="only these words")
    p.add_argument("--truth", default=None, help="truth CSV path (default OUT with .csv)")
    a = p.parse_args(argv)
    try:
        x, truth, rate = make_stream(
            a.folder,
            seed=a.seed,
            out_rate=a.rate,
            labels=a.labels,
            minutes=a.minutes,
            passes=a.passes,
            pause=tuple(a.pause),
            noise=a.noise,
            snr_db=a.snr,
            level_db=None if np.isnan(a.level) else a.level,
        )
    except (AudioError, DataError) as e:
        print(f"make_stream: error: {e}", file=sys.stderr)
        return 2
    write_wav(a.out, x, rate)
    truth_path = a.truth or str(Path(a.out).with_suffix(".csv"))
    write_truth(truth_path, truth)
    print(
        f"{a.out}: {x.size / rate:.1f} s at {rate} Hz, {len(truth)} words; truth {truth_path}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Score `streamer replay` output against a stream's ground truth (from make_stream.py).

    streamer replay stream.wav --speed 0 --latency > events.jsonl
    python scripts/score_replay.py events.jsonl stream.csv

Prints word-detection precision and recall (an event matches a truth word it
overlaps, one to one), label accuracy on matched words, boundary errors, and the
latency from each word's true end to its event: the utterance's `closed_at`
minus the word's end (stream time), plus the event's `delay_ms` when the replay
was run with `--latency`. See streamer/audio/score.py for the exact rules.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from streamer.audio.score import Event, events_from_lines, score


def read_truth(path: str | Path) -> list[Event]:
    with open(path, newline="") as f:
        return [Event(r["label"], float(r["start"]), float(r["end"])) for r in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("events", help="JSON lines from streamer replay ('-' for stdin)")
    p.add_argument("truth", help="truth CSV label,start,end")
    p.add_argument("--stream", default=None, help="only events of this stream")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    a = p.parse_args(argv)
    if a.events == "-":
        events = events_from_lines(sys.stdin, a.stream)
    else:
        with open(a.events) as f:
            events = events_from_lines(f, a.stream)
    s = score(events, read_truth(a.truth))
    if a.json:
        print(json.dumps(s.as_dict()))
        return 0
    print(f"words {s.words}  events {s.events}  matched {s.matched}")
    print(f"precision {s.precision:.2%}  (labelled events only: {s.labelled_precision:.2%})")
    print(f"recall {s.recall:.2%}  label accuracy {s.label_accuracy:.2%}")
    print(f"boundary error: start {s.start_err_ms:.0f} ms, end {s.end_err_ms:.0f} ms (mean abs)")
    print(f"true end -> close  {s.close_latency_ms}")
    print(f"true end -> event  {s.latency_ms}")
    if s.confusions:
        print("errors: " + ", ".join(f"{k} x{v}" for k, v in s.confusions.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Scoring a replay's word events against the stream's ground truth.

An event detects a truth word when their time spans overlap; each word and each
event is used at most once, largest overlaps first, so a word cut in two counts
one hit and one false alarm, and two words merged into one event count one hit
and one miss. Latency is measured from the word's true end to the moment its
event went out: `closed_at - end` in stream time (when the segmenter closed the
utterance) plus the event's own close-to-emit delay in wall time, if known.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


class Span(Protocol):
    """Anything with a label and a stretch of stream time (events, truth words)."""

    @property
    def label(self) -> str | None: ...

    @property
    def start(self) -> float: ...

    @property
    def end(self) -> float: ...


@dataclass(frozen=True)
class Event:
    """One event of a replay, as far as scoring cares."""

    label: str | None
    start: float
    end: float
    closed_at: float | None = None  # stream seconds at which the utterance was closed
    delay: float = 0.0  # wall seconds from close to emit (0 when unknown)
    stream: str = ""


@dataclass
class Score:
    """Detection, labelling, boundary and latency figures of one replay."""

    words: int
    events: int
    matched: int
    labelled_events: int
    labelled_matched: int
    correct: int
    start_err_ms: float
    end_err_ms: float
    latency_ms: dict[str, float] = field(default_factory=dict)  # true end -> event
    close_latency_ms: dict[str, float] = field(default_factory=dict)  # true end -> close
    confusions: dict[str, int] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        """Matched events over all events (a rejected utterance still counts as a detection)."""
        return self.matched / self.events if self.events else 1.0

    @property
    def labelled_precision(self) -> float:
        """Matched over events that carry a label (what a user acting on labels sees)."""
        return self.labelled_matched / self.labelled_events if self.labelled_events else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.words if self.words else 1.0

    @property
    def label_accuracy(self) -> float:
        """Right labels over matched words (a rejection is a wrong label)."""
        return self.correct / self.matched if self.matched else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "words": self.words,
            "events": self.events,
            "matched": self.matched,
            "precision": round(self.precision, 4),
            "labelled_precision": round(self.labelled_precision, 4),
            "recall": round(self.recall, 4),
            "label_accuracy": round(self.label_accuracy, 4),
            "start_err_ms": round(self.start_err_ms, 1),
            "end_err_ms": round(self.end_err_ms, 1),
            "latency_ms": self.latency_ms,
            "close_latency_ms": self.close_latency_ms,
            "confusions": self.confusions,
        }


def match(events: Sequence[Span], truth: Sequence[Span]) -> list[tuple[int, int]]:
    """(event index, truth index) pairs: overlapping spans, one-to-one, largest overlap first."""
    ev = sorted(range(len(events)), key=lambda i: events[i].start)
    tr = sorted(range(len(truth)), key=lambda j: truth[j].start)
    cands: list[tuple[float, int, int]] = []
    j0 = 0
    for i in ev:
        e = events[i]
        while j0 < len(tr) and truth[tr[j0]].end <= e.start:
            j0 += 1
        j = j0
        while j < len(tr) and truth[tr[j]].start < e.end:
            t = truth[tr[j]]
            ov = min(e.end, t.end) - max(e.start, t.start)
            if ov > 0:
                cands.append((ov, i, tr[j]))
            j += 1
    cands.sort(key=lambda c: (-c[0], c[1], c[2]))
    used_e: set[int] = set()
    used_t: set[int] = set()
    pairs = []
    for _, i, j in cands:
        if i not in used_e and j not in used_t:
            used_e.add(i)
            used_t.add(j)
            pairs.append((i, j))
    return sorted(pairs)


def percentiles(values: Iterable[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/p99/max/mean of `values` times `scale` (seconds to ms by default)."""
    v = np.asarray(list(values), dtype=np.float64) * scale
    if v.size == 0:
        return {}
    return {
        "p50": round(float(np.percentile(v, 50)), 1),
        "p90": round(float(np.percentile(v, 90)), 1),
        "p99": round(float(np.percentile(v, 99)), 1),
        "max": round(float(v.max()), 1),
        "mean": round(float(v.mean()), 1),
    }


def score(events: Sequence[Event], truth: Sequence[Span]) -> Score:
    """Score one stream's events against its truth words."""
    pairs = match(events, truth)
    correct = 0
    lab_matched = 0
    s_err: list[float] = []
    e_err: list[float] = []
    lat: list[float] = []
    close_lat: list[float] = []
    conf: dict[str, int] = {}
    for i, j in pairs:
        e, t = events[i], truth[j]
        if e.label is not None:
            lab_matched += 1
        if e.label == t.label:
            correct += 1
        else:
            key = f"{t.label}->{e.label}"
            conf[key] = conf.get(key, 0) + 1
        s_err.append(abs(e.start - t.start))
        e_err.append(abs(e.end - t.end))
        if e.closed_at is not None:
            close_lat.append(e.closed_at - t.end)
            lat.append(e.closed_at - t.end + e.delay)
    return Score(
        words=len(truth),
        events=len(events),
        matched=len(pairs),
        labelled_events=sum(e.label is not None for e in events),
        labelled_matched=lab_matched,
        correct=correct,
        start_err_ms=1000 * float(np.mean(s_err)) if s_err else 0.0,
        end_err_ms=1000 * float(np.mean(e_err)) if e_err else 0.0,
        latency_ms=percentiles(lat),
        close_latency_ms=percentiles(close_lat),
        confusions=dict(sorted(conf.items())),
    )


def events_from_lines(lines: Iterable[str], stream: str | None = None) -> list[Event]:
    """Events from `streamer replay` JSON lines (topic "speech" only, optionally one stream)."""
    out = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        if d.get("topic", "speech") != "speech":
            continue
        if stream is not None and d.get("stream") != stream:
            continue
        out.append(
            Event(
                label=d.get("label"),
                start=float(d["start"]),
                end=float(d["end"]),
                closed_at=d.get("closed_at"),
                delay=float(d.get("delay_ms", 0.0)) / 1000.0,
                stream=d.get("stream", ""),
            )
        )
    return out

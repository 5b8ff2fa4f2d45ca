"""Sinks other than the publisher: JSON lines for `streamer replay` (and anyone piping output).

A sink takes messages synchronously (see `streamer.messages.Sink`); this one
writes one compact JSON object per message, each topic numbered by its own
`seq`: ``{"topic": "speech", "seq": n, ...WordEvent.to_wire()}``, with the wire's
encoder (`streamer.net.protocol.dumps`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TextIO

from streamer.messages import Message, RegimeDecode
from streamer.net.protocol import dumps


class JsonLinesSink:
    """One JSON line per message on `out` (flushed at once: a pipe reader sees it live)."""

    def __init__(self, out: TextIO, *, latency: bool = False) -> None:
        self.out = out
        self.latency = latency
        self.seq: Counter[str] = Counter()

    def publish(self, msg: Message, delay: float | None = None) -> bool:
        topic = msg.topic
        n = self.seq[topic]
        self.seq[topic] = n + 1
        line = {"topic": topic, "seq": n, **msg.to_wire()}
        if self.latency and delay is not None:
            line["delay_ms"] = round(delay * 1000.0, 3)
        self.out.write(dumps(line) + "\n")
        self.out.flush()
        return True

    def publish_many(self, msgs: Sequence[RegimeDecode]) -> int:
        for m in msgs:
            self.publish(m)
        return len(msgs)


__all__ = ["JsonLinesSink"]

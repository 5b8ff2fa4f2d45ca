"""A sink that keeps what it is sent (the `streamer.messages.Sink` protocol), for tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streamer.messages import Message, RegimeDecode, WordEvent


class Collector:
    """Keeps every message (and each word's delay); `on_word` lets a test act mid-stream."""

    def __init__(self, on_word: Callable[[WordEvent], Any] | None = None) -> None:
        self.messages: list[Message] = []
        self.delays: list[float | None] = []
        self.on_word = on_word

    def publish(self, msg: Message, delay: float | None = None) -> bool:
        self.messages.append(msg)
        self.delays.append(delay)
        if self.on_word is not None and isinstance(msg, WordEvent):
            self.on_word(msg)
        return True

    def publish_many(self, msgs: Sequence[RegimeDecode]) -> int:
        for m in msgs:
            self.publish(m)
        return len(msgs)

    @property
    def words(self) -> list[WordEvent]:
        return [m for m in self.messages if isinstance(m, WordEvent)]

    @property
    def decodes(self) -> list[RegimeDecode]:
        return [m for m in self.messages if isinstance(m, RegimeDecode)]

"""The injectable clock that paced sources (audio replay, tick replay) read and wait on.

Sources never read the wall clock directly: real runs use `LoopClock` or
`MonotonicClock`, tests use `VirtualClock`, where sleeping advances time at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where a paced source reads the time and waits."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """The running event loop's monotonic clock."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class MonotonicClock:
    """`time.monotonic` and `asyncio.sleep` (usable outside a running loop too)."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class VirtualClock:
    """An in-memory clock: sleeping advances it at once (plus `overshoot`), and is recorded."""

    def __init__(self, start: float = 0.0, overshoot: float = 0.0) -> None:
        self.t = start
        self.overshoot = overshoot
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        """Let time pass without a sleep (a slow consumer, say)."""
        self.t += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0.0) + self.overshoot
        await asyncio.sleep(0)

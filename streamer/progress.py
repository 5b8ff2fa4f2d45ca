"""Progress on stderr: a bar on a terminal, a plain line per step otherwise (a log file
or CI output should show a long training run moving, without carriage returns)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """`with Progress(total, "training") as p: p.advance(note)`."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(1, total)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.t0 = time.monotonic()

    def advance(self, note: str = "", n: int = 1) -> None:
        self.done += n
        el = time.monotonic() - self.t0
        if not self.enabled:
            self.stream.write(f"{self.label}: {self.done}/{self.total} {note} ({el:.0f} s)\n")
            self.stream.flush()
            return
        frac = min(1.0, self.done / self.total)
        bar = "#" * int(frac * 30)
        self.stream.write(
            f"\r{self.label} [{bar:<30}] {self.done}/{self.total} {el:5.1f}s {note:<20.20}"
        )
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

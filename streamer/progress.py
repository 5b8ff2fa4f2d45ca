"""Progress on stderr through tqdm: a bar on a terminal, a plain line every few seconds
otherwise (a log file or CI output should show a long run moving, without carriage
returns)."""

from __future__ import annotations

import io
import sys
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_EVERY = 5.0  # seconds between plain lines off a terminal


class _Bar(tqdm):  # type: ignore[type-arg]  # tqdm is generic over the iterable it wraps; none here
    monitor_interval = 0  # no monitor thread: the bar is driven by `advance` alone


class _Lines(io.TextIOBase):
    """tqdm's status writes (``"\\r" + text``) as plain lines, once progress has begun."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.on = False  # nothing before the first step: an early error stays one line
        self.last = ""

    def write(self, s: str) -> int:
        text = s.replace("\r", "").strip()
        if self.on and text and text != self.last:  # closing repeats the last line
            self.out.write(text + "\n")
            self.last = text
        return len(s)

    def flush(self) -> None:
        self.out.flush()


class Progress:
    """`with Progress(total, "training") as p: p.advance(note)`."""

    def __init__(
        self, total: int, label: str, stream: TextIO | None = None, every: float = PLAIN_EVERY
    ) -> None:
        out = stream or sys.stderr
        self.enabled = bool(getattr(out, "isatty", lambda: False)())
        self._lines: _Lines | None = None
        opts: dict[str, Any] = {"total": max(1, total), "desc": label, "miniters": 1}
        if self.enabled:
            self.bar = _Bar(file=out, unit="step", dynamic_ncols=True, **opts)
        else:
            self._lines = _Lines(out)
            fmt = "{desc}: {n_fmt}/{total_fmt}{postfix} ({elapsed})"
            self.bar = _Bar(file=self._lines, mininterval=every, bar_format=fmt, **opts)

    def advance(self, note: str = "", n: int = 1) -> None:
        if self._lines is not None:
            self._lines.on = True
        self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()

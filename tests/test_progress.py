"""Progress through tqdm: plain lines off a terminal, a bar on one."""

from __future__ import annotations

import io
import time

from streamer.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_off_a_terminal() -> None:
    out = io.StringIO()
    with Progress(3, "training", out, every=0.0) as p:
        for w in ("apple", "kiwi", "plum"):
            time.sleep(0.002)
            p.advance(w)
    text = out.getvalue()
    assert "\r" not in text
    assert text.splitlines() == [f"training: {i}/3, {w} (00:00)" for i, w in
                                 enumerate(("apple", "kiwi", "plum"), 1)]  # fmt: skip


def test_off_a_terminal_a_line_every_few_seconds_and_the_last() -> None:
    out = io.StringIO()
    with Progress(100, "evaluating", out) as p:  # the default: a line every few seconds
        for i in range(100):
            p.advance(f"fold {i}")
    assert out.getvalue().splitlines() == ["evaluating: 100/100, fold 99 (00:00)"]


def test_nothing_before_the_first_step() -> None:
    """An error before any progress stays the one line on stderr it should be."""
    out = io.StringIO()
    try:
        with Progress(3, "training", out):
            raise ValueError("bad data")
    except ValueError:
        pass
    assert out.getvalue() == ""


def test_a_bar_on_a_terminal() -> None:
    out = _Terminal()
    with Progress(2, "adapting", out) as p:
        p.advance("apple")
        p.advance("kiwi")
    text = out.getvalue()
    assert "\r" in text and "2/2" in text and "adapting" in text and "kiwi" in text

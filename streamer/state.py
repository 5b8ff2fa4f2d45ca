"""The service's crash-safe state: `serve --state DIR [--checkpoint-every S]`.

Every `checkpoint_every` seconds, and once at shutdown, the service writes
``DIR/state.npz``: every regime tracker (CSV replays and the live feed: model
parameters, filter state, regime names, refit window, counters; see
`streamer.market.checkpoint`), the publisher's next `seq` per topic and its
`epoch`. The trackers and the seqs are taken together, synchronously between two
ticks, so they agree: the seq of a symbol's topic is the number of decodes its
tracker has published. The file is written in a thread, atomically.

After a crash, a restart with the same DIR loads it: trackers decode from the
first new tick (no warm-up), `seq` goes on from the checkpoint under the same
`epoch`, and the restart is announced on ``status``. Ticks decoded after the last
checkpoint are decoded again and published again with the same seq (at least
once on the wire; `streamer.net.Subscriber` drops the repeats). A corrupt or
foreign state file is one `StateError` (exit 2); ``--cold-start`` ignores it.

Words, status and metrics are not published again after a restart (audio in
flight is lost, a replayed WAV starts over with new words), so their seq must
not go back to the checkpoint's: a subscriber would take a new word for a
repeat and drop it. Their next seq is also kept in ``DIR/seqs.json``, rewritten
in place on every such message (`SeqJournal`: one small write, which outlives a
SIGKILL of the process though not a power cut), and a restart takes the larger
of the two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamer.config import StateConfig
from streamer.errors import StateError
from streamer.market.checkpoint import encode_state, read_state, write_arrays
from streamer.market.decoder import OnEvent, RegimeTracker, TrackerConfig

log = logging.getLogger(__name__)

STATE_FILE = "state.npz"
SEQ_FILE = "seqs.json"
MARKS_FILE = "regimes.bin"  # the last regime message of every symbol: `RegimeMarks`
_SEQ_BLOCK = 4096  # the journal is rewritten in place, padded to whole blocks
SOURCES = ("ticks", "feed")  # where trackers live: CSV replays, the live tick feed


@dataclass
class Resume:
    """A loaded state: what the service continues from."""

    epoch: str
    seqs: dict[str, int]  # next seq per topic frame
    trackers: dict[str, dict[str, RegimeTracker]] = field(default_factory=dict)  # source -> sym
    saved_at: float = 0.0  # UNIX time of the checkpoint
    path: Path = Path()

    def describe(self) -> str:
        n = sum(len(t) for t in self.trackers.values())
        age = max(0.0, time.time() - self.saved_at)
        return (
            f"resumed from {self.path} (epoch {self.epoch}, checkpoint {age:.1f} s old, "
            f"{n} symbol(s)): seq goes on"
        )


class Checkpointer:
    """Loads the state at start and writes it every `checkpoint_every` seconds."""

    def __init__(self, config: StateConfig, tracker: TrackerConfig) -> None:
        if config.dir is None:
            raise StateError("no state folder given (--state DIR)")
        self.config = config
        self.tracker = tracker
        self.dir = Path(config.dir)
        self.path = self.dir / STATE_FILE
        self.epoch = secrets.token_hex(8)  # a fresh start's; a resumed state keeps its own
        self.written = 0
        self.bytes = 0
        self.seconds = 0.0  # spent writing, in all
        self.capture_seconds = 0.0  # spent in the loop taking the state
        self.last_error: str | None = None
        self._writing: asyncio.Task[None] | None = None

    def load(self, on_event: OnEvent | None = None) -> Resume | None:
        """The saved state, or None (none yet, or a cold start); StateError if unusable."""
        if self.dir.exists() and not self.dir.is_dir():
            raise StateError(f"{self.dir}: not a folder (--state DIR)")
        if self.config.cold_start:
            if self.path.exists():
                log.warning("cold start: ignoring the saved state in %s", self.path)
            return None
        if not self.path.exists():
            return None
        state = read_state(self.path, self.tracker, inline=False, on_event=on_event)
        extra = state.extra
        epoch, seqs = extra.get("epoch"), extra.get("seqs")
        if not isinstance(epoch, str) or not isinstance(seqs, dict):
            raise StateError(f"{self.path}: no epoch or seq in the saved state")
        groups: dict[str, dict[str, RegimeTracker]] = {s: {} for s in SOURCES}
        for key, tr in state.trackers.items():
            source, _, symbol = key.partition(":")
            if source not in groups or not symbol:
                raise StateError(f"{self.path}: a tracker under an unknown key {key!r}")
            groups[source][symbol] = tr
        self.epoch = epoch
        next_seqs = {str(t): int(n) for t, n in seqs.items()}
        for t, n in SeqJournal.read(self.dir / SEQ_FILE, epoch).items():
            next_seqs[t] = max(n, next_seqs.get(t, 0))
        return Resume(
            epoch,
            next_seqs,
            groups,
            float(extra.get("saved_at", 0.0)),
            self.path,
        )

    def capture(
        self, trackers: dict[str, dict[str, RegimeTracker]], seqs: dict[str, int]
    ) -> dict[str, Any]:
        """The state as npz entries, taken now (synchronous: trackers and seqs agree)."""
        t0 = time.perf_counter()
        flat = {f"{src}:{sym}": tr for src, group in trackers.items() for sym, tr in group.items()}
        extra = {"epoch": self.epoch, "seqs": seqs, "saved_at": time.time()}
        arrays = encode_state(flat, extra=extra)
        self.capture_seconds += time.perf_counter() - t0
        return arrays

    def write(self, arrays: dict[str, Any]) -> None:
        """Write captured state (blocking: call it in a thread)."""
        t0 = time.perf_counter()
        self.bytes = write_arrays(self.path, arrays)
        self.seconds += time.perf_counter() - t0
        self.written += 1

    async def save(
        self, trackers: dict[str, dict[str, RegimeTracker]], seqs: dict[str, int]
    ) -> None:
        """Capture now, write in a thread; one write at a time (a busy disk skips a turn)."""
        if self._writing is not None and not self._writing.done():
            return
        arrays = self.capture(trackers, seqs)
        self._writing = asyncio.ensure_future(asyncio.to_thread(self.write, arrays))
        try:
            await asyncio.shield(self._writing)
            self.last_error = None
        except OSError as e:  # a full disk must not stop the service: say so, go on
            self.last_error = f"{self.path}: {e.strerror or e}"
            log.warning("checkpoint not written: %s", self.last_error)

    async def flush(self) -> None:
        """Wait for a write in progress."""
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "epoch": self.epoch,
            "written": self.written,
            "bytes": self.bytes,
            "write_ms": round(1000 * self.seconds / max(self.written, 1), 3),
            "capture_ms": round(1000 * self.capture_seconds / max(self.written, 1), 3),
            "error": self.last_error,
        }


class _InPlaceFile:
    """A file rewritten in place with `pwrite` (no fsync): what the kernel has taken
    survives the process being killed. A failed write is counted and said once: a full
    disk must not stop the service (the checkpoint says so)."""

    what = "file"

    def __init__(self, path: Path, flags: int = 0) -> None:
        self.path = path
        self.errors = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT | flags, 0o644)

    def _pwrite(self, data: bytes, at: int) -> None:
        if self._fd is None:
            return
        try:
            os.pwrite(self._fd, data, at)
        except OSError as e:
            self.errors += 1
            if self.errors == 1:
                log.warning("%s not written: %s", self.what, e)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class SeqJournal(_InPlaceFile):
    """The next seq of the topics a restart does not publish again, kept on disk as it goes.

    `note(topic, next_seq)` rewrites ``DIR/seqs.json`` in place (one `pwrite` of a
    padded JSON object, no fsync): cheap enough for every word and status message,
    and what the kernel has taken survives the process being killed.
    """

    what = "seq journal"

    def __init__(self, path: Path, epoch: str, seqs: dict[str, int] | None = None) -> None:
        super().__init__(path)
        self.epoch = epoch
        self.seqs: dict[str, int] = dict(seqs or {})
        self._size = _SEQ_BLOCK
        self._write()

    @staticmethod
    def read(path: Path, epoch: str) -> dict[str, int]:
        """The journal's seqs if it belongs to `epoch` (anything unreadable: none)."""
        try:
            doc = json.loads(path.read_bytes().rstrip() or b"{}")
            if not isinstance(doc, dict) or doc.get("epoch") != epoch:
                return {}
            return {str(t): int(n) for t, n in dict(doc.get("seqs") or {}).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def note(self, topic: bytes, next_seq: int) -> None:
        self.seqs[topic.decode()] = next_seq
        self._write()

    def _write(self) -> None:
        data = json.dumps({"epoch": self.epoch, "seqs": self.seqs}).encode()
        while len(data) > self._size:
            self._size += _SEQ_BLOCK
        self._pwrite(data.ljust(self._size), 0)


class RegimeMarks(_InPlaceFile):
    """The last regime message of every topic (its next seq, its tick's time), kept as it goes.

    Why: a service killed between checkpoints resumes from the last one. Ticks a
    producer sends again decode again under the seqs they had (repeats, which the
    client drops); but a live producer that goes on with new ticks must not get
    seqs that decodes of other ticks already had, or a client would drop them as
    repeats. So for every topic this keeps the next seq and the time of the last
    tick published, and a resumed publisher numbers the first tick newer than
    that from there (`Publisher.renumber`).

    ``DIR/regimes.bin``: a JSON header line (epoch, and the topics in slot order:
    rewritten only when a topic is new), then 16 bytes a topic (next seq, tick
    time), each written in place with one `pwrite` a batch (no fsync: what the
    kernel has taken survives the process being killed).
    """

    HEADER = 64 * 1024  # bytes kept for the header (about 2,000 topics); more doubles it
    _REC = struct.Struct("<qd")

    what = "regime marks"

    def __init__(self, path: Path, epoch: str) -> None:
        old = self.read(path, epoch)  # what a killed run left (a fresh epoch: nothing)
        super().__init__(path, os.O_TRUNC)
        self.epoch = epoch
        self._header = self.HEADER
        self._marks: dict[bytes, tuple[int, float]] = {t.encode(): m for t, m in old.items()}
        self._slots = {t: i for i, t in enumerate(self._marks)}
        self._write_all()

    @classmethod
    def read(cls, path: Path, epoch: str) -> dict[str, tuple[int, float]]:
        """Topic -> (next seq, last tick time) if the file belongs to `epoch` (else none)."""
        try:
            data = path.read_bytes()
            head = json.loads(data.partition(b"\n")[0])
            if not isinstance(head, dict) or head.get("epoch") != epoch:
                return {}
            at, size = int(head["header"]), cls._REC.size
            out: dict[str, tuple[int, float]] = {}
            for i, topic in enumerate(head["topics"]):
                rec = data[at + i * size : at + (i + 1) * size]
                if len(rec) == size:
                    n, last = cls._REC.unpack(rec)
                    if n > 0:  # a slot never written (killed right after its header)
                        out[str(topic)] = (int(n), float(last))
            return out
        except (OSError, ValueError, TypeError, KeyError):
            return {}

    def note(self, topic: bytes, next_seq: int, last_t: float) -> None:
        """`topic` was published up to seq `next_seq` - 1, the last for a tick at `last_t`."""
        self._marks[topic] = (next_seq, last_t)
        slot = self._slots.get(topic)
        if slot is None:  # a new topic: the header again (and all, if it had to grow)
            self._slots[topic] = len(self._slots)
            self._write_all()
            return
        self._pwrite(self._REC.pack(next_seq, last_t), self._header + slot * self._REC.size)

    def _write_all(self) -> None:
        topics = [t.decode() for t in self._slots]
        while True:
            head = json.dumps({"epoch": self.epoch, "header": self._header, "topics": topics})
            if len(head) < self._header:
                break
            self._header *= 2
        recs = b"".join(self._REC.pack(*self._marks.get(t, (0, 0.0))) for t in self._slots)
        self._pwrite((head + "\n").encode().ljust(self._header) + recs, 0)


__all__ = [
    "MARKS_FILE",
    "SEQ_FILE",
    "STATE_FILE",
    "Checkpointer",
    "RegimeMarks",
    "Resume",
    "SeqJournal",
]

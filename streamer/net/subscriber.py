"""The subscriber client: ``async for msg in Subscriber(endpoint, ["regime"])``.

What it adds to a bare SUB socket, each because a consumer would otherwise get
it wrong:

- **Snapshot on join** (the zguide's clone pattern). It subscribes, waits for the
  first heartbeat (the publisher sends one as soon as it sees the subscription,
  so the subscription is known to be live: nothing published after this point
  can be missed), asks the snapshot socket for the latest message per topic and
  key, delivers those (``msg.snapshot`` is True), then drops live updates at or
  below the snapshot's `seq` for their topic.
- **Gap detection.** `seq` is consecutive per topic frame: a jump means lost
  messages (``msg.gap`` says how many, `stats.missed` adds them up). Heartbeats
  carry the last seq of every topic, which also reveals a loss at the end of a
  stream, when no later message would show the jump.
- **Catching up.** After a gap (a stalled reader that reads again) it takes the
  snapshot again, at most once per `resync` seconds, so the application has the
  current state without doing anything (``stats.resyncs``).
- **Progress reports.** Every heartbeat, and every few messages when the
  publisher's queue is small, it tells the publisher how far it has read (a
  `Progress` report on the snapshot socket): a replay at ``--speed 0`` waits for
  it while it keeps reading, and not once it stops (``report=False``: no reports).
- **Liveness.** The client always subscribes to heartbeats (last, which is how
  the publisher counts it as a subscriber). Silence longer than
  `heartbeat_timeout` means the publisher is gone: the client reconnects (new
  socket, new snapshot), or with ``reconnect=False`` raises `PublisherGone`. A
  new `session` in the heartbeats means the publisher restarted: with a new
  `epoch` sequences start again and a fresh snapshot is taken; with the same
  epoch (a restart from saved state, ``serve --state``) they go on, and a
  message whose seq was already delivered (decoded again after the last
  checkpoint) is dropped: exactly once to the application.
- **Typed, checked messages.** Every body is decoded into its kind's Struct
  (`streamer.net.protocol`: ``msg.data``, e.g. a `Regime`; ``msg.body`` is the same
  as a plain dict); a message that fails is counted and skipped (logged once per
  kind), or raises ProtocolError with ``strict=True``.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import zmq

from streamer.errors import ConfigError, ProtocolError
from streamer.net import protocol as P
from streamer.net.protocol import Message
from streamer.net.security import CurveClient
from streamer.net.sockets import (
    SocketWaiter,
    check_endpoint,
    connect,
    reachable,
    sync_socket,
    term_context,
)

log = logging.getLogger(__name__)

_NB = zmq.NOBLOCK
REPORT_INTERVAL = 0.2  # seconds between progress reports, at least, while it reads or waits


class PublisherGone(ProtocolError):
    """No message, not even a heartbeat, for longer than the heartbeat timeout."""


@dataclass
class SubscriberStats:
    """What the client saw; `missed` is the number of messages it knows it lost."""

    received: int = 0  # messages off the socket, heartbeats included
    delivered: int = 0  # handed to the caller (snapshot items included)
    invalid: int = 0  # failed the schema or not JSON: skipped
    stale: int = 0  # live updates already covered by the snapshot
    missed: int = 0  # seq numbers never seen
    gaps: int = 0  # times a jump was seen
    restarts: int = 0  # publisher restarts noticed (new session, or seq going back)
    resumes: int = 0  # ... of those, restarts from saved state (same epoch: seq goes on)
    repeats: int = 0  # messages with a seq already delivered (after a resume): dropped
    reconnects: int = 0  # after heartbeat silence
    snapshots: int = 0
    snapshot_items: int = 0
    resyncs: int = 0  # snapshots taken again after a gap, to catch up with the current state


class Subscriber:
    """An async iterator of `Message`s from a streamer publisher (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        topics: Sequence[str] = ("",),
        *,
        snapshot: bool | str = True,
        check: bool = True,
        strict: bool = False,
        heartbeat_timeout: float = 3.0,
        reconnect: bool = True,
        snapshot_timeout: float = 2.0,
        curve: CurveClient | None = None,
        context: zmq.Context[Any] | None = None,
        rcvhwm: int = P.DEFAULT_HWM,
        batch: int = 1024,
        resync: float | None = 1.0,
        report: bool = True,
    ) -> None:
        check_endpoint(endpoint, "endpoint")
        if isinstance(topics, str):
            topics = [topics]
        if heartbeat_timeout <= 0:
            raise ConfigError(f"heartbeat timeout must be > 0, not {heartbeat_timeout}")
        self.endpoint = endpoint
        self.topics = list(topics) or [""]
        self.snapshot = snapshot
        self.check = check
        self.strict = strict
        self.heartbeat_timeout = heartbeat_timeout
        self.reconnect = reconnect
        self.snapshot_timeout = snapshot_timeout
        self.curve = curve
        self.rcvhwm = rcvhwm
        self.batch = batch
        # after a gap, take the snapshot again (at most once per `resync` s; None: never)
        self.resync = resync
        # progress reports to the publisher, so a replay waits for this reader (not if stalled)
        self.report = report
        self.client_id = secrets.token_hex(8)
        self.stats = SubscriberStats()
        self.session: str | None = None
        self.epoch: str | None = None
        self.heartbeats_wanted = P.matches(P.HEARTBEAT, self.topics)
        self._own_ctx = context is None
        self._ctx = context
        self._sock: zmq.Socket[Any] | None = None
        self._waiter: SocketWaiter | None = None
        self._ready: deque[Message] = deque()
        self._expect: dict[str, int] = {}
        self._delivered: dict[str, int] = {}  # per topic: one past the last seq handed over
        self._floor: dict[str, int] = {}
        self._need_join = True
        self._last_rx = 0.0
        self._warned: set[str] = set()
        self._outage = False
        self._heard = False
        self._before: dict[str, int] = {}  # expectations before a reconnect
        self._closed = False
        self._snapshot_at: str | None = None  # where the join's snapshot came from
        self._behind = False  # a gap was seen: the state should be taken again
        self._next_resync = 0.0
        self._reporter: zmq.Socket[Any] | None = None  # DEALER to the snapshot socket
        self._report_every = 1024  # messages between reports (from the heartbeat's `hwm`)
        self._unreported = 0
        self._next_report = 0.0

    # -- life cycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Subscriber:
        self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def open(self) -> None:
        """Create, subscribe and connect the socket (joining happens on the first `recv`)."""
        self._close_socket()
        if self._ctx is None:
            self._ctx = zmq.Context()
        sock = sync_socket(self._ctx, zmq.SUB)
        sock.rcvhwm = self.rcvhwm
        if self.curve is not None:
            self.curve.apply(sock)
        for t in self.topics:
            if t != P.HEARTBEAT:
                sock.setsockopt(zmq.SUBSCRIBE, t.encode())
        # heartbeats last: when the publisher sees this one, it has seen the others
        sock.setsockopt(zmq.SUBSCRIBE, P.HEARTBEAT.encode())
        try:
            connect(sock, self.endpoint)
        except BaseException:
            sock.close(linger=0)
            raise
        self._sock = sock
        self._waiter = SocketWaiter(sock)
        self._need_join = True
        self._heard = False
        self._expect.clear()
        self._floor.clear()
        self._last_rx = time.monotonic()

    def _close_socket(self) -> None:
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_socket()
        if self._reporter is not None:
            self._reporter.close(linger=0)
            self._reporter = None
        if self._own_ctx and self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            await term_context(ctx)

    # -- receiving ------------------------------------------------------------------------------

    def __aiter__(self) -> Subscriber:
        return self

    async def __anext__(self) -> Message:
        if self._closed:
            raise StopAsyncIteration
        return await self.recv()

    async def recv(self) -> Message:
        """The next message for the caller (snapshot items first after a join)."""
        if self._sock is None and not self._closed:
            self.open()
        while not self._ready:
            if self._closed:
                raise ProtocolError("the subscriber is closed")
            if self._need_join:
                await self._join()
                continue
            if self._behind and await self._resync():
                continue
            waiter = self._waiter
            assert waiter is not None
            now = time.monotonic()
            if now >= self._next_report:
                self._report()  # a reader waiting for messages is not a stalled one
            left = self._last_rx + self.heartbeat_timeout - now
            if await waiter.wait(min(left, REPORT_INTERVAL)):
                self._drain(self._accept)
            elif time.monotonic() - self._last_rx >= self.heartbeat_timeout:
                self._gone()
        self.stats.delivered += 1
        return self._ready.popleft()

    def _drain(self, handle: Any) -> int:
        sock = self._sock
        n = 0
        while sock is not None and n < self.batch:
            try:
                frames = sock.recv_multipart(_NB)
            except zmq.Again:
                break
            n += 1
            handle(frames)
        if n:
            self._last_rx = time.monotonic()
            self._heard = True
        return n

    def _gone(self) -> None:
        """Silence for the heartbeat timeout: raise, wait on, or reconnect.

        Before the first message on this socket there is nothing to repair: ZeroMQ
        keeps dialling by itself, so the client just goes on waiting (a new socket
        here could throw away the first messages of a publisher that is just
        starting). After that, silence means the publisher (or the path to it) is
        gone: a new socket and a new snapshot.
        """
        text = f"no message from {self.endpoint} for {self.heartbeat_timeout:g} s"
        if not self.reconnect:
            raise PublisherGone(f"{text}: publisher gone")
        self._last_rx = time.monotonic()
        if not self._heard:
            if not self._outage:
                log.warning("%s: still waiting for the publisher", text)
            self._outage = True
            return
        self.stats.reconnects += 1
        (log.info if self._outage else log.warning)("%s: reconnecting", text)
        self._outage = True
        self._before = dict(self._expect)  # to count what the new snapshot skips
        self.open()

    def _invalid(self, kind: str, why: str) -> None:
        self.stats.invalid += 1
        if self.strict:
            raise ProtocolError(why)
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("skipping invalid %s message: %s", kind, why)

    def _parse(self, frames: list[bytes]) -> Message | None:
        self.stats.received += 1
        if len(frames) != 2:
            self._invalid("?", f"{len(frames)} frames, expected [topic, body]")
            return None
        try:
            return P.decode(frames, check=self.check)
        except ProtocolError as e:
            self._invalid(P.kind_of(frames[0].decode(errors="replace")), str(e))
            return None

    def _accept(self, frames: list[bytes]) -> None:
        """One live message: heartbeat handling, snapshot floor, gap detection, delivery."""
        msg = self._parse(frames)
        if msg is None:
            return
        self._outage = False
        topic, data = msg.topic, msg.data
        seq = data.seq
        heartbeat = isinstance(data, P.Heartbeat) or msg.kind == P.HEARTBEAT
        if heartbeat:
            self._on_heartbeat(msg)
        floor = self._floor.get(topic)
        if floor is not None:
            if seq <= floor:
                self.stats.stale += 1
                return
            del self._floor[topic]  # FIFO per topic: everything after this is newer too
        gap = 0
        exp = self._expect.get(topic)
        if exp is not None:
            if seq > exp:
                gap = seq - exp
                self.stats.missed += gap
                self.stats.gaps += 1
                self._behind = True
                log.info("%s: %d message(s) lost before seq %d", topic, gap, seq)
            elif seq < exp:
                if self.epoch is not None and self.epoch != self.session:
                    # a publisher with saved state numbers backwards only after a resume,
                    # for ticks decoded again since its last checkpoint: seen already
                    self.stats.repeats += 1
                    return
                self.stats.restarts += 1  # only a restarted publisher numbers backwards
        self._expect[topic] = seq + 1
        self._delivered[topic] = seq + 1
        self._unreported += 1
        if self._unreported >= self._report_every:
            self._report()
        if heartbeat and not self.heartbeats_wanted:
            return
        if gap:
            msg.gap = gap
        self._ready.append(msg)

    def _on_heartbeat(self, msg: Message) -> None:
        data = msg.data
        if isinstance(data, P.Heartbeat):
            session: str | None = data.session
            epoch: Any = data.epoch if isinstance(data.epoch, str) else session
            last: Any = data.last
        else:  # unchecked: the body as it came
            session, last = msg.body.get("session"), msg.body.get("last")
            epoch = msg.body.get("epoch", session)
        if self.session is not None and session != self.session:
            self.stats.restarts += 1
            if epoch == self.epoch:
                log.warning("publisher at %s restarted from saved state", self.endpoint)
                self.stats.resumes += 1
                self._floor.clear()
                for topic, prev in self._before.items():  # kept across a reconnect
                    self._expect.setdefault(topic, prev)
                self._before = {}
            else:
                log.warning("publisher at %s restarted (new session)", self.endpoint)
                self._expect.clear()
                self._delivered.clear()
                self._floor.clear()
                self._need_join = bool(self.snapshot)
        self.session = session
        self.epoch = epoch
        hwm = data.hwm if isinstance(data, P.Heartbeat) else None
        if isinstance(hwm, int):
            # well inside the half of its queue the publisher lets a reader fall behind
            self._report_every = max(1, hwm // 8) if hwm else 1 << 30
        self._report()
        if not isinstance(last, dict):
            return
        for topic, n in last.items():
            exp = self._expect.get(topic)
            if exp is None or type(n) is not int or n < exp or topic in self._floor:
                continue
            if not P.matches(topic, self.topics):
                continue
            lost = n - exp + 1  # published up to n before this heartbeat; we stopped before
            self.stats.missed += lost
            self.stats.gaps += 1
            self._behind = True
            self._expect[topic] = n + 1
            log.info("%s: %d message(s) lost at the tail (seq %d..%d)", topic, lost, exp, n)

    # -- joining --------------------------------------------------------------------------------

    async def _join(self) -> None:
        """Wait for a heartbeat (subscriptions live), then take the snapshot if asked to."""
        self._need_join = False
        if not self.snapshot:
            return
        waiter = self._waiter
        assert waiter is not None
        pending: list[list[bytes]] = []
        heartbeat: P.Heartbeat | None = None

        def hold(frames: list[bytes]) -> None:
            nonlocal heartbeat
            pending.append(frames)
            if heartbeat is None and len(frames) == 2 and frames[0] == b"heartbeat":
                with contextlib.suppress(ProtocolError):
                    hb = P.parse_body(frames[1], P.HEARTBEAT)
                    heartbeat = hb if isinstance(hb, P.Heartbeat) else None

        while heartbeat is None:
            left = self._last_rx + self.heartbeat_timeout - time.monotonic()
            if await waiter.wait(left):
                self._drain(hold)
            elif time.monotonic() - self._last_rx >= self.heartbeat_timeout:
                reopened = self._heard
                self._gone()  # raises, keeps waiting, or reopens (pending is stale then)
                if reopened:
                    self._need_join = False
                    waiter = self._waiter
                    assert waiter is not None
                    pending.clear()
        where = self.snapshot if isinstance(self.snapshot, str) else None
        if where is None and heartbeat is not None and heartbeat.snapshot:
            where = reachable(str(heartbeat.snapshot), self.endpoint)
        self._snapshot_at = where
        self._open_reporter(where)
        if where:
            await self._take_snapshot(where)
        for frames in pending:
            self._accept(frames)

    def _open_reporter(self, where: str | None) -> None:
        if self._reporter is not None:
            self._reporter.close(linger=0)
            self._reporter = None
        if not (self.report and where) or self._ctx is None:
            return
        r = sync_socket(self._ctx, zmq.DEALER)
        r.sndhwm = 16  # a report that cannot go at once is not worth keeping
        if self.curve is not None:
            self.curve.apply(r)
        try:
            connect(r, where, "snapshot endpoint")
        except BaseException:
            r.close(linger=0)
            raise
        self._reporter = r

    def _report(self) -> None:
        """Tell the publisher how far this client has read (`Progress`): never waits."""
        self._unreported = 0
        self._next_report = time.monotonic() + REPORT_INTERVAL
        r = self._reporter
        if r is None:
            return
        st = self.stats
        frames = P.progress_report(
            self.client_id, self.topics, sum(self._expect.values()), st.missed, st.resyncs
        )
        with contextlib.suppress(zmq.Again):
            r.send_multipart(frames, _NB)

    async def _resync(self) -> bool:
        """After a gap (a stalled reader catching up): the current state again (clone pattern).

        The snapshot brings the latest message per topic and key, and live updates
        at or below it are dropped as stale, so the application is up to date again
        without doing anything. Rate-limited to one per `resync` seconds.
        """
        now = time.monotonic()
        if self.resync is None or not self._snapshot_at or now < self._next_resync:
            return False
        self._behind = False
        self._next_resync = now + self.resync
        self.stats.resyncs += 1
        log.info("taking the snapshot again after a gap")
        await self._take_snapshot(self._snapshot_at)
        return True

    async def _take_snapshot(self, where: str) -> None:
        assert self._ctx is not None
        dealer = sync_socket(self._ctx, zmq.DEALER)
        waiter: SocketWaiter | None = None
        try:
            if self.curve is not None:
                self.curve.apply(dealer)
            connect(dealer, where, "snapshot endpoint")
            waiter = SocketWaiter(dealer)
            dealer.send_multipart(P.snapshot_request(self.topics))
            if not await waiter.wait(self.snapshot_timeout):
                log.warning(
                    "no snapshot from %s within %g s; going on without it",
                    where,
                    self.snapshot_timeout,
                )
                return
            frames = dealer.recv_multipart(_NB)
        finally:
            if waiter is not None:
                waiter.close()
            dealer.close(linger=0)
        try:
            meta, items = P.parse_snapshot_reply(frames, check=self.check)
        except ProtocolError as e:
            self._invalid("snapshot", str(e))
            return
        self.stats.snapshots += 1
        old_session, old_epoch = self.session, self.epoch
        self.session = meta.session
        self.epoch = meta.epoch if isinstance(meta.epoch, str) else meta.session
        # the same numbering: the same publisher (a reconnect), or one resumed from its state
        same = old_epoch is not None and self.epoch == old_epoch
        if old_session is not None and self.session != old_session:
            self.stats.restarts += 1
            self.stats.resumes += same
        before = self._before if same else {}
        # the same numbering (a resync after a gap, say): the application keeps what it has,
        # and a seq it was handed, or counted as lost, is not expected again
        expected = dict(self._expect) if same else {}
        delivered = dict(self._delivered) if same else {}
        if not same:
            self._delivered.clear()  # a new numbering
        for topic, n in meta.seq.items():
            self._floor[topic] = n
            prev = before.get(topic)
            self._expect[topic] = n + 1 if prev is None else max(n + 1, prev)
            if prev is not None and n >= prev and P.matches(topic, self.topics):
                # published while we were away: the snapshot has at most the latest per key
                shown = sum(1 for m in items if m.topic == topic and m.seq >= prev)
                lost = n - prev + 1 - shown
                if lost > 0:
                    self.stats.missed += lost
                    self.stats.gaps += 1
        for topic, prev in before.items():
            self._expect.setdefault(topic, prev)  # seqs below it are repeats when they come
        for topic, exp in expected.items():
            self._expect[topic] = max(self._expect.get(topic, exp), exp)
        self._before = {}
        for m in items:
            if m.kind == P.HEARTBEAT and not self.heartbeats_wanted:
                continue
            prev = before.get(m.topic)
            if (prev is not None and m.seq < prev) or m.seq < delivered.get(m.topic, 0):
                self.stats.repeats += 1  # delivered before the restart, or before the gap
                continue
            self._delivered[m.topic] = max(self._delivered.get(m.topic, 0), m.seq + 1)
            self.stats.snapshot_items += 1
            self._ready.append(m)

    def stats_dict(self) -> dict[str, int]:
        return asdict(self.stats)


__all__ = ["PublisherGone", "Subscriber", "SubscriberStats"]

"""The publisher: an XPUB socket that never blocks the pipeline, and snapshots for late joiners.

Loss is a choice here, made up front and reported, not an accident:

- Sends are non-blocking and ZeroMQ queues up to `hwm` messages per subscriber
  (default 200,000: four seconds of a 50k msgs/s stream, or about 60 MB for a
  subscriber that stops reading). The policy says what happens at the mark:
  ``fair`` (default) sends with ``ZMQ_XPUB_NODROP`` on, so a full queue refuses
  the send rather than drop it. A producer that can wait (`pacing`, `ready`: a
  replay at ``--speed 0``) has it held and waits until it goes out, so readers
  lose nothing; when nothing gets through for `stall_timeout` seconds a subscriber
  is stalled and the socket turns lossy (NODROP off: only full queues drop). A
  sender that cannot wait turns it lossy at the first refusal. A probe (one send
  with NODROP on, about once a second) finds when every queue has room again.
  ``lossless`` holds for a waiting producer as long as it takes (one stalled
  reader stops it) and drops for all, counted, when the sender cannot wait;
  ``lossy`` is plain PUB. ZeroMQ does not say which queue is full: a slow plain
  reader loses too while full queues drop (it sees the gap in `seq`).
- Late joiners get the current state through the zguide's clone pattern: a
  ROUTER socket answers a snapshot request with the latest message per topic
  and key (each symbol's regime, each stream's last word, the status) plus the
  last `seq` of every topic; the subscriber, already subscribed, drops updates at
  or below it.
- Heartbeats go out every `heartbeat` seconds (and at once when someone
  subscribes to them, so a joining client need not wait for the next one),
  carrying the last seq per topic so a subscriber can also see losses at the
  tail of a stream. They also carry the audio level of each capture stream
  (`levels`, set by the service), where the dashboard shows it.
- Every `summary_interval` seconds (0.1) each symbol's decodes since the last
  time go out as one `summary.SYMBOL` message (`streamer.net.summary`), for
  clients that draw charts and need not decode every tick.
- Subscribers are counted from XPUB's subscription messages: a subscriber is a
  subscription that receives heartbeats (``heartbeat``, or a prefix of it such
  as everything), which `streamer.net.Subscriber` always makes last. So
  `wait_subscribers(n)` returns once n clients can receive everything they
  asked for: nothing is lost to the slow-joiner effect.

Publishing is synchronous (it never waits): `publish` / `publish_many`, the
`streamer.messages.Sink` protocol every stage sends to. The asyncio side only
runs the heartbeat, reads subscriptions and answers snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import zmq

from streamer import __version__
from streamer.errors import ConfigError, ProtocolError
from streamer.messages import DecodeBatch, Message, RegimeDecode
from streamer.net import protocol as P
from streamer.net.security import CurveServer, acquire_auth, release_auth
from streamer.net.sockets import (
    SocketWaiter,
    bind,
    check_endpoint,
    derived_endpoint,
    sync_socket,
    term_context,
)
from streamer.net.summary import Summaries

log = logging.getLogger(__name__)

_MORE_NB = zmq.SNDMORE | zmq.NOBLOCK
# The Cython send under pyzmq's Python wrapper: 0.65 us a frame instead of 1.1-1.4 (the
# wrapper's extra work is for options we do not use: routing ids, groups, large-copy tuning).
_raw_send = zmq.backend.Socket.send
_NB = zmq.NOBLOCK
_HB = P.HEARTBEAT.encode()


SNAPSHOT_GRACE = 1.0  # seconds wait_subscribers allows the new subscribers to take snapshots
MAX_READERS = 1024  # reporting subscribers remembered at most (the oldest report goes first)


@dataclass
class _Reader:
    """The latest progress report of one subscriber (`streamer.net.Subscriber`)."""

    topics: list[str]
    read: int  # how far it has read: the next seq it expects, summed over its topics
    ahead: int  # ...and how far the publisher had sent on those topics when the report came
    released: int  # the publisher's count of all messages sent (not held) then
    heard: float  # monotonic time of the report
    advanced: float  # ...of the last report that read more, or had nothing left to read
    missed: int
    resyncs: int


class Publisher:
    """XPUB + snapshot ROUTER + heartbeat; use as ``async with Publisher(...) as pub``."""

    def __init__(
        self,
        endpoint: str = P.DEFAULT_PUB,
        *,
        snapshot: str | bool = True,
        hwm: int = P.DEFAULT_HWM,
        policy: P.PublishPolicy = "fair",
        stall_timeout: float = 2.0,
        lossy: bool = False,
        heartbeat: float = P.DEFAULT_HEARTBEAT,
        metrics_interval: float = 5.0,
        summary_interval: float = 0.1,
        curve: CurveServer | None = None,
        context: zmq.Context[Any] | None = None,
        linger: float = 2.0,
        latency: bool = False,
        clock: Callable[[], float] = time.time,
        epoch: str | None = None,
        seqs: Mapping[str, int] | None = None,
    ) -> None:
        check_endpoint(endpoint, "--pub")
        if hwm < 0:
            raise ConfigError(f"--hwm must be >= 0 (0 = no limit), not {hwm}")
        if not 0 < heartbeat <= 1.0:
            raise ConfigError(f"--heartbeat must be in (0, 1] seconds, not {heartbeat}")
        if metrics_interval < 0:
            raise ConfigError(f"--metrics-interval must be >= 0, not {metrics_interval}")
        if summary_interval < 0:
            raise ConfigError(f"--summary-interval must be >= 0, not {summary_interval}")
        if lossy:
            policy = "lossy"  # the older flag, kept for scripts
        if policy not in P.POLICIES:
            raise ConfigError(f"--policy must be one of {', '.join(P.POLICIES)}, not {policy!r}")
        if not stall_timeout > 0:
            raise ConfigError(f"--subscriber-stall must be > 0 seconds, not {stall_timeout}")
        self.requested = endpoint
        self.endpoint = endpoint
        if snapshot is True:
            self.snapshot_endpoint: str | None = derived_endpoint(endpoint)
        elif snapshot:
            self.snapshot_endpoint = check_endpoint(str(snapshot), "--snapshot")
        else:
            self.snapshot_endpoint = None
        self.hwm = hwm
        self.policy: P.PublishPolicy = policy
        self.stall_timeout = stall_timeout
        # fair: whether the socket refuses a send when a queue is full (XPUB_NODROP) right now
        self.lossless = policy != "lossy"
        self.stalls = 0  # times the fair policy let full queues drop (a stalled subscriber)
        self.recoveries = 0  # ...and times a probe found every queue with room again
        self.held_max = max(hwm, 10_000)  # messages held for a waiting producer, at most
        self._held: deque[tuple[str, bytes, bytes]] = deque()  # (kind, topic, body), in order
        self._pacers = 0  # producers that await `ready` between batches (see `pacing`)
        self._progress = 0.0  # monotonic time of the last send that got through while holding
        self._next_probe = 0.0
        self._readers: OrderedDict[str, _Reader] = OrderedDict()  # by client id, oldest first
        self.bad_reports = 0
        self.heartbeat_interval = heartbeat
        self.metrics_interval = metrics_interval
        self.summary_interval = summary_interval
        # per-symbol summaries of the regime decodes (docs/protocol.md, `summary`), if wanted
        self.summaries: Summaries | None = Summaries() if summary_interval > 0 else None
        # the audio level per capture stream for the heartbeats (the service sets it)
        self.levels: Callable[[], dict[str, P.Level]] | None = None
        self.curve = curve
        self.linger = linger
        self.latency = latency
        self.clock = clock
        self.session = secrets.token_hex(8)
        # the seq numbering: a restart with saved state keeps it (and `seqs`, the next seq
        # of every topic), a fresh start gets a new one (see docs/protocol.md)
        self.epoch = epoch or self.session
        self.sources: list[str] = []
        self.state = "starting"
        self.sent: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self.invalid = 0
        self.snapshots_served = 0
        self.subscribers = 0  # live subscriptions that receive heartbeats (see module docstring)
        self.subscriptions: Counter[str] = Counter()
        self._own_ctx = context is None
        self._ctx: zmq.Context[Any] | None = context
        self._sock: zmq.Socket[Any] | None = None
        self._router: zmq.Socket[Any] | None = None
        self._seq: dict[bytes, int] = {t.encode(): int(n) for t, n in (seqs or {}).items()}
        self._numbered = sum(self._seq.values())  # messages given a seq, all topics together
        self._state: dict[tuple[bytes, str | None], tuple[int, bytes]] = {}
        self._regime_topics: dict[str, bytes] = {}
        self._providers: dict[str, Callable[[], Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._sub_changed: asyncio.Event | None = None
        self._waiter: SocketWaiter | None = None
        self._t0 = time.monotonic()
        self._auth: Any = None
        self._closed = False
        self._warned: set[str] = set()
        # told the next seq after each message other than a regime or a heartbeat (the
        # service's `streamer.state.SeqJournal`: those are not published again after a crash)
        self.on_seq: Callable[[bytes, int], None] | None = None
        # told, after each batch of a regime topic, its next seq and the last tick's time (the
        # service's `streamer.state.RegimeMarks`, so a resume never numbers a new tick twice)
        self.on_regime: Callable[[bytes, int, float], None] | None = None
        # after a resume: per regime topic, the last tick time published before the crash and
        # the next seq then; the first newer tick is numbered from there (`renumber`)
        self._renumber: dict[bytes, tuple[float, int]] = {}

    # -- life cycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Bind the sockets and start the heartbeat and snapshot tasks."""
        if self._ctx is None:
            self._ctx = zmq.Context()
        ctx = self._ctx
        try:
            if self.curve is not None:
                self._auth = acquire_auth(ctx, self.curve)
            sock = self._sock = sync_socket(ctx, zmq.XPUB)
            sock.sndhwm = self.hwm
            if self.lossless:
                sock.setsockopt(zmq.XPUB_NODROP, 1)
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)  # every (un)subscription, to count subscribers
            if self.curve is not None:
                self.curve.apply(sock)
            self.endpoint = bind(sock, self.requested, "--pub")
            if self.snapshot_endpoint:
                r = self._router = sync_socket(ctx, zmq.ROUTER)
                r.sndhwm = 1000
                if self.curve is not None:
                    self.curve.apply(r)
                self.snapshot_endpoint = bind(r, self.snapshot_endpoint, "--snapshot")
        except BaseException:
            await self._close_sockets(flush=False)
            raise
        self._t0 = time.monotonic()
        self._sub_changed = asyncio.Event()
        self._waiter = SocketWaiter(sock)
        self._tasks.append(asyncio.create_task(self._run(), name="publisher:heartbeat"))
        if self._router is not None:
            self._tasks.append(asyncio.create_task(self._serve_snapshots(), name="publisher:snap"))
        log.info(
            "publishing on %s (snapshots on %s, hwm %d, %s)",
            self.endpoint,
            self.snapshot_endpoint,
            self.hwm,
            self.policy,
        )

    async def aclose(self) -> None:
        """Stop the tasks and close; queued messages get up to `linger` seconds to go out."""
        if self._closed:
            return
        self._closed = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()
        if not self._flush():  # held for a producer that stopped waiting
            self._go_lossy("closing")
            self._flush()
            for kind, _, _ in self._held:
                self.dropped[kind] += 1
            self._held.clear()
        await self._close_sockets(flush=True)

    async def _close_sockets(self, flush: bool) -> None:
        if self._waiter is not None:
            self._waiter.close()
            self._waiter = None
        if self._sock is not None:
            self._sock.close(linger=int(self.linger * 1000) if flush else 0)
            self._sock = None
        if self._router is not None:
            self._router.close(linger=0)
            self._router = None
        if self._auth is not None and self._ctx is not None:
            release_auth(self._ctx)
            self._auth = None
        if self._own_ctx and self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            if not await term_context(ctx, self.linger + 3.0):
                log.warning("ZeroMQ context did not terminate in time")

    def _alive(self) -> zmq.Socket[Any]:
        """The socket; a failure of a background task reaches the publishing caller here."""
        sock = self._sock
        if sock is None:
            raise ProtocolError("the publisher is not started, or closed")
        for t in self._tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]
        return sock

    # -- publishing -----------------------------------------------------------------------------

    def _emit(self, t: bytes, body: bytes) -> bool:
        """Send two frames without waiting; False if the high-water mark refused the message.

        libzmq checks the mark per whole message (its pipes count complete
        messages), so once the first frame is accepted the second cannot be refused.
        """
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.send(t, _MORE_NB)
        except zmq.Again:
            return False
        sock.send(body, _NB)
        return True

    def _next_seq(self, t: bytes) -> int:
        seq = self._seq.get(t, 0)
        self._seq[t] = seq + 1
        return seq

    def renumber(self, marks: Mapping[str, tuple[int, float]]) -> None:
        """After a resume: `marks` is topic -> (next seq, last tick time) as published before.

        Ticks decoded again since the checkpoint keep the seqs they had (repeats); the
        first tick newer than the last published goes on from the next seq then, so
        no seq is ever given to two different decodes.
        """
        for topic, (n, last) in marks.items():
            t = topic.encode()
            if topic.startswith(P.REGIME) and n > self._seq.get(t, 0):
                self._renumber[t] = (last, n)

    def next_seqs(self) -> dict[str, int]:
        """The next seq of every topic frame (for a checkpoint: `seqs` on restart)."""
        return {t.decode(): n for t, n in self._seq.items()}

    def publish_body(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        key: str | None = None,
        state_key: str | None = None,
    ) -> bool:
        """Publish any kind's payload on ``kind[.key]``; the snapshot keeps it under `state_key`.

        Returns False if the message was dropped (high-water mark) or is not a valid
        `kind` (NaN, say: counted as invalid and logged once). Never waits.
        """
        self._alive()
        t = P.topic(kind, key).encode()
        try:
            body = P.encode_body(kind, self._seq.get(t, 0), self.clock(), payload)
        except ProtocolError as e:
            self._unencodable(kind, e)
            return False
        return self._publish(kind, t, body, state_key)

    def publish_message(
        self, msg: P.Body, *, key: str | None = None, state_key: str | None = None
    ) -> bool:
        """Publish a typed message; its `seq` and `ts` are set here. As `publish_body`."""
        self._alive()
        kind = P.kind_of_type(msg)
        t = P.topic(kind, key).encode()
        msg.seq = self._seq.get(t, 0)
        msg.ts = self.clock()
        try:
            body = P.encode(msg)
        except ProtocolError as e:
            self._unencodable(kind, e)
            return False
        return self._publish(kind, t, body, state_key)

    def _publish(self, kind: str, t: bytes, body: bytes, state_key: str | None) -> bool:
        seq = self._seq.get(t, 0)
        self._seq[t] = seq + 1
        self._numbered += 1
        if kind != P.HEARTBEAT:  # heartbeats are liveness, not state
            self._state[(t, state_key)] = (seq, body)
            if self.on_seq is not None and kind != P.REGIME:
                self.on_seq(t, seq + 1)
        if self._held or self._room() == 0:  # behind what waits, in order
            return self._hold(kind, t, body)  # (so a heartbeat's `last` stays true)
        if not self.lossless and self.policy == "fair" and time.monotonic() >= self._next_probe:
            return self._probe(kind, t, body)
        if self._emit(t, body):
            self.sent[kind] += 1
            return True
        return self._refused(kind, t, body)

    # -- full queues: hold, drop for one, or drop for all (see docs/protocol.md, "Loss") --------

    def _hold(self, kind: str, t: bytes, body: bytes) -> bool:
        """Keep a message for `ready` to send (a waiting producer); dropped past `held_max`."""
        held = self._held
        if len(held) >= self.held_max:
            self.dropped[kind] += 1
            return False
        if not held:
            self._progress = time.monotonic()
        held.append((kind, t, body))
        return True

    def _refused(self, kind: str, t: bytes, body: bytes) -> bool:
        """A send refused because some subscriber's queue is full (XPUB_NODROP).

        A producer that waits (`pacing`) gets the message held until `ready` sends it.
        Under ``fair`` with no one to wait, only the full queue should lose: the
        socket stops refusing (lossy) and the message goes to everyone else at once.
        Under ``lossless`` with no one to wait it is dropped for all, and counted.
        """
        if self._pacers and self.lossless:
            return self._hold(kind, t, body)
        if self.policy == "fair":
            self._go_lossy("a subscriber's queue is full and the sender cannot wait")
            if self._emit(t, body):
                self.sent[kind] += 1
                return True
        self.dropped[kind] += 1
        return False

    def _set_nodrop(self, on: bool) -> None:
        # libzmq reads XPUB_NODROP on every send, so this takes effect at the next one
        if self._sock is not None:
            self._sock.setsockopt(zmq.XPUB_NODROP, int(on))

    def _go_lossy(self, why: str) -> None:
        """Fair policy: a stalled subscriber's queue drops its messages, nobody else's."""
        if self.policy != "fair" or not self.lossless or self._sock is None:
            return
        self._set_nodrop(False)
        self.lossless = False
        self.stalls += 1
        self._next_probe = time.monotonic() + self.probe_interval
        log.warning("a subscriber is stalled (%s): it alone loses messages now", why)
        self._flush()

    @property
    def probe_interval(self) -> float:
        """How often the lossy phase of ``fair`` checks whether every queue has room again."""
        return min(1.0, self.stall_timeout / 2)

    def _probe(self, kind: str, t: bytes, body: bytes) -> bool:
        """One send with XPUB_NODROP on: if it goes through, no queue is full any more."""
        self._next_probe = time.monotonic() + self.probe_interval
        self._set_nodrop(True)
        if self._emit(t, body):
            self.lossless = True
            self.recoveries += 1
            log.info("every subscriber's queue has room again: lossless for all")
            self.sent[kind] += 1
            return True
        self._set_nodrop(False)
        if self._emit(t, body):
            self.sent[kind] += 1
            return True
        self.dropped[kind] += 1
        return False

    def _flush(self) -> bool:
        """Send what is held, in order, as far as there is room; True once nothing is left."""
        held = self._held
        room = self._room()
        while held:
            kind, t, body = held[0]
            if room is not None:
                if room <= 0:
                    return False
                room -= 1
            if not self._emit(t, body):
                return False
            held.popleft()
            self.sent[kind] += 1
            self._progress = time.monotonic()
        return True

    @contextlib.contextmanager
    def pacing(self) -> Iterator[None]:
        """Mark a producer that awaits `ready` between batches (a replay at ``--speed 0``).

        While one is marked, a send refused at a full queue is held for `ready`
        instead of dropped: the producer goes at the pace of its subscribers.
        """
        self._pacers += 1
        try:
            yield
        finally:
            self._pacers -= 1

    @property
    def held(self) -> int:
        """Messages waiting for room in a subscriber's queue."""
        return len(self._held)

    async def ready(self) -> None:
        """Return when the producer may send more: what was held has gone out.

        Under ``fair``, when nothing has got through for `stall_timeout` seconds,
        a subscriber is stalled: its queue is left to drop (it alone loses) and
        the rest goes out at once. Under ``lossless`` this waits as long as it takes.
        """
        delay = 0.0005
        while not self._flush():
            if self._sock is None:
                self._held.clear()
                return
            if self.policy == "fair" and time.monotonic() - self._progress >= self.stall_timeout:
                self._go_lossy(f"no message got through for {self.stall_timeout:g} s")
                continue
            await asyncio.sleep(delay)  # room comes, or a reader's report that it read
            delay = min(delay * 2, 0.01 if self.lossless else 0.002)

    # -- progress reports (`streamer.net.Subscriber`): waiting for readers, not for stalls -------

    @property
    def _released(self) -> int:
        """Messages that left the publisher (sent or dropped), all topics together."""
        return self._numbered - len(self._held)

    def _matching(self, topics: list[str]) -> int:
        """How far the publisher has sent on `topics`: next seq, summed over their topic frames."""
        if "" in topics:
            return self._released
        prefixes = [*topics, P.HEARTBEAT]  # a client always takes heartbeats
        ahead = sum(n for t, n in self._seq.items() if P.matches(t.decode(), prefixes))
        return ahead - sum(1 for _, t, _ in self._held if P.matches(t.decode(), prefixes))

    def _on_progress(self, report: P.Progress) -> None:
        now = time.monotonic()
        old = self._readers.pop(report.client, None)
        ahead = self._matching(report.topics)
        moved = old is None or report.read > old.read or ahead - report.read <= self.hwm // 2
        self._readers[report.client] = _Reader(
            topics=report.topics,
            read=report.read,
            ahead=ahead,
            released=self._released,
            heard=now,
            advanced=now if moved or old is None else old.advanced,
            missed=report.missed,
            resyncs=report.resyncs,
        )
        while len(self._readers) > MAX_READERS:
            self._readers.popitem(last=False)

    def _stalled(self, r: _Reader, now: float) -> bool:
        """No report, or behind and no further, for `stall_timeout` s: not waited for."""
        return now - r.heard >= self.stall_timeout or now - r.advanced >= self.stall_timeout

    def _expire_readers(self, now: float) -> None:
        gone = now - max(10.0, 5 * self.stall_timeout)
        while self._readers:
            first = next(iter(self._readers.values()))
            if first.heard >= gone:
                break
            self._readers.popitem(last=False)

    def _behind(self, r: _Reader) -> int:
        """At most how many messages it has not read yet (an upper bound: all topics since)."""
        return r.ahead - r.read + self._released - r.released

    def _room(self) -> int | None:
        """How many more messages may go now without overrunning a reader (None: any number).

        While a stalled subscriber's queue drops (the lossy phase of ``fair``) ZeroMQ
        no longer holds a waiting producer back for anyone: the reporting
        subscribers that keep reading (`streamer.net.Subscriber`) are then kept
        within half a queue of what was sent, so their queues never fill. Stalled
        ones are not waited for.
        """
        if self.lossless or not self._pacers or not self.hwm or not self._readers:
            return None
        now = time.monotonic()
        limit = self.hwm // 2
        room: int | None = None
        for r in self._readers.values():
            if not self._stalled(r, now):
                left = limit - self._behind(r)
                room = left if room is None or left < room else room
        return None if room is None else max(room, 0)

    def readers(self) -> P.Readers:
        """What the reporting subscribers said (the `readers` of metrics)."""
        now = time.monotonic()
        self._expire_readers(now)
        limit = self.hwm // 2 if self.hwm else math.inf
        rs = list(self._readers.values())
        stalled = [r for r in rs if self._behind(r) and self._stalled(r, now)]
        return P.Readers(
            reporting=len(rs),
            behind=sum(1 for r in rs if r not in stalled and self._behind(r) > limit),
            stalled=len(stalled),
            missed=sum(r.missed for r in rs),
            resyncs=sum(r.resyncs for r in rs),
        )

    def _unencodable(self, kind: str, e: Exception) -> None:
        self.invalid += 1
        if kind not in self._warned:
            self._warned.add(kind)
            log.warning("not published: an invalid %s message (%s)", kind, e)

    def publish(self, msg: Message, delay: float | None = None) -> bool:
        """Publish a word event or a regime decode (the `Sink` protocol); False if dropped."""
        if isinstance(msg, RegimeDecode):
            return self.publish_many((msg,)) == 1
        payload = msg.to_wire()
        if delay is not None and self.latency:
            payload["delay_ms"] = round(delay * 1000.0, 3)
        return self.publish_body(P.SPEECH, payload, state_key=msg.stream)

    def publish_many(self, decodes: Iterable[RegimeDecode]) -> int:
        """Publish regime decodes (the hot path: one timestamp, typed bodies).

        A `DecodeBatch` (one symbol's decodes as arrays) is encoded from its arrays
        in one pass (`protocol.encode_regimes`), with no message object per tick.
        Returns how many went out or are held for `ready` (not dropped).
        """
        sock = self._alive()
        ts = self.clock()
        if self.summaries is not None:
            if not isinstance(decodes, list | tuple | DecodeBatch):
                decodes = list(decodes)
            self.summaries.add(decodes, ts)
        if isinstance(decodes, DecodeBatch):
            sent = self._publish_batch(sock, decodes, ts)
            if sent is not None:
                return sent
        topics = self._regime_topics
        seqs = self._seq
        renumber = self._renumber
        encode = P.encode_regime
        last: dict[bytes, tuple[int, bytes]] = {}
        last_t: dict[bytes, float] = {}
        out: list[tuple[bytes, bytes]] = []
        for d in decodes:
            t = topics.get(d.symbol)
            if t is None:
                t = topics[d.symbol] = P.topic(P.REGIME, d.symbol).encode()
            seq = seqs.get(t, 0)
            if renumber and t in renumber:
                before, n = renumber[t]
                if d.t > before or seq >= n:  # past what was published before the crash
                    seq = max(seq, n)
                    del renumber[t]
            try:
                body = encode(d, seq, ts)
            except ProtocolError as e:  # NaN in `extra`, say
                self._unencodable(P.REGIME, e)
                continue
            seqs[t] = seq + 1
            last[t] = (seq, body)
            last_t[t] = d.t
            out.append((t, body))
        state = self._state
        for t, v in last.items():
            state[(t, None)] = v
        if self.on_regime is not None:
            for t, v in last.items():
                self.on_regime(t, v[0] + 1, last_t[t])
        self._numbered += len(out)
        return self._send_regimes(sock, out)

    def _publish_batch(self, sock: zmq.Socket[Any], b: DecodeBatch, ts: float) -> int | None:
        """One symbol's decodes from their arrays; None if they need the careful path."""
        t = self._regime_topics.get(b.symbol)
        if t is None:
            t = self._regime_topics[b.symbol] = P.topic(P.REGIME, b.symbol).encode()
        if self._renumber and t in self._renumber:
            return None  # its first batch after a resume: message by message
        seq = self._seq.get(t, 0)
        bodies = P.encode_regimes(b, seq, ts)
        if bodies is None:
            return None
        n = len(bodies)
        if not n:
            return 0
        self._seq[t] = seq + n
        self._state[(t, None)] = (seq + n - 1, bodies[-1])
        if self.on_regime is not None:
            self.on_regime(t, seq + n, float(b.t[-1]))
        self._numbered += n
        return self._send_regimes(sock, zip(itertools.repeat(t), bodies))

    def _send_regimes(self, sock: zmq.Socket[Any], out: Iterable[tuple[bytes, bytes]]) -> int:
        """Send numbered regime messages; how many went out or are held (not dropped)."""
        send = _raw_send.__get__(sock)
        held = self._held
        room = self._room()
        cap = (1 << 62) if room is None else room  # more waits for a reader (lossy phase)
        sent = other = 0
        for t, body in out:
            if held or sent >= cap:  # behind what waits for room, in order
                other += self._hold(P.REGIME, t, body)
                continue
            try:
                send(t, _MORE_NB)
            except zmq.Again:
                other += self._refused(P.REGIME, t, body)
                continue
            send(body, _NB)
            sent += 1
        if sent:
            self.sent[P.REGIME] += sent
        return sent + other

    # -- service messages -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True before `start` and after `aclose`: nothing can be published then."""
        return self._sock is None

    async def wait_for(self, n: int, timeout: float | None = None) -> None:
        """Wait for `n` subscribers, saying so on the status topic; ConfigError on a timeout."""
        if n <= 0:
            return
        self.status("waiting", detail=f"for {n} subscriber(s)")
        log.warning("waiting for %d subscriber(s) on %s", n, self.endpoint)
        try:
            await self.wait_subscribers(n, timeout)
        except TimeoutError:
            raise ConfigError(
                f"--wait-subscribers {n}: only {self.subscribers} subscribed within {timeout} s"
            ) from None

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._t0

    def heartbeat(self) -> bool:
        last = {t.decode(): n - 1 for t, n in self._seq.items() if t != _HB}
        return self.publish_message(
            P.Heartbeat(
                v=P.VERSION,
                seq=0,
                ts=0.0,
                session=self.session,
                epoch=self.epoch,
                interval=self.heartbeat_interval,
                uptime=round(self.uptime, 3),
                subscribers=self.subscribers,
                snapshot=self.snapshot_endpoint,
                hwm=self.hwm,
                last=last,
                levels=(self.levels() or P.UNSET) if self.levels is not None else P.UNSET,
            )
        )

    def status(self, state: str, detail: str | None = None) -> bool:
        """Publish a life-cycle change (kept for late joiners)."""
        if state not in P.STATES:
            raise ValueError(f"unknown state {state!r}")
        self.state = state
        log.info("status: %s%s", state, f" ({detail})" if detail else "")
        return self.publish_message(
            P.Status(
                v=P.VERSION,
                seq=0,
                ts=0.0,
                state=cast(P.State, state),
                session=self.session,
                epoch=self.epoch,
                pid=os.getpid(),
                version=__version__,
                pub=self.endpoint,
                snapshot=self.snapshot_endpoint,
                subscribers=self.subscribers,
                sources=list(self.sources),
                detail=detail or P.UNSET,
            )
        )

    def add_metrics(self, name: str, provider: Callable[[], Any]) -> None:
        """Include ``provider()`` under `name` in every metrics message (feed, speech, ticks...)."""
        self._providers[name] = provider

    def metrics(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "session": self.session,
            "epoch": self.epoch,
            "uptime": round(self.uptime, 3),
            "subscribers": self.subscribers,
            "hwm": self.hwm,
            "policy": "nodrop" if self.lossless else "lossy",
            "publishing": self.policy,
            "stalls": self.stalls,
            "recoveries": self.recoveries,
            "held": len(self._held),
            "readers": P.builtins(self.readers()),
            "sent": dict(self.sent),
            "dropped": dict(self.dropped),
            "invalid": self.invalid,
            "snapshots": self.snapshots_served,
        }
        for name, fn in self._providers.items():
            try:
                body[name] = P.builtins(fn())
            except Exception as e:  # a broken provider must not stop the metrics
                body[name] = {"error": f"{type(e).__name__}: {e}"}
        return body

    def publish_metrics(self) -> bool:
        return self.publish_body(P.METRICS, self.metrics())

    def publish_summaries(self) -> int:
        """Send the per-symbol summaries gathered since the last call; how many went out."""
        if not self.summaries:
            return 0
        topics = self._regime_topics
        seqs = self._seq

        def regime_seq(symbol: str) -> int:
            t = topics.get(symbol)
            return seqs.get(t, 0) - 1 if t is not None else 0

        n = 0
        for m in self.summaries.take(regime_seq):
            n += self.publish_message(m, key=m.symbol)
        return n

    # -- subscribers and snapshots --------------------------------------------------------------

    async def wait_subscribers(self, n: int, timeout: float | None = None) -> None:
        """Return once `n` subscribers receive heartbeats (TimeoutError after `timeout` s)."""
        if n <= 0:
            return
        if self._sub_changed is None:
            raise ProtocolError("the publisher is not started")
        async with asyncio.timeout(timeout):
            while self.subscribers < n:
                self._sub_changed.clear()
                await self._sub_changed.wait()
        if self._router is not None:
            # A client that takes a snapshot drops live updates at or below it: let the
            # subscribers that will ask for one get it before anything is published, so a
            # fast start is not lost to them. Clients that take none cost a short grace.
            deadline = asyncio.get_running_loop().time() + SNAPSHOT_GRACE
            while self.snapshots_served < n and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)

    def _read_subscriptions(self) -> None:
        sock = self._sock
        welcome = False
        while sock is not None:
            try:
                m = sock.recv(_NB)
            except zmq.Again:
                break
            if not m or m[0] not in (0, 1):
                continue  # XPUB passes other messages from peers up too: not ours to read
            name = m[1:]
            text = name.decode(errors="replace")
            delta = 1 if m[0] == 1 else -1
            self.subscriptions[text] += delta
            if self.subscriptions[text] <= 0:
                del self.subscriptions[text]
            if _HB.startswith(name):
                self.subscribers = max(0, self.subscribers + delta)
                welcome |= delta > 0
                log.info(
                    "subscriber %s (%d now)", "joined" if delta > 0 else "left", self.subscribers
                )
                if self._sub_changed is not None:
                    self._sub_changed.set()
        if welcome:
            self.heartbeat()  # lets the joiner see its subscriptions are live, without waiting

    def snapshot(self, prefixes: list[str]) -> list[bytes]:
        """The snapshot reply for `prefixes` (clone pattern): latest per topic and key."""
        items = sorted(
            (
                (t, seq, body)
                for (t, _), (seq, body) in self._state.items()
                if P.matches(t.decode(), prefixes)
            ),
            key=lambda x: (x[0], x[1]),
        )
        seqs = {t.decode(): n - 1 for t, n in self._seq.items() if P.matches(t.decode(), prefixes)}
        return P.snapshot_reply(
            self.session, self.clock(), seqs, [(t, b) for t, _, b in items], self.epoch
        )

    async def _serve_snapshots(self) -> None:
        r = self._router
        assert r is not None
        waiter = SocketWaiter(r)
        try:
            while True:
                await waiter.wait(None)
                while True:
                    try:
                        frames = r.recv_multipart(_NB)
                    except zmq.Again:
                        break
                    if len(frames) < 2:
                        continue
                    ident, rest = frames[0], frames[1:]
                    if rest[0] == P.PROGRESS:  # a report: no reply
                        try:
                            self._on_progress(P.parse_progress(rest))
                        except ProtocolError:
                            self.bad_reports += 1
                        continue
                    try:
                        reply = self.snapshot(P.parse_snapshot_request(rest))
                        self.snapshots_served += 1
                    except ProtocolError as e:
                        reply = P.error_reply(str(e))
                    with contextlib.suppress(zmq.Again, zmq.ZMQError):
                        r.send_multipart([ident, *reply], _NB)
        finally:
            waiter.close()

    async def _run(self) -> None:
        """Heartbeats, metrics, subscription counting and allow-list reloads."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter
        assert waiter is not None
        now = loop.time()
        next_hb = now
        next_metrics = now + self.metrics_interval if self.metrics_interval else math.inf
        next_summary = now + self.summary_interval if self.summary_interval else math.inf
        next_auth = now + 2.0
        while True:
            now = loop.time()
            if now >= next_hb:
                self.heartbeat()
                next_hb = max(next_hb + self.heartbeat_interval, now + 0.001)
            if now >= next_metrics:
                self.publish_metrics()
                next_metrics = max(next_metrics + self.metrics_interval, now + 0.001)
            if now >= next_summary:
                self.publish_summaries()
                next_summary = max(next_summary + self.summary_interval, now + 0.001)
            if self._auth is not None and now >= next_auth:
                self._auth.reload()
                next_auth = now + 2.0
            # publishing from other tasks can consume the descriptor's wake-up: never sleep long
            timeout = min(next_hb, next_metrics, next_summary, now + 0.1) - loop.time()
            await waiter.wait(timeout)
            # read whether or not the wait saw the edge: a send (a heartbeat) can consume it
            self._read_subscriptions()


__all__ = ["Publisher"]
